"""Storage: one ``Store`` interface, an embedded SQLite backend and a PostgreSQL one."""

from __future__ import annotations

from pathlib import Path

from capgate import InvalidArgumentError
from capgate_server.store._base import (
    AUDIT_FIELD_LIMITS,
    AgentPatch,
    AuditEvent,
    AuditQuery,
    Change,
    ChangeKind,
    DelegationRecord,
    Principal,
    Role,
    RootKeyRecord,
    Store,
    TokenRecord,
)
from capgate_server.store._postgres import PostgresStore, SessionTimeouts
from capgate_server.store._sql import MIGRATIONS
from capgate_server.store._sqlite import SqliteStore

__all__ = [
    "AUDIT_FIELD_LIMITS",
    "MIGRATIONS",
    "AgentPatch",
    "AuditEvent",
    "AuditQuery",
    "Change",
    "ChangeKind",
    "DelegationRecord",
    "PostgresStore",
    "Principal",
    "Role",
    "RootKeyRecord",
    "SessionTimeouts",
    "SqliteStore",
    "Store",
    "TokenRecord",
    "open_store",
]


def open_store(url: str | None, data_dir: Path,
               timeouts: SessionTimeouts | None = None) -> Store:
    """``None`` → SQLite in ``data_dir``; ``sqlite:///PATH``; ``postgresql://…`` (whose
    sessions get ``timeouts``)."""
    if not url:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return SqliteStore(data_dir / "capgate.db")
    if url.startswith("sqlite:///"):
        return SqliteStore(url[len("sqlite:///"):])
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url, timeouts=timeouts)
    raise InvalidArgumentError(f"unknown store URL {url!r} (sqlite:///PATH or postgresql://…)")
