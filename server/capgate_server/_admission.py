"""``Admission``: what a call may cost, decided before its servicer runs.

The interceptor hands every call here, once it knows who is calling:

- a refused call (no or a bad credential, a role that may not call the method,
  too many calls in flight) is answered by a handler that never reads the
  request body, so an unauthenticated sender cannot make the server parse it;
- every message is bounded by its method's limit
  (``ResourceLimits.message_limit``): a larger one is refused with
  RESOURCE_EXHAUSTED instead of being parsed;
- one principal has at most ``calls_per_principal`` calls in flight, at most
  ``batches_in_flight`` VerifyBatch calls (the large messages) are in flight in
  all, and at most ``health_watches`` health watches (the one long-lived call
  open to anyone) are open at once. These are checked before the body is read,
  and again, exactly, when the call starts.

grpc itself caps all calls in flight (``max_concurrent_rpcs``) and the streams
of one connection (``streams_per_connection``); see ``CapgateServer``.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from capgate import CapgateError, ResourceExhaustedError
from capgate_server._limits import ResourceLimits
from capgate_server._metrics import CallMeter
from capgate_server._status import abort
from capgate_server.store import Principal

__all__ = ["CALLER", "Admission"]

CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("capgate_caller")
_WATCH = "/grpc.health.v1.Health/Watch"
_BATCH = "/capgate.v1.VerifierService/VerifyBatch"


class _Oversize:
    """Stands in for a message over its method's limit, which is never parsed."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


