"""``Tokens``: issuing, attenuating, delegating, inspecting and revoking tokens."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from capgate import (
    AgentStatus,
    Chain,
    Decision,
    DenyCode,
    FailedPreconditionError,
    Grant,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    Token,
    TokenDescription,
    TokenIdentifier,
    append_server_delegation,
    check_id,
    describe,
    format_timestamp,
    hop_expiry,
    new_token_id,
    parse_caveat,
)
from capgate_server._replica import Replica
from capgate_server.store import AuditEvent, DelegationRecord, Principal, Role, TokenRecord

__all__ = ["HopStatus", "Inspection", "Issued", "Tokens", "TreeNode"]

_MAX_EXTRA_CAVEATS = 32


@dataclass(frozen=True)
class Issued:
    token: str
    token_id: str
    expires: float
    delegation_id: str = ""


@dataclass
class HopStatus:
    agent: str
    did: str | None
    at_ms: int
    offline: bool
    restrictions: list[str]
    revoked: bool
    agent_status: str


@dataclass
class Inspection:
    description: TokenDescription
    signature_valid: bool
    revoked: bool
    status: Decision | None  # what the token's own state says (not a request decision)
    hops: list[HopStatus]


@dataclass
class TreeNode:
    id: str
    agent: str
    issued_by: str
    at: float
    revoked: bool
    restrictions: tuple[str, ...] = ()
    children: list[TreeNode] = field(default_factory=list)


def _extra_caveats(caveats: Sequence[str]) -> list[str]:
    if len(caveats) > _MAX_EXTRA_CAVEATS:
        raise InvalidArgumentError(f"at most {_MAX_EXTRA_CAVEATS} caveats at once")
    for text in caveats:
        if parse_caveat(text).needs_proof:
            raise InvalidArgumentError(f"caveat {text!r} needs a proof; use DelegateToken")
    return list(caveats)


def _hop_time(now: float, revoked_before_ms: int) -> int:
    """When a new hop into an agent is dated (ms): now, but always after the agent's
    cut-off, so a replica whose clock lags never mints a token born revoked."""
    return max(int(now * 1000), revoked_before_ms + 1)


class Tokens:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    def _active_agent(self, caller: Principal) -> None:
        if caller.role is not Role.AGENT:
            raise PermissionDeniedError("only agents hold tokens")
        agent = self.replica.agents.get(caller.id)
        if agent is None:
            raise PermissionDeniedError(f"agent {caller.id!r} is not registered")
        if agent.status is not AgentStatus.ACTIVE:
            raise PermissionDeniedError(f"agent {caller.id!r} is suspended")

    # -- issue ---------------------------------------------------------------------------

    async def issue(self, caller: Principal, grant_text: str, ttl: int | None,
                    caveats: Sequence[str] = ()) -> Issued:
        self._active_agent(caller)
        self.replica.require_fresh()
        agent = self.replica.agents[caller.id]
        grant = Grant.parse(grant_text)
        if not agent.ceiling.covers(grant):
            raise PermissionDeniedError(
                f"grant {grant} is beyond the ceiling of agent {agent.id!r} ({agent.ceiling})",
                grant=str(grant), ceiling=str(agent.ceiling))
        if ttl is None or ttl == 0:
            ttl = agent.max_ttl
        if ttl < 0:
            raise InvalidArgumentError("ttl must be positive")
        if ttl > agent.max_ttl:
            raise PermissionDeniedError(
                f"ttl {ttl}s is over the max TTL of agent {agent.id!r} ({agent.max_ttl}s)",
                ttl=ttl, max_ttl=agent.max_ttl)
        extra = _extra_caveats(caveats)
        kid, root = self.replica.root_keys.signing()
        issued_ms = _hop_time(self.replica.clock(), agent.revoked_before_ms)
        now = issued_ms / 1000
        tid = new_token_id()
        expires = math.floor(now + ttl)
        texts = [f"agent = {agent.id}", f"action in {','.join(sorted(grant.actions))}",
                 f"resource {grant.glob.pattern}", f"expires < {format_timestamp(expires)}",
                 *extra]
        token = Token.mint(root, TokenIdentifier(kid, tid, issued_ms).encode())
        for text in texts:
            token = token.append_raw(text.encode("utf-8"))
        event = AuditEvent(now, caller.id, "issue", tid, chain=(agent.id,),
                           detail={"grant": str(grant), "ttl": ttl, "caveats": extra})
        await self.replica.call(self.replica.store.record_token,
                                TokenRecord(tid, agent.id, kid, now, expires, tuple(texts)), event)
        return Issued(token.to_text(), tid, expires)

    # -- attenuate (the same as offline) -----------------------------------------------------

    @staticmethod
    def attenuate(text: str, caveats: Sequence[str]) -> Issued:
        token = Token.parse(text)  # MalformedTokenError: INVALID_ARGUMENT
        if not caveats:
            raise InvalidArgumentError("no caveats to add")
        for caveat in caveats:
            token = token.attenuate(caveat)
        d = describe(token)
        return Issued(token.to_text(), d.token_id or "", d.expires or 0.0)

    # -- delegate ----------------------------------------------------------------------------

    def _live_chain(self, text: str) -> Chain:
        """A chain whose signature holds and whose own state allows it right now."""
        st = self.replica.verifier.analyse(text)
        if isinstance(st, Decision):
            if st.code is DenyCode.MALFORMED:
                raise InvalidArgumentError(st.reason)
            raise PermissionDeniedError(f"token does not verify: {st.reason}", code=str(st.code))
        denied = self._state_denial(st)
        if denied is not None:
            raise PermissionDeniedError(f"token does not verify: {denied.reason}",
                                        code=str(denied.code))
        return st

    def _state_denial(self, st: Chain) -> Decision | None:
        """Revocation, agents and expiry: everything but the request itself."""
        decision = self.replica.verifier.decide_state(st)
        if decision is not None:
            return decision
        now = self.replica.clock()
        if st.expires is not None and now >= st.expires:
            return Decision(False, DenyCode.CAVEAT_FAILED,
                            f"token expired at {format_timestamp(st.expires)}", None,
                            st.token_id, st.agents)
        return None

    async def delegate(self, caller: Principal, text: str, to: str,
                       caveats: Sequence[str] = ()) -> Issued:
        self._active_agent(caller)
        self.replica.require_fresh()
        check_id(to, "agent id")
        st = self._live_chain(text)
        if st.holder != caller.id:
            raise PermissionDeniedError(
                f"only the current holder ({st.holder!r}) may delegate this token")
        target = self.replica.agents.get(to)
        if target is None:
            raise NotFoundError(f"agent {to!r} is not registered", id=to)
        if target.status is not AgentStatus.ACTIVE:
            raise FailedPreconditionError(f"agent {to!r} is suspended")
        hops = len(st.hops)  # delegations below each agent once this hop is added
        for i, hop in enumerate(st.hops):
            limit = self.replica.agents[hop.agent].max_depth
            if hops - i > limit:
                raise PermissionDeniedError(
                    f"agent {hop.agent!r} allows at most {limit} delegation(s) below it")
        extra = _extra_caveats(caveats)
        root = self.replica.root_keys.active.get(st.key_id)
        if root is None:  # pragma: no cover - analyse() already refused such tokens
            raise FailedPreconditionError(f"root key {st.key_id} is retired")
        at_ms = _hop_time(self.replica.clock(), target.revoked_before_ms)
        now = at_ms / 1000
        token, did = append_server_delegation(st.token, root, to, at_ms)
        for caveat in extra:
            token = token.attenuate(caveat)
        out = token.to_text()
        check = self.replica.verifier.analyse(out)
        if isinstance(check, Decision):  # e.g. a depth caveat the new hop breaks
            raise PermissionDeniedError(f"delegation refused: {check.reason}",
                                        code=str(check.code))
        # any token carrying this hop's id has st's caveats before it: st.expires bounds it
        record = DelegationRecord(did, st.token_id, st.lineage[-1], caller.id, to, now,
                                  st.expires, False, tuple(extra))
        event = AuditEvent(now, caller.id, "delegate", did, chain=check.agents,
                           detail={"token_id": st.token_id, "to": to, "caveats": extra})
        await self.replica.call(self._record_delegation, record, event)
        return Issued(out, st.token_id, check.expires or 0.0, did)

    def _record_delegation(self, record: DelegationRecord, event: AuditEvent) -> None:
        self.replica.store.record_delegations([record])
        self.replica.store.append_audit([event])

    # -- inspect -----------------------------------------------------------------------------

    def inspect(self, text: str) -> Inspection:
        token = Token.parse(text)  # MalformedTokenError: INVALID_ARGUMENT
        d = describe(token)
        st = self.replica.verifier.analyse(text)
        signature_valid = not (isinstance(st, Decision) and st.code in (
            DenyCode.BAD_SIGNATURE, DenyCode.UNKNOWN_KEY, DenyCode.MALFORMED))
        status = st if isinstance(st, Decision) else self._state_denial(st)
        revs = self.replica.revocations
        hops = []
        for h in d.hops:
            agent = self.replica.agents.get(h.agent)
            if agent is None:
                agent_status = "unknown"
            elif agent.status is not AgentStatus.ACTIVE:
                agent_status = str(agent.status)
            elif h.at_ms <= agent.revoked_before_ms:
                agent_status = "tokens-revoked"
            else:
                agent_status = "active"
            hop_id = h.did or d.token_id
            hops.append(HopStatus(h.agent, h.did, h.at_ms, h.offline, h.restrictions,
                                  bool(hop_id) and revs.is_revoked(hop_id), agent_status))
        revoked = any(revs.is_revoked(x) for x in d.lineage)
        return Inspection(d, signature_valid, revoked, status, hops)

    # -- revoke ------------------------------------------------------------------------------

    async def revoke(self, caller: Principal, text: str, lineage_id: str,
                     reason: str) -> tuple[str, bool, float]:
        """Revoke a token (its most specific lineage id) or an id; returns (id, new, expires)."""
        self.replica.require_fresh()
        if len(reason) > 512 or not reason.isprintable():
            raise InvalidArgumentError("reason must be printable text of at most 512 chars")
        now = self.replica.clock()
        cap = now + self.replica.settings.max_ttl_cap
        chain: tuple[str, ...] = ()
        if text:
            st = self.replica.verifier.analyse(text)
            if isinstance(st, Decision):
                raise InvalidArgumentError(f"cannot revoke a token that does not verify: "
                                           f"{st.reason}")
            if caller.role is Role.AGENT and caller.id not in st.agents:
                raise PermissionDeniedError("an agent may revoke only tokens it is part of")
            # The token's own hop: its last delegation, or the token id. Never a bare
            # `did` caveat, which anyone can append; those are revoked by id (admin).
            hops, chain = st.hops, st.agents
            target = hops[-1].did or st.token_id
            if len(hops) == 1:
                expires, _ = await self._id_expiry(caller, target, cap)
            else:
                expires = min(hop_expiry(describe(st.token), len(hops) - 1) or cap, cap)
        else:
            target = lineage_id.lower()
            if len(target) != 32 or any(c not in "0123456789abcdef" for c in target):
                raise InvalidArgumentError("an id is 32 hex digits (a token or delegation id)")
            expires, chain = await self._id_expiry(caller, target, cap)
        event = AuditEvent(now, caller.id, "revoke", target, chain=chain,
                           detail={"reason": reason})
        new = await self.replica.call(self.replica.store.revoke, target, now, expires,
                                      caller.id, reason, event)
        await self.replica.sync()
        return target, new, expires

    async def _id_expiry(self, caller: Principal, target: str,
                         cap: float) -> tuple[float, tuple[str, ...]]:
        """When an id's revocation may be forgotten, and the agents it names."""
        store = self.replica.store
        token = await self.replica.call(store.get_token, target)
        if token is not None:
            if caller.role is Role.AGENT and caller.id != token.agent:
                raise PermissionDeniedError("an agent may revoke only its own tokens")
            return min(token.expires_at, cap), (token.agent,)
        hop = await self.replica.call(store.get_delegation, target)
        if hop is not None:
            if caller.role is Role.AGENT and caller.id not in (hop.from_agent, hop.to_agent):
                raise PermissionDeniedError("an agent may revoke only delegations it is part of")
            return min(hop.expires_at or cap, cap), (hop.from_agent, hop.to_agent)
        if caller.role is not Role.ADMIN:
            raise NotFoundError(f"no token or delegation {target} is known to this server")
        return cap, ()  # an id never seen here: kept until any token could have expired

    # -- tree ------------------------------------------------------------------------------

    async def tree(self, caller: Principal, node_id: str) -> TreeNode:
        store = self.replica.store
        node_id = node_id.lower()
        token = await self.replica.call(store.get_token, node_id)
        if token is None:
            hop = await self.replica.call(store.get_delegation, node_id)
            if hop is None:
                raise NotFoundError(f"no token or delegation {node_id} is known")
            token = await self.replica.call(store.get_token, hop.token_id)
            if token is None:
                raise NotFoundError(f"token {hop.token_id} of delegation {node_id} is unknown")
        if caller.role is Role.AGENT and caller.id != token.agent:
            raise PermissionDeniedError("an agent may read only the trees of its own tokens")
        hops = await self.replica.call(store.delegations_of, token.id)
        revs = self.replica.revocations
        nodes = {token.id: TreeNode(token.id, token.agent, "", token.issued_at,
                                    revs.is_revoked(token.id), token.caveats)}
        for h in hops:
            nodes[h.id] = TreeNode(h.id, h.to_agent, h.from_agent, h.at, revs.is_revoked(h.id),
                                   h.restrictions)
        for h in hops:
            parent = nodes.get(h.parent)
            if parent is not None:
                parent.children.append(nodes[h.id])
        return nodes[node_id]
