"""``ApprovalRows``: the approval statements of ``SqlStore`` (both backends).

A vote locks its request's row first (an ``UPDATE`` that changes nothing, which
both SQLite and PostgreSQL hold until the commit), so two approvers voting at
once on two replicas are counted one after the other. A use is one conditional
``UPDATE … SET used = used + 1 WHERE … used < uses``: of two replicas redeeming
the last use at once, exactly one changes a row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from capgate import (
    FailedPreconditionError,
    NotFoundError,
    ResourceExhaustedError,
)
from capgate_server.store._approvals import (
    ApprovalRecord,
    ApprovalStatus,
    ApprovalStore,
    ApprovalVote,
    Redemption,
)
from capgate_server.store._base import AuditEvent, ChangeKind

__all__ = ["APPROVAL_MIGRATION", "ApprovalRows"]

# A migration of _sql.MIGRATIONS: approvals, their votes, and agents' standing rules.
APPROVAL_MIGRATION = [
    """CREATE TABLE approvals (
        seq {serial}, id TEXT NOT NULL UNIQUE, token_id TEXT NOT NULL,
        token_digest TEXT NOT NULL, requested_by TEXT NOT NULL, presenter TEXT NOT NULL,
        action TEXT NOT NULL, resource TEXT NOT NULL, ctx TEXT NOT NULL,
        request_digest TEXT NOT NULL, conditions TEXT NOT NULL, needed {bigint} NOT NULL,
        chain TEXT NOT NULL, note TEXT NOT NULL, created_at {real} NOT NULL,
        wait_until {real} NOT NULL, status TEXT NOT NULL, decided_at {real},
        expires_at {real}, uses {bigint} NOT NULL, used {bigint} NOT NULL,
        reason TEXT NOT NULL)""",
    "CREATE INDEX approvals_status ON approvals (status, seq)",
    "CREATE INDEX approvals_requester ON approvals (requested_by, status)",
    """CREATE TABLE approval_votes (
        approval_id TEXT NOT NULL, approver TEXT NOT NULL, approve {bigint} NOT NULL,
        reason TEXT NOT NULL, at {real} NOT NULL, ttl {bigint} NOT NULL,
        uses {bigint} NOT NULL, PRIMARY KEY (approval_id, approver))""",
    "ALTER TABLE agents ADD COLUMN approvals TEXT NOT NULL DEFAULT ''",
]

_COLS = (
    "seq, id, token_id, token_digest, requested_by, presenter, action, resource, ctx, "
    "request_digest, conditions, needed, chain, note, created_at, wait_until, status, "
    "decided_at, expires_at, uses, used, reason"
)
_INSERT_COLS = _COLS.split(", ", 1)[1]
_MARKS = ", ".join("?" * 21)


def _record(r: Sequence[Any], votes: tuple[ApprovalVote, ...]) -> ApprovalRecord:
    return ApprovalRecord(
        id=r[1],
        token_id=r[2],
        token_digest=r[3],
        requested_by=r[4],
        presenter=r[5],
        action=r[6],
        resource=r[7],
        ctx=tuple((k, v) for k, v in json.loads(r[8])),
        request_digest=r[9],
        conditions=tuple(json.loads(r[10])),
        needed=int(r[11]),
        chain=tuple(r[12].split()),
        note=r[13],
        created_at=float(r[14]),
        wait_until=float(r[15]),
        status=ApprovalStatus(r[16]),
        decided_at=None if r[17] is None else float(r[17]),
        expires_at=None if r[18] is None else float(r[18]),
        uses=int(r[19]),
        used=int(r[20]),
        reason=r[21],
        votes=votes,
        seq=int(r[0]),
    )


def _vote(r: Sequence[Any]) -> ApprovalVote:
    return ApprovalVote(r[0], bool(r[1]), r[2], float(r[3]), int(r[4]), int(r[5]))


class ApprovalRows(ApprovalStore):
    """Mixed into ``SqlStore``, which supplies ``_tx``, ``_read``, ``_x``, ``_audit`` and
    ``_change``."""

    _tx: Any
    _read: Any
    _x: Any
    _audit: Any
    _change: Any

    def create_approval(
        self, record: ApprovalRecord, audit: AuditEvent, pending_limit: int
    ) -> None:
        r = record
        with self._tx() as cur:
            row = self._x(
                cur,
                "SELECT COUNT(*) FROM approvals WHERE requested_by = ? AND "
                "status = ? AND wait_until > ?",
                (r.requested_by, str(ApprovalStatus.PENDING), r.created_at),
            ).fetchone()
            if int(row[0]) >= pending_limit:
                raise ResourceExhaustedError(
                    f"{r.requested_by!r} already has {pending_limit} approval requests "
                    "pending; wait for them to be decided or to lapse",
                    limit="approvals_pending_per_principal",
                    value=pending_limit,
                )
            self._x(
                cur,
                f"INSERT INTO approvals ({_INSERT_COLS}) VALUES ({_MARKS})",
                (
                    r.id,
                    r.token_id,
                    r.token_digest,
                    r.requested_by,
                    r.presenter,
                    r.action,
                    r.resource,
                    json.dumps([list(kv) for kv in r.ctx]),
                    r.request_digest,
                    json.dumps(list(r.conditions)),
                    r.needed,
                    " ".join(r.chain),
                    r.note,
                    r.created_at,
                    r.wait_until,
                    str(r.status),
                    r.decided_at,
                    r.expires_at,
                    r.uses,
                    r.used,
                    r.reason,
                ),
            )
            self._audit(cur, [audit])
            self._change(cur, ChangeKind.APPROVAL, r.id)

    def _votes(self, cur: Any, ids: Sequence[str]) -> dict[str, list[ApprovalVote]]:
        out: dict[str, list[ApprovalVote]] = {}
        if not ids:
            return out
        rows = self._x(
            cur,
            "SELECT approval_id, approver, approve, reason, at, ttl, uses "
            "FROM approval_votes WHERE approval_id IN ("
            + ", ".join("?" * len(ids))
            + ") ORDER BY at, approver",
            list(ids),
        ).fetchall()
        for r in rows:
            out.setdefault(r[0], []).append(_vote(r[1:]))
        return out

    def _get(self, cur: Any, approval_id: str) -> ApprovalRecord | None:
        row = self._x(cur, f"SELECT {_COLS} FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        if row is None:
            return None
        return _record(row, tuple(self._votes(cur, [approval_id]).get(approval_id, ())))

    def get_approval(self, approval_id: str) -> ApprovalRecord | None:
        with self._read() as cur:
            return self._get(cur, approval_id)

    def list_approvals(
        self,
        now: float,
        status: ApprovalStatus | None = None,
        limit: int = 100,
        requested_by: str = "",
    ) -> list[ApprovalRecord]:
        where: list[str] = []
        params: list[object] = []
        if requested_by:
            where.append("requested_by = ?")
            params.append(requested_by)
        if status is ApprovalStatus.PENDING:
            where.append("status = ? AND wait_until > ?")
            params += [str(status), now]
        elif status is ApprovalStatus.DENIED:
            where.append("status = ?")
            params.append(str(status))
        elif status is ApprovalStatus.APPROVED:  # approved and still good
            where.append("status = ? AND expires_at > ? AND used < uses")
            params += [str(status), now]
        elif status is ApprovalStatus.USED:
            where.append("status = ? AND used >= uses")
            params.append(str(ApprovalStatus.APPROVED))
        elif status is ApprovalStatus.EXPIRED:
            where.append(
                "((status = ? AND wait_until <= ?) OR "
                "(status = ? AND expires_at <= ? AND used < uses))"
            )
            params += [str(ApprovalStatus.PENDING), now, str(ApprovalStatus.APPROVED), now]
        sql = f"SELECT {_COLS} FROM approvals"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._read() as cur:
            rows = self._x(cur, sql + " ORDER BY seq LIMIT ?", (*params, limit)).fetchall()
            votes = self._votes(cur, [r[1] for r in rows])
        return [_record(r, tuple(votes.get(r[1], ()))) for r in rows]

    def vote_approval(
        self, approval_id: str, vote: ApprovalVote, audit: AuditEvent
    ) -> ApprovalRecord:
        with self._tx() as cur:
            # lock the request's row first: votes on it are counted one at a time
            self._x(cur, "UPDATE approvals SET status = status WHERE id = ?", (approval_id,))
            record = self._get(cur, approval_id)
            if record is None:
                raise NotFoundError(f"no approval request {approval_id}", id=approval_id)
            state = record.state(vote.at)
            if state is not ApprovalStatus.PENDING:
                raise FailedPreconditionError(
                    f"approval request {approval_id} is {state}, no longer pending",
                    status=str(state),
                )
            if any(v.approver == vote.approver for v in record.votes):
                raise FailedPreconditionError(
                    f"{vote.approver!r} has already voted on approval request {approval_id}"
                )
            self._x(
                cur,
                "INSERT INTO approval_votes (approval_id, approver, approve, reason, at,"
                " ttl, uses) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    approval_id,
                    vote.approver,
                    int(vote.approve),
                    vote.reason,
                    vote.at,
                    vote.ttl,
                    vote.uses,
                ),
            )
            votes = (*record.votes, vote)
            yes = [v for v in votes if v.approve]
            if not vote.approve:
                self._x(
                    cur,
                    "UPDATE approvals SET status = ?, decided_at = ?, reason = ? WHERE id = ?",
                    (str(ApprovalStatus.DENIED), vote.at, vote.reason, approval_id),
                )
            elif len(yes) >= record.needed:
                # whole seconds: the discharge's expires caveat says exactly this instant
                expires = math.floor(vote.at + min(v.ttl for v in yes))
                self._x(
                    cur,
                    "UPDATE approvals SET status = ?, decided_at = ?, expires_at = ?, "
                    "uses = ? WHERE id = ?",
                    (
                        str(ApprovalStatus.APPROVED),
                        vote.at,
                        expires,
                        min(v.uses for v in yes),
                        approval_id,
                    ),
                )
            updated = self._get(cur, approval_id)
            assert updated is not None
            audit.detail.update(
                status=str(updated.status), approvals=len(yes), needed=record.needed
            )
            self._audit(cur, [audit])
            self._change(cur, ChangeKind.APPROVAL, approval_id)
        return updated

    def redeem_approvals(
        self,
        approval_ids: Sequence[str],
        token_digest: str,
        request_digest: str,
        now: float,
        audits: Sequence[AuditEvent],
    ) -> tuple[str, Redemption]:
        failed = ""
        try:
            with self._tx() as cur:
                for approval_id in approval_ids:
                    self._x(
                        cur,
                        "UPDATE approvals SET used = used + 1 WHERE id = ? AND "
                        "status = ? AND token_digest = ? AND request_digest = ? AND "
                        "used < uses AND expires_at > ?",
                        (
                            approval_id,
                            str(ApprovalStatus.APPROVED),
                            token_digest,
                            request_digest,
                            now,
                        ),
                    )
                    if cur.rowcount != 1:
                        failed = approval_id
                        raise _SpentNone  # roll back the uses spent before it
                self._audit(cur, audits)
                return "", Redemption.OK
        except _SpentNone:
            pass
        with self._read() as cur:
            return failed, self._why_not(cur, failed, token_digest, request_digest)

    def _why_not(
        self, cur: Any, approval_id: str, token_digest: str, request_digest: str
    ) -> Redemption:
        record = self._get(cur, approval_id)
        if record is None:
            return Redemption.UNKNOWN
        if record.token_digest != token_digest or record.request_digest != request_digest:
            return Redemption.MISMATCH
        if record.status is not ApprovalStatus.APPROVED:
            return Redemption.NOT_APPROVED
        if record.used >= record.uses:
            return Redemption.USED
        return Redemption.EXPIRED

    def prune_approvals(self, before: float) -> int:
        with self._tx() as cur:
            ids = [
                r[0]
                for r in self._x(
                    cur,
                    "SELECT id FROM approvals WHERE wait_until < ? AND "
                    "(expires_at IS NULL OR expires_at < ?) LIMIT 5000",
                    (before, before),
                ).fetchall()
            ]
            if not ids:
                return 0
            marks = ", ".join("?" * len(ids))
            self._x(cur, f"DELETE FROM approval_votes WHERE approval_id IN ({marks})", ids)
            self._x(cur, f"DELETE FROM approvals WHERE id IN ({marks})", ids)
            return len(ids)


class _SpentNone(Exception):
    """An approval could not be spent: the transaction rolls back the others."""
