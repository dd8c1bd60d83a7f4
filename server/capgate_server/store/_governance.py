"""What the store keeps for governance, and the part of the ``Store`` interface about it.

* **Usage**: per agent, what it was seen doing, folded from the audit tally's
  flushes (never a write per verify): allowed requests (``use``: action ×
  resource), denied ones (``deny``), the agents it delegated to and how deep
  (``delegate``: the depth below it × the sub-agent), and who presented its
  tokens (``presenter``). Each row counts and keeps its first and last instant;
  replicas add theirs with an upsert, so the rows are the fleet's.
* **Alerts**: deviations from an agent's baseline, each raised once fleet-wide
  (``key`` is unique: the replica whose insert wins contains, the others see it
  exists), with the containment applied.
* **Policies**: per agent, what an alert does (``alert``, ``narrow``,
  ``suspend``), how sensitive detection is, its warm-up, and its shadow ceiling.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only in annotations (no import cycle)
    from capgate_server.store._events import AuditEvent

__all__ = [
    "AlertRecord",
    "Containment",
    "GovernancePolicy",
    "GovernanceStore",
    "UsageKind",
    "UsageRow",
]


class UsageKind(StrEnum):
    USE = "use"  # an allowed request: action, resource
    DENY = "deny"  # a denied request: action, resource
    DELEGATE = "delegate"  # a delegation below the agent: depth, sub-agent
    PRESENTER = "presenter"  # who presented the agent's tokens: "", presenter


class Containment(StrEnum):
    """What an alert about an agent does to it."""

    ALERT = "alert"  # nothing: a person decides
    NARROW = "narrow"  # drop the deviating grants from its ceiling (suspend if none left)
    SUSPEND = "suspend"  # suspend the agent: every token through it denies


@dataclass(frozen=True, slots=True)
class UsageRow:
    agent: str
    kind: UsageKind
    action: str  # ``delegate``: the depth below the agent, as text
    subject: str  # the resource, the sub-agent, or the presenter
    count: int
    first_at: float
    last_at: float


@dataclass(frozen=True, slots=True)
class AlertRecord:
    key: str  # unique fleet-wide: the same deviation raised twice is one alert
    agent: str
    at: float
    kind: str  # new-resource, new-action, new-delegate, depth, new-presenter, rate, denies
    reason: str  # for a person
    detail: dict[str, object] = field(default_factory=dict)
    containment: str = "alert"  # what was done: alert, narrow, suspend
    seq: int = 0


@dataclass(frozen=True, slots=True)
class GovernancePolicy:
    agent: str
    containment: Containment = Containment.ALERT
    sensitivity: float = 1.0  # >1 flags smaller deviations; <1 only larger ones
    warmup: float = -1.0  # seconds of learning before alerting; <0: the server's default
    # shadow mode: grants evaluated beside the ceiling on every allow, never enforced;
    # what they would deny is recorded and alerted on (empty: not in shadow mode)
    shadow: tuple[str, ...] = ()


class GovernanceStore(ABC):
    """Governance in the store (``Store`` includes it; ``SqlStore`` implements it)."""

    @abstractmethod
    def record_usage(self, rows: Sequence[UsageRow]) -> None:
        """Add counts to usage rows (creating them), widening their first and last
        instants; safe from several replicas at once."""

    @abstractmethod
    def usage(self, agent: str = "", since: float = 0.0, limit: int = 100_000) -> list[UsageRow]:
        """Usage rows last seen at or after ``since`` (every agent's, or one's), the most
        recently seen first."""

    @abstractmethod
    def prune_usage(self, before: float, limit: int = 5000) -> int:
        """Delete at most ``limit`` usage rows last seen before ``before``; how many."""

    @abstractmethod
    def raise_alert(self, alert: AlertRecord, audit: AuditEvent) -> AlertRecord | None:
        """Insert an alert with its audit record; ``None`` (and nothing written) when
        an alert with its key exists already."""

    @abstractmethod
    def alerts(
        self, after_seq: int = 0, agent: str = "", limit: int = 100, newest_first: bool = False
    ) -> list[AlertRecord]:
        """Alerts after ``after_seq``, oldest first (or the newest ``limit``, newest first)."""

    @abstractmethod
    def set_policy(self, policy: GovernancePolicy, audit: AuditEvent) -> None: ...

    @abstractmethod
    def policies(self) -> list[GovernancePolicy]: ...
