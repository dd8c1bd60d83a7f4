"""The ``Store`` interface every backend implements, and the records it keeps.

Every mutation writes, in the same transaction, a row to the change feed
(``changes``) so that each replica's in-memory state can follow the database,
and the audit events that describe it. A call that returns has committed
durably; nothing acknowledged is lost. A store that cannot do its work (disk
full, read-only, unreachable, a lock or statement timeout) raises
``UnavailableError`` with the reason, and has committed nothing.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from capgate import Agent, AgentStatus, ApprovalRule, Ceiling
from capgate_server.store._approvals import ApprovalStore
from capgate_server.store._events import AUDIT_FIELD_LIMITS, AuditEvent, AuditQuery
from capgate_server.store._governance import GovernanceStore
from capgate_server.store._proof import Checkpoint


# a signature over the ledger's head: (pos, digest, at) -> checkpoint
class Signer(Protocol):
    """Signs the chain's head (``LedgerKey.sign``), or with ``cut`` a retention cut."""

    def __call__(self, pos: int, digest: bytes, at: float, cut: bool = False) -> Checkpoint: ...


__all__ = [
    "AUDIT_FIELD_LIMITS",
    "AgentPatch",
    "AuditEvent",
    "AuditQuery",
    "BudgetLease",
    "Change",
    "ChangeKind",
    "DelegationRecord",
    "Principal",
    "Role",
    "RootKeyRecord",
    "Signer",
    "Store",
    "TokenRecord",
]


class Role(StrEnum):
    ADMIN = "admin"
    SERVICE = "service"
    AGENT = "agent"
    APPROVER = "approver"  # a person who approves or denies requests (admins may too)
    # a person who runs the fleet day to day: reads agents, trees and the audit; suspends,
    # resumes, narrows and revokes; never creates, widens or deletes (docs/console.md)
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls: an admin, a service or an agent. A disabled one is refused everything."""

    id: str
    role: Role
    created_at: float = 0.0
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class RootKeyRecord:
    """``generation`` is assigned by the store when the key is added: the highest
    generation signs, whatever the clocks of the replicas that added the keys said."""

    id: str
    sealed: bytes  # the root key, encrypted under the key-encryption key
    created_at: float
    retired_at: float | None = None
    generation: int = 0


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the server remembers of a token it issued (never its signature)."""

    id: str
    agent: str
    key_id: str
    issued_at: float
    expires_at: float
    caveats: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DelegationRecord:
    """One hop of a delegation tree: ``parent`` is a token id or a delegation id."""

    id: str
    token_id: str
    parent: str
    from_agent: str
    to_agent: str
    at: float
    expires_at: float | None
    offline: bool
    restrictions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AgentPatch:
    """Changes to one agent, applied column by column so concurrent changes compose.

    ``revoke_before_ms``: bump the epoch and move ``revoked_before`` up to it.
    """

    status: AgentStatus | None = None
    ceiling: Ceiling | None = None
    max_ttl: int | None = None
    max_depth: int | None = None
    description: str | None = None
    revoke_before_ms: int | None = None
    add_key: tuple[str, bytes] | None = None
    remove_key: str | None = None
    require_proof: bool | None = None
    rate: str | None = None  # "N/PERIOD", or "" for none
    approvals: tuple[ApprovalRule, ...] | None = None  # the agent's standing approval rules


@dataclass(frozen=True, slots=True)
class BudgetLease:
    """A replica asks for up to ``want`` uses of budget ``id`` in ``slot`` (its window;
    0 for a budget of uses in all) that allows ``limit``; the row may go after
    ``expires_at``."""

    id: str
    slot: int
    limit: int
    want: int
    expires_at: float


class ChangeKind(StrEnum):
    AGENT = "agent"
    PRINCIPAL = "principal"
    ROOT_KEY = "root_key"
    REVOCATION = "revocation"
    APPROVAL = "approval"  # an approval request was made or decided (for watchers)


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    kind: ChangeKind
    key: str
    value: float | None = None  # revocations: when the entry may be forgotten


def encode_ceiling(ceiling: Ceiling) -> str:
    return " ".join(str(g) for g in ceiling.grants)


def decode_ceiling(text: str) -> Ceiling:
    return Ceiling.parse(text.split()) if text else Ceiling()


def encode_approval_rules(rules: Sequence[ApprovalRule]) -> str:
    return json.dumps([[r.condition, r.approvers] for r in rules]) if rules else ""


def decode_approval_rules(text: str) -> tuple[ApprovalRule, ...]:
    return tuple(ApprovalRule(c, int(n)) for c, n in json.loads(text)) if text else ()


