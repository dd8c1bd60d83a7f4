"""``GrpcGuard`` and ``AsyncGrpcGuard``: server interceptors that put capgate in front of
every method of a gRPC service (``grpc.server`` and ``grpc.aio.server`` respectively).

Each method is mapped to a ``Rule`` (a table keyed by the full method name, or a
callable of it); a method with no rule is denied. The resource's ``{fields}``
come from the request message, so only methods that take one request can use
them; a streaming-request method is checked once, before its first message,
against a static rule. The token and proof come from the call's metadata
(``authorization: Capgate <token>``, ``capgate-proof`` signed for ``POST`` and
the method name). A deny aborts the call with PERMISSION_DENIED (UNAVAILABLE
when capgate could not decide, RESOURCE_EXHAUSTED when a budget is spent) and
the deny code in the ``capgate-deny`` trailer; an allowed call runs with its
``Presentation`` current, so ``protect``ed functions inside it see it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

import grpc

from capgate import DENY_HEADER, PROOF_HEADER, TOKEN_HEADER, check_id
from capgate_client._guard import (
    _CURRENT,
    BUDGET_EXHAUSTED,
    INVALID_REQUEST,
    NO_RULE,
    UNAVAILABLE,
    AsyncGuard,
    Guard,
    Presentation,
    Rule,
    deny,
    settled,
)
from capgate_client._presenting import GRPC_METHOD
from capgate_client._types import VerifyResult

__all__ = ["AsyncGrpcGuard", "GrpcGuard", "mtls_presenter"]

log = logging.getLogger("capgate.guard")
UNGUARDED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def mtls_presenter(prefix: str) -> Callable[[Any], str]:
    """A presenter from the caller's TLS client certificate: the URI SAN (a SPIFFE id,
    say) that starts with ``prefix``, without it, names the agent. For servers that
    require client certificates; the certificate was checked in the handshake."""
    if not prefix:
        raise ValueError("give the prefix that agent identities start with")

    def presenter(context: Any) -> str:
        for san in context.auth_context().get("x509_subject_alternative_name", ()):
            text = san.decode("utf-8", "replace") if isinstance(san, bytes) else str(san)
            if text.startswith(prefix):
                name = text[len(prefix) :]
                try:
                    return check_id(name, "agent id")
                except Exception:
                    return ""
        return ""

    return presenter


class _Mapping:
    """What the sync and asyncio interceptors share: rules, presentations, checks."""

    def __init__(
        self,
        rules: Mapping[str, Rule] | Callable[[str], Rule | None],
        *,
        unguarded: Iterable[str],
        presenter: Callable[[Any], str] | None,
    ) -> None:
        if isinstance(rules, Mapping):
            for method, rule in rules.items():
                if not rule.action:
                    raise ValueError(f"the rule for {method} names no action")
        self._rules = rules
        self._unguarded = tuple(unguarded)
        self._presenter = presenter

    def unguarded(self, method: str) -> bool:
        return method.startswith(self._unguarded) if self._unguarded else False

    def rule(self, method: str) -> Rule | Exception | None:
        if isinstance(self._rules, Mapping):
            return self._rules.get(method)
        try:
            return self._rules(method)
        except Exception as e:  # a broken rule function: every call of the method denies
            log.exception("rule function failed for %s", method)
            return e

    def presentation(self, method: str, context: Any) -> Presentation | VerifyResult:
        """What the call brought, or a deny when it brought a token or proof twice."""
        pairs = [(k, v) for k, v in context.invocation_metadata() or () if isinstance(v, str)]
        for name in (TOKEN_HEADER, PROOF_HEADER):
            if sum(k == name for k, _ in pairs) > 1:
                return deny(INVALID_REQUEST, f"more than one {name!r} in the call's metadata")
        headers = dict(pairs)
        presenter = ""
        if self._presenter is not None:
            try:
                presenter = self._presenter(context) or ""
            except Exception:  # a broken presenter function presents no one (fail closed)
                log.exception("presenter function failed for %s", method)
        return Presentation.from_headers(headers, GRPC_METHOD, method, presenter)

    @staticmethod
    def access(method: str, rule: Rule | Exception | None, request: Any, streaming: bool) -> Any:
        """The ``Access`` to check, or the guard's own deny."""
        if rule is None:
            return deny(NO_RULE, f"{method} has no rule in this service's guard")
        if isinstance(rule, Exception):
            return deny(INVALID_REQUEST, f"the guard's rule for {method} failed")
        if streaming and rule.fields:
            return deny(
                INVALID_REQUEST,
                f"the rule for {method} reads the request, but it streams its requests",
            )
        try:
            return rule.access(request)
        except Exception as e:
            return deny(INVALID_REQUEST, f"invalid request: {getattr(e, 'message', e)}")


_STATUS = {
    UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    BUDGET_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
}  # else PERMISSION_DENIED


def _status(result: VerifyResult) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    code = _STATUS.get(result.code, grpc.StatusCode.PERMISSION_DENIED)
    return code, f"capgate: {result.code}: {result.reason}", ((DENY_HEADER, result.code),)


