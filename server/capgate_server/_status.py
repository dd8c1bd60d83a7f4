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

__all__ = ["ERROR_METADATA_KEY", "abort", "status_for"]

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


async def abort(context: grpc.aio.ServicerContext[Any, Any], error: CapgateError) -> NoReturn:
    """End the call with ``error``'s status, message and name (for the SDK)."""
    await context.abort(
        status_for(error),
        error.message,
        trailing_metadata=((ERROR_METADATA_KEY, type(error).__name__),),
    )
    raise AssertionError("unreachable")  # pragma: no cover - abort() raises
