"""``Guard`` and ``AsyncGuard``: a service's checks through capgate, with a short cache.

What every guard shares (the gRPC interceptors, the ASGI middleware, the MCP
tool guard, the ``protect`` decorator):

- ``Presentation``: what a request brought (the token, the agent's proof, and
  who the service itself knows is calling);
- ``Rule`` → ``Access``: how a request becomes one check (an action, a resource
  filled in from the request, and request context);
- the decision: capgate's ``VerifyResult``, or a deny the guard makes itself
  without asking (no token; no rule for the request; a field that cannot be one
  path segment) or when capgate cannot answer (fail closed: ``unavailable``).

The cache keeps allows only, for ``cache_ttl`` seconds (default 1 s) measured
on the monotonic clock, and never for a request with a proof (each proof is
single-use and only capgate can redeem it) nor one counted against a budget
(``uses``, ``rate``: each request must be counted). So a revocation, suspension,
ceiling change or expiry reaches a guard at most ``cache_ttl`` after the
replica it asks has applied it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import math
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from capgate import (
    PROOF_HEADER,
    TOKEN_HEADER,
    CapgateError,
    DenyCode,
    InvalidArgumentError,
    PermissionDeniedError,
    UnavailableError,
    presented_token,
)
from capgate_client._client import AsyncClient, Client
from capgate_client._types import Proof, VerifyResult

__all__ = [
    "NO_RULE",
    "Access",
    "AsyncGuard",
    "Guard",
    "Presentation",
    "Rule",
    "current_presentation",
    "presenting",
]

P = ParamSpec("P")
R = TypeVar("R")

# Deny codes a guard gives without asking capgate (capgate's own are in DenyCode).
MISSING_TOKEN = str(DenyCode.MISSING_TOKEN)
NO_RULE = "no_rule"  # the guard has no rule for the request
INVALID_REQUEST = str(DenyCode.INVALID_REQUEST)
UNAVAILABLE = str(DenyCode.UNAVAILABLE)
BUDGET_EXHAUSTED = str(DenyCode.BUDGET_EXHAUSTED)  # try later: 429, RESOURCE_EXHAUSTED

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(\*?)\}")
_MAX_FIELD = 1024


@dataclass(frozen=True)
class Presentation:
    """What a request brought: ``token`` (None when it had none), the agent's ``proof``
    with the request it was made for, and ``presenter``, the agent the service itself
    authenticated (its mTLS peer, say; "" when it knows of none)."""

    token: str | None
    proof: Proof | None = None
    presenter: str = ""

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str], method: str, target: str, presenter: str = ""
    ) -> Presentation:
        """From request headers (lower-case keys): ``authorization: Capgate <token>`` and
        ``capgate-proof``; ``method`` and ``target`` as the request arrived."""
        proof = headers.get(PROOF_HEADER)
        return cls(
            presented_token(headers.get(TOKEN_HEADER)),
            Proof(proof, method, target) if proof else None,
            presenter,
        )


_CURRENT: contextvars.ContextVar[Presentation | None] = contextvars.ContextVar(
    "capgate_presentation", default=None
)


def current_presentation() -> Presentation | None:
    """The presentation of the request being handled, set by the guards (and by
    ``presenting``), for checks made deeper inside the service."""
    return _CURRENT.get()


@contextlib.contextmanager
def presenting(presentation: Presentation) -> Iterator[None]:
    """Run a block as handling a request that brought ``presentation``."""
    reset = _CURRENT.set(presentation)
    try:
        yield
    finally:
        _CURRENT.reset(reset)


@dataclass(frozen=True)
class Access:
    """One check: ``action`` on ``resource``, with request context ``ctx``."""

    action: str
    resource: str
    ctx: Mapping[str, str] = field(default_factory=dict)


_ABSENT = object()


def _lookup(source: Any, path: str, absent: Any = None) -> Any:
    """A field of the request (a mapping's key, or an attribute; dotted for nested ones).
    A missing field is ``absent`` when given, else an error. In a protobuf message a
    field that is not set is missing: one that tracks presence and is not present, or
    a plain proto3 scalar at its default (0, "", false), which the wire cannot tell
    from one never sent."""
    value = source
    for part in path.split("."):
        if isinstance(value, Mapping):
            found = part in value
            value = value[part] if found else None
        elif _is_message(value):
            found = _is_set(value, part)
            value = getattr(value, part) if found else None
        else:
            found = not part.startswith("_") and hasattr(value, part)
            value = getattr(value, part) if found else None
        if not found:
            if absent is not None:
                return absent
            raise InvalidArgumentError(f"the request has no {path!r}")
    return value


def _is_message(value: Any) -> bool:
    return hasattr(value, "DESCRIPTOR") and hasattr(value, "HasField")


def _is_set(message: Any, name: str) -> bool:
    fd = message.DESCRIPTOR.fields_by_name.get(name)
    if fd is None:
        return False
    if getattr(fd, "has_presence", False):
        return bool(message.HasField(name))
    value = getattr(message, name)
    if getattr(fd, "label", None) == fd.LABEL_REPEATED:
        return len(value) > 0
    return bool(value != fd.default_value)


def _text(value: Any, path: str) -> str:
    """A request field as text for a resource or a context value: a string, or a
    number written out; nothing else (lists, maps, None, booleans) counts."""
    if isinstance(value, bool) or value is None:
        raise InvalidArgumentError(f"{path!r} must be text or a number")
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float) and math.isfinite(value):
        text = repr(value)
    elif isinstance(value, str):
        text = value
    else:
        raise InvalidArgumentError(f"{path!r} must be text or a number")
    if len(text) > _MAX_FIELD:
        raise InvalidArgumentError(f"{path!r} is longer than {_MAX_FIELD} characters")
    return text


def _segments(value: Any, path: str, several: bool) -> str:
    """A field as one path segment, or (``{field*}``) as one or more joined by '/'; no
    segment may be empty, '.' or '..', so no argument walks the resource elsewhere."""
    text = _text(value, path)
    parts = text.split("/") if several else [text]
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\\" in part or not part.isprintable():
            what = "path segments" if several else "one path segment"
            raise InvalidArgumentError(
                f"{path!r} must be {what} (none empty, '.' or '..'; no '\\')"
                + ("" if several else "; no '/'")
            )
    return text


@dataclass(frozen=True)
class Rule:
    """How a guard makes a request into an ``Access``.

    ``resource`` is a template whose ``{field}`` (or ``{field.sub}``) parts are filled
    from the request (a message's fields, a function's arguments, a tool's arguments);
    each must be one path segment (``{field*}``: one or more), never empty, '.' or '..',
    so no argument can walk the resource elsewhere. Or a callable of the request.
    ``ctx`` maps context keys to request fields (or is a callable); a field the request
    leaves out is left out of the context, so a ``ctx`` caveat on it denies. ``action``
    "" means the tool's name (MCP only).
    """

    action: str
    resource: str | Callable[[Any], str]
    ctx: Mapping[str, str] | Callable[[Any], Mapping[str, str]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.resource, str):
            rest = _FIELD.sub("", self.resource)
            if "{" in rest or "}" in rest:
                raise InvalidArgumentError(
                    f"resource template {self.resource!r}: write fields as {{name}} or {{name.sub}}"
                )

    @property
    def fields(self) -> bool:
        """Whether the rule reads the request (a static rule does not)."""
        return (
            not isinstance(self.resource, str)
            or _FIELD.search(self.resource) is not None
            or self.ctx is not None
        )

    def access(self, request: Any, action: str = "") -> Access:
        """The check for ``request``; raises ``InvalidArgumentError`` when the request
        does not give what the rule needs."""
        if callable(self.resource):
            resource = self.resource(request)
        else:
            resource = _FIELD.sub(
                lambda m: _segments(_lookup(request, m.group(1)), m.group(1), bool(m.group(2))),
                self.resource,
            )
        if callable(self.ctx):
            ctx = dict(self.ctx(request))
        else:  # a field the request leaves out is left out (a ctx caveat on it denies)
            ctx = {
                key: _text(value, path)
                for key, path in (self.ctx or {}).items()
                if (value := _lookup(request, path, _ABSENT)) is not _ABSENT
            }
        return Access(self.action or action, resource, ctx)


def settled(p: Presentation, result: VerifyResult) -> Presentation:
    """The presentation for the rest of a request once the guard has allowed it. A proof
    is good for one decision: once capgate has proven the presenter with it, checks
    deeper in the request name that agent instead (where proof is required they deny:
    there, one check per request, at the edge)."""
    if result.proven and p.proof is not None and result.chain:
        return Presentation(p.token, None, result.chain[-1])
    return p


def deny(code: str, reason: str) -> VerifyResult:
    """A deny the guard decides itself."""
    return VerifyResult(False, code, reason)


class _Cache:
    """Allows, for ``ttl`` seconds on the monotonic clock; bounded in entries. Safe to
    share between the threads of a sync server."""

    def __init__(self, ttl: float, size: int, monotonic: Callable[[], float]) -> None:
        self._ttl = ttl
        self._size = size
        self._monotonic = monotonic
        self._entries: dict[tuple[Any, ...], tuple[float, VerifyResult]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(p: Presentation, access: Access) -> tuple[Any, ...] | None:
        if p.proof is not None:  # single-use: only capgate can redeem it
            return None
        return (
            p.token,
            p.presenter,
            access.action,
            access.resource,
            tuple(sorted(access.ctx.items())),
        )

    def get(self, key: tuple[Any, ...] | None) -> VerifyResult | None:
        if key is None or self._ttl <= 0:
            return None
        hit = self._entries.get(key)
        if hit is None:
            return None
        if self._monotonic() >= hit[0]:
            with self._lock:
                self._entries.pop(key, None)
            return None
        return hit[1]

    def put(self, key: tuple[Any, ...] | None, result: VerifyResult) -> None:
        if key is None or self._ttl <= 0 or not result.allowed or result.counted:
            return  # a budgeted allow is good for one request: each must be counted
        now = self._monotonic()
        with self._lock:
            if len(self._entries) >= self._size:
                for k in [k for k, (until, _) in self._entries.items() if until <= now]:
                    self._entries.pop(k, None)
                if len(self._entries) >= self._size:
                    self._entries.clear()
            self._entries[key] = (now + self._ttl, result)


MAX_CACHE_TTL = 300.0  # seconds: a guard's cached allow outlives a revocation by at most this
_NO_TOKEN = "no capgate token: send 'authorization: Capgate <token>'"  # noqa: S105


def _failed(error: CapgateError) -> VerifyResult:
    return deny(UNAVAILABLE, f"capgate could not decide ({error.message}); failing closed")


def raise_for(result: VerifyResult) -> None:
    """Raise the deny as capgate's exception: ``UnavailableError`` when capgate could
    not decide, else ``PermissionDeniedError``; ``context`` has the code and result."""
    if result.allowed:
        return
    cls = UnavailableError if result.code == UNAVAILABLE else PermissionDeniedError
    raise cls(
        f"denied by capgate ({result.code}): {result.reason}", code=result.code, result=result
    )


class _Base:
    def __init__(
        self, *, cache_ttl: float, cache_size: int, monotonic: Callable[[], float]
    ) -> None:
        # NaN or an infinity kept a cached allow for ever: past every revocation
        if type(cache_ttl) not in (int, float) or not 0 <= cache_ttl <= MAX_CACHE_TTL:
            raise InvalidArgumentError(
                f"cache_ttl is seconds from 0 to {MAX_CACHE_TTL:.0f} (a revocation reaches "
                f"a guard at most this late), not {cache_ttl!r}"
            )
        if type(cache_size) is not int or not 1 <= cache_size <= 10_000_000:
            raise InvalidArgumentError(
                f"cache_size must be from 1 to 10,000,000, not {cache_size!r}"
            )
        self._cache = _Cache(cache_ttl, cache_size, monotonic)

    @staticmethod
    def _decorated(
        fn: Callable[..., Any],
        rule: Rule,
    ) -> tuple[inspect.Signature, bool]:
        if not rule.action:
            raise InvalidArgumentError("protect() needs an action")
        sig = inspect.signature(fn)
        return sig, "presentation" in sig.parameters

    @staticmethod
    def _call_access(
        sig: inspect.Signature, takes: bool, rule: Rule, args: Any, kwargs: dict[str, Any]
    ) -> tuple[Presentation | None, Access | VerifyResult]:
        p = kwargs.get("presentation") if takes else kwargs.pop("presentation", None)
        if p is None:
            p = current_presentation()
        elif isinstance(p, str):  # a bare token
            p = Presentation(p)
        elif not isinstance(p, Presentation):
            return None, deny(INVALID_REQUEST, "presentation= must be a Presentation or a token")
        try:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            return p, rule.access(bound.arguments)
        except (InvalidArgumentError, TypeError) as e:
            reason = e.message if isinstance(e, CapgateError) else str(e)
            return p, deny(INVALID_REQUEST, f"invalid request: {reason}")


class Guard(_Base):
    """Checks requests through a blocking ``Client`` (a service principal's)."""

    def __init__(
        self,
        client: Client,
        *,
        cache_ttl: float = 1.0,
        cache_size: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(cache_ttl=cache_ttl, cache_size=cache_size, monotonic=monotonic)
        self.client = client

    def check(self, presentation: Presentation | None, access: Access) -> VerifyResult:
        """capgate's decision (or the guard's own deny); never raises."""
        token = presentation.token if presentation is not None else None
        if presentation is None or not token:
            return deny(MISSING_TOKEN, _NO_TOKEN)
        key = self._cache.key(presentation, access)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        try:
            result = self.client.verify(
                token,
                access.action,
                access.resource,
                presenter=presentation.presenter,
                ctx=access.ctx,
                proof=presentation.proof,
            )
        except CapgateError as e:
            return _failed(e)
        self._cache.put(key, result)
        return result

    def protect(
        self,
        action: str,
        resource: str | Callable[[Any], str],
        *,
        ctx: Mapping[str, str] | Callable[[Any], Mapping[str, str]] | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a plain function: each call is checked first, the ``{fields}`` of
        ``resource`` (and ``ctx``'s) taken from its arguments. The presentation is the
        ``presentation=`` argument, else the request being handled (``presenting``). A
        deny raises ``PermissionDeniedError`` (``UnavailableError`` when capgate could not
        decide) with the code in ``.context["code"]``."""
        rule = Rule(action, resource, ctx)

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(fn):
                raise InvalidArgumentError("an async function is protected by an AsyncGuard")
            sig, takes = self._decorated(fn, rule)

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                p, access = self._call_access(sig, takes, rule, args, kwargs)
                result = access if isinstance(access, VerifyResult) else self.check(p, access)
                raise_for(result)
                return fn(*args, **kwargs)

            return wrapper

        return decorate


class AsyncGuard(_Base):
    """Checks requests through an ``AsyncClient`` (a service principal's)."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        cache_ttl: float = 1.0,
        cache_size: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(cache_ttl=cache_ttl, cache_size=cache_size, monotonic=monotonic)
        self.client = client

    async def check(self, presentation: Presentation | None, access: Access) -> VerifyResult:
        """capgate's decision (or the guard's own deny); never raises."""
        token = presentation.token if presentation is not None else None
        if presentation is None or not token:
            return deny(MISSING_TOKEN, _NO_TOKEN)
        key = self._cache.key(presentation, access)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        try:
            result = await self.client.verify(
                token,
                access.action,
                access.resource,
                presenter=presentation.presenter,
                ctx=access.ctx,
                proof=presentation.proof,
            )
        except CapgateError as e:
            return _failed(e)
        self._cache.put(key, result)
        return result

    def protect(
        self,
        action: str,
        resource: str | Callable[[Any], str],
        *,
        ctx: Mapping[str, str] | Callable[[Any], Mapping[str, str]] | None = None,
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
        """``Guard.protect`` for coroutine functions."""
        rule = Rule(action, resource, ctx)

        def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
            if not inspect.iscoroutinefunction(fn):
                raise InvalidArgumentError("a plain function is protected by a Guard")
            sig, takes = self._decorated(fn, rule)

            @functools.wraps(fn)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                p, access = self._call_access(sig, takes, rule, args, kwargs)
                result = access if isinstance(access, VerifyResult) else await self.check(p, access)
                raise_for(result)
                return await fn(*args, **kwargs)

            return wrapper

        return decorate
