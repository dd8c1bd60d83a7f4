"""``AuditRecords``: the audit statements of ``SqlStore`` (writing, reading, retention).

Every record is stored bounded (``AuditEvent.bounded``): a caller cannot make one
row large. Old records are deleted by the replicas' retention task, in short
transactions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from capgate_server.store._base import AuditEvent, AuditQuery

__all__ = ["AuditRecords"]

_AUDIT_COLS = ("at, last_at, count, principal, kind, subject, ok, code, reason, chain, action, "
               "resource, presenter, detail")
_AUDIT_MARKS = ", ".join("?" * 14)


class AuditRecords:
    """Mixed into ``SqlStore``, which supplies ``_tx``, ``_read``, ``_x`` and ``_sql``."""

    _tx: Any
    _read: Any
    _x: Any
    _sql: Any

    def _audit(self, cur: Any, events: Sequence[AuditEvent]) -> None:
        if not events:
            return
        events = [e.bounded() for e in events]
        cur.executemany(
            self._sql(f"INSERT INTO audit ({_AUDIT_COLS}) VALUES ({_AUDIT_MARKS})"),
            [(e.at, e.at if e.last_at is None else e.last_at, e.count, e.principal, e.kind,
              e.subject, int(e.ok), e.code, e.reason, " ".join(e.chain), e.action, e.resource,
              e.presenter, e.detail_json()) for e in events],
        )

    def append_audit(self, events: Sequence[AuditEvent]) -> None:
        with self._tx() as cur:
            self._audit(cur, events)

    def list_audit(self, query: AuditQuery) -> list[AuditEvent]:
        where, params = ["seq > ?"], [query.after_seq]
        for column, value in (("principal", query.principal), ("kind", query.kind),
                              ("subject", query.token_id)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if query.agent:
            # the chain column is space-separated; pad so ids match whole words, and
            # escape LIKE's wildcards ('_' is legal in ids)
            agent = query.agent.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("(' ' || chain || ' ') LIKE ? ESCAPE '\\'")
            params.append(f"% {agent} %")
        params.append(max(1, min(query.limit, 1000)))
        sql = (f"SELECT seq, {_AUDIT_COLS} "
               f"FROM audit WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?")
        with self._read() as cur:
            rows = self._x(cur, sql, params).fetchall()
        return [AuditEvent(at=r[1], last_at=r[2], count=r[3], principal=r[4], kind=r[5],
                           subject=r[6], ok=bool(r[7]), code=r[8], reason=r[9],
                           chain=tuple(r[10].split()), action=r[11], resource=r[12],
                           presenter=r[13], detail=json.loads(r[14]) if r[14] else {}, seq=r[0])
                for r in rows]

    def prune_audit(self, before: float, limit: int = 5000) -> int:
        # Records are appended in time order (give or take one flush interval), so the
        # expired ones are the oldest: look only at the first ``limit`` sequence numbers,
        # which the primary key finds without scanning the table.
        with self._tx() as cur:
            self._x(cur, "DELETE FROM audit WHERE seq IN (SELECT seq FROM audit WHERE "
                         "seq < (SELECT MIN(seq) FROM audit) + ? AND last_at < ?)",
                    (limit, before))
            return int(cur.rowcount)
