"""Every RPC as a ``Call``: which stub method, the request, and how to read the reply.

The sync and asyncio clients share these; they differ only in how a call runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc

from capgate import MAX_DEPTH, ApprovalRule, Grant, InvalidArgumentError
from capgate_client._types import (
    AgentInfo,
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
from capgate_proto.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    approval_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    governance_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
    verifier_pb2,
    verifier_pb2_grpc,
)

__all__ = ["TLS", "Call", "stubs_for", "verify_request", "verify_result"]


@dataclass(frozen=True)
class TLS:
    """TLS for the channel: the CA that signed the server, and a client pair for mTLS."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return path.read_bytes() if path else None

        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))

    def options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []


T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One RPC: the stub (``service``, ``method``), its request, and the reply's reading."""

    service: str
    method: str
    request: Any
    convert: Callable[[Any], T]


def stubs_for(channel: Any) -> dict[str, Any]:
    return {
        "agent": agent_pb2_grpc.AgentServiceStub(channel),
        "token": token_pb2_grpc.TokenServiceStub(channel),
        "verify": verifier_pb2_grpc.VerifierServiceStub(channel),
        "audit": audit_pb2_grpc.AuditServiceStub(channel),
        "keys": keys_pb2_grpc.KeyServiceStub(channel),
        "approval": approval_pb2_grpc.ApprovalServiceStub(channel),
        "governance": governance_pb2_grpc.GovernanceServiceStub(channel),
    }


# -- conversions -------------------------------------------------------------------------


def _grant_pb(text: str) -> common_pb2.Grant:
    g = Grant.parse(text)
    return common_pb2.Grant(actions=sorted(g.actions), resource=g.glob.pattern)


def _rules_pb(rules: Sequence[ApprovalRule]) -> list[common_pb2.ApprovalRule]:
    return [common_pb2.ApprovalRule(condition=r.condition, approvers=r.approvers) for r in rules]


def _agent(pb: Any) -> AgentInfo:
    return AgentInfo(
        id=pb.id,
        owner=pb.owner,
        description=pb.description,
        status=pb.status,
        ceiling=tuple(f"{','.join(g.actions)}:{g.resource}" for g in pb.ceiling),
        max_ttl=pb.max_ttl_seconds,
        max_depth=pb.max_depth,
        epoch=pb.epoch,
        revoked_before=pb.revoked_before,
        public_keys=tuple(k.key_id for k in pb.public_keys),
        created_at=pb.created_at,
        require_proof=pb.require_proof,
        rate=pb.rate,
        approvals=tuple(ApprovalRule(r.condition, r.approvers or 1) for r in pb.approvals),
    )


def _issued(pb: Any) -> IssuedToken:
    return IssuedToken(pb.token, pb.token_id, pb.expires, pb.delegation_id)


def verify_result(pb: Any) -> VerifyResult:
    return VerifyResult(
        pb.allowed,
        pb.code,
        pb.reason,
        pb.caveat,
        pb.token_id,
        tuple(pb.chain),
        pb.proven,
        pb.counted,
    )


def _tree(pb: Any) -> TreeNode:
    return TreeNode(
        pb.id,
        pb.agent,
        pb.issued_by,
        pb.at,
        pb.revoked,
        tuple(pb.restrictions),
        tuple(_tree(c) for c in pb.children),
        pb.truncated,
    )


def _inspect(pb: Any) -> InspectResult:
    return InspectResult(
        pb.token_id,
        pb.key_id,
        pb.issued_at,
        pb.expires,
        tuple(pb.caveats),
        tuple(pb.lineage),
        tuple(
            HopStatus(
                h.agent,
                h.delegation_id,
                h.at,
                h.offline,
                tuple(h.restrictions),
                h.revoked,
                h.agent_status,
            )
            for h in pb.chain
        ),
        pb.signature_valid,
        pb.revoked,
        pb.status,
    )


