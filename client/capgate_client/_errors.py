"""gRPC errors back into capgate's exceptions (the server's mapping, reversed)."""

from __future__ import annotations

from typing import Any

import grpc

import capgate
from capgate import (
    AuthenticationError,
    CapgateError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnavailableError,
)

__all__ = ["from_rpc_error"]

_BY_NAME: dict[str, type[CapgateError]] = {
    name: cls
    for name in capgate.__all__
    if isinstance(cls := getattr(capgate, name), type) and issubclass(cls, CapgateError)
}
# When the server named no exception (a proxy, a deadline, a transport failure).
_BY_CODE: dict[grpc.StatusCode, type[CapgateError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
}


def from_rpc_error(error: grpc.RpcError, target: str | None = None) -> CapgateError:
    """The capgate exception a failed call stands for: the one the server named in the
    ``capgate-error`` trailer, else the nearest one for the status code. A server that
    cannot be reached at all (``target``) is said so in plain words."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(code)
    name = ""
    # (key, value) pairs: plain tuples from grpc.aio, _Metadatum tuples from grpc
    trailing: Any = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == "capgate-error" and isinstance(value, str):
            name = value
    cls = _BY_NAME.get(name) or _BY_CODE.get(code, CapgateError)
    if not name and code is grpc.StatusCode.UNAVAILABLE and _UNREACHABLE in details:
        why = "connection refused" if "refused" in details else details.rsplit(": ", 1)[-1]
        where = f" at {target}" if target else ""
        return UnavailableError(
            f"cannot reach the capgate server{where} ({why}): is it running? "
            "(choose another with --server or CAPGATE_SERVER)",
            status=code.name,
            detail=details,
        )
    return cls(details, status=code.name if code else "UNKNOWN")


_UNREACHABLE = "failed to connect to all addresses"
