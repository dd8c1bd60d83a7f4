"""What the console shows and does, as plain values: the service layer, seen by one operator.

Every read and every action goes through the same service-layer objects the gRPC
servicers call (``Registry``, ``Tokens``, ``Approvals``, ``AuditTrail``), with the
logged-in principal as the caller: the same checks hold, and every change is
audited under the operator's name. Nothing here touches the store directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

from capgate import (
    Agent,
    AgentStatus,
    Ceiling,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    check_id,
    format_timestamp,
)
from capgate_server._approvals import Approvals, Fetched
from capgate_server._audit_rpc import AuditTrail
from capgate_server._registry import AgentUpdate, Registry
from capgate_server._replica import Replica
from capgate_server._tokens import Tokens, TreeNode
from capgate_server.store import AlertRecord, AuditEvent, AuditQuery, Principal

__all__ = ["ConsoleApi", "decision_filter"]

RECENT_DECISIONS = 50  # on an agent's page, and the backlog of the live table
LIVE_TOKENS = 50  # tokens (and received hops) shown on an agent's page
LAST_USE_WINDOW = 1000  # decisions read to find each agent's last use
RECENT_ALERTS = 1000  # newest governance alerts read for the agents list ...
ALERTS_WINDOW = 7 * 86400.0  # ... which counts each agent's alerts of the last week
AGENT_ALERTS = 20  # newest alerts shown on an agent's page
_CODE = re.compile(r"[a-z_]{1,64}")


def _when(ts: float | None) -> str:
    return format_timestamp(ts) if ts else ""


def decision_filter(agent: str = "", decision: str = "", code: str = "") -> AuditQuery:
    """The audit query of the live-decisions table; bad input is INVALID_ARGUMENT."""
    if agent:
        check_id(agent, "agent id")
    if decision not in ("", "any", "allow", "deny"):
        raise InvalidArgumentError("decision is allow, deny or any")
    if code and not _CODE.fullmatch(code):
        raise InvalidArgumentError("a code is lower-case letters and underscores")
    ok = {"allow": True, "deny": False}.get(decision)
    return AuditQuery(agent=agent, kind="verify", code=code, ok=ok)


def alert_json(r: AlertRecord) -> dict[str, Any]:
    return {
        "seq": r.seq,
        "at": _when(r.at),
        "kind": r.kind,
        "reason": r.reason,
        "containment": r.containment,
    }


def agent_json(
    a: Agent, last_use: float | None = None, alerts: Sequence[AlertRecord] = ()
) -> dict[str, Any]:
    return {
        "id": a.id,
        "owner": a.owner,
        "description": a.description,
        "status": str(a.status),
        "ceiling": [str(g) for g in a.ceiling.grants],
        "max_ttl": a.max_ttl,
        "max_depth": a.max_depth,
        "rate": a.rate,
        "require_proof": a.require_proof,
        "approvals": [str(r) for r in a.approvals],
        "created_at": _when(a.created_at),
        "last_use": _when(last_use),
        "alerts": [alert_json(r) for r in alerts],  # the newest first
    }


def decision_json(e: AuditEvent) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "pos": e.pos,
        "at": _when(e.at),
        "last_at": _when(e.last_at if e.last_at is not None else e.at),
        "by": e.principal,
        "token_id": e.subject,
        "allowed": e.ok,
        "code": e.code,
        "reason": e.reason,
        "caveat": e.caveat,
        "action": e.action,
        "resource": e.resource,
        "presenter": e.presenter,
        "chain": list(e.chain),
        "count": e.count,
    }


def approval_json(f: Fetched) -> dict[str, Any]:
    r = f.record
    return {
        "id": r.id,
        "status": str(f.status),
        "token_id": r.token_id,
        "chain": list(r.chain),
        "requested_by": r.requested_by,
        "presenter": r.presenter,
        "action": r.action,
        "resource": r.resource,
        "ctx": dict(r.ctx),
        "conditions": list(r.conditions),
        "needed": r.needed,
        "note": r.note,
        "created_at": _when(r.created_at),
        "wait_until": _when(r.wait_until),
        "votes": [
            {"approver": v.approver, "approve": v.approve, "reason": v.reason, "at": _when(v.at)}
            for v in r.votes
        ],
    }


class ConsoleApi:
    """The console's reads and actions for one replica."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self.registry = Registry(replica)
        self.tokens = Tokens(replica)
        self.approvals = Approvals(replica)
        self.trail = AuditTrail(replica)

    # -- agents ------------------------------------------------------------------------------

    async def agents(self, caller: Principal) -> list[dict[str, Any]]:
        recent = await self.trail.list(
            AuditQuery(kind="verify", newest_first=True, limit=LAST_USE_WINDOW)
        )
        last: dict[str, float] = {}
        for e in recent:
            at = e.last_at if e.last_at is not None else e.at
            for name in e.chain:
                last[name] = max(last.get(name, 0.0), at)
        since = self._replica.clock() - ALERTS_WINDOW
        alerts: dict[str, list[AlertRecord]] = {}
        governance = self._replica.governance
        for r in await governance.list_alerts(limit=RECENT_ALERTS, newest_first=True):
            if r.at >= since:
                alerts.setdefault(r.agent, []).append(r)
        return [agent_json(a, last.get(a.id), alerts.get(a.id, ())) for a in self.registry.list()]

    async def agent(self, caller: Principal, agent_id: str) -> dict[str, Any]:
        check_id(agent_id, "agent id")
        a = self.registry.get(caller, agent_id)
        decisions = await self.trail.list(
            AuditQuery(agent=agent_id, kind="verify", newest_first=True, limit=RECENT_DECISIONS)
        )
        out = agent_json(
            a,
            max((d.last_at or d.at for d in decisions), default=None),
            await self._replica.governance.list_alerts(
                agent=agent_id, limit=AGENT_ALERTS, newest_first=True
            ),
        )
        out["use"] = await self._use(agent_id)
        out["tokens"] = await self._live_trees(caller, agent_id)
        out["decisions"] = [decision_json(d) for d in decisions]
        return out

    async def _use(self, agent_id: str) -> list[dict[str, Any]]:
        """What the agent was actually allowed lately (its newest ``LAST_USE_WINDOW``
        allowed decisions), by action and resource: the other half of an access review."""
        allowed = await self.trail.list(
            AuditQuery(
                agent=agent_id, kind="verify", ok=True, newest_first=True, limit=LAST_USE_WINDOW
            )
        )
        use: dict[tuple[str, str], int] = {}
        for e in allowed:
            if e.action:  # a coarse overflow record names no request
                use[(e.action, e.resource)] = use.get((e.action, e.resource), 0) + e.count
        return [
            {"action": a, "resource": r, "count": n}
            for (a, r), n in sorted(use.items(), key=lambda u: (-u[1], u[0]))
        ][:100]

    async def _live_trees(self, caller: Principal, agent_id: str) -> list[dict[str, Any]]:
        """The agent's unexpired tokens and the hops delegated to it, each with the tree
        below it, found through the audit of their issue and delegation."""
        now = self._replica.clock()
        found: list[tuple[str, float]] = []
        for kind in ("issue", "delegate"):
            events = await self.trail.list(
                AuditQuery(agent=agent_id, kind=kind, newest_first=True, limit=LIVE_TOKENS)
            )
            for e in events:
                if kind == "issue":
                    ttl = e.detail.get("ttl")
                    expires = e.at + float(ttl) if isinstance(ttl, int | float) else now + 1
                elif e.detail.get("to") == agent_id:
                    expires = now + 1  # the tree says whether it is still alive
                else:
                    continue  # a hop it made: shown in the tree of the token it holds
                if expires > now:
                    found.append((e.subject, e.at))
        trees = []
        for node_id, _ in sorted(found, key=lambda f: -f[1])[:LIVE_TOKENS]:
            with contextlib.suppress(NotFoundError):
                trees.append(self._tree_json(await self.tokens.tree(caller, node_id), False))
        return trees

    async def tree(self, caller: Principal, node_id: str) -> dict[str, Any]:
        if not re.fullmatch(r"[0-9a-fA-F]{32}", node_id):
            raise InvalidArgumentError("an id is 32 hex digits (a token or delegation id)")
        return self._tree_json(await self.tokens.tree(caller, node_id), False)

    def _tree_json(self, node: TreeNode, dead_above: bool) -> dict[str, Any]:
        agent = self._replica.agents.get(node.agent)
        status = str(agent.status) if agent is not None else "unknown"
        # a hop into the agent at or before its revoke-all cut-off is dead too
        cut = agent is None or node.at * 1000 <= agent.revoked_before_ms
        return {
            "id": node.id,
            "agent": node.agent,
            "issued_by": node.issued_by,
            "at": _when(node.at),
            "revoked": node.revoked,
            "suspended": status == str(AgentStatus.SUSPENDED),
            "agent_status": status,
            "cut_off": cut,
            "dead_above": dead_above,
            "restrictions": list(node.restrictions),
            "truncated": node.truncated,
            "children": [
                self._tree_json(c, dead_above or node.revoked or cut) for c in node.children
            ],
        }

    # -- actions ----------------------------------------------------------------------------

    async def suspend(self, caller: Principal, agent_id: str) -> dict[str, Any]:
        check_id(agent_id, "agent id")
        return agent_json(await self.registry.set_status(caller, agent_id, AgentStatus.SUSPENDED))

    async def resume(self, caller: Principal, agent_id: str) -> dict[str, Any]:
        check_id(agent_id, "agent id")
        return agent_json(await self.registry.set_status(caller, agent_id, AgentStatus.ACTIVE))

    async def revoke_all(self, caller: Principal, agent_id: str) -> dict[str, Any]:
        """Every token issued to or delegated through the agent until now denies."""
        check_id(agent_id, "agent id")
        return agent_json(await self.registry.revoke_all(caller, agent_id))

    async def narrow(self, caller: Principal, agent_id: str, grants: Any) -> dict[str, Any]:
        """Replace the ceiling with one inside it: the console narrows, never widens
        (widening is a deliberate act, left to ``capgate agent update``)."""
        check_id(agent_id, "agent id")
        if not isinstance(grants, list) or not all(isinstance(g, str) for g in grants):
            raise InvalidArgumentError("grants is a list of ACTIONS:RESOURCE texts")
        current = self.registry.get(caller, agent_id).ceiling
        wanted = Ceiling.parse(grants)  # a bad grant is INVALID_ARGUMENT, said by the parser
        wider = [str(g) for g in wanted.grants if not current.covers(g)]
        if wider:
            raise PermissionDeniedError(
                f"the console only narrows a ceiling; not inside the current one: "
                f"{', '.join(wider)} (widen with `capgate agent update`)"
            )
        return agent_json(await self.registry.update(caller, agent_id, AgentUpdate(ceiling=grants)))

    async def revoke(self, caller: Principal, node_id: Any, reason: Any) -> dict[str, Any]:
        if not isinstance(node_id, str) or not isinstance(reason, str):
            raise InvalidArgumentError("id and reason are text")
        if not reason.strip():
            raise InvalidArgumentError("give a reason: it goes into the audit trail")
        target, new, expires = await self.tokens.revoke(caller, "", node_id, reason)
        return {"id": target, "newly_revoked": new, "expires": _when(expires)}

    # -- approvals ---------------------------------------------------------------------------

    async def pending_approvals(self, caller: Principal) -> list[dict[str, Any]]:
        return [approval_json(f) for f in await self.approvals.list(caller, "pending", 200)]

    async def decide(
        self, caller: Principal, approval_id: str, approve: Any, reason: Any
    ) -> dict[str, Any]:
        if not isinstance(approve, bool) or not isinstance(reason, str):
            raise InvalidArgumentError("approve is true or false, reason is text")
        return approval_json(await self.approvals.decide(caller, approval_id, approve, reason))

    # -- decisions ---------------------------------------------------------------------------

    async def recent_decisions(self, query: AuditQuery) -> tuple[list[AuditEvent], int]:
        """The newest decisions, and the ledger position to follow from: the head sealed
        before they were read, so a record newer than all of them is sealed after it."""
        head = await self.trail.checkpoint()
        recent = await self.trail.list(_with(query, newest_first=True, limit=RECENT_DECISIONS))
        return recent, head.pos if head is not None else 0

    async def follow_decisions(
        self, after_pos: int, query: AuditQuery
    ) -> AsyncIterator[AuditEvent]:
        """Sealed decisions after ``after_pos``, then each new one as it is sealed."""
        async for event in self.trail.watch(after_pos, query, True):
            yield event


def _with(q: AuditQuery, **changes: Any) -> AuditQuery:
    return dataclasses.replace(q, **changes)
