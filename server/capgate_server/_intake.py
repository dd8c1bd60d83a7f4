"""``Intake``: which calls this server takes, and draining them at shutdown.

grpc.aio's ``server.stop(grace)`` lets the calls it has started finish, but the
calls its transport has accepted and not yet handed to the application are
cancelled at once: under load, a client sees CANCELLED with most of the grace
left and cannot tell whether its revoke ran. So capgate drains before it stops:
``close()`` refuses every call that starts from then on with UNAVAILABLE ("not
executed"), calls already running finish, and ``drained()`` returns once none is
running and none has arrived for a moment; only then is the gRPC server stopped.
A stream ends between messages (what it has not read yet never runs), at once if
it is waiting for its next request. Health checks are always answered, so load
balancers see NOT_SERVING.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from capgate import UnavailableError
from capgate_server._status import abort

__all__ = ["NOT_EXECUTED", "Intake"]

NOT_EXECUTED = "capgate is shutting down: this call was not executed; retry it elsewhere"
_ALWAYS = "/grpc.health.v1.Health/"
_QUIET = 0.1  # seconds without a new call before the transport may be shut


class Intake(grpc.aio.ServerInterceptor):
    """Counts running calls; once closed, refuses new ones as not executed."""

    def __init__(self) -> None:
        self.running = 0
        self._closing = asyncio.Event()
        self._last_arrival = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    def close(self) -> None:
        """Refuse every call that starts from now on; end streams between messages."""
        self._closing.set()

    async def drained(self, deadline: float) -> bool:
        """Wait (until the monotonic ``deadline``) for no call running and none arriving
        for a moment; True if drained in time."""
        while self.running or time.monotonic() - self._last_arrival < _QUIET:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_QUIET / 4)
        return True

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(_ALWAYS):
            return handler
        self._last_arrival = time.monotonic()
        return self._admitted(handler)

    def _admitted(self, handler: Any) -> Any:
        """The same handler, refused if it starts once closed, counted while it runs."""
        if handler.request_streaming or handler.response_streaming:
            inner_stream = handler.stream_stream or handler.unary_stream

            async def streaming(request: Any, context: Any) -> AsyncIterator[Any]:
                if self.closed:
                    await _refuse(context)
                self.running += 1
                responses = inner_stream(request, context).__aiter__()
                closing = asyncio.ensure_future(self._closing.wait())
                try:
                    while True:
                        step = asyncio.ensure_future(responses.__anext__())
                        await asyncio.wait({step, closing}, return_when=asyncio.FIRST_COMPLETED)
                        if not step.done():  # closed while the stream waits for a request
                            step.cancel()
                            await _refuse(context)
                        try:
                            response = step.result()
                        except StopAsyncIteration:
                            return
                        yield response
                finally:
                    closing.cancel()
                    self.running -= 1

            return _same_kind(handler, streaming)
        inner = handler.unary_unary or handler.stream_unary

        async def unary(request: Any, context: Any) -> Any:
            if self.closed:
                await _refuse(context)
            self.running += 1
            try:
                return await inner(request, context)
            finally:
                self.running -= 1

        return _same_kind(handler, unary)


async def _refuse(context: grpc.aio.ServicerContext[Any, Any]) -> None:
    await abort(context, UnavailableError(NOT_EXECUTED))


def _same_kind(handler: Any, behaviour: Any) -> Any:
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(behaviour, **kw)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(behaviour, **kw)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(behaviour, **kw)
    return grpc.unary_unary_rpc_method_handler(behaviour, **kw)