def _rebuild(handler: Any, unary: Any, streaming: Any) -> Any:
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kw)
    return grpc.unary_unary_rpc_method_handler(unary, **kw)


class GrpcGuard(grpc.ServerInterceptor):
    """For ``grpc.server(..., interceptors=[GrpcGuard(guard, rules)])``.

    ``rules``: full method name (``/package.Service/Method``) → ``Rule``, or a callable
    giving the rule (None: denied). ``unguarded``: method-name prefixes that pass
    unchecked (health and reflection by default). ``presenter``: who the caller is by
    the service's own authentication (``mtls_presenter``), given the servicer context.
    """

    def __init__(
        self,
        guard: Guard,
        rules: Mapping[str, Rule] | Callable[[str], Rule | None],
        *,
        unguarded: Iterable[str] = UNGUARDED,
        presenter: Callable[[Any], str] | None = None,
    ) -> None:
        self._guard = guard
        self._map = _Mapping(rules, unguarded=unguarded, presenter=presenter)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        method: str = details.method
        if handler is None or self._map.unguarded(method):
            return handler
        rule = self._map.rule(method)
        streaming_in = handler.request_streaming

        def refuse(context: Any, result: VerifyResult) -> None:
            code, message, trailer = _status(result)
            context.set_trailing_metadata(trailer)
            context.abort(code, message)  # raises

        def gate(request: Any, context: Any) -> Presentation:
            p = self._map.presentation(method, context)
            if isinstance(p, VerifyResult):
                refuse(context, p)
                raise AssertionError("unreachable")  # pragma: no cover - abort raises
            access = self._map.access(method, rule, request, streaming_in)
            result = access if isinstance(access, VerifyResult) else self._guard.check(p, access)
            if not result.allowed:
                refuse(context, result)
            return settled(p, result)

        if handler.response_streaming:
            inner_stream = handler.stream_stream or handler.unary_stream

            def streaming(request: Any, context: Any) -> Iterator[Any]:
                p = gate(None if streaming_in else request, context)
                yield from _each(inner_stream(request, context), p)

            return _rebuild(handler, None, streaming)
        inner = handler.stream_unary or handler.unary_unary

        def unary(request: Any, context: Any) -> Any:
            p = gate(None if streaming_in else request, context)
            reset = _CURRENT.set(p)
            try:
                return inner(request, context)
            finally:
                _CURRENT.reset(reset)

        return _rebuild(handler, unary, None)


def _each(responses: Iterator[Any], p: Presentation) -> Iterator[Any]:
    """The responses, each produced with ``p`` current (set and reset around every step,
    so nothing leaks to whatever else the thread runs between them)."""
    while True:
        reset = _CURRENT.set(p)
        try:
            item = next(responses)
        except StopIteration:
            return
        finally:
            _CURRENT.reset(reset)
        yield item


class AsyncGrpcGuard(grpc.aio.ServerInterceptor):
    """``GrpcGuard`` for ``grpc.aio.server(..., interceptors=[AsyncGrpcGuard(guard, rules)])``,
    checking through an ``AsyncGuard``."""

    def __init__(
        self,
        guard: AsyncGuard,
        rules: Mapping[str, Rule] | Callable[[str], Rule | None],
        *,
        unguarded: Iterable[str] = UNGUARDED,
        presenter: Callable[[Any], str] | None = None,
    ) -> None:
        self._guard = guard
        self._map = _Mapping(rules, unguarded=unguarded, presenter=presenter)

    async def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or self._map.unguarded(method):
            return handler
        rule = self._map.rule(method)
        streaming_in = handler.request_streaming

        async def refuse(context: Any, result: VerifyResult) -> None:
            code, message, trailer = _status(result)
            await context.abort(code, message, trailing_metadata=trailer)  # raises

        async def gate(request: Any, context: Any) -> Presentation:
            p = self._map.presentation(method, context)
            if isinstance(p, VerifyResult):
                await refuse(context, p)
                raise AssertionError("unreachable")  # pragma: no cover - abort raises
            access = self._map.access(method, rule, request, streaming_in)
            result = (
                access if isinstance(access, VerifyResult) else await self._guard.check(p, access)
            )
            if not result.allowed:
                await refuse(context, result)
            return settled(p, result)

        if handler.response_streaming:
            inner_stream = handler.stream_stream or handler.unary_stream

            async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
                p = await gate(None if streaming_in else request, context)
                reset = _CURRENT.set(p)  # an async generator runs in its own task's context
                try:
                    responses = inner_stream(request, context)
                    if hasattr(responses, "__aiter__"):
                        async for item in responses:
                            yield item
                    else:  # a servicer method written as a plain generator
                        for item in responses:
                            yield item
                finally:
                    _CURRENT.reset(reset)

            return _rebuild(handler, None, streaming)
        inner = handler.stream_unary or handler.unary_unary

        async def unary(request: Any, context: Any) -> Any:
            p = await gate(None if streaming_in else request, context)
            reset = _CURRENT.set(p)
            try:
                response = inner(request, context)
                return await response if inspect.isawaitable(response) else response
            finally:
                _CURRENT.reset(reset)

        return _rebuild(handler, unary, None)
