"""The one exception tree of capgate.

Every error a caller can see is one of these; each carries structured context
(``.context``) next to its message::

    CapgateError
    ├── InvalidArgumentError      a bad grant, resource, duration, id or request field
    │   ├── MalformedTokenError   token text/bytes cannot be parsed (or is too large)
    │   └── CaveatSyntaxError     a caveat does not follow the caveat grammar
    ├── AuthenticationError       missing or unknown credential
    ├── PermissionDeniedError     authenticated, but not allowed (role, ceiling, max TTL…)
    ├── NotFoundError             no such agent, token or key
    ├── AlreadyExistsError        an id is taken
    ├── FailedPreconditionError   the request is valid but the state forbids it
    ├── ResourceExhaustedError    a bound on size, work or concurrency was reached
    └── UnavailableError          the store is unreachable or the replica is stale

A *deny* from the verifier is not an exception: it is a ``Decision`` with a reason.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyExistsError",
    "AuthenticationError",
    "CapgateError",
    "CaveatSyntaxError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "MalformedTokenError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnavailableError",
]


class CapgateError(Exception):
    """Base of every capgate error; ``context`` holds the structured details."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = context

    def __str__(self) -> str:
        return self.message


class InvalidArgumentError(CapgateError):
    """A request field (grant, resource, duration, id…) is not well formed."""


class MalformedTokenError(InvalidArgumentError):
    """The token cannot be parsed: bad encoding, bad structure or over a size limit."""


class CaveatSyntaxError(InvalidArgumentError):
    """A caveat's text does not follow the caveat grammar."""


class AuthenticationError(CapgateError):
    """The caller did not present a valid credential."""


class PermissionDeniedError(CapgateError):
    """The caller is known but may not do this (role, ceiling, TTL, holder…)."""


class NotFoundError(CapgateError):
    """The named agent, token or key does not exist."""


class AlreadyExistsError(CapgateError):
    """The id is already taken."""


class FailedPreconditionError(CapgateError):
    """The request is valid, but the current state does not allow it."""


class ResourceExhaustedError(CapgateError):
    """A bound on what one request or principal may cost was reached: message bytes,
    new caveats in one call, calls or streams in flight. Retrying later, or with a
    smaller request, can succeed; ``context`` names the limit."""


class UnavailableError(CapgateError):
    """A dependency (the store, or a replica's freshness) is not available."""
