"""gRPC servicers: translate protobuf ↔ domain values and call the service layer.

Nothing else happens here; errors become status codes in ``_status``.
"""

from __future__ import annotations

from typing import Any

import grpc

from capgate import (
    Agent,
    AgentStatus,
    ApprovalRule,
    Decision,
    InvalidArgumentError,
    check_id,
    format_timestamp,
)
from capgate_proto.v1 import (
    agent_pb2,
    agent_pb2_grpc,
    approval_pb2,
    approval_pb2_grpc,
    audit_pb2,
    audit_pb2_grpc,
    common_pb2,
    governance_pb2,
    governance_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
    verifier_pb2,
)
from capgate_server._approvals import Approvals
from capgate_server._approvals_rpc import ApprovalServicer
from capgate_server._audit_rpc import AuditServicer, AuditTrail
from capgate_server._governance_rpc import GovernanceServicer
from capgate_server._interceptor import CALLER
from capgate_server._registry import AgentUpdate, Registry
from capgate_server._replica import Replica
from capgate_server._rotation import KeyRotation
from capgate_server._rpc import rpc
from capgate_server._tokens import Issued, Tokens, TreeNode
from capgate_server._verdicts import VerifierWire
from capgate_server._verification import Verification
from capgate_server.store import Principal, RootKeyRecord

__all__ = ["register_all"]


# -- conversions --------------------------------------------------------------------------


def grants_from(pb: Any) -> list[str]:
    out = []
    for g in pb:
        if not g.actions or not g.resource:
            raise InvalidArgumentError("a grant needs actions and a resource")
        for action in g.actions:  # each one name: joined below, a ',' or ':' would be read
            check_id(action, "action")  # as more actions, or as part of the resource
        out.append(f"{','.join(g.actions)}:{g.resource}")
    return out


def rules_from(pb: Any) -> list[ApprovalRule]:
    """Approval rules from the wire (a bad condition is INVALID_ARGUMENT)."""
    return [ApprovalRule(r.condition, r.approvers or 1) for r in pb]


def rules_to_pb(rules: Any) -> list[common_pb2.ApprovalRule]:
    return [common_pb2.ApprovalRule(condition=r.condition, approvers=r.approvers) for r in rules]


def agent_to_pb(a: Agent) -> common_pb2.Agent:
    return common_pb2.Agent(
        id=a.id,
        owner=a.owner,
        description=a.description,
        status=str(a.status),
        require_proof=a.require_proof,
        rate=a.rate,
        ceiling=[
            common_pb2.Grant(actions=sorted(g.actions), resource=g.glob.pattern)
            for g in a.ceiling.grants
        ],
        max_ttl_seconds=a.max_ttl,
        max_depth=a.max_depth,
        epoch=a.epoch,
        revoked_before=format_timestamp(a.revoked_before_ms / 1000) if a.revoked_before_ms else "",
        public_keys=[
            common_pb2.PublicKey(key_id=k, public_key=v) for k, v in sorted(a.public_keys.items())
        ],
        created_at=format_timestamp(a.created_at),
        approvals=rules_to_pb(a.approvals),
    )


def principal_to_pb(p: Principal) -> agent_pb2.Principal:
    return agent_pb2.Principal(
        id=p.id, role=str(p.role), created_at=format_timestamp(p.created_at), disabled=p.disabled
    )


def decision_to_pb(d: Decision) -> verifier_pb2.VerifyResponse:
    return verifier_pb2.VerifyResponse(
        allowed=d.allowed,
        code=d.code,
        reason=d.reason,
        caveat=d.caveat or "",
        token_id=d.token_id or "",
        chain=d.chain,
        counted=d.allowed and bool(d.budgets),
    )


