"""``AuditRecords``: the audit statements of ``SqlStore``: writing, reading, sealing, retention.

Every record is stored bounded (``AuditEvent.bounded``): a caller cannot make one
row large. Records are written unsealed; ``seal_audit`` then gives them their
place in the ledger (``pos``) and digest (``_proof``), in an order every reader
agrees on: on SQLite the write order (one writer at a time), on PostgreSQL the
order of the writing transactions (``txid``), taking only records no transaction
still running can precede. The live stream and the export read sealed records by
``pos``, so a cursor never skips or repeats one. Old records are deleted by the
retention task in short transactions, leaving a signed checkpoint at the cut.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from typing import Any

from capgate_server.store._base import AuditEvent, AuditQuery, Signer
from capgate_server.store._proof import GENESIS, Checkpoint, canonical, link, record_mac

__all__ = ["AuditRecords"]

_AUDIT_COLS = (
    "at, last_at, count, principal, kind, subject, ok, code, reason, chain, action, "
    "resource, presenter, detail, caveat, ctx_keys, replica"
)
_AUDIT_MARKS = ", ".join("?" * 18)  # the columns and the writer's MAC
_UNVOUCHED_SHOWN = 20  # unvouched rows described, each, in the record that reports them
_CHECKPOINT_COLS = "pos, digest, at, key_id, public_key, signature"

# The ledger's schema (a migration of _sql.MIGRATIONS; {txid} is per backend).
LEDGER_MIGRATION = [
    "ALTER TABLE audit ADD COLUMN caveat TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE audit ADD COLUMN ctx_keys TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE audit ADD COLUMN replica TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE audit ADD COLUMN pos {bigint}",
    "ALTER TABLE audit ADD COLUMN digest {blob}",
    "ALTER TABLE audit ADD COLUMN txid {txid}",
    "CREATE UNIQUE INDEX audit_pos ON audit (pos)",
    "CREATE INDEX audit_unsealed ON audit (seq) WHERE pos IS NULL",
    """CREATE TABLE audit_head (
        id {bigint} PRIMARY KEY, pos {bigint} NOT NULL, digest TEXT NOT NULL,
        at {real} NOT NULL, key_id TEXT NOT NULL, public_key TEXT NOT NULL,
        signature TEXT NOT NULL)""",
    """CREATE TABLE audit_checkpoints (
        pos {bigint} PRIMARY KEY, digest TEXT NOT NULL, at {real} NOT NULL,
        key_id TEXT NOT NULL, public_key TEXT NOT NULL, signature TEXT NOT NULL,
        cut {bigint} NOT NULL DEFAULT 0)""",
    """CREATE TABLE ledger_keys (
        id {bigint} PRIMARY KEY, sealed {blob} NOT NULL, public_key TEXT NOT NULL,
        created_at {real} NOT NULL)""",
]


def _event(r: Sequence[Any]) -> AuditEvent:
    """A row of ``seq, _AUDIT_COLS, pos, digest`` as a record."""
    return AuditEvent(
        at=r[1],
        last_at=r[2],
        count=r[3],
        principal=r[4],
        kind=r[5],
        subject=r[6],
        ok=bool(r[7]),
        code=r[8],
        reason=r[9],
        chain=tuple(r[10].split()),
        action=r[11],
        resource=r[12],
        presenter=r[13],
        detail=json.loads(r[14]) if r[14] else {},
        caveat=r[15],
        ctx_keys=tuple(r[16].split()),
        replica=r[17],
        seq=r[0],
        pos=int(r[18] or 0),
        digest=bytes(r[19]) if r[19] is not None else b"",
    )


def _record_bytes(r: Sequence[Any]) -> bytes:
    """The canonical bytes of a row's ``_AUDIT_COLS``: what the ledger's digest covers."""
    return canonical(
        (
            float(r[0]),
            float(r[1]),
            int(r[2]),
            *(str(v) for v in r[3:6]),
            bool(r[6]),
            *(str(v) for v in r[7:17]),
        )
    )


def _checkpoint(r: Sequence[Any]) -> Checkpoint:
    return Checkpoint(
        int(r[0]),
        str(r[1]),
        float(r[2]),
        str(r[3]),
        str(r[4]),
        str(r[5]),
        len(r) > 6 and bool(r[6]),
    )


class AuditRecords:
    """Mixed into ``SqlStore``, which supplies ``_tx``, ``_read``, ``_x``, ``_sql`` and
    the backend's ``_seal_lock`` and ``_seal_order``."""

    _tx: Any
    _read: Any
    _x: Any
    _sql: Any
    writer: str = ""  # names the replica in records that do not say which wrote them
    # the ledger's record key (``LedgerKey.record_key``), once the ledger has started:
    # every record written here carries its MAC, and sealing keeps out those without
    record_key: bytes | None = None

    def _seal_lock(self, cur: Any) -> bool:
        """Whether this transaction may seal (one sealer at a time)."""
        raise NotImplementedError

    def _seal_order(self) -> tuple[str, str]:
        """(condition, ORDER BY) picking the unsealed records that may be sealed now."""
        raise NotImplementedError

    # -- writing and reading ---------------------------------------------------------------

    def _audit(self, cur: Any, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        events = [e.bounded() for e in events]
        rows = [
            (
                e.at,
                e.at if e.last_at is None else e.last_at,
                e.count,
                e.principal,
                e.kind,
                e.subject,
                int(e.ok),
                e.code,
                e.reason,
                " ".join(e.chain),
                e.action,
                e.resource,
                e.presenter,
                e.detail_json(),
                e.caveat,
                " ".join(e.ctx_keys),
                e.replica or self.writer,
            )
            for e in events
        ]
        key = self.record_key
        cur.executemany(
            self._sql(f"INSERT INTO audit ({_AUDIT_COLS}, mac) VALUES ({_AUDIT_MARKS})"),
            [(*r, None if key is None else record_mac(key, _record_bytes(r))) for r in rows],
        )

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        with self._tx() as cur:
            self._audit(cur, events)

    @staticmethod
    def _filters(query: AuditQuery | None) -> tuple[list[str], list[object]]:
        where: list[str] = []
        params: list[object] = []
        if query is None:
            return where, params
        for column, value in (
            ("principal", query.principal),
            ("kind", query.kind),
            ("subject", query.token_id),
            ("code", query.code),
        ):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if query.ok is not None:
            where.append("ok = ?")
            params.append(int(query.ok))
        if query.since:
            where.append("last_at >= ?")
            params.append(query.since)
        if query.agent:
            # the chain column is space-separated; pad so ids match whole words, and
            # escape LIKE's wildcards ('_' is legal in ids)
            agent = query.agent.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("(' ' || chain || ' ') LIKE ? ESCAPE '\\'")
            params.append(f"% {agent} %")
        return where, params

    def list_audit(self, query: AuditQuery) -> list[AuditEvent]:
        where, params = self._filters(query)
        where.insert(0, "(pos IS NULL OR pos > 0)")  # never a row kept out of the ledger
        if query.newest_first:
            if query.after_seq:
                where.insert(0, "seq < ?")
                params.insert(0, query.after_seq)
            order = "seq DESC"
        else:
            where.insert(0, "seq > ?")
            params.insert(0, query.after_seq)
            order = "seq"
        params.append(max(1, min(query.limit, 1000)))
        sql = (
            f"SELECT seq, {_AUDIT_COLS}, pos, digest FROM audit "
            f"WHERE {' AND '.join(where) or 'TRUE'} ORDER BY {order} LIMIT ?"
        )
        with self._read() as cur:
            return [_event(r) for r in self._x(cur, sql, params).fetchall()]

    def sealed_audit(
        self, after_pos: int, limit: int, query: AuditQuery | None = None
    ) -> list[AuditEvent]:
        where, params = self._filters(query)
        sql = (
            f"SELECT seq, {_AUDIT_COLS}, pos, digest FROM audit WHERE pos > ? "
            f"{''.join(' AND ' + w for w in where)} ORDER BY pos LIMIT ?"
        )
        with self._read() as cur:
            rows = self._x(cur, sql, [after_pos, *params, max(1, limit)]).fetchall()
        return [_event(r) for r in rows]

    # -- the ledger ----------------------------------------------------------------------

    def seal_audit(self, sign: Signer, now: float, keep: bool, limit: int = 2000) -> int:
        condition, order = self._seal_order()
        with self._tx() as cur:
            if not self._seal_lock(cur):
                return 0
            head = self._x(cur, "SELECT pos, digest FROM audit_head WHERE id = 1").fetchone()
            if head is None:
                pos, digest = self._start(cur)
            else:
                pos, digest = int(head[0]), bytes.fromhex(head[1])
            rows = self._x(
                cur,
                f"SELECT seq, {_AUDIT_COLS}, mac FROM audit WHERE pos IS NULL "
                f"{condition} ORDER BY {order} LIMIT ?",
                (limit,),
            ).fetchall()
            if not rows:
                return 0
            updates, unvouched, key = [], [], self.record_key
            for r in rows:
                record = _record_bytes(r[1:18])
                if key is not None and not hmac.compare_digest(
                    bytes(r[18] or b""), record_mac(key, record)
                ):
                    unvouched.append(r)  # not written by a server: kept out of the chain
                    continue
                pos, digest = pos + 1, link(digest, record)
                updates.append((pos, digest, r[0]))
            if unvouched:
                self._keep_out(cur, unvouched, now)
            if not updates:
                return len(rows)
            cur.executemany(
                self._sql("UPDATE audit SET pos = ?, digest = ? WHERE seq = ?"), updates
            )
            signed = sign(pos, digest, now)
            values = (
                signed.pos,
                signed.digest,
                signed.at,
                signed.key_id,
                signed.public_key,
                signed.signature,
            )
            if head is None:
                self._x(
                    cur,
                    "INSERT INTO audit_head (id, pos, digest, at, key_id, public_key, "
                    "signature) VALUES (1, ?, ?, ?, ?, ?, ?)",
                    values,
                )
            else:
                self._x(
                    cur,
                    "UPDATE audit_head SET pos = ?, digest = ?, at = ?, key_id = ?, "
                    "public_key = ?, signature = ? WHERE id = 1",
                    values,
                )
            if keep:
                self._x(
                    cur,
                    f"INSERT INTO audit_checkpoints ({_CHECKPOINT_COLS}) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    values,
                )
            return len(rows)

    def _keep_out(self, cur: Any, rows: Sequence[Any], now: float) -> None:
        """Rows without a server's MAC (written into the store by someone else) get no
        place in the chain (a negative ``pos``, never read as a record) and a record,
        sealed next, that says what they claimed to be."""
        cur.executemany(
            self._sql("UPDATE audit SET pos = ? WHERE seq = ?"), [(-int(r[0]), r[0]) for r in rows]
        )
        shown = [
            {
                "seq": int(r[0]),
                "at": float(r[1]),
                "principal": str(r[4])[:64],
                "kind": str(r[5])[:64],
                "subject": str(r[6])[:128],
            }
            for r in rows[:_UNVOUCHED_SHOWN]
        ]
        self._audit(
            cur,
            [
                AuditEvent(
                    now,
                    "capgate",
                    "audit.unvouched",
                    f"{len(rows)} records",
                    False,
                    "unvouched",
                    "records written into the store without a server's key: kept out of the ledger",
                    detail={"records": shown, "count": len(rows)},
                )
            ],
        )

    def _start(self, cur: Any) -> tuple[int, bytes]:
        row = self._x(
            cur, "SELECT pos, digest FROM audit_checkpoints WHERE cut = 1 ORDER BY pos DESC LIMIT 1"
        ).fetchone()
        return (int(row[0]), bytes.fromhex(row[1])) if row else (0, GENESIS)

    def audit_start(self) -> tuple[int, bytes]:
        with self._read() as cur:
            return self._start(cur)

    def audit_proof_page(self, after_pos: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        with self._read() as cur:
            rows = self._x(
                cur,
                f"SELECT pos, {_AUDIT_COLS}, digest FROM audit WHERE pos > ? ORDER BY pos LIMIT ?",
                (after_pos, max(1, limit)),
            ).fetchall()
        return [(int(r[0]), _record_bytes(r[1:18]), bytes(r[18] or b"")) for r in rows]

    def audit_head(self) -> Checkpoint | None:
        with self._read() as cur:
            row = self._x(cur, f"SELECT {_CHECKPOINT_COLS} FROM audit_head WHERE id = 1").fetchone()
        return _checkpoint(row) if row else None

    def audit_checkpoints(self, after_pos: int = 0) -> list[Checkpoint]:
        with self._read() as cur:
            rows = self._x(
                cur,
                f"SELECT {_CHECKPOINT_COLS}, cut FROM audit_checkpoints WHERE pos > ? ORDER BY pos",
                (after_pos,),
            ).fetchall()
        return [_checkpoint(r) for r in rows]

    def ledger_key(self, sealed: bytes, public_key: str, at: float) -> tuple[bytes, str]:
        with self._tx() as cur:
            self._x(
                cur,
                "INSERT INTO ledger_keys (id, sealed, public_key, created_at) "
                "VALUES (1, ?, ?, ?) ON CONFLICT DO NOTHING",
                (sealed, public_key, at),
            )
            row = self._x(cur, "SELECT sealed, public_key FROM ledger_keys WHERE id = 1").fetchone()
        return bytes(row[0]), str(row[1])

    def prune_audit(self, before: float, sign: Signer, limit: int = 5000) -> int:
        # Records are sealed in time order (give or take one flush interval), so the
        # expired ones are a prefix of the ledger: cut it at the first one still kept.
        with self._tx() as cur:
            if not self._seal_lock(cur):  # cuts and seals take turns
                return 0
            rows = self._x(
                cur,
                "SELECT pos, digest, last_at FROM audit WHERE pos > 0 ORDER BY pos LIMIT ?",
                (limit,),
            ).fetchall()
            cut = None
            for pos, digest, last_at in rows:
                if last_at >= before:
                    break
                cut = (int(pos), bytes(digest))
            if cut is None:
                return 0
            signed = sign(cut[0], cut[1], before, cut=True)
            self._x(
                cur,
                f"INSERT INTO audit_checkpoints ({_CHECKPOINT_COLS}, cut) "
                "VALUES (?, ?, ?, ?, ?, ?, 1) ON CONFLICT (pos) DO UPDATE SET cut = 1, "
                "at = excluded.at, key_id = excluded.key_id, "
                "public_key = excluded.public_key, signature = excluded.signature",
                (
                    signed.pos,
                    signed.digest,
                    signed.at,
                    signed.key_id,
                    signed.public_key,
                    signed.signature,
                ),
            )
            self._x(
                cur,
                "DELETE FROM audit WHERE (pos > 0 AND pos <= ?) OR (pos < 0 AND last_at < ?)",
                (cut[0], before),
            )
            deleted = int(cur.rowcount)
            self._x(cur, "DELETE FROM audit_checkpoints WHERE pos < ?", (cut[0],))
            return deleted
