"""The governance service in the SDK: usage, access review, alerts, containment policies.

``GovernanceMethods`` (blocking) and ``AsyncGovernanceMethods`` are mixed into
``Client`` and ``AsyncClient``, which supply ``_run`` and the stream stubs.
Admins only.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from capgate_client._calls import Call
from capgate_client._errors import from_rpc_error
from capgate_proto.v1 import governance_pb2

__all__ = [
    "AccessReview",
    "Alert",
    "AsyncGovernanceMethods",
    "GovernanceMethods",
    "GovernancePolicyInfo",
    "GrantReview",
    "UsageInfo",
]


@dataclass(frozen=True)
class UsageInfo:
    """What an agent was seen doing: ``kind`` use, deny, delegate (``action``: the depth
    below the agent; ``subject``: the sub-agent) or presenter."""

    agent: str
    kind: str
    action: str
    subject: str
    count: int
    first_seen: str
    last_seen: str


@dataclass(frozen=True)
class GrantReview:
    """One grant of a ceiling: how often it was used, for what, and what replaces it
    (``proposed`` empty: dropped; the grant itself: kept)."""

    grant: str
    uses: int
    last_used: str
    used: tuple[str, ...]
    proposed: tuple[str, ...]


@dataclass(frozen=True)
class AccessReview:
    """An agent's ceiling beside what it used in the window, and a narrower one."""

    agent: str
    ceiling: tuple[str, ...]
    grants: tuple[GrantReview, ...]
    proposed: tuple[str, ...]
    uses: int
    denies: int
    last_used: str
    idle: bool
    max_depth: int
    depth_used: int
    proposed_max_depth: int
    changes: bool


@dataclass(frozen=True)
class Alert:
    """A deviation from an agent's baseline, and the containment it applied."""

    seq: int
    agent: str
    at: str
    kind: str
    reason: str
    containment: str
    action: str
    resource: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class GovernancePolicyInfo:
    agent: str
    containment: str
    sensitivity: float
    warmup: float  # seconds; negative: the server's default
    shadow: tuple[str, ...] = ()  # the shadow ceiling (empty: not in shadow mode)


def _usage(pb: Any) -> UsageInfo:
    return UsageInfo(
        pb.agent, pb.kind, pb.action, pb.subject, pb.count, pb.first_seen, pb.last_seen
    )


def _review(pb: Any) -> AccessReview:
    return AccessReview(
        pb.agent,
        tuple(pb.ceiling),
        tuple(
            GrantReview(g.grant, g.uses, g.last_used, tuple(g.used), tuple(g.proposed))
            for g in pb.grants
        ),
        tuple(pb.proposed),
        pb.uses,
        pb.denies,
        pb.last_used,
        pb.idle,
        pb.max_depth,
        pb.depth_used,
        pb.proposed_max_depth,
        pb.changes,
    )


def alert_info(pb: Any) -> Alert:
    return Alert(
        pb.seq,
        pb.agent,
        pb.at,
        pb.kind,
        pb.reason,
        pb.containment,
        pb.action,
        pb.resource,
        json.loads(pb.detail_json) if pb.detail_json else {},
    )


def _policy(pb: Any) -> GovernancePolicyInfo:
    return GovernancePolicyInfo(
        pb.agent, pb.containment, pb.sensitivity, pb.warmup_seconds, tuple(pb.shadow_ceiling)
    )


def usage(agent: str, since: int) -> Call[list[UsageInfo]]:
    return Call(
        "governance",
        "GetUsage",
        governance_pb2.UsageRequest(agent=agent, since_seconds=since),
        lambda pb: [_usage(r) for r in pb.rows],
    )


def review(agent: str, since: int) -> Call[list[AccessReview]]:
    return Call(
        "governance",
        "Review",
        governance_pb2.ReviewRequest(agent=agent, since_seconds=since),
        lambda pb: [_review(r) for r in pb.reviews],
    )


def list_alerts(agent: str, after: int, limit: int) -> Call[list[Alert]]:
    return Call(
        "governance",
        "ListAlerts",
        governance_pb2.ListAlertsRequest(agent=agent, after_seq=after, limit=limit),
        lambda pb: [alert_info(a) for a in pb.alerts],
    )


def set_policy(
    agent: str, containment: str, sensitivity: float, warmup: float, shadow: Sequence[str]
) -> Call[GovernancePolicyInfo]:
    return Call(
        "governance",
        "SetPolicy",
        governance_pb2.GovernancePolicy(
            agent=agent,
            containment=containment,
            sensitivity=sensitivity,
            warmup_seconds=warmup,
            shadow_ceiling=list(shadow),
        ),
        _policy,
    )


