"""What every servicer shares: the wrapper that turns errors into status codes.

A capgate error becomes its status (``_status``, with the error's class in the
trailer); anything else is logged and answered INTERNAL, never a traceback on
the wire.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from capgate import CapgateError
from capgate_server._status import abort

__all__ = ["rpc", "streaming_rpc"]

log = logging.getLogger("capgate.rpc")
R = TypeVar("R")


def rpc(fn: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Run a unary servicer method; capgate errors become their status, others INTERNAL."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> R:
        try:
            return await fn(self, request, context)
        except CapgateError as e:
            await abort(context, e)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:
            log.exception("internal error in %s", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable")  # pragma: no cover - abort() raises

    return wrapper


def streaming_rpc(fn: Callable[..., AsyncIterator[R]]) -> Callable[..., AsyncIterator[R]]:
    """The same for a method that streams its replies."""

    @functools.wraps(fn)
    async def wrapper(
        self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[R]:
        try:
            async for reply in fn(self, request, context):
                yield reply
        except CapgateError as e:
            await abort(context, e)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception:
            log.exception("internal error in %s", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return wrapper