def audit_record(e: Any) -> AuditRecord:
    return AuditRecord(
        e.seq,
        e.at,
        e.principal,
        e.kind,
        e.subject,
        e.ok,
        e.code,
        e.reason,
        tuple(e.chain),
        e.detail,
        e.action,
        e.resource,
        e.presenter,
        e.count,
        e.last_at,
        e.caveat,
        tuple(e.ctx_keys),
        e.replica,
        e.pos,
        e.digest,
    )


def _audit(pb: Any) -> list[AuditRecord]:
    return [audit_record(e) for e in pb.events]


_OUTCOME = {
    None: audit_pb2.OUTCOME_ANY,
    True: audit_pb2.OUTCOME_OK,
    False: audit_pb2.OUTCOME_REFUSED,
}


def verify_request(
    token: str,
    action: str,
    resource: str,
    presenter: str = "",
    ctx: Mapping[str, str] | None = None,
    proof: Proof | None = None,
    discharges: Sequence[str] = (),
) -> verifier_pb2.VerifyRequest:
    if isinstance(discharges, str):
        raise InvalidArgumentError("discharges are a list of discharge macaroons")
    req = verifier_pb2.VerifyRequest(
        token=token,
        action=action,
        resource=resource,
        presenter=presenter,
        ctx=dict(ctx or {}),
        discharges=list(discharges),
    )
    if proof is not None:
        req.proof.text, req.proof.method, req.proof.target = proof.text, proof.method, proof.target
    return req


# -- the calls -------------------------------------------------------------------------------


def _max_depth(depth: int | None) -> int | None:
    """None (the field left out: the server's default, or unchanged), or a depth."""
    if depth is not None and (type(depth) is not int or not 0 <= depth <= MAX_DEPTH):
        raise InvalidArgumentError(f"max depth must be between 0 and {MAX_DEPTH}, not {depth!r}")
    return depth


def create_agent(
    agent_id: str,
    grants: Sequence[str],
    max_ttl: int | None,
    max_depth: int | None,
    owner: str,
    description: str,
    public_key: bytes | None,
    require_proof: bool = False,
    approvals: Sequence[ApprovalRule] = (),
    rate: str = "",
) -> Call[tuple[AgentInfo, str]]:
    req = agent_pb2.CreateAgentRequest(
        id=agent_id,
        ceiling=[_grant_pb(g) for g in grants],
        max_ttl_seconds=max_ttl or 0,
        max_depth=_max_depth(max_depth),
        owner=owner,
        description=description,
        public_key=public_key or b"",
        require_proof=require_proof,
        approvals=_rules_pb(approvals),
        rate=rate,
    )
    return Call("agent", "CreateAgent", req, lambda pb: (_agent(pb.agent), pb.credential))


def get_agent(agent_id: str) -> Call[AgentInfo]:
    return Call("agent", "GetAgent", agent_pb2.GetAgentRequest(id=agent_id), _agent)


def list_agents() -> Call[list[AgentInfo]]:
    return Call(
        "agent",
        "ListAgents",
        agent_pb2.ListAgentsRequest(),
        lambda pb: [_agent(a) for a in pb.agents],
    )


def update_agent(
    agent_id: str,
    grants: Sequence[str] | None,
    max_ttl: int | None,
    max_depth: int | None,
    description: str | None,
    require_proof: bool | None = None,
    approvals: Sequence[ApprovalRule] | None = None,
    rate: str | None = None,
) -> Call[AgentInfo]:
    req = agent_pb2.UpdateAgentRequest(
        id=agent_id,
        ceiling=[_grant_pb(g) for g in grants or ()],
        set_ceiling=grants is not None,
        max_ttl_seconds=max_ttl or 0,
        max_depth=_max_depth(max_depth),
        description=description or "",
        set_description=description is not None,
        require_proof=bool(require_proof),
        set_require_proof=require_proof is not None,
        approvals=_rules_pb(approvals or ()),
        set_approvals=approvals is not None,
        rate=rate or "",
        set_rate=rate is not None,
    )
    return Call("agent", "UpdateAgent", req, _agent)


