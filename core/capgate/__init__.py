"""capgate core: capability tokens (macaroons) for AI agents.

Parsing, attenuation, delegation and verification; no network, no storage.
"""

from capgate._agent import Agent, AgentStatus, Directory, check_id
from capgate._attenuation import restriction_caveats
from capgate._caveats import Caveat, Request, parse_caveat
from capgate._clock import (
    Clock,
    format_duration,
    format_timestamp,
    parse_duration,
    parse_timestamp,
    system_clock,
)
from capgate._codec import DEFAULT_LIMITS, Limits
from capgate._delegation import (
    DelegateCaveat,
    DepthCaveat,
    append_server_delegation,
    delegate_offline,
    load_public_key,
    public_key_id,
)
from capgate._errors import (
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
from capgate._grants import Ceiling, Glob, Grant, resource_problem
from capgate._revocation import RevocationSet
from capgate._token import Token, TokenIdentifier, new_token_id
from capgate._verifier import Chain, Decision, DenyCode, Hop, Verifier

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIMITS",
    "Agent",
    "AgentStatus",
    "AlreadyExistsError",
    "AuthenticationError",
    "CapgateError",
    "Caveat",
    "CaveatSyntaxError",
    "Ceiling",
    "Chain",
    "Clock",
    "Decision",
    "DelegateCaveat",
    "DenyCode",
    "DepthCaveat",
    "Directory",
    "FailedPreconditionError",
    "Glob",
    "Grant",
    "Hop",
    "InvalidArgumentError",
    "Limits",
    "MalformedTokenError",
    "NotFoundError",
    "PermissionDeniedError",
    "Request",
    "RevocationSet",
    "Token",
    "TokenIdentifier",
    "UnavailableError",
    "Verifier",
    "__version__",
    "append_server_delegation",
    "check_id",
    "delegate_offline",
    "format_duration",
    "format_timestamp",
    "load_public_key",
    "new_token_id",
    "parse_caveat",
    "parse_duration",
    "parse_timestamp",
    "public_key_id",
    "resource_problem",
    "restriction_caveats",
    "system_clock",
]
