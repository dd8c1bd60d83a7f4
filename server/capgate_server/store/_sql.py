"""``SqlStore``: the ``Store`` written once in SQL both SQLite and PostgreSQL speak.

A backend supplies a connection, a transaction context, its placeholder style
and its column types; the statements and the migrations are shared, so both
backends pass one test suite. The change-feed row is always the last statement
of a transaction: where appending to the feed takes a lock (PostgreSQL), it is
held only from that statement to the commit.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from capgate import Agent, AlreadyExistsError, NotFoundError
from capgate_server.store._approval_sql import APPROVAL_MIGRATION, ApprovalRows
from capgate_server.store._audit_sql import LEDGER_MIGRATION, AuditRecords
from capgate_server.store._base import (
    AUDIT_FIELD_LIMITS,
    AgentPatch,
    AuditEvent,
    BudgetLease,
    Change,
    ChangeKind,
    DelegationRecord,
    Principal,
    Role,
    RootKeyRecord,
    Store,
    TokenRecord,
    agent_from_row,
    encode_approval_rules,
    encode_ceiling,
)
from capgate_server.store._governance_sql import GOVERNANCE_MIGRATION, GovernanceRows

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
    [  # principals can be disabled (an admin, a service or an agent alike)
        "ALTER TABLE principals ADD COLUMN disabled {bigint} NOT NULL DEFAULT 0",
    ],
    [
        # the signing key is the one added last, as the store counts, not by any clock;
        # keys already there keep the order their clocks gave them
        "ALTER TABLE root_keys ADD COLUMN generation {bigint} NOT NULL DEFAULT 0",
        """UPDATE root_keys SET generation = (
            SELECT COUNT(*) FROM root_keys AS older
            WHERE older.created_at < root_keys.created_at
               OR (older.created_at = root_keys.created_at AND older.id <= root_keys.id))""",
        "CREATE INDEX delegations_to_agent ON delegations (to_agent)",
    ],
    [  # proof of possession: agents that require it, and the nonces redeemed fleet-wide
        "ALTER TABLE agents ADD COLUMN require_proof {bigint} NOT NULL DEFAULT 0",
        """CREATE TABLE proof_nonces (
            agent TEXT NOT NULL, nonce TEXT NOT NULL, expires_at {real} NOT NULL,
            PRIMARY KEY (agent, nonce))""",
        "CREATE INDEX proof_nonces_expiry ON proof_nonces (expires_at)",
    ],
    LEDGER_MIGRATION,  # the audit ledger: places, digests, checkpoints, its signing key
    APPROVAL_MIGRATION,  # approval requests, their votes, agents' standing approval rules
    [  # budgets: the uses counted fleet-wide (leased to replicas in blocks), agents' rates
        "ALTER TABLE agents ADD COLUMN rate TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE budgets (
            id TEXT NOT NULL, slot {bigint} NOT NULL, used {bigint} NOT NULL,
            expires_at {real} NOT NULL, PRIMARY KEY (id, slot))""",
        "CREATE INDEX budgets_expiry ON budgets (expires_at)",
    ],
    [  # each audit record carries its writer's MAC: sealing keeps out rows written by others
        "ALTER TABLE audit ADD COLUMN mac {blob}",
    ],
    GOVERNANCE_MIGRATION,  # usage per agent, deviation alerts, containment policies
]

_AGENT_COLS = (
    "id, owner, description, status, ceiling, max_ttl, max_depth, epoch, "
    "revoked_before, created_at, require_proof, approvals, rate"
)
_AGENT_MARKS = ", ".join("?" * 13)
_NONCE_ROWS = 200  # nonces per INSERT statement (3 parameters each)


