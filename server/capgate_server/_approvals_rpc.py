"""The approval service over gRPC: translate protobuf to ``Approvals`` calls and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from capgate import InvalidArgumentError, format_timestamp
from capgate_proto.v1 import approval_pb2, approval_pb2_grpc
from capgate_server._approvals import Approvals, Fetched
from capgate_server._interceptor import CALLER
from capgate_server._rpc import rpc, streaming_rpc

__all__ = ["ApprovalServicer"]


def _when(ts: float | None) -> str:
    return format_timestamp(ts) if ts is not None else ""


def approval_to_pb(f: Fetched) -> approval_pb2.Approval:
    r = f.record
    return approval_pb2.Approval(
        id=r.id,
        status=str(f.status),
        token_id=r.token_id,
        chain=r.chain,
        requested_by=r.requested_by,
        presenter=r.presenter,
        action=r.action,
        resource=r.resource,
        ctx=dict(r.ctx),
        request_digest=r.request_digest,
        conditions=r.conditions,
        approvals_needed=r.needed,
        votes=[
            approval_pb2.Vote(
                approver=v.approver, approve=v.approve, reason=v.reason, at=format_timestamp(v.at)
            )
            for v in r.votes
        ],
        note=r.note,
        created_at=format_timestamp(r.created_at),
        wait_until=format_timestamp(r.wait_until),
        expires=_when(r.expires_at),
        uses=r.uses,
        used=r.used,
        reason=r.reason,
        discharges=f.discharges,
    )


class ApprovalServicer(approval_pb2_grpc.ApprovalServiceServicer):
    def __init__(self, approvals: Approvals) -> None:
        self.approvals = approvals

    @rpc
    async def RequestApproval(self, request: Any, context: Any) -> Any:
        record = await self.approvals.request(
            CALLER.get(),
            request.token,
            request.action,
            request.resource,
            request.presenter,
            dict(request.ctx),
            request.note,
        )
        return approval_to_pb(Fetched(record, record.status))

    @rpc
    async def GetApproval(self, request: Any, context: Any) -> Any:
        return approval_to_pb(await self.approvals.get(CALLER.get(), request.id, request.token))

    @rpc
    async def ListApprovals(self, request: Any, context: Any) -> Any:
        found = await self.approvals.list(CALLER.get(), request.status, request.limit)
        return approval_pb2.ListApprovalsResponse(approvals=[approval_to_pb(f) for f in found])

    @streaming_rpc
    async def WatchApprovals(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async for fetched in self.approvals.watch(CALLER.get()):
            yield approval_to_pb(fetched)

    @rpc
    async def DecideApproval(self, request: Any, context: Any) -> Any:
        if request.ttl_seconds < 0 or request.uses < 0:
            raise InvalidArgumentError("ttl_seconds and uses must not be negative")
        return approval_to_pb(
            await self.approvals.decide(
                CALLER.get(),
                request.id,
                request.approve,
                request.reason,
                request.ttl_seconds,
                request.uses,
            )
        )