def agent_from_row(row: Sequence[Any], keys: dict[str, bytes]) -> Agent:
    (
        aid,
        owner,
        description,
        status,
        ceiling,
        max_ttl,
        max_depth,
        epoch,
        revoked_before,
        created_at,
        require_proof,
        approvals,
        rate,
    ) = row
    return Agent(
        id=str(aid),
        ceiling=decode_ceiling(str(ceiling)),
        status=AgentStatus(str(status)),
        owner=str(owner),
        description=str(description),
        max_ttl=int(max_ttl),
        max_depth=int(max_depth),
        epoch=int(epoch),
        revoked_before_ms=int(revoked_before),
        created_at=float(created_at),
        require_proof=bool(require_proof),
        approvals=decode_approval_rules(str(approvals)),
        rate=str(rate),
    ).with_changes(public_keys=keys)


class Store(ApprovalStore, GovernanceStore, ABC):
    """Durable state. Methods are blocking; the server calls them off the event loop."""

    # set by the audit ledger once it has its key: every audit record written from then
    # on carries a MAC under it, and sealing keeps out the records that do not
    record_key: bytes | None = None

    # -- lifecycle ------------------------------------------------------------------

    @abstractmethod
    def migrate(self) -> None:
        """Create or upgrade the schema; safe to run from several processes at once."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def ping(self) -> None:
        """Raise ``UnavailableError`` when the store cannot be reached."""

    @abstractmethod
    def clock(self) -> float | None:
        """The database's own clock (seconds since the epoch), or None where the store
        has no clock apart from this host's (SQLite)."""

    # -- principals and agents -------------------------------------------------------

    @abstractmethod
    def create_principal(
        self, principal: Principal, credential_hash: str, audit: AuditEvent | None = None
    ) -> None:
        """Raise ``AlreadyExistsError`` if the id is taken."""

    @abstractmethod
    def principal_by_credential(self, credential_hash: str) -> Principal | None: ...

    @abstractmethod
    def get_principal(self, principal_id: str) -> Principal | None: ...

    @abstractmethod
    def list_principals(self) -> list[Principal]:
        """Every principal, agents included (deleted agents' principals are gone)."""

    @abstractmethod
    def set_principal_disabled(self, principal_id: str, disabled: bool, audit: AuditEvent) -> None:
        """Disable or enable a principal's credential; ``NotFoundError`` if absent."""

    @abstractmethod
    def set_credential(self, principal_id: str, credential_hash: str, audit: AuditEvent) -> None:
        """Replace a principal's credential (the old one stops working at once)."""

    @abstractmethod
    def create_agent(self, agent: Agent, credential_hash: str, audit: AuditEvent) -> None:
        """Create the agent and its principal in one transaction.

        An id whose agent was deleted may be registered again: the new agent starts
        with the old one's ``revoked_before`` (or later), so no old token comes back.
        """

    @abstractmethod
    def delete_agent(self, agent_id: str, revoke_before_ms: int, audit: AuditEvent) -> None:
        """Delete the agent: its credential and keys go, and a tombstone (status
        ``deleted``, epoch moved to ``revoke_before_ms``) keeps its id from ever
        vouching for an old token again. ``NotFoundError`` if absent."""

    @abstractmethod
    def get_agent(self, agent_id: str) -> Agent | None: ...

    @abstractmethod
    def list_agents(self) -> list[Agent]: ...

    @abstractmethod
    def update_agent(self, agent: Agent, audit: AuditEvent) -> None:
        """Replace the agent's mutable fields and keys; ``NotFoundError`` if absent."""

    @abstractmethod
    def patch_agent(self, agent_id: str, patch: AgentPatch, audit: AuditEvent) -> None:
        """Apply only the given changes (no lost updates between replicas);
        ``NotFoundError`` for a missing agent or key."""

    # -- root keys -------------------------------------------------------------------

    @abstractmethod
    def add_root_key(self, record: RootKeyRecord, audit: AuditEvent | None = None) -> None: ...

    @abstractmethod
    def root_keys(self) -> list[RootKeyRecord]:
        """All keys in the order they were added (by generation), retired ones included."""

    @abstractmethod
    def retire_root_key(self, key_id: str, at: float, audit: AuditEvent) -> None: ...

    # -- tokens, delegations, revocations ---------------------------------------------------

    @abstractmethod
    def record_token(self, record: TokenRecord, audit: AuditEvent) -> None: ...

    @abstractmethod
    def get_token(self, token_id: str) -> TokenRecord | None: ...

    @abstractmethod
    def latest_hop_into(self, agent_id: str) -> float:
        """The latest issue time of a token to the agent, or delegation to it, recorded
        here (0.0 if none): an agent-wide revocation must reach at least that far."""

    @abstractmethod
    def record_delegations(
        self, records: Sequence[DelegationRecord], audit: AuditEvent | None = None
    ) -> None:
        """Insert hops not yet known (existing ids are left as they are), with the
        audit record of the delegation in the same transaction."""

    @abstractmethod
    def get_delegation(self, delegation_id: str) -> DelegationRecord | None: ...

    @abstractmethod
    def delegations_of(self, token_id: str, limit: int = 100_000) -> list[DelegationRecord]:
        """Recorded hops of the tree rooted at ``token_id``, oldest first, at most ``limit``."""

    @abstractmethod
    def revoke(
        self,
        lineage_id: str,
        revoked_at: float,
        expires_at: float,
        by: str,
        reason: str,
        audit: AuditEvent,
    ) -> bool:
        """Durably revoke; False if it already was. An existing entry is kept until the
        later of the two expiries (never shortened)."""

    @abstractmethod
    def revocations(self, now: float) -> list[tuple[str, float]]:
        """(id, expires_at) of every revocation still in force at ``now``."""

    @abstractmethod
    def prune_revocations(self, now: float, margin: float) -> int:
        """Delete revocations that expired more than ``margin`` seconds ago, by the
        earlier of ``now`` and the store's own clock; returns how many."""

    # -- proof nonces ------------------------------------------------------------------

    @abstractmethod
    def redeem_nonces(
        self, claims: Sequence[tuple[str, str, float]], forget_before: float | None = None
    ) -> list[bool]:
        """Redeem proof-of-possession nonces, each ``(agent, nonce, keep_until)``: True for
        one redeemed now, False for one already redeemed (by any replica sharing the
        store, or earlier in ``claims``). With ``forget_before``, first forget nonces kept
        until before it (by the earlier of it and the store's own clock)."""

    # -- budgets -------------------------------------------------------------------------

    @abstractmethod
    def lease_budgets(
        self, leases: Sequence[BudgetLease], forget_before: float | None = None
    ) -> list[int]:
        """Take uses for each lease, atomically: as many as it wants, or as remain of its
        limit (0: the budget is spent). With ``forget_before``, first drop the rows that
        expired before it (by the earlier of it and the store's own clock)."""

    @abstractmethod
    def return_budgets(self, returns: Sequence[tuple[str, int, int]]) -> None:
        """Give back uses leased and never spent, each ``(id, slot, count)``."""

    @abstractmethod
    def budget_used(self, budget_id: str, slot: int = 0) -> int:
        """Uses of a budget taken (leased) so far in ``slot``."""

    # -- change feed and audit ----------------------------------------------------------

    @abstractmethod
    def changes_since(self, seq: int, limit: int = 10000) -> list[Change]: ...

    @abstractmethod
    def last_change(self) -> int: ...

    @abstractmethod
    def append_audit(self, events: Sequence[AuditEvent]) -> None: ...

    @abstractmethod
    def list_audit(self, query: AuditQuery) -> list[AuditEvent]: ...

    @abstractmethod
    def prune_audit(self, before: float, sign: Signer, limit: int = 5000) -> int:
        """Delete up to ``limit`` of the oldest sealed audit records last seen before
        ``before``, leaving a signed checkpoint at the cut (``sign``) so what remains
        still verifies; returns how many (call again while it returns ``limit``)."""

    # -- the sealed ledger (tamper evidence, the live stream) ---------------------------

    @abstractmethod
    def seal_audit(self, sign: Signer, now: float, keep: bool, limit: int = 2000) -> int:
        """Give the next unsealed records (those no earlier transaction can still add
        to) their places and digests, in one order every reader agrees on, and sign
        the new head; with ``keep`` also keep that signature as a checkpoint. One
        replica seals at a time (the others return 0). Returns how many were sealed."""

    @abstractmethod
    def sealed_audit(
        self, after_pos: int, limit: int, query: AuditQuery | None = None
    ) -> list[AuditEvent]:
        """Sealed records after ``after_pos`` in their order, filtered by ``query``."""

    @abstractmethod
    def audit_proof_page(self, after_pos: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        """``(pos, canonical record, stored digest)`` of sealed records after ``after_pos``."""

    @abstractmethod
    def audit_head(self) -> Checkpoint | None:
        """The signed head of the ledger (None before anything was sealed)."""

    @abstractmethod
    def audit_checkpoints(self, after_pos: int = 0) -> list[Checkpoint]:
        """Kept checkpoints after ``after_pos``, in order (cuts included)."""

    @abstractmethod
    def audit_start(self) -> tuple[int, bytes]:
        """Where the remaining ledger starts: the position and digest before its first
        record (0 and ``GENESIS``, or a retention cut's)."""

    @abstractmethod
    def ledger_key(self, sealed: bytes, public_key: str, at: float) -> tuple[bytes, str]:
        """The ledger's signing key (sealed) and its public key: the one stored, or, when
        there is none yet, the one given (every replica gets the same)."""