def agent_action(method: str, agent_id: str) -> Call[AgentInfo]:
    """SuspendAgent, ResumeAgent, RevokeAllTokens."""
    return Call("agent", method, agent_pb2.AgentRef(id=agent_id), _agent)


def add_public_key(agent_id: str, public_key: bytes) -> Call[AgentInfo]:
    return Call(
        "agent",
        "AddPublicKey",
        agent_pb2.AddPublicKeyRequest(id=agent_id, public_key=public_key),
        _agent,
    )


def remove_public_key(agent_id: str, key_id: str) -> Call[AgentInfo]:
    return Call(
        "agent",
        "RemovePublicKey",
        agent_pb2.RemovePublicKeyRequest(id=agent_id, key_id=key_id),
        _agent,
    )


def create_principal(principal_id: str, role: str) -> Call[Credential]:
    return Call(
        "agent",
        "CreatePrincipal",
        agent_pb2.CreatePrincipalRequest(id=principal_id, role=role),
        lambda pb: Credential(pb.id, pb.role, pb.credential),
    )


def delete_agent(agent_id: str) -> Call[None]:
    return Call("agent", "DeleteAgent", agent_pb2.AgentRef(id=agent_id), lambda pb: None)


def _principal(pb: Any) -> PrincipalInfo:
    return PrincipalInfo(pb.id, pb.role, pb.created_at, pb.disabled)


def list_principals() -> Call[list[PrincipalInfo]]:
    return Call(
        "agent",
        "ListPrincipals",
        agent_pb2.ListPrincipalsRequest(),
        lambda pb: [_principal(p) for p in pb.principals],
    )


def principal_action(method: str, principal_id: str) -> Call[PrincipalInfo]:
    """DisablePrincipal, EnablePrincipal."""
    return Call("agent", method, agent_pb2.PrincipalRef(id=principal_id), _principal)


def rotate_credential(principal_id: str) -> Call[Credential]:
    return Call(
        "agent",
        "RotateCredential",
        agent_pb2.PrincipalRef(id=principal_id),
        lambda pb: Credential(pb.id, pb.role, pb.credential),
    )


def issue(grant: str, ttl: int | None, caveats: Iterable[str]) -> Call[IssuedToken]:
    return Call(
        "token",
        "IssueToken",
        token_pb2.IssueTokenRequest(
            grant=_grant_pb(grant), ttl_seconds=ttl or 0, caveats=list(caveats)
        ),
        _issued,
    )


def attenuate(
    token: str, caveats: Iterable[str], approvals: Sequence[ApprovalRule] = ()
) -> Call[IssuedToken]:
    return Call(
        "token",
        "AttenuateToken",
        token_pb2.AttenuateTokenRequest(
            token=token, caveats=list(caveats), approvals=_rules_pb(approvals)
        ),
        _issued,
    )


def delegate(
    token: str, to: str, caveats: Iterable[str], approvals: Sequence[ApprovalRule] = ()
) -> Call[IssuedToken]:
    return Call(
        "token",
        "DelegateToken",
        token_pb2.DelegateTokenRequest(
            token=token, to=to, caveats=list(caveats), approvals=_rules_pb(approvals)
        ),
        _issued,
    )


def inspect(token: str) -> Call[InspectResult]:
    return Call("token", "InspectToken", token_pb2.InspectTokenRequest(token=token), _inspect)


def revoke(token_or_id: str, reason: str) -> Call[RevokeResult]:
    text = token_or_id.strip()
    is_id = len(text) == 32 and all(c in "0123456789abcdefABCDEF" for c in text)
    if not text:
        raise InvalidArgumentError("give a token or a token/delegation id to revoke")
    req = (
        token_pb2.RevokeTokenRequest(id=text, reason=reason)
        if is_id
        else token_pb2.RevokeTokenRequest(token=text, reason=reason)
    )
    return Call(
        "token", "RevokeToken", req, lambda pb: RevokeResult(pb.id, pb.newly_revoked, pb.expires)
    )


