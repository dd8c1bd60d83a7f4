"""``SqlStore``: the ``Store`` written once in SQL both SQLite and PostgreSQL speak.

A backend supplies a connection, a transaction context, its placeholder style
and its column types; the statements and the migrations are shared, so both
backends pass one test suite.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from capgate import Agent, AlreadyExistsError, NotFoundError
from capgate_server.store._audit_sql import AuditRecords
from capgate_server.store._base import (
    AUDIT_FIELD_LIMITS,
    AgentPatch,
    AuditEvent,
    Change,
    ChangeKind,
    DelegationRecord,
    Principal,
    Role,
    RootKeyRecord,
    Store,
    TokenRecord,
    agent_from_row,
    encode_ceiling,
)

# Each migration is a list of statements; {blob} {real} {bigint} {serial} are
# filled in per backend. Append new migrations; never edit a released one.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE principals (
            id TEXT PRIMARY KEY, role TEXT NOT NULL,
            credential_hash TEXT NOT NULL UNIQUE, created_at {real} NOT NULL)""",
        """CREATE TABLE agents (
            id TEXT PRIMARY KEY REFERENCES principals(id), owner TEXT NOT NULL,
            description TEXT NOT NULL, status TEXT NOT NULL, ceiling TEXT NOT NULL,
            max_ttl {bigint} NOT NULL, max_depth {bigint} NOT NULL, epoch {bigint} NOT NULL,
            revoked_before {bigint} NOT NULL, created_at {real} NOT NULL)""",
        """CREATE TABLE agent_keys (
            agent TEXT NOT NULL REFERENCES agents(id), key_id TEXT NOT NULL,
            public_key {blob} NOT NULL, created_at {real} NOT NULL,
            PRIMARY KEY (agent, key_id))""",
        """CREATE TABLE root_keys (
            id TEXT PRIMARY KEY, sealed {blob} NOT NULL, created_at {real} NOT NULL,
            retired_at {real})""",
        """CREATE TABLE tokens (
            id TEXT PRIMARY KEY, agent TEXT NOT NULL, key_id TEXT NOT NULL,
            issued_at {real} NOT NULL, expires_at {real} NOT NULL, caveats TEXT NOT NULL)""",
        "CREATE INDEX tokens_agent ON tokens (agent)",
        """CREATE TABLE delegations (
            id TEXT PRIMARY KEY, token_id TEXT NOT NULL, parent TEXT NOT NULL,
            from_agent TEXT NOT NULL, to_agent TEXT NOT NULL, at {real} NOT NULL,
            expires_at {real}, offline {bigint} NOT NULL, restrictions TEXT NOT NULL)""",
        "CREATE INDEX delegations_token ON delegations (token_id)",
        """CREATE TABLE revocations (
            id TEXT PRIMARY KEY, revoked_at {real} NOT NULL, expires_at {real} NOT NULL,
            revoked_by TEXT NOT NULL, reason TEXT NOT NULL)""",
        """CREATE TABLE changes (
            seq {serial}, kind TEXT NOT NULL, key TEXT NOT NULL, value {real})""",
        """CREATE TABLE audit (
            seq {serial}, at {real} NOT NULL, last_at {real} NOT NULL,
            count {bigint} NOT NULL, principal TEXT NOT NULL, kind TEXT NOT NULL,
            subject TEXT NOT NULL, ok {bigint} NOT NULL, code TEXT NOT NULL,
            reason TEXT NOT NULL, chain TEXT NOT NULL, action TEXT NOT NULL,
            resource TEXT NOT NULL, presenter TEXT NOT NULL, detail TEXT NOT NULL)""",
        "CREATE INDEX audit_principal ON audit (principal, seq)",
        "CREATE INDEX audit_subject ON audit (subject, seq)",
    ],
]

_AGENT_COLS = ("id, owner, description, status, ceiling, max_ttl, max_depth, epoch, "
               "revoked_before, created_at")
_AGENT_MARKS = ", ".join("?" * 10)