class Admission:
    def __init__(self, limits: ResourceLimits, meter: CallMeter | None = None) -> None:
        self._limits = limits
        self._meter = meter  # calls timed and counted for metrics
        self._in_flight: dict[str, int] = {}  # principal id -> calls being served
        self._batches = 0
        self._watches = 0

    def busy(self, principal: Principal, method: str) -> ResourceExhaustedError | None:
        """The error for a call over a cap of calls in flight, or None."""
        cap = self._limits.calls_per_principal
        if self._in_flight.get(principal.id, 0) >= cap:
            return ResourceExhaustedError(
                f"principal {principal.id!r} has {cap} calls in flight, the most it may; "
                "retry when some have finished",
                limit="calls_per_principal",
                value=cap,
            )
        cap = self._limits.batches_in_flight
        if method == _BATCH and self._batches >= cap:
            return ResourceExhaustedError(
                f"{cap} verify batches are in flight, the most this server takes at once; "
                "retry shortly",
                limit="batches_in_flight",
                value=cap,
            )
        return None

    def refuse(self, handler: Any, error: CapgateError) -> Any:
        """A handler answering ``error`` at once, without reading the request."""

        async def refuse(
            request_iterator: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> None:
            await abort(context, error)

        return grpc.stream_stream_rpc_method_handler(
            refuse, request_deserializer=None, response_serializer=handler.response_serializer
        )

    def admit(self, handler: Any, method: str, principal: Principal) -> Any:
        """``handler`` with its messages bounded, counted in flight, and ``CALLER`` set."""
        limit = self._limits.message_limit(method)
        parse = _bounded(handler.request_deserializer, limit, method)
        pid, batch = principal.id, method == _BATCH
        meter, name, started = self._meter, method.rsplit("/", 1)[-1], [0.0]

        def enter() -> CapgateError | None:
            error = self.busy(principal, method)
            if error is not None:
                return error
            self._in_flight[pid] = self._in_flight.get(pid, 0) + 1
            self._batches += batch
            CALLER.set(principal)
            if meter is not None:
                started[0] = meter.clock()
            return None

        def leave(context: Any) -> None:
            n = self._in_flight.pop(pid) - 1
            if n:
                self._in_flight[pid] = n
            self._batches -= batch
            if meter is not None:
                meter.observe(name, _status(context), meter.clock() - started[0])

        return _wrap(handler, parse, limit, method, enter, leave)

    def open(self, handler: Any, method: str) -> Any:
        """The health service: open to anyone, messages bounded, watches capped."""
        limit = self._limits.message_limit(method)
        parse = _bounded(handler.request_deserializer, limit, method)
        if method != _WATCH:
            return _wrap(handler, parse, limit, method, _nothing, _left)

        def enter() -> CapgateError | None:
            cap = self._limits.health_watches
            if self._watches >= cap:
                return ResourceExhaustedError(
                    f"{cap} health watches are open, the most this server allows; "
                    "use Health/Check or retry later",
                    limit="health_watches",
                    value=cap,
                )
            self._watches += 1
            return None

        def leave(context: Any) -> None:
            self._watches -= 1

        return _wrap(handler, parse, limit, method, enter, leave)


def _nothing() -> CapgateError | None:
    return None


def _bounded(
    deserializer: Callable[[bytes], Any] | None, limit: int, method: str
) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        if len(data) > limit:
            return _Oversize(len(data))
        return deserializer(data) if deserializer is not None else data

    return parse


def _too_large(method: str, size: int, limit: int) -> ResourceExhaustedError:
    return ResourceExhaustedError(
        f"{method.rsplit('/', 1)[-1]} message is {size} bytes, over this server's limit of {limit}",
        limit="message_bytes",
        value=limit,
        size=size,
    )


def _status(context: Any) -> str:
    code = context.code()
    return "OK" if code is None else getattr(code, "name", str(code))


def _left(context: Any) -> None:
    """Nothing to undo when a call ends."""


def _wrap(
    handler: Any,
    parse: Callable[[bytes], Any],
    limit: int,
    method: str,
    enter: Callable[[], CapgateError | None],
    leave: Callable[[Any], None],
) -> Any:
    """The same kind of handler, with ``enter``/``leave`` around its behaviour and every
    request message checked against ``limit`` before the behaviour sees it."""
    kw = {"request_deserializer": parse, "response_serializer": handler.response_serializer}

    async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for r in requests:
            if type(r) is _Oversize:
                raise _too_large(method, r.size, limit)
            yield r

    async def start(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        error = _too_large(method, request.size, limit) if type(request) is _Oversize else enter()
        if error is not None:
            await abort(context, error)

    if handler.request_streaming or handler.response_streaming:
        return _streaming(handler, kw, checked, start, leave)
    inner = handler.unary_unary

    async def unary(request: Any, context: Any) -> Any:  # the hot path: start() inlined
        error = _too_large(method, request.size, limit) if type(request) is _Oversize else enter()
        if error is not None:
            await abort(context, error)
        try:
            return await inner(request, context)
        finally:
            leave(context)

    return grpc.unary_unary_rpc_method_handler(unary, **kw)


def _streaming(
    handler: Any,
    kw: dict[str, Any],
    checked: Callable[[AsyncIterator[Any]], AsyncIterator[Any]],
    start: Callable[[Any, Any], Awaitable[None]],
    leave: Callable[[Any], None],
) -> Any:
    """``_wrap`` for the streaming kinds. A behaviour is an async generator or a
    coroutine writing with ``context.write`` (grpc tells them apart by their
    function), so the wrapper is of the same sort as the one it wraps."""
    inner = handler.unary_stream or handler.stream_unary or handler.stream_stream
    streaming_in = handler.request_streaming

    if inspect.isasyncgenfunction(inner):

        async def behaviour(request: Any, context: Any) -> Any:
            await start(None if streaming_in else request, context)
            try:
                async for response in inner(checked(request) if streaming_in else request, context):
                    yield response
            finally:
                leave(context)
    else:

        async def behaviour(request: Any, context: Any) -> Any:  # type: ignore[misc]
            await start(None if streaming_in else request, context)
            try:
                return await inner(checked(request) if streaming_in else request, context)
            finally:
                leave(context)

    if streaming_in and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(behaviour, **kw)
    if streaming_in:
        return grpc.stream_unary_rpc_method_handler(behaviour, **kw)
    return grpc.unary_stream_rpc_method_handler(behaviour, **kw)
