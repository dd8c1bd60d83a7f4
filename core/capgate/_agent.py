"""``Agent``: a registered identity with its ceiling, limits and epoch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from capgate._approval import ApprovalRule
from capgate._errors import InvalidArgumentError
from capgate._grants import Ceiling
from capgate._text import ID_RE

__all__ = ["Agent", "AgentStatus", "Directory", "check_id"]


class AgentStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    DELETED = "deleted"  # a tombstone: the id once named an agent, and its tokens deny


def check_id(value: str, what: str = "id") -> str:
    """Ids are ASCII: a letter or digit, then letters, digits, '.', '_' or '-' (≤ 64)."""
    if not isinstance(value, str) or ID_RE.fullmatch(value) is None:
        raise InvalidArgumentError(
            f"invalid {what} {value!r}: use 1-64 of A-Z a-z 0-9 . _ - (starting alphanumeric)",
            value=value if isinstance(value, str) else repr(value),
        )
    return value


@dataclass(frozen=True, slots=True)
class Agent:
    """What the verifier and the issuer need to know about an agent.

    ``revoked_before_ms``: tokens issued to, or delegated through, this agent at
    or before this instant deny (``capgate agent revoke-all`` moves it to now and
    bumps ``epoch``). ``public_keys``: Ed25519 keys (key id → raw bytes) that may
    sign offline delegations made by this agent, and its proofs of possession.
    ``require_proof``: a token held by this agent is accepted only with a proof
    of possession (a presenter the service merely names is not enough).
    ``rate``: ``N/PERIOD`` (like ``100/1m``), at most N allowed requests per period on
    tokens it holds or that were delegated through it, counted by the server; ""
    for no limit.
    ``approvals``: standing rules (requests meeting a condition need a person's
    approval); every token it appears in must carry an approval caveat for each.
    """

    id: str
    ceiling: Ceiling
    status: AgentStatus = AgentStatus.ACTIVE
    owner: str = ""
    description: str = ""
    max_ttl: int = 3600
    max_depth: int = 3
    epoch: int = 0
    revoked_before_ms: int = 0
    public_keys: MappingProxyType[str, bytes] = field(default_factory=lambda: MappingProxyType({}))
    created_at: float = 0.0
    require_proof: bool = False
    rate: str = ""
    approvals: tuple[ApprovalRule, ...] = ()

    @property
    def active(self) -> bool:
        return self.status is AgentStatus.ACTIVE

    def with_changes(self, **changes: Any) -> Agent:
        if "public_keys" in changes and not isinstance(changes["public_keys"], MappingProxyType):
            changes["public_keys"] = MappingProxyType(dict(changes["public_keys"]))
        return replace(self, **changes)


class Directory(dict[str, Agent]):
    """Agents by id, with a version that moves on every change.

    The verifier's decision memo is valid only for the version it was made at,
    so every way of changing the mapping bumps it (reads stay plain dict reads).
    """

    version: int = 0

    def _bump(self) -> None:
        self.version += 1

    def __setitem__(self, key: str, value: Agent) -> None:
        super().__setitem__(key, value)
        self._bump()

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._bump()

    def pop(self, key: str, *default: Any) -> Any:
        self._bump()
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, Agent]:
        self._bump()
        return super().popitem()

    def clear(self) -> None:
        super().clear()
        self._bump()

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self._bump()

    def setdefault(self, key: str, default: Agent) -> Agent:
        self._bump()
        return super().setdefault(key, default)

    def __ior__(self, other: Any) -> Directory:  # type: ignore[override,misc]
        super().__ior__(other)
        self._bump()
        return self
