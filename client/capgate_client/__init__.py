"""capgate client SDK: typed blocking and asyncio clients over the gRPC API.

Offline work (attenuating, delegating with an Ed25519 key, inspecting) needs
no server: use the ``capgate`` core package (re-exported here for convenience).
"""

from capgate import Token, delegate_offline
from capgate_client._calls import TLS
from capgate_client._client import AsyncClient, Client, VerifyItem
from capgate_client._errors import from_rpc_error
from capgate_client._types import (
    AgentInfo,
    AuditRecord,
    Credential,
    HopStatus,
    InspectResult,
    IssuedToken,
    KeyInfo,
    PrincipalInfo,
    RevokeResult,
    TreeNode,
    VerifyResult,
)

__all__ = [
    "TLS",
    "AgentInfo",
    "AsyncClient",
    "AuditRecord",
    "Client",
    "Credential",
    "HopStatus",
    "InspectResult",
    "IssuedToken",
    "KeyInfo",
    "PrincipalInfo",
    "RevokeResult",
    "Token",
    "TreeNode",
    "VerifyItem",
    "VerifyResult",
    "delegate_offline",
    "from_rpc_error",
]
