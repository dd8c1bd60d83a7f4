"""``CapgateMiddleware``: ASGI middleware that asks capgate about every request.

Plain ASGI, so it needs nothing installed and fits Starlette, FastAPI and any
other ASGI framework::

    app.add_middleware(CapgateMiddleware, guard=AsyncGuard(AsyncClient(addr, svc_cred)))

By default a request is checked as its method's action (``capgate.http_action``:
GET reads, POST writes…) on its path; ``rule`` maps a request (the ASGI scope)
to another ``Access``. The token and proof come from the headers; the proof is
checked for the method and the path with its query as received. A deny answers
403 (503 when capgate could not decide, 429 when a budget is spent) with the
code in a ``capgate-deny`` header and a JSON body; a WebSocket handshake is
refused the same way (403). An allowed request runs with its ``Presentation``
current and capgate's result at ``scope["state"]["capgate"]`` (Starlette:
``request.state.capgate``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from capgate import (
    DENY_HEADER,
    PROOF_HEADER,
    TOKEN_HEADER,
    InvalidArgumentError,
    http_action,
    http_resource,
)
from capgate_client._guard import (
    _CURRENT,
    BUDGET_EXHAUSTED,
    INVALID_REQUEST,
    UNAVAILABLE,
    Access,
    AsyncGuard,
    Presentation,
    deny,
    settled,
)
from capgate_client._types import VerifyResult

__all__ = ["CapgateMiddleware"]

log = logging.getLogger("capgate.guard")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def default_rule(scope: Mapping[str, Any]) -> Access | None:
    """The method's action on the request's path (None: the method has no action)."""
    action = http_action(scope.get("method", "GET"))
    return None if action is None else Access(action, http_resource(_raw_path(scope)))


def _raw_path(scope: Mapping[str, Any]) -> str:
    """The path as it was sent (encoded), where the server gives it."""
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if isinstance(raw, bytes) else str(scope.get("path", ""))


class CapgateMiddleware:
    """``guard``: an ``AsyncGuard`` over a service principal's ``AsyncClient``.
    ``rule``: scope → ``Access`` (None or an exception denies). ``unguarded``: paths
    that pass unchecked: an exact path, or every path under one ending in '/'.
    ``presenter``: who the caller is by the service's own authentication, given the
    scope."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        guard: AsyncGuard,
        rule: Callable[[Mapping[str, Any]], Access | None] = default_rule,
        unguarded: Iterable[str] = (),
        presenter: Callable[[Mapping[str, Any]], str] | None = None,
    ) -> None:
        self.app = app
        self._guard = guard
        self._rule = rule
        self._unguarded = tuple(unguarded)
        self._presenter = presenter

    def _is_unguarded(self, scope: Mapping[str, Any]) -> bool:
        if not self._unguarded:
            return False
        try:  # '/public/../admin' is not under '/public/': such a path is checked
            path = http_resource(_raw_path(scope))
        except InvalidArgumentError:
            return False
        return any(path == u or (u.endswith("/") and path.startswith(u)) for u in self._unguarded)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind not in ("http", "websocket") or self._is_unguarded(scope):
            await self.app(scope, receive, send)
            return
        p, result = await self._decide(scope)
        if not result.allowed:
            await (
                _refuse_http(send, result) if kind == "http" else _refuse_websocket(receive, send)
            )
            return
        scope.setdefault("state", {})["capgate"] = result
        reset = _CURRENT.set(settled(p, result) if p is not None else None)
        try:
            await self.app(scope, receive, send)
        finally:
            _CURRENT.reset(reset)

    async def _decide(self, scope: Scope) -> tuple[Presentation | None, VerifyResult]:
        headers: dict[str, list[str]] = {}
        for key, value in scope.get("headers") or ():
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        for name in (TOKEN_HEADER, PROOF_HEADER):
            if len(headers.get(name, ())) > 1:
                return None, deny(INVALID_REQUEST, f"more than one {name!r} header")
        method = "GET" if scope["type"] == "websocket" else scope.get("method", "GET")
        raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8")
        target = raw.decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        presenter = ""
        if self._presenter is not None:
            try:
                presenter = self._presenter(scope) or ""
            except Exception:  # a broken presenter function presents no one (fail closed)
                log.exception("presenter function failed")
        p = Presentation.from_headers(
            {k: v[0] for k, v in headers.items()}, method, target, presenter
        )
        try:
            access = self._rule(scope)
        except Exception as e:
            return p, deny(INVALID_REQUEST, f"invalid request: {getattr(e, 'message', e)}")
        if access is None:
            return p, deny(INVALID_REQUEST, f"no action for {method} {scope.get('path')}")
        return p, await self._guard.check(p, access)


_HTTP_STATUS = {UNAVAILABLE: 503, BUDGET_EXHAUSTED: 429}  # every other deny: 403


async def _refuse_http(send: Send, result: VerifyResult) -> None:
    body = json.dumps({"error": "denied", "code": result.code, "reason": result.reason}).encode(
        "utf-8"
    )
    code = result.code.encode("ascii", "replace")
    await send(
        {
            "type": "http.response.start",
            "status": _HTTP_STATUS.get(result.code, 403),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (DENY_HEADER.encode("ascii"), code),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _refuse_websocket(receive: Receive, send: Send) -> None:
    message = await receive()  # websocket.connect; closing before accept answers 403
    if message.get("type") == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})