class _AllowedReplies:
    """Allowed replies depend only on the token and its chain: build each message once.

    Bounded in bytes (a chain can name 17 agents of 64 characters): when full, the
    replies are dropped and built again as they are needed."""

    def __init__(self, max_bytes: int) -> None:
        # keyed by the shared allow object itself (identity), which the dict keeps alive
        self._replies: dict[Decision, verifier_pb2.VerifyResponse] = {}
        self._budget = max_bytes
        self._bytes = 0

    def __call__(self, d: Decision) -> verifier_pb2.VerifyResponse:
        reply = self._replies.get(d)
        if reply is None:
            if not d.allowed:
                return decision_to_pb(d)
            self._bytes += _REPLY_BYTES + sum([_PER_NAME + len(a) for a in d.chain])
            if self._bytes > self._budget:
                self._replies.clear()
                self._bytes = 0
            reply = self._replies[d] = decision_to_pb(d)
        return reply


_REPLY_BYTES = 1000  # the reply message, the allow it is keyed by, the dict slot
_PER_NAME = 120  # one agent of the chain, in the reply and in the decision


def issued_to_pb(i: Issued) -> token_pb2.TokenResponse:
    return token_pb2.TokenResponse(
        token=i.token,
        token_id=i.token_id,
        expires=format_timestamp(i.expires) if i.expires else "",
        delegation_id=i.delegation_id,
    )


def tree_to_pb(n: TreeNode) -> token_pb2.TokenTree:
    return token_pb2.TokenTree(
        id=n.id,
        agent=n.agent,
        issued_by=n.issued_by,
        at=format_timestamp(n.at),
        revoked=n.revoked,
        restrictions=n.restrictions,
        truncated=n.truncated,
        children=[tree_to_pb(c) for c in n.children],
    )


# -- services --------------------------------------------------------------------------------


def _max_depth(request: Any) -> int | None:
    """A create's or an update's max depth; None when the request leaves it out (or
    sends -1, as clients before the field had presence did). Any other negative
    number is refused by the registry with the valid range."""
    if not request.HasField("max_depth") or request.max_depth == -1:
        return None
    return int(request.max_depth)


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @rpc
    async def CreateAgent(self, request: Any, context: Any) -> Any:
        agent, credential = await self.registry.create_agent(
            CALLER.get(),
            request.id,
            grants_from(request.ceiling),
            max_ttl=request.max_ttl_seconds or None,
            max_depth=_max_depth(request),
            owner=request.owner,
            description=request.description,
            public_key=request.public_key or None,
            require_proof=request.require_proof,
            approvals=rules_from(request.approvals),
            rate=request.rate,
        )
        return agent_pb2.CreateAgentResponse(agent=agent_to_pb(agent), credential=credential)

    @rpc
    async def GetAgent(self, request: Any, context: Any) -> Any:
        return agent_to_pb(self.registry.get(CALLER.get(), request.id))

    @rpc
    async def ListAgents(self, request: Any, context: Any) -> Any:
        return agent_pb2.ListAgentsResponse(agents=[agent_to_pb(a) for a in self.registry.list()])

    @rpc
    async def UpdateAgent(self, request: Any, context: Any) -> Any:
        update = AgentUpdate(
            ceiling=grants_from(request.ceiling) if request.set_ceiling else None,
            max_ttl=request.max_ttl_seconds or None,
            max_depth=_max_depth(request),
            description=request.description if request.set_description else None,
            require_proof=request.require_proof if request.set_require_proof else None,
            approvals=rules_from(request.approvals) if request.set_approvals else None,
            rate=request.rate if request.set_rate else None,
        )
        return agent_to_pb(await self.registry.update(CALLER.get(), request.id, update))

    @rpc
    async def SuspendAgent(self, request: Any, context: Any) -> Any:
        return agent_to_pb(
            await self.registry.set_status(CALLER.get(), request.id, AgentStatus.SUSPENDED)
        )

    @rpc
    async def ResumeAgent(self, request: Any, context: Any) -> Any:
        return agent_to_pb(
            await self.registry.set_status(CALLER.get(), request.id, AgentStatus.ACTIVE)
        )

    @rpc
    async def RevokeAllTokens(self, request: Any, context: Any) -> Any:
        return agent_to_pb(await self.registry.revoke_all(CALLER.get(), request.id))

    @rpc
    async def AddPublicKey(self, request: Any, context: Any) -> Any:
        return agent_to_pb(
            await self.registry.add_key(CALLER.get(), request.id, request.public_key)
        )

    @rpc
    async def RemovePublicKey(self, request: Any, context: Any) -> Any:
        return agent_to_pb(await self.registry.remove_key(CALLER.get(), request.id, request.key_id))

    @rpc
    async def DeleteAgent(self, request: Any, context: Any) -> Any:
        await self.registry.delete(CALLER.get(), request.id)
        return agent_pb2.DeleteAgentResponse()

    @rpc
    async def CreatePrincipal(self, request: Any, context: Any) -> Any:
        p, credential = await self.registry.create_principal(CALLER.get(), request.id, request.role)
        return agent_pb2.CreatePrincipalResponse(id=p.id, role=str(p.role), credential=credential)

    @rpc
    async def ListPrincipals(self, request: Any, context: Any) -> Any:
        return agent_pb2.ListPrincipalsResponse(
            principals=[principal_to_pb(p) for p in await self.registry.principals()]
        )

    @rpc
    async def DisablePrincipal(self, request: Any, context: Any) -> Any:
        return principal_to_pb(await self.registry.set_disabled(CALLER.get(), request.id, True))

    @rpc
    async def EnablePrincipal(self, request: Any, context: Any) -> Any:
        return principal_to_pb(await self.registry.set_disabled(CALLER.get(), request.id, False))

    @rpc
    async def RotateCredential(self, request: Any, context: Any) -> Any:
        p, credential = await self.registry.rotate_credential(CALLER.get(), request.id)
        return agent_pb2.CreatePrincipalResponse(id=p.id, role=str(p.role), credential=credential)


