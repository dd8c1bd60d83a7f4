"""The one mapping from capgate's exceptions to gRPC status codes.

The exception's class name travels in the ``capgate-error`` trailing metadata,
so the client SDK raises the very same exception type (``capgate_client``
maps it back in ``_errors.py``).
"""

from __future__ import annotations

from typing import Any, NoReturn

import grpc

from capgate import (
    AlreadyExistsError,
    AuthenticationError,
    CapgateError,
    CaveatSyntaxError,
    FailedPreconditionError,
    InvalidArgumentError,
    MalformedTokenError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
)

__all__ = ["ERROR_METADATA_KEY", "MAX_MESSAGE", "abort", "status_for", "status_message"]

ERROR_METADATA_KEY = "capgate-error"

_CODES: dict[type[CapgateError], grpc.StatusCode] = {
    MalformedTokenError: grpc.StatusCode.INVALID_ARGUMENT,
    CaveatSyntaxError: grpc.StatusCode.INVALID_ARGUMENT,
    InvalidArgumentError: grpc.StatusCode.INVALID_ARGUMENT,
    AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    NotFoundError: grpc.StatusCode.NOT_FOUND,
    AlreadyExistsError: grpc.StatusCode.ALREADY_EXISTS,
    FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
}


def status_for(error: CapgateError) -> grpc.StatusCode:
    """The status code for ``error`` (its nearest mapped class; INTERNAL if none)."""
    for cls in type(error).__mro__:
        code = _CODES.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


# A status message travels percent-encoded in a trailer, and gRPC clients drop a
# call whose trailers pass 8 KiB (the status is then lost, replaced by a transport
# error). A message that quotes what the caller sent is cut to this many characters:
# at most 12 bytes each once encoded, the whole within the bound.
MAX_MESSAGE = 500


def status_message(error: CapgateError) -> str:
    """``error``'s message, cut short if it is long (it may quote the request)."""
    message = error.message
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE]}… ({len(message) - MAX_MESSAGE:,} more characters)"


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: CapgateError) -> NoReturn:
    """End the call with ``error``'s status, message and name (for the SDK)."""
    await context.abort(
        status_for(error),
        status_message(error),
        trailing_metadata=((ERROR_METADATA_KEY, type(error).__name__),),
    )
    raise AssertionError("unreachable")  # pragma: no cover - abort() raises
