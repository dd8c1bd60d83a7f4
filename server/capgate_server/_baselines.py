"""``Baselines``: each agent's usual behaviour, and the deviations from it.

Fed by the same flushed audit records as usage (``seen_in``), never by the verify
path itself. Per agent it keeps:

* what it has done: actions, ``(action, resource prefix)`` pairs (a prefix is the
  first two directories, ``prefix_of``), the agents it delegated to and the
  deepest delegation below it, and who presented its tokens. After the agent's
  warm-up, anything new is a deviation: a first-seen prefix, a new sub-agent, a
  deeper chain, a new presenter. Exact novelty needs no statistics and no
  tuning, has no false alert on a steady agent, and catches the two things an
  injected or stolen identity does first: reach for what it never touched, and
  hand itself on.
* its pace: calls and denies per ``bucket`` seconds, as an exponentially weighted
  mean and mean absolute deviation over the buckets in which it was active (so a
  quiet night does not make the morning look like a burst). A bucket is a
  deviation when its count passes ``mean + threshold × max(deviation, 1)``, is at
  least ``ratio`` times the mean and at least the floor (``rate_floor`` calls,
  ``deny_floor`` denies): the floor keeps a mostly idle agent's small bursts
  quiet. A flagged bucket is not learnt.

The sensitivity of an agent's policy divides the threshold and the floors. What
is learnt never shrinks, and each kind of set holds at most ``_SET_CAP`` entries
per agent (beyond, nothing new is learnt or flagged). Deviations carry a key
that names them fleet-wide (agent, kind, what), so replicas that see the same
thing raise one alert.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from capgate_server._usage import Seen, prefix_of, seen_in
from capgate_server.store import AuditEvent, GovernancePolicy, UsageKind, UsageRow

__all__ = ["Baselines", "Deviation"]

_SET_CAP = 4096
_QUIET_CODES = frozenset({"agent_suspended", "agent_tokens_revoked", "unavailable"})


@dataclass(frozen=True, slots=True)
class Deviation:
    agent: str
    kind: str
    key: str  # names it fleet-wide
    reason: str
    at: float
    action: str = ""
    resource: str = ""
    detail: dict[str, object] = field(default_factory=dict)


class _Pace:
    """Calls and denies in the current bucket, and their EWMA over active buckets."""

    __slots__ = (
        "bucket",
        "calls",
        "calls_dev",
        "calls_mean",
        "denies",
        "denies_dev",
        "denies_mean",
        "flagged",
        "learnt",
    )

    def __init__(self) -> None:
        self.bucket = -1
        self.calls = self.denies = 0
        self.calls_mean = self.calls_dev = self.denies_mean = self.denies_dev = 0.0
        self.learnt = 0
        self.flagged = False

    def move(self, bucket: int, alpha: float) -> None:
        if bucket <= self.bucket:
            return
        if self.calls and not self.flagged:
            self.learnt += 1
            a = max(alpha, 1.0 / self.learnt)
            self.calls_mean, self.calls_dev = _ewma(self.calls_mean, self.calls_dev, self.calls, a)
            self.denies_mean, self.denies_dev = _ewma(
                self.denies_mean, self.denies_dev, self.denies, a
            )
        self.bucket, self.calls, self.denies, self.flagged = bucket, 0, 0, False


def _ewma(mean: float, dev: float, x: float, a: float) -> tuple[float, float]:
    return mean + a * (x - mean), dev + a * (abs(x - mean) - dev)


class _Agent:
    __slots__ = ("actions", "delegates", "depth", "pace", "prefixes", "presenters")

    def __init__(self) -> None:
        self.actions: set[str] = set()
        self.prefixes: set[tuple[str, str]] = set()
        self.delegates: set[str] = set()
        self.depth = 0
        self.presenters: set[str] = set()
        self.pace = _Pace()


def _add(s: set[str] | set[tuple[str, str]], item: object) -> bool:
    """Learn ``item``; True when it was new (and there was room to learn it)."""
    if item in s or len(s) >= _SET_CAP:
        return False
    s.add(item)  # type: ignore[arg-type]
    return True


class Baselines:
    def __init__(
        self,
        *,
        bucket: float = 10.0,
        alpha: float = 0.05,
        threshold: float = 6.0,
        ratio: float = 3.0,
        rate_floor: int = 30,
        deny_floor: int = 10,
        min_buckets: int = 5,
    ) -> None:
        self.bucket = bucket
        self.alpha = alpha
        self.threshold = threshold
        self.ratio = ratio
        self.rate_floor = rate_floor
        self.deny_floor = deny_floor
        self.min_buckets = min_buckets
        self._agents: dict[str, _Agent] = {}

    def _agent(self, agent_id: str) -> _Agent:
        a = self._agents.get(agent_id)
        if a is None:
            a = self._agents[agent_id] = _Agent()
        return a

    def learn(self, rows: Iterable[UsageRow]) -> None:
        """Take what the fleet has seen (the store's usage rows) without flagging it."""
        for r in rows:
            self._learn(
                Seen(r.agent, r.kind, r.action, r.subject, r.count, r.first_at, r.last_at),
                flag=False,
            )

    def _learn(self, s: Seen, *, flag: bool) -> list[tuple[str, str, str]]:
        """Learn one fact; returns (kind, what, reason) for each thing new in it."""
        a = self._agent(s.agent)
        new: list[tuple[str, str, str]] = []
        if s.kind in (UsageKind.USE, UsageKind.DENY):
            prefix = prefix_of(s.subject)
            new_action = _add(a.actions, s.action)
            if _add(a.prefixes, (s.action, prefix)) and flag:
                verb = "read" if s.action == "read" else f"used '{s.action}' on"
                tried = "" if s.kind is UsageKind.USE else " (denied)"
                first = " (a new action)" if new_action else ""
                new.append(
                    (
                        "new-resource",
                        f"{s.action}|{prefix}",
                        f"{s.agent} {verb} {prefix}/** for the first time{first}{tried}",
                    )
                )
        elif s.kind is UsageKind.DELEGATE:
            depth = int(s.action) if s.action.isdigit() else 0
            if _add(a.delegates, s.subject) and flag:
                new.append(
                    (
                        "new-delegate",
                        s.subject,
                        f"{s.agent} delegated to {s.subject} for the first time",
                    )
                )
            if depth > a.depth:
                if flag and a.depth:
                    new.append(
                        (
                            "depth",
                            str(depth),
                            f"{s.agent}'s tokens went {depth} delegations deep "
                            f"(at most {a.depth} before)",
                        )
                    )
                a.depth = depth
        elif s.kind is UsageKind.PRESENTER and s.subject != s.agent:
            if _add(a.presenters, s.subject) and flag:
                new.append(
                    (
                        "new-presenter",
                        s.subject,
                        f"a token of {s.agent} was presented by {s.subject} for the first time",
                    )
                )
        return new

    def observe(
        self,
        events: Iterable[AuditEvent],
        policy: Callable[[str], GovernancePolicy],
        warm: Callable[[str, float, GovernancePolicy], bool],
    ) -> list[Deviation]:
        """Learn a flush's records; the deviations of agents past their warm-up."""
        out: list[Deviation] = []
        ordered = sorted((e for e in events if e.kind == "verify" and e.chain), key=lambda e: e.at)
        policies: dict[str, GovernancePolicy] = {}  # per flush: one lookup per agent
        for e in ordered:
            for s in seen_in([e]):
                p = policies.get(s.agent)
                if p is None:
                    p = policies[s.agent] = policy(s.agent)
                flag = warm(s.agent, s.at, p)
                for kind, what, reason in self._learn(s, flag=flag):
                    out.append(
                        Deviation(
                            s.agent,
                            kind,
                            f"{s.agent}|{kind}|{what}",
                            reason,
                            s.at,
                            e.action,
                            e.resource,
                            {
                                "code": e.code,
                                "presenter": e.presenter,
                                "chain": list(e.chain),
                                "token_id": e.subject,
                            },
                        )
                    )
            if e.code in _QUIET_CODES:
                continue
            holder = e.chain[-1]
            p = policies.get(holder) or policy(holder)
            out.extend(self._pace(holder, e, p, warm(holder, e.at, p)))
        return out

    def _pace(
        self, agent_id: str, e: AuditEvent, p: GovernancePolicy, flag: bool
    ) -> list[Deviation]:
        pace = self._agent(agent_id).pace
        bucket = int(e.at // self.bucket)
        pace.move(bucket, self.alpha)
        pace.calls += e.count
        if not e.ok:
            pace.denies += e.count
        if not flag or pace.flagged or pace.learnt < self.min_buckets:
            return []
        s = max(p.sensitivity, 0.01)
        threshold = self.threshold / s
        for what, count, mean, dev, floor in (
            ("denies", pace.denies, pace.denies_mean, pace.denies_dev, self.deny_floor),
            ("rate", pace.calls, pace.calls_mean, pace.calls_dev, self.rate_floor),
        ):
            if count >= max(floor / s, mean + threshold * max(dev, 1.0), self.ratio * mean):
                pace.flagged = True
                noun = "denied calls" if what == "denies" else "calls"
                usual = (
                    f"{count / mean:.0f}× its usual ({mean:.1f})"
                    if mean >= 0.5
                    else f"where it usually has {'none' if mean < 0.05 else 'almost none'}"
                )
                reason = f"{agent_id}: {count} {noun} in {self.bucket:.0f} s, {usual}"
                return [
                    Deviation(
                        agent_id,
                        what,
                        f"{agent_id}|{what}|{bucket}",
                        reason,
                        e.at,
                        e.action,
                        e.resource,
                        {"count": count, "usual": round(mean, 2), "bucket_seconds": self.bucket},
                    )
                ]
        return []
