"""The audit trail over gRPC: ``AuditTrail`` (the service layer) and its servicer.

``AuditTrail`` reads the trail (``ListEvents``), follows the sealed ledger
(``WatchEvents``), verifies it and hands out its signed head; the servicer only
translates protobuf to these calls and back.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

from capgate import InvalidArgumentError, check_id, format_timestamp
from capgate_proto.v1 import audit_pb2, audit_pb2_grpc
from capgate_server._ledger import LedgerReport
from capgate_server._replica import Replica
from capgate_server._rpc import rpc, streaming_rpc
from capgate_server.store import AuditEvent, AuditQuery, Checkpoint

__all__ = ["AuditServicer", "AuditTrail"]

_OUTCOMES = {
    audit_pb2.OUTCOME_ANY: None,
    audit_pb2.OUTCOME_OK: True,
    audit_pb2.OUTCOME_REFUSED: False,
}


class AuditTrail:
    """Reading the audit trail: listing, following, verifying (admin)."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    async def list(self, query: AuditQuery) -> list[AuditEvent]:
        await self._replica.audit.flush()  # include decisions still in the buffer
        events: list[AuditEvent] = await self._replica.read(self._replica.store.list_audit, query)
        return events

    async def watch(self, after: int, query: AuditQuery, follow: bool) -> AsyncIterator[AuditEvent]:
        """Sealed records after ``after``; everything this replica knows of is sealed
        first, so an export ends at "now", not at the last seal."""
        await self._replica.audit.flush()
        await self._replica.ledger.seal()
        async for event in self._replica.ledger.watch(after, query, follow=follow):
            yield event

    async def verify(self, since: int, against: Checkpoint | None) -> LedgerReport:
        await self._replica.audit.flush()
        return await self._replica.ledger.verify(since, against)

    async def checkpoint(self) -> Checkpoint | None:
        await self._replica.audit.flush()
        return await self._replica.ledger.checkpoint()


def _query(
    request: Any,
    *,
    limit: int = 0,
    after_seq: int = 0,
    newest_first: bool = False,
    token_id: str = "",
    since: float = 0.0,
) -> AuditQuery:
    for name in (request.principal, request.agent):
        if name:
            check_id(name, "principal or agent id")
    if request.outcome not in _OUTCOMES:
        raise InvalidArgumentError("unknown outcome")
    return AuditQuery(
        request.principal,
        request.agent,
        request.kind,
        token_id,
        after_seq,
        limit,
        request.code,
        _OUTCOMES[request.outcome],
        newest_first,
        since,
    )


def event_to_pb(e: AuditEvent) -> audit_pb2.AuditEvent:
    return audit_pb2.AuditEvent(
        seq=e.seq,
        at=format_timestamp(e.at),
        principal=e.principal,
        kind=e.kind,
        subject=e.subject,
        ok=e.ok,
        code=e.code,
        reason=e.reason,
        chain=e.chain,
        detail=e.detail_json(),
        action=e.action,
        resource=e.resource,
        presenter=e.presenter,
        count=e.count,
        last_at=format_timestamp(e.last_at if e.last_at is not None else e.at),
        caveat=e.caveat,
        ctx_keys=e.ctx_keys,
        replica=e.replica,
        pos=e.pos,
        digest=e.digest.hex(),
    )


def checkpoint_to_pb(c: Checkpoint) -> audit_pb2.Checkpoint:
    return audit_pb2.Checkpoint(
        pos=c.pos,
        digest=c.digest,
        at=c.at,
        key_id=c.key_id,
        public_key=c.public_key,
        signature=c.signature,
    )


_MAX_LIMIT = 1000  # events one ListEvents returns


class AuditServicer(audit_pb2_grpc.AuditServiceServicer):
    def __init__(self, trail: AuditTrail) -> None:
        self.trail = trail

    @rpc
    async def ListEvents(self, request: Any, context: Any) -> Any:
        if request.limit < 0 or request.after_seq < 0:
            raise InvalidArgumentError("limit and after_seq must not be negative")
        if request.limit > _MAX_LIMIT:
            raise InvalidArgumentError(f"limit must be between 0 and {_MAX_LIMIT} (0: 100)")
        query = _query(
            request,
            limit=request.limit or 100,
            after_seq=request.after_seq,
            newest_first=request.newest_first,
            token_id=request.token_id,
        )
        return audit_pb2.ListEventsResponse(
            events=[event_to_pb(e) for e in await self.trail.list(query)]
        )

    @streaming_rpc
    async def WatchEvents(self, request: Any, context: Any) -> AsyncIterator[Any]:
        if request.after_pos < 0:
            raise InvalidArgumentError("after_pos must not be negative")
        if not math.isfinite(request.since):  # NaN read as 0 (everything), inf as nothing
            raise InvalidArgumentError("since must be a finite number of Unix seconds")
        query = _query(request, since=max(0.0, request.since))
        async for event in self.trail.watch(request.after_pos, query, request.follow):
            yield event_to_pb(event)

    @rpc
    async def VerifyLedger(self, request: Any, context: Any) -> Any:
        against = None
        if request.HasField("against"):
            a = request.against
            against = Checkpoint(a.pos, a.digest, a.at, a.key_id, a.public_key, a.signature)
        r = await self.trail.verify(max(0, request.since), against)
        broke = r.first_break
        return audit_pb2.VerifyLedgerResponse(
            intact=r.intact,
            break_pos=broke.pos if broke else 0,
            reason=broke.reason if broke else "",
            start=r.start,
            head=r.head,
            records=r.records,
            checkpoints=r.checkpoints,
            key_id=r.key_id,
        )

    @rpc
    async def GetCheckpoint(self, request: Any, context: Any) -> Any:
        head = await self.trail.checkpoint()
        if head is None:
            raise InvalidArgumentError("the ledger is empty: nothing to checkpoint yet")
        return checkpoint_to_pb(head)