def get_policy(agent: str) -> Call[GovernancePolicyInfo]:
    return Call("governance", "GetPolicy", governance_pb2.GetPolicyRequest(agent=agent), _policy)


class GovernanceMethods:
    """The governance methods of ``Client`` (admins)."""

    target: str
    _metadata: tuple[tuple[str, str]]
    _stubs: dict[str, Any]
    _run: Callable[..., Any]

    def usage(self, agent: str = "", *, since: int = 0) -> list[UsageInfo]:
        """What ``agent`` (or every agent) was seen doing in the last ``since`` seconds
        (0: ever)."""
        got: list[UsageInfo] = self._run(usage(agent, since))
        return got

    def review(self, agent: str = "", *, since: int = 0) -> list[AccessReview]:
        """Access review over the last ``since`` seconds (0: 30 days): each agent's
        ceiling beside its use, with a narrower ceiling proposed. Apply one with
        ``update_agent(agent, grants=r.proposed, max_depth=r.proposed_max_depth)``."""
        got: list[AccessReview] = self._run(review(agent, since))
        return got

    def alerts(self, agent: str = "", *, after: int = 0, limit: int = 100) -> list[Alert]:
        """Deviation alerts after ``after`` (a ``seq``), oldest first."""
        got: list[Alert] = self._run(list_alerts(agent, after, limit))
        return got

    def watch_alerts(self, agent: str = "", *, after: int = 0) -> Iterator[Alert]:
        """The alerts after ``after``, then each one as it is raised anywhere."""
        try:
            for reply in self._stubs["governance"].WatchAlerts(
                governance_pb2.ListAlertsRequest(agent=agent, after_seq=after),
                metadata=self._metadata,
            ):
                yield alert_info(reply)
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.target) from None

    def set_policy(
        self,
        agent: str,
        *,
        containment: str = "alert",
        sensitivity: float = 1.0,
        warmup: float = -1.0,
        shadow: Sequence[str] = (),
    ) -> GovernancePolicyInfo:
        """What an alert about ``agent`` does (alert, narrow, suspend), how sensitive
        detection is, its warm-up in seconds (negative: the server's default), and its
        shadow ceiling: grants checked beside the ceiling and never enforced, what they
        would deny recorded and alerted on (empty: not in shadow mode). Replaces the
        whole policy."""
        got: GovernancePolicyInfo = self._run(
            set_policy(agent, containment, sensitivity, warmup, shadow)
        )
        return got

    def get_policy(self, agent: str) -> GovernancePolicyInfo:
        got: GovernancePolicyInfo = self._run(get_policy(agent))
        return got


class AsyncGovernanceMethods:
    """The governance methods of ``AsyncClient`` (see ``GovernanceMethods``)."""

    target: str
    _metadata: tuple[tuple[str, str]]
    _run: Callable[..., Any]
    _stubs_here: Callable[[], dict[str, Any]]

    async def usage(self, agent: str = "", *, since: int = 0) -> list[UsageInfo]:
        got: list[UsageInfo] = await self._run(usage(agent, since))
        return got

    async def review(self, agent: str = "", *, since: int = 0) -> list[AccessReview]:
        got: list[AccessReview] = await self._run(review(agent, since))
        return got

    async def alerts(self, agent: str = "", *, after: int = 0, limit: int = 100) -> list[Alert]:
        got: list[Alert] = await self._run(list_alerts(agent, after, limit))
        return got

    async def watch_alerts(self, agent: str = "", *, after: int = 0) -> AsyncIterator[Alert]:
        call = self._stubs_here()["governance"].WatchAlerts(
            governance_pb2.ListAlertsRequest(agent=agent, after_seq=after), metadata=self._metadata
        )
        try:
            async for reply in call:
                yield alert_info(reply)
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.target) from None

    async def set_policy(
        self,
        agent: str,
        *,
        containment: str = "alert",
        sensitivity: float = 1.0,
        warmup: float = -1.0,
        shadow: Sequence[str] = (),
    ) -> GovernancePolicyInfo:
        got: GovernancePolicyInfo = await self._run(
            set_policy(agent, containment, sensitivity, warmup, shadow)
        )
        return got

    async def get_policy(self, agent: str) -> GovernancePolicyInfo:
        got: GovernancePolicyInfo = await self._run(get_policy(agent))
        return got
