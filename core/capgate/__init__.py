"""capgate core: capability tokens (macaroons) for AI agents.

Parsing, attenuation, delegation and verification; no network, no storage.
"""

from capgate._agent import Agent, AgentStatus, Directory, check_id
from capgate._attenuation import restriction_caveats
from capgate._caveats import (
    ActionCaveat,
    AgentCaveat,
    Caveat,
    CtxCaveat,
    DelegateCaveat,
    DepthCaveat,
    DidCaveat,
    ExpiresCaveat,
    NotBeforeCaveat,
    Request,
    ResourceCaveat,
    parse_caveat,
)
from capgate._clock import (
    Clock,
    format_duration,
    format_timestamp,
    parse_duration,
    parse_timestamp,
    system_clock,
)
from capgate._codec import DEFAULT_LIMITS, Limits, RawCaveat, RawMacaroon
from capgate._delegation import (
    MAX_DEPTH,
    append_server_delegation,
    delegate_offline,
    delegation_id,
    delegation_message,
    load_private_key,
    load_public_key,
    new_private_key_pem,
    public_key_id,
    server_proof,
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
    ResourceExhaustedError,
    UnavailableError,
)
from capgate._grants import Ceiling, Glob, Grant, resource_problem
from capgate._inspect import HopInfo, TokenDescription, describe, hop_expiry
from capgate._revocation import RevocationSet
from capgate._token import Token, TokenIdentifier, new_token_id
from capgate._verifier import Chain, Decision, DenyCode, Hop, Verifier

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_DEPTH",
    "ActionCaveat",
    "Agent",
    "AgentCaveat",
    "AgentStatus",
    "AlreadyExistsError",
    "AuthenticationError",
    "CapgateError",
    "Caveat",
    "CaveatSyntaxError",
    "Ceiling",
    "Chain",
    "Clock",
    "CtxCaveat",
    "Decision",
    "DelegateCaveat",
    "DenyCode",
    "DepthCaveat",
    "DidCaveat",
    "Directory",
    "ExpiresCaveat",
    "FailedPreconditionError",
    "Glob",
    "Grant",
    "Hop",
    "HopInfo",
    "InvalidArgumentError",
    "Limits",
    "MalformedTokenError",
    "NotBeforeCaveat",
    "NotFoundError",
    "PermissionDeniedError",
    "RawCaveat",
    "RawMacaroon",
    "Request",
    "ResourceCaveat",
    "ResourceExhaustedError",
    "RevocationSet",
    "Token",
    "TokenDescription",
    "TokenIdentifier",
    "UnavailableError",
    "Verifier",
    "__version__",
    "append_server_delegation",
    "check_id",
    "delegate_offline",
    "delegation_id",
    "delegation_message",
    "describe",
    "format_duration",
    "format_timestamp",
    "hop_expiry",
    "load_private_key",
    "load_public_key",
    "new_private_key_pem",
    "new_token_id",
    "parse_caveat",
    "parse_duration",
    "parse_timestamp",
    "public_key_id",
    "resource_problem",
    "restriction_caveats",
    "server_proof",
    "system_clock",
]