class TokenServicer(token_pb2_grpc.TokenServiceServicer):
    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    @rpc
    async def IssueToken(self, request: Any, context: Any) -> Any:
        if not request.HasField("grant"):
            raise InvalidArgumentError("a grant is required")
        grant = grants_from([request.grant])[0]
        issued = await self.tokens.issue(
            CALLER.get(), grant, request.ttl_seconds or None, list(request.caveats)
        )
        return issued_to_pb(issued)

    @rpc
    async def AttenuateToken(self, request: Any, context: Any) -> Any:
        return issued_to_pb(
            self.tokens.attenuate(
                CALLER.get(), request.token, list(request.caveats), rules_from(request.approvals)
            )
        )

    @rpc
    async def DelegateToken(self, request: Any, context: Any) -> Any:
        issued = await self.tokens.delegate(
            CALLER.get(),
            request.token,
            request.to,
            list(request.caveats),
            rules_from(request.approvals),
        )
        return issued_to_pb(issued)

    @rpc
    async def InspectToken(self, request: Any, context: Any) -> Any:
        i = self.tokens.inspect(CALLER.get(), request.token)
        d = i.description
        if d is None:  # an invalid token is told so, and nothing else
            return token_pb2.InspectTokenResponse(
                signature_valid=False, status=i.status.reason if i.status else "invalid"
            )
        return token_pb2.InspectTokenResponse(
            token_id=d.token_id or "",
            key_id=d.key_id or "",
            issued_at=format_timestamp(d.issued_ms / 1000) if d.issued_ms else "",
            expires=format_timestamp(d.expires) if d.expires else "",
            caveats=d.caveats,
            lineage=d.lineage,
            signature_valid=i.signature_valid,
            revoked=i.revoked,
            status=i.status.reason if i.status else "valid",
            chain=[
                token_pb2.Hop(
                    agent=h.agent,
                    delegation_id=h.did or "",
                    at=format_timestamp(h.at_ms / 1000),
                    offline=h.offline,
                    restrictions=h.restrictions,
                    revoked=h.revoked,
                    agent_status=h.agent_status,
                )
                for h in i.hops
            ],
        )

    @rpc
    async def RevokeToken(self, request: Any, context: Any) -> Any:
        if bool(request.token) == bool(request.id):
            raise InvalidArgumentError("give either a token or an id")
        target, new, expires = await self.tokens.revoke(
            CALLER.get(), request.token, request.id, request.reason
        )
        return token_pb2.RevokeTokenResponse(
            id=target, newly_revoked=new, expires=format_timestamp(expires)
        )

    @rpc
    async def GetTokenTree(self, request: Any, context: Any) -> Any:
        return tree_to_pb(await self.tokens.tree(CALLER.get(), request.id))


