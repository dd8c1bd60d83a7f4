"""Typed results of the client SDK (plain dataclasses, not protobuf)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from capgate import ApprovalRule

__all__ = [
    "AgentInfo",
    "ApprovalInfo",
    "ApprovalVoteInfo",
    "AuditCheckpoint",
    "AuditRecord",
    "Credential",
    "HopStatus",
    "InspectResult",
    "IssuedToken",
    "KeyInfo",
    "LedgerCheck",
    "PrincipalInfo",
    "Proof",
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
    require_proof: bool = False  # its tokens need a proof of possession
    rate: str = ""  # "N/PERIOD": allowed requests it takes part in, per period; "": no limit
    approvals: tuple[ApprovalRule, ...] = ()  # requests that need a person's approval


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
class Proof:
    """A proof of possession as a service received it: the ``capgate-proof`` value and
    the request it came with, as the service saw it (``method``: the HTTP method, "POST"
    for gRPC, "tools/call" for MCP; ``target``: the path with query, the gRPC method,
    the MCP tool)."""

    text: str
    method: str
    target: str


@dataclass(frozen=True)
class VerifyResult:
    allowed: bool
    code: str
    reason: str
    caveat: str = ""
    token_id: str = ""
    chain: tuple[str, ...] = ()
    proven: bool = False  # allowed, and the presenter proved possession of its key
    counted: bool = False  # allowed, and counted against a budget: not to be reused

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
    """One audit record; a verify record stands for ``count`` identical decisions."""

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
    action: str = ""
    resource: str = ""
    presenter: str = ""
    count: int = 1
    last_at: str = ""
    caveat: str = ""
    ctx_keys: tuple[str, ...] = ()
    replica: str = ""
    pos: int = 0  # its place in the sealed ledger (0: not sealed yet)
    digest: str = ""


@dataclass(frozen=True)
class AuditCheckpoint:
    """The ledger's head at ``pos``, signed; keep it off the machine as JSON."""

    pos: int
    digest: str
    at: float
    key_id: str
    public_key: str
    signature: str

    def to_json(self) -> str:
        import json

        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AuditCheckpoint:
        import json

        d = json.loads(text)
        return cls(
            int(d["pos"]),
            str(d["digest"]),
            float(d["at"]),
            str(d["key_id"]),
            str(d["public_key"]),
            str(d["signature"]),
        )


@dataclass(frozen=True)
class LedgerCheck:
    """What verifying the ledger found: intact, or where it first breaks and why."""

    intact: bool
    break_pos: int
    reason: str
    start: int
    head: int
    records: int
    checkpoints: int
    key_id: str


@dataclass(frozen=True)
class KeyInfo:
    id: str
    created_at: str
    retired_at: str
    signing: bool


@dataclass(frozen=True)
class ApprovalVoteInfo:
    approver: str
    approve: bool
    reason: str
    at: str


@dataclass(frozen=True)
class ApprovalInfo:
    """A request for approval and where it stands (``status``: pending, approved, denied,
    expired or used). ``discharges``: fetched with the token it is for, once approved;
    pass them to ``verify`` with that token, for exactly this request."""

    id: str
    status: str
    token_id: str
    chain: tuple[str, ...]
    requested_by: str
    presenter: str
    action: str
    resource: str
    ctx: Mapping[str, str]
    request_digest: str
    conditions: tuple[str, ...]
    approvals_needed: int
    votes: tuple[ApprovalVoteInfo, ...]
    note: str
    created_at: str
    wait_until: str
    expires: str
    uses: int
    used: int
    reason: str = ""
    discharges: tuple[str, ...] = field(default=())
