"""``Agent``: a registered identity with its ceiling, limits and epoch."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from capgate._errors import InvalidArgumentError
from capgate._grants import Ceiling
from capgate._text import ID_RE

__all__ = ["Agent", "AgentStatus", "check_id"]


class AgentStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


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
    sign offline delegations made by this agent.
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

    @property
    def active(self) -> bool:
        return self.status is AgentStatus.ACTIVE

    def with_changes(self, **changes: Any) -> Agent:
        if "public_keys" in changes and not isinstance(changes["public_keys"], MappingProxyType):
            changes["public_keys"] = MappingProxyType(dict(changes["public_keys"]))
        return replace(self, **changes)