class VerifyReplies:
    """A decision's VerifyResponse (VerifierService itself is ``VerifierWire``, over bytes)."""

    def __init__(self, reply_bytes: int) -> None:
        self._reply = _AllowedReplies(reply_bytes)

    def __call__(self, r: Any, d: Decision) -> verifier_pb2.VerifyResponse:
        if r.proof.text:  # an allow with a proof: the proof held (built apart: allows are shared)
            reply = decision_to_pb(d)
            reply.proven = d.allowed
            return reply
        return self._reply(d)


class KeyServicer(keys_pb2_grpc.KeyServiceServicer):
    def __init__(self, rotation: KeyRotation) -> None:
        self.rotation = rotation

    def _key(self, r: RootKeyRecord) -> keys_pb2.RootKey:
        return keys_pb2.RootKey(
            id=r.id,
            created_at=format_timestamp(r.created_at),
            retired_at=format_timestamp(r.retired_at) if r.retired_at is not None else "",
            signing=r.id == self.rotation.signing_id,
        )

    @rpc
    async def ListKeys(self, request: Any, context: Any) -> Any:
        return keys_pb2.ListKeysResponse(keys=[self._key(r) for r in await self.rotation.keys()])

    @rpc
    async def RotateKey(self, request: Any, context: Any) -> Any:
        return self._key(await self.rotation.rotate(CALLER.get()))

    @rpc
    async def RetireKey(self, request: Any, context: Any) -> Any:
        return self._key(await self.rotation.retire(CALLER.get(), request.id))


def register_all(server: grpc.aio.Server, replica: Replica) -> list[str]:
    """Add every capgate service to ``server``; returns their full names."""
    approvals = Approvals(replica)
    agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(Registry(replica)), server)
    token_pb2_grpc.add_TokenServiceServicer_to_server(TokenServicer(Tokens(replica)), server)
    # VerifierService is served over bytes, with warm verdicts remembered (_verdicts)
    server.add_generic_rpc_handlers(
        [
            VerifierWire(
                Verification(replica, approvals),
                VerifyReplies(replica.settings.limits.reply_bytes),
                entries=replica.settings.memo_size,
                max_bytes=replica.settings.limits.memo_bytes,
            ).handler()
        ]
    )
    approval_pb2_grpc.add_ApprovalServiceServicer_to_server(ApprovalServicer(approvals), server)
    audit_pb2_grpc.add_AuditServiceServicer_to_server(AuditServicer(AuditTrail(replica)), server)
    keys_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(KeyRotation(replica)), server)
    governance_pb2_grpc.add_GovernanceServiceServicer_to_server(
        GovernanceServicer(replica.governance, replica.agents, replica.clock), server
    )
    return [
        agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
        token_pb2.DESCRIPTOR.services_by_name["TokenService"].full_name,
        verifier_pb2.DESCRIPTOR.services_by_name["VerifierService"].full_name,
        audit_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
        keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
        approval_pb2.DESCRIPTOR.services_by_name["ApprovalService"].full_name,
        governance_pb2.DESCRIPTOR.services_by_name["GovernanceService"].full_name,
    ]