class SqlStore(ApprovalRows, GovernanceRows, AuditRecords, Store):
    """Shared statements; subclasses provide ``_tx`` and ``_read``."""

    placeholder = "?"

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Any]:
        """A write transaction yielding a cursor; commits durably on exit."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]:
        """A cursor for reads."""

    def _store_clock(self, cur: Any) -> float | None:
        """The database's clock, where it has one of its own."""
        return None

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _x(self, cur: Any, sql: str, params: Sequence[object] = ()) -> Any:
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def _change(self, cur: Any, kind: ChangeKind, key: str, value: float | None = None) -> None:
        """Append to the change feed: the last statement of the transaction."""
        self._x(
            cur, "INSERT INTO changes (kind, key, value) VALUES (?, ?, ?)", (str(kind), key, value)
        )

    # -- principals and agents -------------------------------------------------------

    def create_principal(
        self, principal: Principal, credential_hash: str, audit: AuditEvent | None = None
    ) -> None:
        with self._tx() as cur:
            self._insert_principal(cur, principal, credential_hash)
            self._audit(cur, [audit] if audit else [])
            self._change(cur, ChangeKind.PRINCIPAL, principal.id)

    def _insert_principal(self, cur: Any, p: Principal, credential_hash: str) -> None:
        self._x(
            cur,
            "INSERT INTO principals (id, role, credential_hash, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (p.id, str(p.role), credential_hash, p.created_at),
        )
        if cur.rowcount != 1:
            raise AlreadyExistsError(f"principal {p.id!r} already exists", id=p.id)

    _PRINCIPAL_COLS = "id, role, created_at, disabled"

    @staticmethod
    def _principal(row: Sequence[Any]) -> Principal:
        return Principal(row[0], Role(row[1]), row[2], bool(row[3]))

    def principal_by_credential(self, credential_hash: str) -> Principal | None:
        with self._read() as cur:
            row = self._x(
                cur,
                f"SELECT {self._PRINCIPAL_COLS} FROM principals WHERE credential_hash = ?",
                (credential_hash,),
            ).fetchone()
        return self._principal(row) if row else None

    def get_principal(self, principal_id: str) -> Principal | None:
        with self._read() as cur:
            row = self._x(
                cur, f"SELECT {self._PRINCIPAL_COLS} FROM principals WHERE id = ?", (principal_id,)
            ).fetchone()
        return self._principal(row) if row else None

    def list_principals(self) -> list[Principal]:
        with self._read() as cur:
            rows = self._x(
                cur,
                f"SELECT {self._PRINCIPAL_COLS} FROM principals "
                "WHERE credential_hash NOT LIKE ? ORDER BY id",
                ("deleted:%",),
            ).fetchall()
        return [self._principal(r) for r in rows]

    def set_principal_disabled(self, principal_id: str, disabled: bool, audit: AuditEvent) -> None:
        self._update_principal(principal_id, "disabled = ?", int(disabled), audit)

    def set_credential(self, principal_id: str, credential_hash: str, audit: AuditEvent) -> None:
        self._update_principal(principal_id, "credential_hash = ?", credential_hash, audit)

    def _update_principal(
        self, principal_id: str, assignment: str, value: object, audit: AuditEvent
    ) -> None:
        with self._tx() as cur:
            self._x(cur, f"UPDATE principals SET {assignment} WHERE id = ?", (value, principal_id))
            if cur.rowcount != 1:
                raise NotFoundError(f"principal {principal_id!r} not found", id=principal_id)
            self._audit(cur, [audit])
            self._change(cur, ChangeKind.PRINCIPAL, principal_id)

    def create_agent(self, agent: Agent, credential_hash: str, audit: AuditEvent) -> None:
        with self._tx() as cur:
            row = self._x(
                cur,
                "SELECT revoked_before FROM agents WHERE id = ? AND status = ?",
                (agent.id, "deleted"),
            ).fetchone()
            if row is None:
                self._insert_principal(
                    cur, Principal(agent.id, Role.AGENT, agent.created_at), credential_hash
                )
                self._x(
                    cur,
                    f"INSERT INTO agents ({_AGENT_COLS}) VALUES ({_AGENT_MARKS})",
                    self._agent_values(agent),
                )
            else:  # the id comes back: nothing issued to the deleted agent may
                agent = agent.with_changes(  # pass for the new one
                    revoked_before_ms=max(int(row[0]), agent.revoked_before_ms),
                    epoch=agent.epoch + 1,
                )
                self._x(
                    cur,
                    "UPDATE principals SET credential_hash = ?, disabled = 0, "
                    "created_at = ? WHERE id = ?",
                    (credential_hash, agent.created_at, agent.id),
                )
                self._x(
                    cur,
                    "UPDATE agents SET owner = ?, description = ?, status = ?, "
                    "ceiling = ?, max_ttl = ?, max_depth = ?, epoch = ?, "
                    "revoked_before = ?, created_at = ?, require_proof = ?, "
                    "approvals = ?, rate = ? WHERE id = ?",
                    (*self._agent_values(agent)[1:], agent.id),
                )
            self._write_keys(cur, agent)
            self._audit(cur, [audit])
            if row is not None:  # the old credential's cached principal must go
                self._change(cur, ChangeKind.PRINCIPAL, agent.id)
            self._change(cur, ChangeKind.AGENT, agent.id)

    def delete_agent(self, agent_id: str, revoke_before_ms: int, audit: AuditEvent) -> None:
        with self._tx() as cur:
            self._x(
                cur,
                "UPDATE agents SET status = ?, epoch = epoch + 1, revoked_before = "
                "CASE WHEN revoked_before > ? THEN revoked_before ELSE ? END "
                "WHERE id = ? AND status <> ?",
                ("deleted", revoke_before_ms, revoke_before_ms, agent_id, "deleted"),
            )
            if cur.rowcount != 1:
                raise NotFoundError(f"agent {agent_id!r} not found", id=agent_id)
            self._x(cur, "DELETE FROM agent_keys WHERE agent = ?", (agent_id,))
            # the principal row stays (the agent row refers to it) but can never log in
            self._x(
                cur,
                "UPDATE principals SET credential_hash = ?, disabled = 1 WHERE id = ?",
                (f"deleted:{agent_id}", agent_id),
            )
            self._audit(cur, [audit])
            self._change(cur, ChangeKind.AGENT, agent_id)
            self._change(cur, ChangeKind.PRINCIPAL, agent_id)

    @staticmethod
    def _agent_values(a: Agent) -> tuple[object, ...]:
        return (
            a.id,
            a.owner,
            a.description,
            str(a.status),
            encode_ceiling(a.ceiling),
            a.max_ttl,
            a.max_depth,
            a.epoch,
            a.revoked_before_ms,
            a.created_at,
            int(a.require_proof),
            encode_approval_rules(a.approvals),
            a.rate,
        )

    def _write_keys(self, cur: Any, agent: Agent) -> None:
        self._x(cur, "DELETE FROM agent_keys WHERE agent = ?", (agent.id,))
        for kid, pub in agent.public_keys.items():
            self._x(
                cur,
                "INSERT INTO agent_keys (agent, key_id, public_key, created_at) "
                "VALUES (?, ?, ?, ?)",
                (agent.id, kid, pub, agent.created_at),
            )

    def _keys_of(self, cur: Any, agent_id: str | None) -> dict[str, dict[str, bytes]]:
        """Registered public keys of one agent, or of all agents when ``agent_id`` is None."""
        if agent_id is None:
            rows = self._x(cur, "SELECT agent, key_id, public_key FROM agent_keys").fetchall()
        else:
            rows = self._x(
                cur, "SELECT agent, key_id, public_key FROM agent_keys WHERE agent = ?", (agent_id,)
            ).fetchall()
        out: dict[str, dict[str, bytes]] = {}
        for agent, kid, pub in rows:
            out.setdefault(agent, {})[kid] = bytes(pub)
        return out

    def get_agent(self, agent_id: str) -> Agent | None:
        with self._read() as cur:
            row = self._x(
                cur, f"SELECT {_AGENT_COLS} FROM agents WHERE id = ?", (agent_id,)
            ).fetchone()
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
            self._x(
                cur,
                "UPDATE agents SET owner = ?, description = ?, status = ?, ceiling = ?, "
                "max_ttl = ?, max_depth = ?, epoch = ?, revoked_before = ?, "
                "require_proof = ?, approvals = ?, rate = ? WHERE id = ?",
                (*values[1:9], *values[10:], agent.id),
            )
            if cur.rowcount != 1:
                raise NotFoundError(f"agent {agent.id!r} not found", id=agent.id)
            self._write_keys(cur, agent)
            self._audit(cur, [audit])
            self._change(cur, ChangeKind.AGENT, agent.id)

    def patch_agent(self, agent_id: str, patch: AgentPatch, audit: AuditEvent) -> None:
        sets: list[str] = []
        params: list[object] = []
        for column, value in (
            ("status", patch.status),
            ("max_ttl", patch.max_ttl),
            ("max_depth", patch.max_depth),
            ("description", patch.description),
            ("rate", patch.rate),
        ):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(str(value) if column == "status" else value)
        if patch.require_proof is not None:
            sets.append("require_proof = ?")
            params.append(int(patch.require_proof))
        if patch.ceiling is not None:
            sets.append("ceiling = ?")
            params.append(encode_ceiling(patch.ceiling))
        if patch.approvals is not None:
            sets.append("approvals = ?")
            params.append(encode_approval_rules(patch.approvals))
        if patch.revoke_before_ms is not None:
            sets.append(
                "epoch = epoch + 1, revoked_before = CASE WHEN revoked_before > ? "
                "THEN revoked_before ELSE ? END"
            )
            params += [patch.revoke_before_ms, patch.revoke_before_ms]
        with self._tx() as cur:
            # a no-op SET still locks the row and tells us whether the agent exists
            self._x(
                cur,
                f"UPDATE agents SET {', '.join(sets) or 'id = id'} WHERE id = ?",
                (*params, agent_id),
            )
            if cur.rowcount != 1:
                raise NotFoundError(f"agent {agent_id!r} not found", id=agent_id)
            if patch.add_key is not None:
                kid, pub = patch.add_key
                self._x(
                    cur,
                    "INSERT INTO agent_keys (agent, key_id, public_key, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (agent_id, kid, pub, audit.at),
                )
            if patch.remove_key is not None:
                self._x(
                    cur,
                    "DELETE FROM agent_keys WHERE agent = ? AND key_id = ?",
                    (agent_id, patch.remove_key),
                )
                if cur.rowcount != 1:
                    raise NotFoundError(f"agent {agent_id!r} has no key {patch.remove_key!r}")
            self._audit(cur, [audit])
            self._change(cur, ChangeKind.AGENT, agent_id)

    # -- root keys -------------------------------------------------------------------

    def add_root_key(self, record: RootKeyRecord, audit: AuditEvent | None = None) -> None:
        # The generation sees every key committed before this statement: a key added
        # after another one's rotation returned always comes later. Two rotations at
        # the same moment may share one; the id then decides, the same on every replica.
        with self._tx() as cur:
            self._x(
                cur,
                "INSERT INTO root_keys (id, sealed, created_at, retired_at, generation) "
                "VALUES (?, ?, ?, ?, (SELECT COALESCE(MAX(generation), 0) + 1 "
                "FROM root_keys)) ON CONFLICT DO NOTHING",
                (record.id, record.sealed, record.created_at, record.retired_at),
            )
            if cur.rowcount != 1:
                raise AlreadyExistsError(f"root key {record.id!r} already exists")
            self._audit(cur, [audit] if audit else [])
            self._change(cur, ChangeKind.ROOT_KEY, record.id)

    def root_keys(self) -> list[RootKeyRecord]:
        with self._read() as cur:
            rows = self._x(
                cur,
                "SELECT id, sealed, created_at, retired_at, generation "
                "FROM root_keys ORDER BY generation, id",
            ).fetchall()
        return [RootKeyRecord(r[0], bytes(r[1]), r[2], r[3], int(r[4])) for r in rows]

    def retire_root_key(self, key_id: str, at: float, audit: AuditEvent) -> None:
        with self._tx() as cur:
            self._x(
                cur,
                "UPDATE root_keys SET retired_at = ? WHERE id = ? AND retired_at IS NULL",
                (at, key_id),
            )
            if cur.rowcount != 1:
                raise NotFoundError(f"no active root key {key_id!r}", id=key_id)
            self._audit(cur, [audit])
            self._change(cur, ChangeKind.ROOT_KEY, key_id)

    # -- tokens and delegations ----------------------------------------------------------

    def record_token(self, record: TokenRecord, audit: AuditEvent) -> None:
        with self._tx() as cur:
            self._x(
                cur,
                "INSERT INTO tokens (id, agent, key_id, issued_at, expires_at, caveats) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.agent,
                    record.key_id,
                    record.issued_at,
                    record.expires_at,
                    json.dumps(list(record.caveats)),
                ),
            )
            self._audit(cur, [audit])

    def get_token(self, token_id: str) -> TokenRecord | None:
        with self._read() as cur:
            r = self._x(
                cur,
                "SELECT id, agent, key_id, issued_at, expires_at, caveats FROM tokens WHERE id = ?",
                (token_id,),
            ).fetchone()
        return TokenRecord(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5]))) if r else None

    def latest_hop_into(self, agent_id: str) -> float:
        with self._read() as cur:
            row = self._x(
                cur,
                "SELECT MAX(t) FROM ("
                "SELECT MAX(issued_at) AS t FROM tokens WHERE agent = ? "
                "UNION ALL SELECT MAX(at) FROM delegations WHERE to_agent = ?"
                ") AS hops",
                (agent_id, agent_id),
            ).fetchone()
        return float(row[0] or 0.0)

    def record_delegations(
        self, records: Sequence[DelegationRecord], audit: AuditEvent | None = None
    ) -> None:
        if not records:
            return
        with self._tx() as cur:
            self._audit(cur, [audit] if audit else [])
            cur.executemany(
                self._sql(
                    "INSERT INTO delegations (id, token_id, parent, from_agent, to_agent, at,"
                    " expires_at, offline, restrictions) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT DO NOTHING"
                ),
                [
                    (
                        d.id,
                        d.token_id,
                        d.parent,
                        d.from_agent,
                        d.to_agent,
                        d.at,
                        d.expires_at,
                        int(d.offline),
                        json.dumps(list(d.restrictions)),
                    )
                    for d in records
                ],
            )

    _DELEGATION_COLS = (
        "id, token_id, parent, from_agent, to_agent, at, expires_at, offline, restrictions"
    )

    @staticmethod
    def _delegation(r: Sequence[Any]) -> DelegationRecord:
        return DelegationRecord(
            r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), tuple(json.loads(r[8]))
        )

    def get_delegation(self, delegation_id: str) -> DelegationRecord | None:
        with self._read() as cur:
            r = self._x(
                cur,
                f"SELECT {self._DELEGATION_COLS} FROM delegations WHERE id = ?",
                (delegation_id,),
            ).fetchone()
        return self._delegation(r) if r else None

    def delegations_of(self, token_id: str, limit: int = 100_000) -> list[DelegationRecord]:
        with self._read() as cur:
            rows = self._x(
                cur,
                f"SELECT {self._DELEGATION_COLS} FROM delegations "
                "WHERE token_id = ? ORDER BY at, id LIMIT ?",
                (token_id, limit),
            ).fetchall()
        return [self._delegation(r) for r in rows]

    # -- revocations -----------------------------------------------------------------

    def revoke(
        self,
        lineage_id: str,
        revoked_at: float,
        expires_at: float,
        by: str,
        reason: str,
        audit: AuditEvent,
    ) -> bool:
        # insert-or-nothing, then extend: two replicas revoking one id at once both
        # succeed (the second waits for the first's row), never a conflict error
        with self._tx() as cur:
            self._audit(cur, [audit])
            self._x(
                cur,
                "INSERT INTO revocations (id, revoked_at, expires_at, revoked_by, "
                "reason) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (lineage_id, revoked_at, expires_at, by, reason[: AUDIT_FIELD_LIMITS["reason"]]),
            )
            new = cur.rowcount == 1
            if not new:  # kept as long as the longest-lived token it may name
                self._x(
                    cur,
                    "UPDATE revocations SET expires_at = ? WHERE id = ? AND expires_at < ?",
                    (expires_at, lineage_id, expires_at),
                )
            if new or cur.rowcount == 1:
                self._change(cur, ChangeKind.REVOCATION, lineage_id, expires_at)
        return bool(new)

    def revocations(self, now: float) -> list[tuple[str, float]]:
        with self._read() as cur:
            rows = self._x(
                cur, "SELECT id, expires_at FROM revocations WHERE expires_at > ?", (now,)
            ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def prune_revocations(self, now: float, margin: float) -> int:
        with self._tx() as cur:
            store_now = self._store_clock(cur)
            horizon = (now if store_now is None else min(now, store_now)) - margin
            self._x(cur, "DELETE FROM revocations WHERE expires_at <= ?", (horizon,))
            return int(cur.rowcount)

    # -- proof nonces ------------------------------------------------------------------

    def redeem_nonces(
        self, claims: Sequence[tuple[str, str, float]], forget_before: float | None = None
    ) -> list[bool]:
        seen: set[tuple[str, str]] = set()
        taken: set[tuple[str, str]] = set()
        with self._tx() as cur:
            if forget_before is not None:
                store_now = self._store_clock(cur)
                horizon = forget_before if store_now is None else min(forget_before, store_now)
                self._x(cur, "DELETE FROM proof_nonces WHERE expires_at < ?", (horizon,))
            for start in range(0, len(claims), _NONCE_ROWS):
                chunk = claims[start : start + _NONCE_ROWS]
                rows = self._x(
                    cur,
                    "INSERT INTO proof_nonces (agent, nonce, expires_at) VALUES "
                    + ", ".join(["(?, ?, ?)"] * len(chunk))
                    + " ON CONFLICT DO NOTHING RETURNING agent, nonce",
                    [value for claim in chunk for value in claim],
                ).fetchall()
                taken.update((r[0], r[1]) for r in rows)
        out = []
        for agent, nonce, _ in claims:  # a nonce twice in one call: the first one redeems it
            key = (agent, nonce)
            out.append(key in taken and key not in seen)
            seen.add(key)
        return out

    # -- budgets -------------------------------------------------------------------------

    _lock_row = ""  # what makes a SELECT hold the row to the commit, where it must be said

    def lease_budgets(
        self, leases: Sequence[BudgetLease], forget_before: float | None = None
    ) -> list[int]:
        granted: dict[tuple[str, int], int] = {}
        with self._tx() as cur:
            if forget_before is not None:
                store_now = self._store_clock(cur)
                horizon = forget_before if store_now is None else min(forget_before, store_now)
                self._x(cur, "DELETE FROM budgets WHERE expires_at < ?", (horizon,))
            # one order for every replica: two leasing the same budgets never deadlock
            for lease in sorted(leases, key=lambda x: (x.id, x.slot)):
                key = (lease.id, lease.slot)
                self._x(
                    cur,
                    "INSERT INTO budgets (id, slot, used, expires_at) "
                    "VALUES (?, ?, 0, ?) ON CONFLICT DO NOTHING",
                    (lease.id, lease.slot, lease.expires_at),
                )
                used = int(
                    self._x(
                        cur,
                        "SELECT used FROM budgets WHERE id = ? AND slot = ?" + self._lock_row,
                        key,
                    ).fetchone()[0]
                )
                grant = max(0, min(lease.want, lease.limit - used))
                if grant:
                    self._x(
                        cur,
                        "UPDATE budgets SET used = used + ? WHERE id = ? AND slot = ?",
                        (grant, *key),
                    )
                granted[key] = granted.get(key, 0) + grant
        out = []
        for lease in leases:  # the same budget twice in one call: the first takes it all
            key = (lease.id, lease.slot)
            take = min(lease.want, granted.get(key, 0))
            granted[key] = granted.get(key, 0) - take
            out.append(take)
        return out

    def return_budgets(self, returns: Sequence[tuple[str, int, int]]) -> None:
        with self._tx() as cur:
            for bid, slot, n in sorted(returns):
                self._x(
                    cur,
                    "UPDATE budgets SET used = used - ? WHERE id = ? AND slot = ? AND used >= ?",
                    (n, bid, slot, n),
                )

    def budget_used(self, budget_id: str, slot: int = 0) -> int:
        with self._read() as cur:
            row = self._x(
                cur, "SELECT used FROM budgets WHERE id = ? AND slot = ?", (budget_id, slot)
            ).fetchone()
        return 0 if row is None else int(row[0])

    # -- change feed ---------------------------------------------------------

    def changes_since(self, seq: int, limit: int = 10000) -> list[Change]:
        with self._read() as cur:
            rows = self._x(
                cur,
                "SELECT seq, kind, key, value FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [Change(r[0], ChangeKind(r[1]), r[2], r[3]) for r in rows]

    def clock(self) -> float | None:
        with self._read() as cur:
            return self._store_clock(cur)

    def last_change(self) -> int:
        with self._read() as cur:
            row = self._x(cur, "SELECT MAX(seq) FROM changes").fetchone()
        return int(row[0] or 0)

    # -- migrations --------------------------------------------------------------------

    def _apply_migrations(self, cur: Any, types: dict[str, str]) -> None:
        self._x(
            cur,
            "CREATE TABLE IF NOT EXISTS schema_version (version {} NOT NULL)".format(
                types["bigint"]
            ),
        )
        row = self._x(cur, "SELECT MAX(version) FROM schema_version").fetchone()
        current = int(row[0] or 0)
        if current > len(MIGRATIONS):
            raise RuntimeError(
                f"database schema version {current} is newer than this capgate "
                f"({len(MIGRATIONS)}); upgrade capgate"
            )
        for version, statements in enumerate(MIGRATIONS[current:], start=current + 1):
            for stmt in statements:
                self._x(cur, stmt.format(**types))
            self._x(cur, "INSERT INTO schema_version (version) VALUES (?)", (version,))
