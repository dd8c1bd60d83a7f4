"""``Console``: the operator console's HTTP face: login, sessions, CSRF, routes, assets.

Security model (docs/console.md):

- Off unless ``--console-listen`` names an address; a non-loopback one needs TLS
  (the API's ``--tls-cert``/``--tls-key``) or ``--insecure``. On loopback, the
  ``Host`` header must name loopback too, so a DNS-rebinding page cannot reach it.
- Nothing but the page shell and its static assets answers without a session.
  A session starts from a principal credential of a console role (admin:
  everything; operator: agents, decisions and actions; approver: approvals); the
  browser holds only a random id in an HttpOnly, SameSite=Strict cookie (Secure
  under TLS).
- Every state-changing request is a POST with a JSON body, the session's CSRF
  token in ``X-CSRF-Token``, and (when the browser sends one) an ``Origin`` of
  the console itself; anything else is refused before it is read further.
- Every action runs through the service layer as the logged-in principal, so it
  is checked and audited exactly as the same action over gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any

from capgate import (
    AlreadyExistsError,
    AuthenticationError,
    CapgateError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
)
from capgate_server._credentials import hash_credential
from capgate_server._replica import Replica
from capgate_server.console._api import ConsoleApi, decision_filter, decision_json
from capgate_server.console._http import HttpServer, Request, Response
from capgate_server.console._sessions import Session, Sessions
from capgate_server.store import AuditEvent, Principal, Role

__all__ = ["CONSOLE_ROLES", "COOKIE", "Console"]

log = logging.getLogger("capgate.console")
COOKIE = "capgate_console"
# what each role may do in the console; any other role cannot log in
CONSOLE_ROLES: dict[Role, frozenset[str]] = {
    Role.ADMIN: frozenset({"agents", "decisions", "approvals", "act"}),
    Role.OPERATOR: frozenset({"agents", "decisions", "act"}),
    Role.APPROVER: frozenset({"approvals"}),
}
STREAMS_PER_SESSION = 4
HEARTBEAT = 15.0  # seconds between SSE comments, so a gone browser is noticed
_STATUS = [
    (InvalidArgumentError, 400),
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotFoundError, 404),
    (AlreadyExistsError, 409),
    (FailedPreconditionError, 409),
    (ResourceExhaustedError, 429),
    (UnavailableError, 503),
]
_SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]
_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/console.css": ("console.css", "text/css; charset=utf-8"),
    "/static/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/static/pages.js": ("pages.js", "text/javascript; charset=utf-8"),
}

Action = Callable[[Principal, Request, list[str]], Awaitable[Any]]


class _Refused(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def _json(status: int, value: Any, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(value).encode(), headers=headers or [])


def _is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host part of a Host header (``name``, ``name:port``, ``[v6]:port``)."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


class Console:
    """Serve the console for ``replica`` at ``listen``; ``start`` returns the bound port."""

    def __init__(
        self,
        replica: Replica,
        listen: str,
        *,
        tls: ssl.SSLContext | None = None,
        sessions: Sessions | None = None,
    ) -> None:
        self._replica = replica
        self._listen = listen
        self._tls = tls
        self.sessions = sessions or Sessions(replica.clock)
        self.api = ConsoleApi(replica)
        self._http = HttpServer(self._handle, security_headers=_SECURITY_HEADERS)
        self._streams: dict[str, int] = {}
        self._local = _is_loopback(listen.rpartition(":")[0])
        self.port = 0
        self._routes: list[tuple[str, str, str, Action]] = [
            # method, path prefix, what the role needs, handler (args: the rest of the path)
            ("GET", "/api/agents", "agents", self._agents),
            ("GET", "/api/tree", "agents", self._tree),
            ("GET", "/api/decisions", "decisions", self._decisions),
            ("GET", "/api/approvals", "approvals", self._approvals),
            ("POST", "/api/agents", "act", self._agent_action),
            ("POST", "/api/revoke", "act", self._revoke),
            ("POST", "/api/approvals", "approvals", self._decide),
        ]

    async def start(self) -> int:
        host, _, port = self._listen.rpartition(":")
        if not port.isdigit():
            raise InvalidArgumentError(f"--console-listen {self._listen!r}: want HOST:PORT")
        self.port = await self._http.start(host.strip("[]"), int(port), self._tls)
        return self.port

    async def stop(self) -> None:
        await self._http.stop()

    # -- the request path -------------------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        try:
            self._check_host(request)
            if request.path in _ASSETS and request.method == "GET":
                return self._asset(request.path)
            if request.path == "/api/login" and request.method == "POST":
                return await self._login(request)
            session, principal = await self._session(request)
            if request.method == "POST":
                self._check_post(request, session)
            if request.path == "/api/session" and request.method == "GET":
                return _json(200, self._session_json(session, principal))
            if request.path == "/api/logout" and request.method == "POST":
                self.sessions.end(session.id)
                return _json(200, {"ok": True}, [("Set-Cookie", self._cookie("", 0))])
            if request.path == "/api/decisions/stream" and request.method == "GET":
                self._may(principal, "decisions")
                return self._stream(request, session)
            for method, prefix, needs, action in self._routes:
                if request.path == prefix or request.path.startswith(prefix + "/"):
                    if request.method != method:
                        continue
                    self._may(principal, needs)
                    rest = [p for p in request.path[len(prefix) :].split("/") if p]
                    return _json(200, await action(principal, request, rest))
            raise _Refused(404, "no such page")
        except _Refused as e:
            return _json(e.status, {"error": str(e)})
        except CapgateError as e:
            status = next((s for cls, s in _STATUS if isinstance(e, cls)), 500)
            return _json(status, {"error": e.message})

    def _check_host(self, request: Request) -> None:
        host = request.headers.get("host", "")
        if self._local and not _is_loopback(_host_of(host)):
            raise _Refused(421, "this console answers only to a loopback host name")

    def _check_post(self, request: Request, session: Session | None) -> None:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise _Refused(415, "send JSON (Content-Type: application/json)")
        origin = request.headers.get("origin")
        if origin is not None:
            scheme = "https" if self._tls is not None else "http"
            if origin != f"{scheme}://{request.headers.get('host', '')}":
                raise _Refused(403, "cross-origin request refused")
        if session is not None and not session.csrf_matches(
            request.headers.get("x-csrf-token", "")
        ):
            raise _Refused(403, "missing or wrong CSRF token")

    def _asset(self, path: str) -> Response:
        name, ctype = _ASSETS[path]
        body = resources.files("capgate_server.console").joinpath("static", name).read_bytes()
        return Response(200, body, content_type=ctype)

    def _cookie(self, value: str, max_age: int) -> str:
        secure = "; Secure" if self._tls is not None else ""
        return f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"

    # -- sessions ------------------------------------------------------------------------------

    async def _login(self, request: Request) -> Response:
        self._check_post(request, None)
        body = _body(request)
        credential = body.get("credential")
        if not isinstance(credential, str) or not credential or len(credential) > 256:
            raise _Refused(400, "give a credential")
        credential = credential.strip()
        principal = await self._replica.authenticate(credential)
        if principal is None or principal.disabled:
            self._replica.audit.refusal(
                "auth.failed",
                principal.id if principal else "unknown",
                "console.login",
                "unauthenticated",
                "missing, unknown or disabled credential",
                self._replica.clock(),
            )
            raise _Refused(401, "unknown or disabled credential")
        if principal.role not in CONSOLE_ROLES:
            raise _Refused(
                403,
                f"the {principal.role} role has no console (log in as an "
                "admin, an operator or an approver)",
            )
        session = self.sessions.create(principal.id, hash_credential(credential))
        await self._replica.call(
            self._replica.store.append_audit,
            [
                AuditEvent(
                    self._replica.clock(),
                    principal.id,
                    "console.login",
                    principal.id,
                    replica=self._replica.settings.replica_id,
                )
            ],
        )
        return _json(
            200,
            self._session_json(session, principal),
            [("Set-Cookie", self._cookie(session.id, int(self.sessions.lifetime)))],
        )

    async def _session(self, request: Request) -> tuple[Session, Principal]:
        session = self.sessions.get(request.cookies.get(COOKIE, ""))
        if session is None:
            raise _Refused(401, "log in first")
        # the principal as the store has it now: disabled or rotated ends the session
        principal = await self._replica.read(
            self._replica.store.principal_by_credential, session.credential_hash
        )
        if (
            principal is None
            or principal.disabled
            or principal.id != session.principal
            or principal.role not in CONSOLE_ROLES
        ):
            self.sessions.end(session.id)
            raise _Refused(401, "the session's credential no longer holds: log in again")
        return session, principal

    @staticmethod
    def _session_json(session: Session, principal: Principal) -> dict[str, Any]:
        return {
            "principal": principal.id,
            "role": str(principal.role),
            "csrf": session.csrf,
            "may": sorted(CONSOLE_ROLES[principal.role]),
        }

    @staticmethod
    def _may(principal: Principal, needs: str) -> None:
        if needs not in CONSOLE_ROLES.get(principal.role, frozenset()):
            raise _Refused(403, f"the {principal.role} role may not do this")

    # -- routes -------------------------------------------------------------------------------

    async def _agents(self, caller: Principal, request: Request, rest: list[str]) -> Any:
        if not rest:
            return {"agents": await self.api.agents(caller)}
        if len(rest) == 1:
            return await self.api.agent(caller, rest[0])
        raise _Refused(404, "no such page")

    async def _tree(self, caller: Principal, request: Request, rest: list[str]) -> Any:
        if len(rest) != 1:
            raise _Refused(404, "no such page")
        return await self.api.tree(caller, rest[0])

    async def _agent_action(self, caller: Principal, request: Request, rest: list[str]) -> Any:
        if len(rest) != 2:
            raise _Refused(404, "no such action")
        agent_id, verb = rest
        if verb == "suspend":
            return await self.api.suspend(caller, agent_id)
        if verb == "resume":
            return await self.api.resume(caller, agent_id)
        if verb == "revoke-all":
            return await self.api.revoke_all(caller, agent_id)
        if verb == "ceiling":
            return await self.api.narrow(caller, agent_id, _body(request).get("grants"))
        raise _Refused(404, "no such action")

    async def _revoke(self, caller: Principal, request: Request, rest: list[str]) -> Any:
        body = _body(request)
        return await self.api.revoke(caller, body.get("id"), body.get("reason", ""))

    async def _approvals(self, caller: Principal, request: Request, rest: list[str]) -> Any:
        return {"approvals": await self.api.pending_approvals(caller)}

    async def _decide(self, caller: Principal, request: Request, rest: list[str]) -> Any:
        if len(rest) != 1:
            raise _Refused(404, "no such approval")
        body = _body(request)
        return await self.api.decide(caller, rest[0], body.get("approve"), body.get("reason", ""))

    async def _decisions(self, caller: Principal, request: Request, rest: list[str]) -> Any:
        q = request.query
        query = decision_filter(q.get("agent", ""), q.get("decision", ""), q.get("code", ""))
        recent, head = await self.api.recent_decisions(query)
        return {"decisions": [decision_json(e) for e in recent], "follow_from": head}

    # -- live decisions (Server-Sent Events) ------------------------------------------------

    def _stream(self, request: Request, session: Session) -> Response:
        q = request.query
        query = decision_filter(q.get("agent", ""), q.get("decision", ""), q.get("code", ""))
        after = q.get("after", "0")
        resumed = request.headers.get("last-event-id", "")  # EventSource reconnecting
        if not after.isdigit() or (resumed and not resumed.isdigit()):
            raise InvalidArgumentError("after is a position in the ledger")
        after = str(max(int(after), int(resumed or 0)))
        if self._streams.get(session.id, 0) >= STREAMS_PER_SESSION:
            raise _Refused(429, f"at most {STREAMS_PER_SESSION} live tables per session")
        return Response(
            200,
            b"retry: 2000\n\n",
            content_type="text/event-stream",
            stream=self._events(session, int(after), query),
        )

    async def _events(self, session: Session, after: int, query: Any) -> AsyncIterator[bytes]:
        self._streams[session.id] = self._streams.get(session.id, 0) + 1
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)

        async def pump() -> None:
            try:
                async for event in self.api.follow_decisions(after, query):
                    await queue.put(event)
            except CapgateError as e:  # the store failed: end the stream, the page retries
                log.warning("console: live decisions stopped: %s", e.message)
            await queue.put(None)

        task = asyncio.ensure_future(pump())
        try:
            while True:
                try:
                    async with asyncio.timeout(HEARTBEAT):
                        event = await queue.get()
                except TimeoutError:
                    if not self.sessions.alive(session.id):
                        return  # logged out or expired: the stream ends with the session
                    yield b": ping\n\n"
                    continue
                if event is None:
                    return
                data = json.dumps(decision_json(event)).encode()
                yield b"id: %d\ndata: %s\n\n" % (event.pos, data)
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            self._streams[session.id] -= 1
            if not self._streams[session.id]:
                del self._streams[session.id]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _body(request: Request) -> dict[str, Any]:
    try:  # strict JSON: NaN and Infinity are Python's, not JSON's
        body = json.loads(request.body or b"{}", parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError):
        raise _Refused(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise _Refused(400, "the body is a JSON object")
    return body