def tree(node_id: str) -> Call[TreeNode]:
    return Call("token", "GetTokenTree", token_pb2.GetTokenTreeRequest(id=node_id), _tree)


def verify(
    token: str,
    action: str,
    resource: str,
    presenter: str,
    ctx: Mapping[str, str] | None,
    proof: Proof | None = None,
    discharges: Sequence[str] = (),
) -> Call[VerifyResult]:
    return Call(
        "verify",
        "Verify",
        verify_request(token, action, resource, presenter, ctx, proof, discharges),
        verify_result,
    )


def verify_batch(requests: Sequence[verifier_pb2.VerifyRequest]) -> Call[list[VerifyResult]]:
    return Call(
        "verify",
        "VerifyBatch",
        verifier_pb2.VerifyBatchRequest(requests=requests),
        lambda pb: [verify_result(r) for r in pb.responses],
    )


def audit(
    principal: str,
    agent: str,
    kind: str,
    token_id: str,
    after_seq: int,
    limit: int,
    newest_first: bool = False,
    code: str = "",
    ok: bool | None = None,
) -> Call[list[AuditRecord]]:
    return Call(
        "audit",
        "ListEvents",
        audit_pb2.ListEventsRequest(
            principal=principal,
            agent=agent,
            kind=kind,
            token_id=token_id,
            after_seq=after_seq,
            limit=limit,
            newest_first=newest_first,
            code=code,
            outcome=_OUTCOME[ok],
        ),
        _audit,
    )


def watch_request(
    after_pos: int,
    follow: bool,
    principal: str,
    agent: str,
    kind: str,
    code: str,
    ok: bool | None,
    since: float = 0.0,
) -> audit_pb2.WatchEventsRequest:
    return audit_pb2.WatchEventsRequest(
        after_pos=after_pos,
        follow=follow,
        principal=principal,
        agent=agent,
        kind=kind,
        code=code,
        outcome=_OUTCOME[ok],
        since=since,
    )


def _checkpoint(pb: Any) -> AuditCheckpoint:
    return AuditCheckpoint(pb.pos, pb.digest, pb.at, pb.key_id, pb.public_key, pb.signature)


def audit_checkpoint() -> Call[AuditCheckpoint]:
    return Call("audit", "GetCheckpoint", audit_pb2.GetCheckpointRequest(), _checkpoint)


def verify_ledger(since: int, against: AuditCheckpoint | None) -> Call[LedgerCheck]:
    req = audit_pb2.VerifyLedgerRequest(since=since)
    if against is not None:
        req.against.CopyFrom(
            audit_pb2.Checkpoint(
                pos=against.pos,
                digest=against.digest,
                at=against.at,
                key_id=against.key_id,
                public_key=against.public_key,
                signature=against.signature,
            )
        )
    return Call(
        "audit",
        "VerifyLedger",
        req,
        lambda pb: LedgerCheck(
            pb.intact,
            pb.break_pos,
            pb.reason,
            pb.start,
            pb.head,
            pb.records,
            pb.checkpoints,
            pb.key_id,
        ),
    )


def _key(pb: Any) -> KeyInfo:
    return KeyInfo(pb.id, pb.created_at, pb.retired_at, pb.signing)


def list_keys() -> Call[list[KeyInfo]]:
    return Call(
        "keys", "ListKeys", keys_pb2.ListKeysRequest(), lambda pb: [_key(k) for k in pb.keys]
    )


def rotate_key() -> Call[KeyInfo]:
    return Call("keys", "RotateKey", keys_pb2.RotateKeyRequest(), _key)


def retire_key(key_id: str) -> Call[KeyInfo]:
    return Call("keys", "RetireKey", keys_pb2.RetireKeyRequest(id=key_id), _key)
