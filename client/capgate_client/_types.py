"""Typed results of the client SDK (plain dataclasses, not protobuf)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "AgentInfo",
    "AuditRecord",
    "Credential",
    "HopStatus",
    "InspectResult",
    "IssuedToken",
    "KeyInfo",
    "PrincipalInfo",
    "RevokeResult",
    "TreeNode",
    "VerifyResult",
]


@dataclass(frozen=True)
class AgentInfo:
    id: str
    owner: str
    description: str
    status: str
    ceiling: tuple[str, ...]
    max_ttl: int
    max_depth: int
    epoch: int
    revoked_before: str
    public_keys: tuple[str, ...]
    created_at: str


@dataclass(frozen=True)
class PrincipalInfo:
    """A principal as the server knows it: admin, service or agent."""

    id: str
    role: str
    created_at: str
    disabled: bool


@dataclass(frozen=True)
class Credential:
    principal: str
    role: str
    credential: str


@dataclass(frozen=True)
class IssuedToken:
    token: str
    token_id: str
    expires: str
    delegation_id: str = ""


@dataclass(frozen=True)
class VerifyResult:
    allowed: bool
    code: str
    reason: str
    caveat: str = ""
    token_id: str = ""
    chain: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class HopStatus:
    agent: str
    delegation_id: str
    at: str
    offline: bool
    restrictions: tuple[str, ...]
    revoked: bool
    agent_status: str


@dataclass(frozen=True)
class InspectResult:
    token_id: str
    key_id: str
    issued_at: str
    expires: str
    caveats: tuple[str, ...]
    lineage: tuple[str, ...]
    chain: tuple[HopStatus, ...]
    signature_valid: bool
    revoked: bool
    status: str


@dataclass(frozen=True)
class RevokeResult:
    id: str
    newly_revoked: bool
    expires: str


@dataclass(frozen=True)
class TreeNode:
    id: str
    agent: str
    issued_by: str
    at: str
    revoked: bool
    restrictions: tuple[str, ...]
    children: tuple[TreeNode, ...] = field(default=())
    truncated: bool = False  # the server left out nodes below this one (bounded reply)


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: str
    principal: str
    kind: str
    subject: str
    ok: bool
    code: str
    reason: str
    chain: tuple[str, ...]
    detail: str


@dataclass(frozen=True)
class KeyInfo:
    id: str
    created_at: str
    retired_at: str
    signing: bool
