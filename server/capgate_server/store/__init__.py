"""Storage: one ``Store`` interface, an embedded SQLite backend and a PostgreSQL one."""

from __future__ import annotations

from pathlib import Path

from capgate import InvalidArgumentError
from capgate_server.store._approvals import (
    ApprovalRecord,
    ApprovalStatus,
    ApprovalStore,
    ApprovalVote,
    Redemption,
)
from capgate_server.store._base import (
    AUDIT_FIELD_LIMITS,
    AgentPatch,
    AuditEvent,
    AuditQuery,
    BudgetLease,
    Change,
    ChangeKind,
    DelegationRecord,
    Principal,
    Role,
    RootKeyRecord,
    Signer,
    Store,
    TokenRecord,
)
from capgate_server.store._governance import (
    AlertRecord,
    Containment,
    GovernancePolicy,
    GovernanceStore,
    UsageKind,
    UsageRow,
)
from capgate_server.store._postgres import PostgresStore, SessionTimeouts
from capgate_server.store._proof import (
    GENESIS,
    Break,
    Checkpoint,
    LedgerKey,
    canonical,
    link,
    walk,
)
from capgate_server.store._sql import MIGRATIONS
from capgate_server.store._sqlite import SqliteStore

__all__ = [
    "AUDIT_FIELD_LIMITS",
    "GENESIS",
    "MIGRATIONS",
    "AgentPatch",
    "AlertRecord",
    "ApprovalRecord",
    "ApprovalStatus",
    "ApprovalStore",
    "ApprovalVote",
    "AuditEvent",
    "AuditQuery",
    "Break",
    "BudgetLease",
    "Change",
    "ChangeKind",
    "Checkpoint",
    "Containment",
    "DelegationRecord",
    "GovernancePolicy",
    "GovernanceStore",
    "LedgerKey",
    "PostgresStore",
    "Principal",
    "Redemption",
    "Role",
    "RootKeyRecord",
    "SessionTimeouts",
    "Signer",
    "SqliteStore",
    "Store",
    "TokenRecord",
    "UsageKind",
    "UsageRow",
    "canonical",
    "link",
    "open_store",
    "walk",
]


def open_store(
    url: str | None, data_dir: Path, timeouts: SessionTimeouts | None = None, *, writer: str = ""
) -> Store:
    """``None`` → SQLite in ``data_dir``; ``sqlite:///PATH``; ``postgresql://…`` (whose
    sessions get ``timeouts``). ``writer`` names the replica in the audit records."""
    if not url:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return SqliteStore(data_dir / "capgate.db", writer=writer)
    if url.startswith("sqlite:///"):
        return SqliteStore(url[len("sqlite:///") :], writer=writer)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, timeouts=timeouts, writer=writer)
    raise InvalidArgumentError(f"unknown store URL {url!r} (sqlite:///PATH or postgresql://…)")
