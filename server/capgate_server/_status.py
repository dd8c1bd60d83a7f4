"""The one mapping from capgate's exceptions to gRPC status codes.

The exception's class name travels in the ``capgate-error`` trailing metadata,
so the client SDK raises the very same exception type (``capgate_client``
maps it back in ``_errors.py``).
"""

from __future__ import annotations

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
    UnavailableError,
)

__all__ = ["ERROR_METADATA_KEY", "status_for"]

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
    UnavailableError: grpc.StatusCode.UNAVAILABLE,
}


def status_for(error: CapgateError) -> grpc.StatusCode:
    """The status code for ``error`` (its nearest mapped class; INTERNAL if none)."""
    for cls in type(error).__mro__:
        code = _CODES.get(cls)  # type: ignore[arg-type]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL
