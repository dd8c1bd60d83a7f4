"""``Admission``: what a call may cost, decided before its servicer runs.

The interceptor hands every call here, once it knows who is calling:

- a refused call (no or a bad credential, a role that may not call the method,
  too many calls in flight) is answered by a handler that never reads the
  request body, so an unauthenticated sender cannot make the server parse it;
- every message is bounded by its method's limit
  (``ResourceLimits.message_limit``): a larger one is refused with
  RESOURCE_EXHAUSTED instead of being parsed;
- one principal has at most ``calls_per_principal`` calls in flight, and at
  most ``health_watches`` health watches (the one long-lived call open to
  anyone) are open at once.

grpc itself caps all calls in flight (``max_concurrent_rpcs``) and the streams
of one connection (``streams_per_connection``); see ``CapgateServer``.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from capgate import CapgateError, ResourceExhaustedError
from capgate_server._limits import ResourceLimits
from capgate_server._status import abort
from capgate_server.store import Principal

__all__ = ["CALLER", "Admission"]

CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("capgate_caller")
_WATCH = "/grpc.health.v1.Health/Watch"


class _Oversize:
    """Stands in for a message over its method's limit, which is never parsed."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


class Admission:
    def __init__(self, limits: ResourceLimits) -> None:
        self._limits = limits
        self._in_flight: dict[str, int] = {}  # principal id -> calls being served
        self._watches = 0

    def busy(self, principal: Principal) -> ResourceExhaustedError | None:
        """The error for a principal already at its cap of calls in flight, or None."""
        cap = self._limits.calls_per_principal
        if self._in_flight.get(principal.id, 0) >= cap:
            return ResourceExhaustedError(
                f"principal {principal.id!r} has {cap} calls in flight, the most it may; "
                "retry when some have finished", limit="calls_per_principal", value=cap)
        return None

    def refuse(self, handler: Any, error: CapgateError) -> Any:
        """A handler answering ``error`` at once, without reading the request."""

        async def refuse(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
            await abort(context, error)

        return grpc.stream_stream_rpc_method_handler(
            refuse, request_deserializer=None, response_serializer=handler.response_serializer)

    def admit(self, handler: Any, method: str, principal: Principal) -> Any:
        """``handler`` with its messages bounded, counted in flight, and ``CALLER`` set."""
        limit = self._limits.message_limit(method)
        parse = _bounded(handler.request_deserializer, limit, method)
        pid = principal.id

        def enter() -> CapgateError | None:
            n = self._in_flight.get(pid, 0)
            if n >= self._limits.calls_per_principal:
                return self.busy(principal)
            self._in_flight[pid] = n + 1
            CALLER.set(principal)
            return None

        def leave() -> None:
            n = self._in_flight.pop(pid) - 1
            if n:
                self._in_flight[pid] = n

        return _wrap(handler, parse, limit, method, enter, leave)

    def open(self, handler: Any, method: str) -> Any:
        """The health service: open to anyone, messages bounded, watches capped."""
        limit = self._limits.message_limit(method)
        parse = _bounded(handler.request_deserializer, limit, method)
        if method != _WATCH:
            return _wrap(handler, parse, limit, method, _nothing, _nothing)

        def enter() -> CapgateError | None:
            cap = self._limits.health_watches
            if self._watches >= cap:
                return ResourceExhaustedError(
                    f"{cap} health watches are open, the most this server allows; "
                    "use Health/Check or retry later", limit="health_watches", value=cap)
            self._watches += 1
            return None

        def leave() -> None:
            self._watches -= 1

        return _wrap(handler, parse, limit, method, enter, leave)


def _nothing() -> CapgateError | None:
    return None


def _bounded(deserializer: Callable[[bytes], Any] | None, limit: int,
             method: str) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        if len(data) > limit:
            return _Oversize(len(data))
        return deserializer(data) if deserializer is not None else data

    return parse


def _too_large(method: str, size: int, limit: int) -> ResourceExhaustedError:
    return ResourceExhaustedError(
        f"{method.rsplit('/', 1)[-1]} message is {size} bytes, over this server's limit of "
        f"{limit}", limit="message_bytes", value=limit, size=size)


def _wrap(handler: Any, parse: Callable[[bytes], Any], limit: int, method: str,
          enter: Callable[[], CapgateError | None], leave: Callable[[], None]) -> Any:
    """The same kind of handler, with ``enter``/``leave`` around its behaviour and every
    request message checked against ``limit`` before the behaviour sees it."""
    kw = {"request_deserializer": parse, "response_serializer": handler.response_serializer}

    async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for r in requests:
            if type(r) is _Oversize:
                raise _too_large(method, r.size, limit)
            yield r

    async def start(request: Any, context: grpc.aio.ServicerContext) -> None:
        error = _too_large(method, request.size, limit) if type(request) is _Oversize else enter()
        if error is not None:
            await abort(context, error)

    if handler.request_streaming:
        inner_stream = handler.stream_stream or handler.stream_unary

        if handler.response_streaming:
            async def streams(requests: Any, context: Any) -> AsyncIterator[Any]:
                await start(None, context)
                try:
                    async for response in inner_stream(checked(requests), context):
                        yield response
                finally:
                    leave()

            return grpc.stream_stream_rpc_method_handler(streams, **kw)

        async def stream_in(requests: Any, context: Any) -> Any:
            await start(None, context)
            try:
                return await inner_stream(checked(requests), context)
            finally:
                leave()

        return grpc.stream_unary_rpc_method_handler(stream_in, **kw)
    if handler.response_streaming:
        inner_out = handler.unary_stream

        async def stream_out(request: Any, context: Any) -> AsyncIterator[Any]:
            await start(request, context)
            try:
                async for response in inner_out(request, context):
                    yield response
            finally:
                leave()

        return grpc.unary_stream_rpc_method_handler(stream_out, **kw)
    inner = handler.unary_unary

    async def unary(request: Any, context: Any) -> Any:  # the hot path: start() inlined
        error = _too_large(method, request.size, limit) if type(request) is _Oversize else enter()
        if error is not None:
            await abort(context, error)
        try:
            return await inner(request, context)
        finally:
            leave()

    return grpc.unary_unary_rpc_method_handler(unary, **kw)
