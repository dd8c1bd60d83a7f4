"""``GovernanceRows``: the governance statements of ``SqlStore`` (both backends).

Usage is one upsert per row that adds to the count, so replicas flushing at once
compose; rows are written in key order, so two replicas' transactions take row
locks in the same order and cannot deadlock. An alert's key is unique: of two
replicas raising the same deviation, one inserts and the other changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from capgate_server.store._base import AuditEvent
from capgate_server.store._governance import (
    AlertRecord,
    Containment,
    GovernancePolicy,
    GovernanceStore,
    UsageKind,
    UsageRow,
)

__all__ = ["GOVERNANCE_MIGRATION", "GovernanceRows"]

# A migration of _sql.MIGRATIONS: usage, alerts, per-agent governance policies.
GOVERNANCE_MIGRATION = [
    """CREATE TABLE agent_usage (
        agent TEXT NOT NULL, kind TEXT NOT NULL, action TEXT NOT NULL, subject TEXT NOT NULL,
        count {bigint} NOT NULL, first_at {real} NOT NULL, last_at {real} NOT NULL,
        PRIMARY KEY (agent, kind, action, subject))""",
    "CREATE INDEX agent_usage_last ON agent_usage (last_at)",
    """CREATE TABLE governance_alerts (
        seq {serial}, key TEXT NOT NULL UNIQUE, agent TEXT NOT NULL, at {real} NOT NULL,
        kind TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
        containment TEXT NOT NULL)""",
    "CREATE INDEX governance_alerts_agent ON governance_alerts (agent, seq)",
    """CREATE TABLE governance_policies (
        agent TEXT PRIMARY KEY, containment TEXT NOT NULL, sensitivity {real} NOT NULL,
        warmup {real} NOT NULL, shadow TEXT NOT NULL)""",
]

_ALERT_COLS = "seq, key, agent, at, kind, reason, detail, containment"


def _alert(r: Sequence[Any]) -> AlertRecord:
    return AlertRecord(
        key=r[1],
        agent=r[2],
        at=float(r[3]),
        kind=r[4],
        reason=r[5],
        detail=json.loads(r[6]) if r[6] else {},
        containment=r[7],
        seq=int(r[0]),
    )


class GovernanceRows(GovernanceStore):
    """Mixed into ``SqlStore``, which supplies ``_tx``, ``_read``, ``_x`` and ``_audit``."""

    _tx: Any
    _read: Any
    _x: Any
    _audit: Any

    def record_usage(self, rows: Sequence[UsageRow]) -> None:
        if not rows:
            return
        ordered = sorted(rows, key=lambda r: (r.agent, str(r.kind), r.action, r.subject))
        with self._tx() as cur:
            for r in ordered:
                self._x(
                    cur,
                    "INSERT INTO agent_usage (agent, kind, action, subject, count, "
                    "first_at, last_at) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (agent, kind, action, subject) DO UPDATE SET "
                    "count = agent_usage.count + excluded.count, "
                    "first_at = CASE WHEN excluded.first_at < agent_usage.first_at "
                    "THEN excluded.first_at ELSE agent_usage.first_at END, "
                    "last_at = CASE WHEN excluded.last_at > agent_usage.last_at "
                    "THEN excluded.last_at ELSE agent_usage.last_at END",
                    (r.agent, str(r.kind), r.action, r.subject, r.count, r.first_at, r.last_at),
                )

    def usage(self, agent: str = "", since: float = 0.0, limit: int = 100_000) -> list[UsageRow]:
        sql = (
            "SELECT agent, kind, action, subject, count, first_at, last_at FROM agent_usage "
            "WHERE last_at >= ?"
        )
        params: list[object] = [since]
        if agent:
            sql += " AND agent = ?"
            params.append(agent)
        with self._read() as cur:
            # newest first: at the limit, what is kept is what was used last
            rows = self._x(
                cur,
                sql + " ORDER BY last_at DESC, agent, kind, action, subject LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [
            UsageRow(r[0], UsageKind(r[1]), r[2], r[3], int(r[4]), float(r[5]), float(r[6]))
            for r in rows
        ]

    def prune_usage(self, before: float, limit: int = 5000) -> int:
        with self._tx() as cur:
            self._x(
                cur,
                "DELETE FROM agent_usage WHERE (agent, kind, action, subject) IN "
                "(SELECT agent, kind, action, subject FROM agent_usage "
                "WHERE last_at < ? LIMIT ?)",
                (before, limit),
            )
            return int(cur.rowcount)

    def raise_alert(self, alert: AlertRecord, audit: AuditEvent) -> AlertRecord | None:
        a = alert
        with self._tx() as cur:
            self._x(
                cur,
                "INSERT INTO governance_alerts (key, agent, at, kind, reason, detail, "
                "containment) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    a.key,
                    a.agent,
                    a.at,
                    a.kind,
                    a.reason,
                    json.dumps(a.detail, sort_keys=True),
                    a.containment,
                ),
            )
            if cur.rowcount != 1:
                return None
            row = self._x(
                cur, f"SELECT {_ALERT_COLS} FROM governance_alerts WHERE key = ?", (a.key,)
            ).fetchone()
            stored = _alert(row)
            audit.detail = {**audit.detail, "alert": stored.seq}
            self._audit(cur, [audit])
        return stored

    def alerts(
        self, after_seq: int = 0, agent: str = "", limit: int = 100, newest_first: bool = False
    ) -> list[AlertRecord]:
        sql = f"SELECT {_ALERT_COLS} FROM governance_alerts WHERE seq > ?"
        params: list[object] = [after_seq]
        if agent:
            sql += " AND agent = ?"
            params.append(agent)
        order = " ORDER BY seq DESC LIMIT ?" if newest_first else " ORDER BY seq LIMIT ?"
        with self._read() as cur:
            rows = self._x(cur, sql + order, (*params, limit)).fetchall()
        return [_alert(r) for r in rows]

    def set_policy(self, policy: GovernancePolicy, audit: AuditEvent) -> None:
        p = policy
        with self._tx() as cur:
            self._x(
                cur,
                "INSERT INTO governance_policies (agent, containment, sensitivity, "
                "warmup, shadow) VALUES (?, ?, ?, ?, ?) ON CONFLICT (agent) DO UPDATE "
                "SET containment = excluded.containment, "
                "sensitivity = excluded.sensitivity, warmup = excluded.warmup, "
                "shadow = excluded.shadow",
                (p.agent, str(p.containment), p.sensitivity, p.warmup, json.dumps(p.shadow)),
            )
            self._audit(cur, [audit])

    def policies(self) -> list[GovernancePolicy]:
        with self._read() as cur:
            rows = self._x(
                cur,
                "SELECT agent, containment, sensitivity, warmup, shadow "
                "FROM governance_policies ORDER BY agent",
            ).fetchall()
        return [
            GovernancePolicy(
                r[0],
                Containment(r[1]),
                float(r[2]),
                float(r[3]),
                tuple(json.loads(r[4])) if r[4] else (),
            )
            for r in rows
        ]
