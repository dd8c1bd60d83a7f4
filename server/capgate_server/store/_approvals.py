"""What the store keeps of approvals, and the part of the ``Store`` interface about them.

An approval is one request (action, resource, context, presenter) under one
token, waiting for people to say yes or no. The store is its authority: a
discharge only points at a record here, and Verify honours it only while the
record is approved, unexpired, for that token and request, and has uses left.
Its one use is an atomic update, so it holds across every replica sharing the
store. Every vote and every use is written with its audit record in the same
transaction.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the records below need it only in annotations (no import cycle)
    from capgate_server.store._events import AuditEvent

__all__ = [
    "ApprovalRecord",
    "ApprovalStatus",
    "ApprovalStore",
    "ApprovalVote",
    "Redemption",
]


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    # never stored: how a record reads once its time or its uses are over
    EXPIRED = "expired"
    USED = "used"


class Redemption(StrEnum):
    """What redeeming one use of an approval came to."""

    OK = "ok"
    USED = "used"  # every use is spent (by any replica)
    EXPIRED = "expired"
    NOT_APPROVED = "not-approved"  # pending or denied
    MISMATCH = "mismatch"  # not this token, or not this request
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ApprovalVote:
    """One approver's yes or no. A yes says how long the approval may last once
    granted (``ttl`` seconds) and how many uses it gives; the smallest of the yeses
    holds."""

    approver: str
    approve: bool
    reason: str
    at: float
    ttl: int = 0
    uses: int = 0


@dataclass(frozen=True, slots=True)
class ApprovalRecord:
    """One request for approval and where it stands.

    ``token_digest`` is a digest of the token's signature (never the signature),
    ``request_digest`` the digest of the request (``capgate.request_digest``);
    ``conditions`` the approval caveats (their ids) and agents' rules the request
    met; ``needed`` the distinct approvers it takes. A pending request lapses at
    ``wait_until``; an approved one at ``expires_at``.
    """

    id: str
    token_id: str
    token_digest: str
    requested_by: str
    presenter: str
    action: str
    resource: str
    ctx: tuple[tuple[str, str], ...]
    request_digest: str
    conditions: tuple[str, ...]
    needed: int
    chain: tuple[str, ...]
    note: str
    created_at: float
    wait_until: float
    status: ApprovalStatus = ApprovalStatus.PENDING
    decided_at: float | None = None
    expires_at: float | None = None
    uses: int = 0
    used: int = 0
    reason: str = ""  # why it was denied
    votes: tuple[ApprovalVote, ...] = ()
    seq: int = 0

    def state(self, now: float) -> ApprovalStatus:
        """The status as people read it: a pending request past its wait, or an approval
        past its expiry, reads ``expired``; one whose uses are spent, ``used``."""
        if self.status is ApprovalStatus.PENDING and now >= self.wait_until:
            return ApprovalStatus.EXPIRED
        if self.status is ApprovalStatus.APPROVED:
            if self.used >= self.uses:
                return ApprovalStatus.USED
            if self.expires_at is not None and now >= self.expires_at:
                return ApprovalStatus.EXPIRED
        return self.status

    @property
    def approvals(self) -> int:
        return sum(1 for v in self.votes if v.approve)


class ApprovalStore(ABC):
    """Approvals in the store (``Store`` includes it; ``SqlStore`` implements it)."""

    @abstractmethod
    def create_approval(
        self, record: ApprovalRecord, audit: AuditEvent, pending_limit: int
    ) -> None:
        """Insert a pending request; ``ResourceExhaustedError`` when its requester
        already has ``pending_limit`` requests pending (lapsed ones do not count)."""

    @abstractmethod
    def get_approval(self, approval_id: str) -> ApprovalRecord | None: ...

    @abstractmethod
    def list_approvals(
        self,
        now: float,
        status: ApprovalStatus | None = None,
        limit: int = 100,
        requested_by: str = "",
    ) -> list[ApprovalRecord]:
        """Records oldest first, at most ``limit``: with ``status`` only those that read
        so at ``now`` (``ApprovalRecord.state``), with ``requested_by`` only its own."""

    @abstractmethod
    def vote_approval(
        self, approval_id: str, vote: ApprovalVote, audit: AuditEvent
    ) -> ApprovalRecord:
        """Record one approver's vote on a pending request, atomically: a no denies it,
        and the ``needed``-th distinct yes approves it (expiring ``min(ttl)`` after
        ``vote.at``, with ``min(uses)`` uses). ``NotFoundError`` for an unknown id;
        ``FailedPreconditionError`` when it is no longer pending (decided or lapsed) or
        the approver has voted on it already. ``audit`` is written with the vote (its
        detail gains the resulting status)."""

    @abstractmethod
    def redeem_approvals(
        self,
        approval_ids: Sequence[str],
        token_digest: str,
        request_digest: str,
        now: float,
        audits: Sequence[AuditEvent],
    ) -> tuple[str, Redemption]:
        """Spend one use of each approval, all or none, atomically across every replica
        sharing the store: each only while it is approved, for this token and request,
        unexpired at ``now``, with a use left. Returns ``("", OK)``, or the first that
        could not be spent and why (then none was). ``audits`` (the uses) are written
        only when all were spent."""

    def redeem_approval(
        self,
        approval_id: str,
        token_digest: str,
        request_digest: str,
        now: float,
        audit: AuditEvent,
    ) -> Redemption:
        """``redeem_approvals`` for one approval."""
        return self.redeem_approvals([approval_id], token_digest, request_digest, now, [audit])[1]

    @abstractmethod
    def prune_approvals(self, before: float) -> int:
        """Delete requests (and their votes) that lapsed or expired before ``before``;
        the audit trail keeps their story. Returns how many."""