class SqlStore(AuditRecords, Store):
    """Shared statements; subclasses provide ``_tx`` and ``_read``."""

    placeholder = "?"

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Any]:
        """A write transaction yielding a cursor; commits durably on exit."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]:
        """A cursor for reads."""

    @abstractmethod
    def _lock_changes(self, cur: Any) -> None:
        """Serialize writers of the change feed so seqs become visible in order."""

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _x(self, cur: Any, sql: str, params: Sequence[object] = ()) -> Any:
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def _change(self, cur: Any, kind: ChangeKind, key: str, value: float | None = None) -> None:
        self._lock_changes(cur)
        self._x(cur, "INSERT INTO changes (kind, key, value) VALUES (?, ?, ?)",
                (str(kind), key, value))

    # -- principals and agents -------------------------------------------------------

    def create_principal(self, principal: Principal, credential_hash: str,
                         audit: AuditEvent | None = None) -> None:
        with self._tx() as cur:
            self._insert_principal(cur, principal, credential_hash)
            self._change(cur, ChangeKind.PRINCIPAL, principal.id)
            self._audit(cur, [audit] if audit else [])

    def _insert_principal(self, cur: Any, p: Principal, credential_hash: str) -> None:
        self._x(cur, "INSERT INTO principals (id, role, credential_hash, created_at) "
                     "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (p.id, str(p.role), credential_hash, p.created_at))
        if cur.rowcount != 1:
            raise AlreadyExistsError(f"principal {p.id!r} already exists", id=p.id)

    def principal_by_credential(self, credential_hash: str) -> Principal | None:
        with self._read() as cur:
            row = self._x(cur, "SELECT id, role, created_at FROM principals "
                               "WHERE credential_hash = ?", (credential_hash,)).fetchone()
        return Principal(row[0], Role(row[1]), row[2]) if row else None

    def get_principal(self, principal_id: str) -> Principal | None:
        with self._read() as cur:
            row = self._x(cur, "SELECT id, role, created_at FROM principals WHERE id = ?",
                          (principal_id,)).fetchone()
        return Principal(row[0], Role(row[1]), row[2]) if row else None

    def create_agent(self, agent: Agent, credential_hash: str, audit: AuditEvent) -> None:
        with self._tx() as cur:
            self._insert_principal(cur, Principal(agent.id, Role.AGENT, agent.created_at),
                                   credential_hash)
            self._x(cur, f"INSERT INTO agents ({_AGENT_COLS}) VALUES ({_AGENT_MARKS})",
                    self._agent_values(agent))
            self._write_keys(cur, agent)
            self._change(cur, ChangeKind.AGENT, agent.id)
            self._audit(cur, [audit])

    @staticmethod
    def _agent_values(a: Agent) -> tuple[object, ...]:
        return (a.id, a.owner, a.description, str(a.status), encode_ceiling(a.ceiling),
                a.max_ttl, a.max_depth, a.epoch, a.revoked_before_ms, a.created_at)

    def _write_keys(self, cur: Any, agent: Agent) -> None:
        self._x(cur, "DELETE FROM agent_keys WHERE agent = ?", (agent.id,))
        for kid, pub in agent.public_keys.items():
            self._x(cur, "INSERT INTO agent_keys (agent, key_id, public_key, created_at) "
                         "VALUES (?, ?, ?, ?)", (agent.id, kid, pub, agent.created_at))

    def _keys_of(self, cur: Any, agent_id: str | None) -> dict[str, dict[str, bytes]]:
        """Registered public keys of one agent, or of all agents when ``agent_id`` is None."""
        if agent_id is None:
            rows = self._x(cur, "SELECT agent, key_id, public_key FROM agent_keys").fetchall()
        else:
            rows = self._x(cur, "SELECT agent, key_id, public_key FROM agent_keys "
                                "WHERE agent = ?", (agent_id,)).fetchall()
        out: dict[str, dict[str, bytes]] = {}
        for agent, kid, pub in rows:
            out.setdefault(agent, {})[kid] = bytes(pub)
        return out

    def get_agent(self, agent_id: str) -> Agent | None:
        with self._read() as cur:
            row = self._x(cur, f"SELECT {_AGENT_COLS} FROM agents WHERE id = ?",
                          (agent_id,)).fetchone()
            if row is None:
                return None
            keys = self._keys_of(cur, agent_id).get(agent_id, {})
        return agent_from_row(row, keys)

    def list_agents(self) -> list[Agent]:
        with self._read() as cur:
            rows = self._x(cur, f"SELECT {_AGENT_COLS} FROM agents ORDER BY id").fetchall()
            keys = self._keys_of(cur, None)
        return [agent_from_row(r, keys.get(r[0], {})) for r in rows]

    def update_agent(self, agent: Agent, audit: AuditEvent) -> None:
        with self._tx() as cur:
            values = self._agent_values(agent)
            self._x(cur, "UPDATE agents SET owner = ?, description = ?, status = ?, ceiling = ?, "
                         "max_ttl = ?, max_depth = ?, epoch = ?, revoked_before = ? WHERE id = ?",
                    (*values[1:9], agent.id))
            if cur.rowcount != 1:
                raise NotFoundError(f"agent {agent.id!r} not found", id=agent.id)
            self._write_keys(cur, agent)
            self._change(cur, ChangeKind.AGENT, agent.id)
            self._audit(cur, [audit])

    def patch_agent(self, agent_id: str, patch: AgentPatch, audit: AuditEvent) -> None:
        sets: list[str] = []
        params: list[object] = []
        for column, value in (("status", patch.status), ("max_ttl", patch.max_ttl),
                              ("max_depth", patch.max_depth),
                              ("description", patch.description)):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(str(value) if column == "status" else value)
        if patch.ceiling is not None:
            sets.append("ceiling = ?")
            params.append(encode_ceiling(patch.ceiling))
        if patch.revoke_before_ms is not None:
            sets.append("epoch = epoch + 1, revoked_before = CASE WHEN revoked_before > ? "
                        "THEN revoked_before ELSE ? END")
            params += [patch.revoke_before_ms, patch.revoke_before_ms]
        with self._tx() as cur:
            # a no-op SET still locks the row and tells us whether the agent exists
            self._x(cur, f"UPDATE agents SET {', '.join(sets) or 'id = id'} WHERE id = ?",
                    (*params, agent_id))
            if cur.rowcount != 1:
                raise NotFoundError(f"agent {agent_id!r} not found", id=agent_id)
            if patch.add_key is not None:
                kid, pub = patch.add_key
                self._x(cur, "INSERT INTO agent_keys (agent, key_id, public_key, created_at) "
                             "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (agent_id, kid, pub, audit.at))
            if patch.remove_key is not None:
                self._x(cur, "DELETE FROM agent_keys WHERE agent = ? AND key_id = ?",
                        (agent_id, patch.remove_key))
                if cur.rowcount != 1:
                    raise NotFoundError(f"agent {agent_id!r} has no key {patch.remove_key!r}")
            self._change(cur, ChangeKind.AGENT, agent_id)
            self._audit(cur, [audit])

    # -- root keys -------------------------------------------------------------------

    def add_root_key(self, record: RootKeyRecord, audit: AuditEvent | None = None) -> None:
        with self._tx() as cur:
            self._x(cur, "INSERT INTO root_keys (id, sealed, created_at, retired_at) "
                         "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (record.id, record.sealed, record.created_at, record.retired_at))
            if cur.rowcount != 1:
                raise AlreadyExistsError(f"root key {record.id!r} already exists")
            self._change(cur, ChangeKind.ROOT_KEY, record.id)
            self._audit(cur, [audit] if audit else [])

    def root_keys(self) -> list[RootKeyRecord]:
        with self._read() as cur:
            rows = self._x(cur, "SELECT id, sealed, created_at, retired_at FROM root_keys "
                                "ORDER BY created_at, id").fetchall()
        return [RootKeyRecord(r[0], bytes(r[1]), r[2], r[3]) for r in rows]

    def retire_root_key(self, key_id: str, at: float, audit: AuditEvent) -> None:
        with self._tx() as cur:
            self._x(cur, "UPDATE root_keys SET retired_at = ? WHERE id = ? AND retired_at IS NULL",
                    (at, key_id))
            if cur.rowcount != 1:
                raise NotFoundError(f"no active root key {key_id!r}", id=key_id)
            self._change(cur, ChangeKind.ROOT_KEY, key_id)
            self._audit(cur, [audit])

    # -- tokens and delegations ----------------------------------------------------------

    def record_token(self, record: TokenRecord, audit: AuditEvent) -> None:
        with self._tx() as cur:
            self._x(cur, "INSERT INTO tokens (id, agent, key_id, issued_at, expires_at, caveats) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                    (record.id, record.agent, record.key_id, record.issued_at,
                     record.expires_at, json.dumps(list(record.caveats))))
            self._audit(cur, [audit])

    def get_token(self, token_id: str) -> TokenRecord | None:
        with self._read() as cur:
            r = self._x(cur, "SELECT id, agent, key_id, issued_at, expires_at, caveats "
                             "FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return TokenRecord(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5]))) if r else None

    def record_delegations(self, records: Sequence[DelegationRecord]) -> None:
        if not records:
            return
        with self._tx() as cur:
            cur.executemany(
                self._sql("INSERT INTO delegations (id, token_id, parent, from_agent, to_agent, at,"
                          " expires_at, offline, restrictions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                          " ON CONFLICT DO NOTHING"),
                [(d.id, d.token_id, d.parent, d.from_agent, d.to_agent, d.at, d.expires_at,
                  int(d.offline), json.dumps(list(d.restrictions))) for d in records],
            )

    _DELEGATION_COLS = ("id, token_id, parent, from_agent, to_agent, at, expires_at, offline, "
                        "restrictions")

    @staticmethod
    def _delegation(r: Sequence[Any]) -> DelegationRecord:
        return DelegationRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]),
                                tuple(json.loads(r[8])))

    def get_delegation(self, delegation_id: str) -> DelegationRecord | None:
        with self._read() as cur:
            r = self._x(cur, f"SELECT {self._DELEGATION_COLS} FROM delegations WHERE id = ?",
                        (delegation_id,)).fetchone()
        return self._delegation(r) if r else None

    def delegations_of(self, token_id: str) -> list[DelegationRecord]:
        with self._read() as cur:
            rows = self._x(cur, f"SELECT {self._DELEGATION_COLS} FROM delegations "
                                "WHERE token_id = ? ORDER BY at, id", (token_id,)).fetchall()
        return [self._delegation(r) for r in rows]

    # -- revocations -----------------------------------------------------------------

    def revoke(self, lineage_id: str, revoked_at: float, expires_at: float, by: str,
               reason: str, audit: AuditEvent) -> bool:
        with self._tx() as cur:
            row = self._x(cur, "SELECT expires_at FROM revocations WHERE id = ?",
                          (lineage_id,)).fetchone()
            if row is None:
                self._x(cur, "INSERT INTO revocations (id, revoked_at, expires_at, revoked_by,"
                             " reason) VALUES (?, ?, ?, ?, ?)",
                        (lineage_id, revoked_at, expires_at, by,
                         reason[:AUDIT_FIELD_LIMITS["reason"]]))
                self._change(cur, ChangeKind.REVOCATION, lineage_id, expires_at)
            elif expires_at > row[0]:  # kept as long as the longest-lived token it may name
                self._x(cur, "UPDATE revocations SET expires_at = ? WHERE id = ?",
                        (expires_at, lineage_id))
                self._change(cur, ChangeKind.REVOCATION, lineage_id, expires_at)
            self._audit(cur, [audit])
        return row is None

    def revocations(self, now: float) -> list[tuple[str, float]]:
        with self._read() as cur:
            rows = self._x(cur, "SELECT id, expires_at FROM revocations WHERE expires_at > ?",
                           (now,)).fetchall()
        return [(r[0], r[1]) for r in rows]

    def prune_revocations(self, now: float) -> int:
        with self._tx() as cur:
            self._x(cur, "DELETE FROM revocations WHERE expires_at <= ?", (now,))
            return int(cur.rowcount)

    # -- change feed ---------------------------------------------------------

    def changes_since(self, seq: int, limit: int = 10000) -> list[Change]:
        with self._read() as cur:
            rows = self._x(cur, "SELECT seq, kind, key, value FROM changes WHERE seq > ? "
                                "ORDER BY seq LIMIT ?", (seq, limit)).fetchall()
        return [Change(r[0], ChangeKind(r[1]), r[2], r[3]) for r in rows]

    def last_change(self) -> int:
        with self._read() as cur:
            row = self._x(cur, "SELECT MAX(seq) FROM changes").fetchone()
        return int(row[0] or 0)

    # -- migrations --------------------------------------------------------------------

    def _apply_migrations(self, cur: Any, types: dict[str, str]) -> None:
        self._x(cur, "CREATE TABLE IF NOT EXISTS schema_version (version {} NOT NULL)"
                .format(types["bigint"]))
        row = self._x(cur, "SELECT MAX(version) FROM schema_version").fetchone()
        current = int(row[0] or 0)
        if current > len(MIGRATIONS):
            raise RuntimeError(f"database schema version {current} is newer than this capgate "
                               f"({len(MIGRATIONS)}); upgrade capgate")
        for version, statements in enumerate(MIGRATIONS[current:], start=current + 1):
            for stmt in statements:
                self._x(cur, stmt.format(**types))
            self._x(cur, "INSERT INTO schema_version (version) VALUES (?)", (version,))

