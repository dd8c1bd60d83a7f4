"""The governance service over gRPC: translate protobuf to ``Governance`` calls and back."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from capgate import AgentStatus, InvalidArgumentError, format_timestamp
from capgate_proto.v1 import governance_pb2, governance_pb2_grpc
from capgate_server._governance import Governance
from capgate_server._interceptor import CALLER
from capgate_server._review import AgentReview, review
from capgate_server._rpc import rpc, streaming_rpc
from capgate_server.store import AlertRecord, GovernancePolicy

__all__ = ["GovernanceServicer"]

_DEFAULT_WINDOW = 30 * 86400
_USAGE_REPLY = 10_000  # usage rows one GetUsage returns at most (the most recent)


def _when(ts: float) -> str:
    return format_timestamp(ts) if ts else ""


def alert_to_pb(a: AlertRecord) -> governance_pb2.Alert:
    detail = dict(a.detail)
    return governance_pb2.Alert(
        seq=a.seq,
        agent=a.agent,
        at=format_timestamp(a.at),
        kind=a.kind,
        reason=a.reason,
        containment=a.containment,
        action=str(detail.pop("action", "")),
        resource=str(detail.pop("resource", "")),
        detail_json=json.dumps(detail, sort_keys=True),
    )


def review_to_pb(r: AgentReview) -> governance_pb2.AgentReview:
    return governance_pb2.AgentReview(
        agent=r.agent,
        ceiling=r.ceiling,
        proposed=r.proposed,
        uses=r.uses,
        denies=r.denies,
        last_used=_when(r.last_used),
        idle=r.idle,
        max_depth=r.max_depth,
        depth_used=r.depth_used,
        proposed_max_depth=r.proposed_max_depth,
        changes=r.changes,
        grants=[
            governance_pb2.GrantUse(
                grant=g.grant,
                uses=g.uses,
                last_used=_when(g.last_used),
                used=g.used,
                proposed=g.proposed,
            )
            for g in r.grants
        ],
    )


def policy_to_pb(p: GovernancePolicy) -> governance_pb2.GovernancePolicy:
    return governance_pb2.GovernancePolicy(
        agent=p.agent,
        containment=str(p.containment),
        sensitivity=p.sensitivity,
        warmup_seconds=p.warmup,
        shadow_ceiling=p.shadow,
    )


def _window(seconds: int, default: int = 0) -> int:
    if seconds < 0:
        raise InvalidArgumentError("since_seconds must not be negative")
    return seconds or default


def _not_negative(request: Any) -> None:
    if request.after_seq < 0 or request.limit < 0:
        raise InvalidArgumentError("after_seq and limit must not be negative")


class GovernanceServicer(governance_pb2_grpc.GovernanceServiceServicer):
    def __init__(self, governance: Governance, agents: Any, clock: Any) -> None:
        self.governance = governance
        self.agents = agents  # the replica's live directory
        self.clock = clock

    def _since(self, seconds: int) -> float:
        return self.clock() - seconds if seconds else 0.0

    @rpc
    async def GetUsage(self, request: Any, context: Any) -> Any:
        rows = await self.governance.usage(
            request.agent, self._since(_window(request.since_seconds)), _USAGE_REPLY
        )
        return governance_pb2.UsageResponse(
            rows=[
                governance_pb2.UsageRow(
                    agent=r.agent,
                    kind=str(r.kind),
                    action=r.action,
                    subject=r.subject,
                    count=r.count,
                    first_seen=format_timestamp(r.first_at),
                    last_seen=format_timestamp(r.last_at),
                )
                for r in rows
            ]
        )

    @rpc
    async def Review(self, request: Any, context: Any) -> Any:
        since = self._since(_window(request.since_seconds, _DEFAULT_WINDOW))
        if request.agent:
            agent = self.agents.get(request.agent)
            if agent is None or agent.status is AgentStatus.DELETED:
                from capgate import NotFoundError

                raise NotFoundError(f"agent {request.agent!r} not found", id=request.agent)
            agents = [agent]
        else:
            agents = sorted(
                (a for a in self.agents.values() if a.status is not AgentStatus.DELETED),
                key=lambda a: a.id,
            )
        rows = await self.governance.usage(request.agent, since)
        by_agent: dict[str, list[Any]] = {}
        for r in rows:
            by_agent.setdefault(r.agent, []).append(r)
        return governance_pb2.ReviewResponse(
            reviews=[review_to_pb(review(a, by_agent.get(a.id, []))) for a in agents]
        )

    @rpc
    async def ListAlerts(self, request: Any, context: Any) -> Any:
        _not_negative(request)
        found = await self.governance.list_alerts(
            request.after_seq, request.agent, request.limit or 100
        )
        return governance_pb2.ListAlertsResponse(alerts=[alert_to_pb(a) for a in found])

    @streaming_rpc
    async def WatchAlerts(self, request: Any, context: Any) -> AsyncIterator[Any]:
        _not_negative(request)
        async for a in self.governance.watch(request.after_seq, request.agent):
            yield alert_to_pb(a)

    @rpc
    async def SetPolicy(self, request: Any, context: Any) -> Any:
        policy = await self.governance.set_policy(
            CALLER.get().id,
            request.agent,
            request.containment,
            request.sensitivity or 1.0,
            request.warmup_seconds if request.HasField("warmup_seconds") else -1.0,
            list(request.shadow_ceiling),
        )
        return policy_to_pb(policy)

    @rpc
    async def GetPolicy(self, request: Any, context: Any) -> Any:
        return policy_to_pb(self.governance.policy(request.agent))
