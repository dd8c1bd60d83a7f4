"""``Tokens``: issuing, attenuating, delegating, inspecting and revoking tokens."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from capgate import (
    AgentStatus,
    ApprovalRule,
    CapgateError,
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
_MAX_APPROVALS = 32  # a caller's and the receiving agent's rules together
# refusals of an issue or a delegation that the audit records (bad input is not one)
_REFUSALS = (PermissionDeniedError, FailedPreconditionError, NotFoundError)
MAX_TREE_DEPTH = 32  # levels of a returned tree; a valid chain has at most MAX_DEPTH + 1


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
    description: TokenDescription | None  # None: the token does not verify
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
    truncated: bool = False  # some nodes below were left out (see ``Tokens.tree``)


# what an invalid token is told, and nothing more
_INVALID = Decision(False, DenyCode.BAD_SIGNATURE, "invalid: the token does not verify")


def _extra_caveats(caveats: Sequence[str]) -> list[str]:
    if len(caveats) > _MAX_EXTRA_CAVEATS:
        raise InvalidArgumentError(f"at most {_MAX_EXTRA_CAVEATS} caveats at once")
    for text in caveats:
        if parse_caveat(text).needs_proof:
            raise InvalidArgumentError(f"caveat {text!r} needs a proof; use DelegateToken")
    return list(caveats)


def _with_approvals(token: Token, rules: Sequence[ApprovalRule]) -> Token:
    """``token`` with an approval caveat for each rule (at most 16 at once)."""
    if len(rules) > _MAX_APPROVALS:
        raise InvalidArgumentError(f"at most {_MAX_APPROVALS} approval caveats at once")
    for rule in rules:
        token = token.require_approval(rule.condition, rule.approvers)
    return token


def _approvals_detail(rules: Sequence[ApprovalRule]) -> dict[str, object]:
    return {"approvals": [str(r) for r in rules]} if rules else {}


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

    async def issue(
        self, caller: Principal, grant_text: str, ttl: int | None, caveats: Sequence[str] = ()
    ) -> Issued:
        """A token for ``grant_text`` bound to the calling agent; a refusal is audited."""
        try:
            return await self._issue(caller, grant_text, ttl, caveats)
        except _REFUSALS as e:
            self._refused("issue.refused", caller, grant_text, e)
            raise

    def _refused(self, kind: str, caller: Principal, subject: str, e: CapgateError) -> None:
        code = str(e.context.get("code") or type(e).__name__)
        self.replica.audit.refusal(kind, caller.id, subject, code, e.message, self.replica.clock())

    async def _issue(
        self, caller: Principal, grant_text: str, ttl: int | None, caveats: Sequence[str] = ()
    ) -> Issued:
        self._active_agent(caller)
        self.replica.require_fresh()
        agent = self.replica.agents[caller.id]
        grant = Grant.parse(grant_text)
        if not agent.ceiling.covers(grant):
            raise PermissionDeniedError(
                f"grant {grant} is beyond the ceiling of agent {agent.id!r} ({agent.ceiling})",
                grant=str(grant),
                ceiling=str(agent.ceiling),
            )
        if ttl is None or ttl == 0:
            ttl = agent.max_ttl
        if ttl < 0:
            raise InvalidArgumentError("ttl must be positive")
        if ttl > agent.max_ttl:
            raise PermissionDeniedError(
                f"ttl {ttl}s is over the max TTL of agent {agent.id!r} ({agent.max_ttl}s)",
                ttl=ttl,
                max_ttl=agent.max_ttl,
            )
        extra = _extra_caveats(caveats)
        kid, root = self.replica.root_keys.signing()
        issued_ms = _hop_time(self.replica.clock(), agent.revoked_before_ms)
        now = issued_ms / 1000
        tid = new_token_id()
        expires = math.floor(now + ttl)
        texts = [
            f"agent = {agent.id}",
            f"action in {','.join(sorted(grant.actions))}",
            f"resource {grant.glob.pattern}",
            f"expires < {format_timestamp(expires)}",
            *extra,
        ]
        token = Token.mint(root, TokenIdentifier(kid, tid, issued_ms).encode())
        for text in texts:
            token = token.append_raw(text.encode("utf-8"))
        token = _with_approvals(token, agent.approvals)  # its standing rules, after the rest
        texts += [c for _, c in token.third_party_caveats]
        event = AuditEvent(
            now,
            caller.id,
            "issue",
            tid,
            chain=(agent.id,),
            detail={
                "grant": str(grant),
                "ttl": ttl,
                "caveats": extra,
                **_approvals_detail(agent.approvals),
            },
        )
        await self.replica.call(
            self.replica.store.record_token,
            TokenRecord(tid, agent.id, kid, now, expires, tuple(texts)),
            event,
        )
        return Issued(token.to_text(), tid, expires)

    # -- attenuate (the same as offline) -----------------------------------------------------

    def attenuate(
        self,
        caller: Principal,
        text: str,
        caveats: Sequence[str],
        approvals: Sequence[ApprovalRule] = (),
    ) -> Issued:
        """The same as attenuating offline; an agent only from its own live place in a chain."""
        token = Token.parse(text)  # MalformedTokenError: INVALID_ARGUMENT
        if not caveats and not approvals:
            raise InvalidArgumentError("no caveats to add")
        if caller.role is Role.AGENT:
            self._standing(caller, self._verified(text))
        for caveat in caveats:
            token = token.attenuate(caveat)
        token = _with_approvals(token, approvals)
        d = describe(token)
        return Issued(token.to_text(), d.token_id or "", d.expires or 0.0)

    # -- who may act on a token ---------------------------------------------------------------

    def _verified(self, text: str) -> Chain:
        """A chain whose signature and proofs hold; anything else is just "invalid"."""
        st = self.replica.verifier.analyse(text)
        if isinstance(st, Decision):
            if st.code is DenyCode.MALFORMED:
                raise InvalidArgumentError(st.reason)
            raise PermissionDeniedError(f"token does not verify: {st.reason}", code=str(st.code))
        return st

    def _standing(self, caller: Principal, st: Chain) -> None:
        """An agent acts on a token only from a live place in its chain: it appears in
        it, its hop is not revoked (by id, or by its own revoke-all), nor any above."""
        if caller.role is not Role.AGENT:
            return
        index = next((i for i, h in enumerate(st.hops) if h.agent == caller.id), None)
        if index is None:
            raise PermissionDeniedError("an agent may act only on tokens it is part of")
        hop = st.hops[index]
        agent = self.replica.agents.get(caller.id)
        if agent is None or hop.at_ms <= agent.revoked_before_ms:
            raise PermissionDeniedError(
                f"the tokens of agent {caller.id!r} up to this one were revoked (revoke-all)"
            )
        upto = st.lineage.index(hop.did) + 1 if hop.did else 1
        revoked = self.replica.revocations
        for lineage_id in st.lineage[:upto]:
            if revoked.is_revoked(lineage_id):
                raise PermissionDeniedError(
                    f"this token's lineage id {lineage_id} is revoked "
                    f"at or above agent {caller.id!r}"
                )

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
            raise PermissionDeniedError(
                f"token does not verify: {denied.reason}", code=str(denied.code)
            )
        return st

    def _state_denial(self, st: Chain) -> Decision | None:
        """Revocation, agents and expiry: everything but the request itself."""
        decision = self.replica.verifier.decide_state(st)
        if decision is not None:
            return decision
        now = self.replica.clock()
        if st.expires is not None and now >= st.expires:
            return Decision(
                False,
                DenyCode.CAVEAT_FAILED,
                f"token expired at {format_timestamp(st.expires)}",
                None,
                st.token_id,
                st.agents,
            )
        return None

    async def delegate(
        self,
        caller: Principal,
        text: str,
        to: str,
        caveats: Sequence[str] = (),
        approvals: Sequence[ApprovalRule] = (),
    ) -> Issued:
        """Hand the caller's token to agent ``to``; a refusal is audited."""
        try:
            return await self._delegate(caller, text, to, caveats, approvals)
        except _REFUSALS as e:
            self._refused("delegate.refused", caller, to, e)
            raise

    async def _delegate(
        self,
        caller: Principal,
        text: str,
        to: str,
        caveats: Sequence[str] = (),
        approvals: Sequence[ApprovalRule] = (),
    ) -> Issued:
        self._active_agent(caller)
        self.replica.require_fresh()
        check_id(to, "agent id")
        st = self._live_chain(text)
        if st.holder != caller.id:
            raise PermissionDeniedError(
                f"only the current holder ({st.holder!r}) may delegate this token"
            )
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
                    f"agent {hop.agent!r} allows at most {limit} delegation(s) below it"
                )
        extra = _extra_caveats(caveats)
        root = self.replica.root_keys.active.get(st.key_id)
        if root is None:  # pragma: no cover - analyse() already refused such tokens
            raise FailedPreconditionError(f"root key {st.key_id} is retired")
        at_ms = _hop_time(self.replica.clock(), target.revoked_before_ms)
        now = at_ms / 1000
        token, did = append_server_delegation(st.token, root, to, at_ms)
        for caveat in extra:
            token = token.attenuate(caveat)
        # the caller's approval caveats, then the receiving agent's standing rules
        token = _with_approvals(token, (*approvals, *target.approvals))
        out = token.to_text()
        check = self.replica.verifier.analyse(out)
        if isinstance(check, Decision):  # e.g. a depth caveat the new hop breaks
            raise PermissionDeniedError(f"delegation refused: {check.reason}", code=str(check.code))
        # any token carrying this hop's id has st's caveats before it: st.expires bounds it
        record = DelegationRecord(
            did,
            st.token_id,
            st.hops[-1].did or st.token_id,
            caller.id,
            to,
            now,
            st.expires,
            False,
            tuple(extra),
        )
        event = AuditEvent(
            now,
            caller.id,
            "delegate",
            did,
            chain=check.agents,
            detail={
                "token_id": st.token_id,
                "to": to,
                "caveats": extra,
                **_approvals_detail((*approvals, *target.approvals)),
            },
        )
        await self.replica.call(self.replica.store.record_delegations, [record], event)
        return Issued(out, st.token_id, check.expires or 0.0, did)

    # -- inspect -----------------------------------------------------------------------------

    def inspect(self, caller: Principal, text: str) -> Inspection:
        """What the server knows of a valid token. An invalid one gets nothing but
        "invalid" (no word on agents, keys or revocations); an agent inspects only
        tokens it holds a live place in."""
        Token.parse(text)  # MalformedTokenError: INVALID_ARGUMENT
        st = self.replica.verifier.analyse(text)
        if isinstance(st, Decision):
            return Inspection(None, False, False, _INVALID, [])
        self._standing(caller, st)
        d = describe(st.token)
        revs = self.replica.revocations
        hops = []
        for h in d.hops:
            agent = self.replica.agents.get(h.agent)
            if agent is None or agent.status is AgentStatus.DELETED:
                agent_status = "unknown"
            elif agent.status is not AgentStatus.ACTIVE:
                agent_status = str(agent.status)
            elif h.at_ms <= agent.revoked_before_ms:
                agent_status = "tokens-revoked"
            else:
                agent_status = "active"
            hop_id = h.did or d.token_id
            hops.append(
                HopStatus(
                    h.agent,
                    h.did,
                    h.at_ms,
                    h.offline,
                    h.restrictions,
                    bool(hop_id and revs.is_revoked(hop_id)),
                    agent_status,
                )
            )
        revoked = any(revs.is_revoked(x) for x in d.lineage)
        return Inspection(d, True, revoked, self._state_denial(st), hops)

    # -- revoke ------------------------------------------------------------------------------

    async def revoke(
        self, caller: Principal, text: str, lineage_id: str, reason: str
    ) -> tuple[str, bool, float]:
        """Revoke a token (its own hop) or an id; returns (id, newly revoked, expires).

        A token's own hop is its last delegation, or its token id when it has none;
        never a bare ``did`` caveat, which anyone can append (an admin revokes those
        by id). Delegation ids are derived from the chain, so the hop a verified
        token names is always its own. An agent revokes only from a live place in
        the chain (by text), or its own tokens and hops (by id).
        """
        self.replica.require_fresh()
        if len(reason) > 512 or not reason.isprintable():
            raise InvalidArgumentError("reason must be printable text of at most 512 chars")
        now = self.replica.clock()
        cap = now + self.replica.settings.max_ttl_cap
        chain: tuple[str, ...] = ()
        if text:
            st = self.replica.verifier.analyse(text)
            if isinstance(st, Decision):
                raise InvalidArgumentError(
                    f"cannot revoke a token that does not verify: {st.reason}"
                )
            self._standing(caller, st)
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
        event = AuditEvent(now, caller.id, "revoke", target, chain=chain, detail={"reason": reason})
        new = await self.replica.call(
            self.replica.store.revoke, target, now, expires, caller.id, reason, event
        )
        await self.replica.sync()
        return target, new, expires

    async def _id_expiry(
        self, caller: Principal, target: str, cap: float
    ) -> tuple[float, tuple[str, ...]]:
        """When an id's revocation may be forgotten, and the agents it names.

        An agent may name only its own token or a hop into or out of it, made while
        its tokens stood (after its last revoke-all); any other id, known or not, is
        refused alike, so probing tells it nothing.
        """
        store = self.replica.store
        token = await self.replica.call(store.get_token, target)
        hop = None if token is not None else await self.replica.call(store.get_delegation, target)
        if caller.role is Role.AGENT:
            agent = self.replica.agents.get(caller.id)
            cutoff = agent.revoked_before_ms / 1000 if agent is not None else float("inf")
            mine = (
                token is not None and token.agent == caller.id and token.issued_at > cutoff
            ) or (
                hop is not None and caller.id in (hop.from_agent, hop.to_agent) and hop.at > cutoff
            )
            if not mine:
                raise PermissionDeniedError(
                    "an agent may revoke by id only its own tokens and "
                    "the delegations it made or received"
                )
        if token is not None:
            return min(token.expires_at, cap), (token.agent,)
        if hop is not None:
            return min(hop.expires_at or cap, cap), (hop.from_agent, hop.to_agent)
        if caller.role is not Role.ADMIN:
            raise NotFoundError(f"no token or delegation {target} is known to this server")
        return cap, ()  # an id never seen here: kept until any token could have expired

    # -- tree ------------------------------------------------------------------------------

    async def tree(self, caller: Principal, node_id: str) -> TreeNode:
        """The delegation tree below a token or hop, as the server has seen it.

        Bounded: at most ``settings.tree_max_nodes`` nodes and ``MAX_TREE_DEPTH`` levels are
        returned (a node whose children were left out says so), and it is built
        without recursion, so no tree, however it was made, can fail the call.
        """
        store = self.replica.store
        node_id = node_id.lower()
        token = await self.replica.read(store.get_token, node_id)
        if token is None:
            hop = await self.replica.read(store.get_delegation, node_id)
            if hop is None:
                raise NotFoundError(f"no token or delegation {node_id} is known")
            token = await self.replica.read(store.get_token, hop.token_id)
            if token is None:
                raise NotFoundError(f"token {hop.token_id} of delegation {node_id} is unknown")
        if caller.role is Role.AGENT:
            agent = self.replica.agents.get(caller.id)
            if (
                caller.id != token.agent
                or agent is None
                or token.issued_at <= agent.revoked_before_ms / 1000
            ):
                raise PermissionDeniedError(
                    "an agent may read only the trees of its own live tokens"
                )
        limit = self.replica.settings.tree_max_nodes
        hops = await self.replica.read(store.delegations_of, token.id, limit + 1)
        revs = self.replica.revocations
        nodes = {
            token.id: TreeNode(
                token.id, token.agent, "", token.issued_at, revs.is_revoked(token.id), token.caveats
            )
        }
        children: dict[str, list[str]] = {}
        for h in hops[:limit]:
            if h.id not in nodes:
                nodes[h.id] = TreeNode(
                    h.id, h.to_agent, h.from_agent, h.at, revs.is_revoked(h.id), h.restrictions
                )
                children.setdefault(h.parent, []).append(h.id)
        root = nodes[node_id] if node_id in nodes else nodes[token.id]
        # walk down from the asked-for node, level by level, linking each node once
        level, depth, linked = [root], 0, {root.id}
        while level:
            below = []
            for node in level:
                kids = [k for k in children.get(node.id, ()) if k not in linked]
                if depth >= MAX_TREE_DEPTH:
                    node.truncated = bool(kids)
                    continue
                for k in kids:
                    linked.add(k)
                    node.children.append(nodes[k])
                    below.append(nodes[k])
            level, depth = below, depth + 1
        if len(hops) > limit:
            root.truncated = True
        return root
