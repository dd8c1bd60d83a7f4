"""capgate client SDK: typed blocking and asyncio clients over the gRPC API, the
agent's side of presenting a token (``Presenter``), and guards that put capgate in
front of a service (gRPC interceptors, ASGI middleware, a decorator; the MCP tool
guard is ``capgate_client.mcp``).

Offline work (attenuating, delegating with an Ed25519 key, inspecting) needs
no server: use the ``capgate`` core package (re-exported here for convenience).
"""

from capgate import Token, delegate_offline
from capgate_client._asgi import CapgateMiddleware
from capgate_client._calls import TLS
from capgate_client._client import AsyncClient, Client, VerifyItem
from capgate_client._errors import from_rpc_error
from capgate_client._governance import (
    AccessReview,
    Alert,
    GovernancePolicyInfo,
    GrantReview,
    UsageInfo,
)
from capgate_client._grpc_guard import AsyncGrpcGuard, GrpcGuard, mtls_presenter
from capgate_client._guard import (
    Access,
    AsyncGuard,
    Guard,
    Presentation,
    Rule,
    current_presentation,
    presenting,
)
from capgate_client._presenting import Presenter
from capgate_client._types import (
    AgentInfo,
    ApprovalInfo,
    ApprovalVoteInfo,
    AuditCheckpoint,
    AuditRecord,
    Credential,
    HopStatus,
    InspectResult,
    IssuedToken,
    KeyInfo,
    LedgerCheck,
    PrincipalInfo,
    Proof,
    RevokeResult,
    TreeNode,
    VerifyResult,
)

__all__ = [
    "TLS",
    "Access",
    "AccessReview",
    "AgentInfo",
    "Alert",
    "ApprovalInfo",
    "ApprovalVoteInfo",
    "AsyncClient",
    "AsyncGrpcGuard",
    "AsyncGuard",
    "AuditCheckpoint",
    "AuditRecord",
    "CapgateMiddleware",
    "Client",
    "Credential",
    "GovernancePolicyInfo",
    "GrantReview",
    "GrpcGuard",
    "Guard",
    "HopStatus",
    "InspectResult",
    "IssuedToken",
    "KeyInfo",
    "LedgerCheck",
    "Presentation",
    "Presenter",
    "PrincipalInfo",
    "Proof",
    "RevokeResult",
    "Rule",
    "Token",
    "TreeNode",
    "UsageInfo",
    "VerifyItem",
    "VerifyResult",
    "current_presentation",
    "delegate_offline",
    "from_rpc_error",
    "mtls_presenter",
    "presenting",
]
