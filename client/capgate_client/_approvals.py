"""The approval service in the SDK: its calls, and the methods both clients share.

``ApprovalMethods`` (blocking) and ``AsyncApprovalMethods`` are mixed into
``Client`` and ``AsyncClient``, which supply ``_run`` and the stream stubs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

import grpc

from capgate_client._calls import Call
from capgate_client._errors import from_rpc_error
from capgate_client._types import ApprovalInfo, ApprovalVoteInfo
from capgate_proto.v1 import approval_pb2

__all__ = ["ApprovalMethods", "AsyncApprovalMethods"]


def approval_info(pb: Any) -> ApprovalInfo:
    return ApprovalInfo(
        pb.id,
        pb.status,
        pb.token_id,
        tuple(pb.chain),
        pb.requested_by,
        pb.presenter,
        pb.action,
        pb.resource,
        MappingProxyType(dict(pb.ctx)),
        pb.request_digest,
        tuple(pb.conditions),
        pb.approvals_needed,
        tuple(ApprovalVoteInfo(v.approver, v.approve, v.reason, v.at) for v in pb.votes),
        pb.note,
        pb.created_at,
        pb.wait_until,
        pb.expires,
        pb.uses,
        pb.used,
        pb.reason,
        tuple(pb.discharges),
    )


def request_approval(
    token: str, action: str, resource: str, presenter: str, ctx: Mapping[str, str] | None, note: str
) -> Call[ApprovalInfo]:
    return Call(
        "approval",
        "RequestApproval",
        approval_pb2.RequestApprovalRequest(
            token=token,
            action=action,
            resource=resource,
            presenter=presenter,
            ctx=dict(ctx or {}),
            note=note,
        ),
        approval_info,
    )


def get_approval(approval_id: str, token: str) -> Call[ApprovalInfo]:
    return Call(
        "approval",
        "GetApproval",
        approval_pb2.GetApprovalRequest(id=approval_id, token=token),
        approval_info,
    )


def list_approvals(status: str, limit: int) -> Call[list[ApprovalInfo]]:
    return Call(
        "approval",
        "ListApprovals",
        approval_pb2.ListApprovalsRequest(status=status, limit=limit),
        lambda pb: [approval_info(a) for a in pb.approvals],
    )


def decide_approval(
    approval_id: str, approve: bool, reason: str, ttl: int | None, uses: int | None
) -> Call[ApprovalInfo]:
    return Call(
        "approval",
        "DecideApproval",
        approval_pb2.DecideApprovalRequest(
            id=approval_id, approve=approve, reason=reason, ttl_seconds=ttl or 0, uses=uses or 0
        ),
        approval_info,
    )


class ApprovalMethods:
    """The approval methods of ``Client``."""

    target: str
    _metadata: tuple[tuple[str, str]]
    _stubs: dict[str, Any]
    _run: Callable[..., Any]

    def request_approval(
        self,
        token: str,
        action: str,
        resource: str,
        *,
        presenter: str = "",
        ctx: Mapping[str, str] | None = None,
        note: str = "",
    ) -> ApprovalInfo:
        """Ask for a person's approval of this one request under ``token`` (as the agent,
        or a service naming the ``presenter``); ``ctx`` exactly as it will be verified."""
        got: ApprovalInfo = self._run(
            request_approval(token, action, resource, presenter, ctx, note)
        )
        return got

    def get_approval(self, approval_id: str, *, token: str = "") -> ApprovalInfo:
        """A request for approval and its votes; with the token it is for, once approved,
        its ``discharges``."""
        got: ApprovalInfo = self._run(get_approval(approval_id, token))
        return got

    def list_approvals(self, *, status: str = "pending", limit: int = 100) -> list[ApprovalInfo]:
        """Requests for approval (approvers and admins: all; others: their own), oldest
        first; ``status``: pending, approved, denied, expired, used or all."""
        got: list[ApprovalInfo] = self._run(list_approvals(status, limit))
        return got

    def watch_approvals(self) -> Iterator[ApprovalInfo]:
        """Approvers and admins: the pending requests, then each new one as it is made."""
        try:
            for reply in self._stubs["approval"].WatchApprovals(
                approval_pb2.WatchApprovalsRequest(), metadata=self._metadata
            ):
                yield approval_info(reply)
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.target) from None

    def approve(
        self, approval_id: str, reason: str, *, ttl: int | None = None, uses: int | None = None
    ) -> ApprovalInfo:
        """Approvers and admins: say yes (``ttl`` seconds once granted, ``uses`` uses;
        the server's defaults are 5 minutes and one)."""
        got: ApprovalInfo = self._run(decide_approval(approval_id, True, reason, ttl, uses))
        return got

    def deny(self, approval_id: str, reason: str) -> ApprovalInfo:
        """Approvers and admins: say no; the request is denied."""
        got: ApprovalInfo = self._run(decide_approval(approval_id, False, reason, None, None))
        return got


class AsyncApprovalMethods:
    """The approval methods of ``AsyncClient`` (see ``ApprovalMethods``)."""

    target: str
    _metadata: tuple[tuple[str, str]]
    _run: Callable[..., Any]
    _stubs_here: Callable[[], dict[str, Any]]

    async def request_approval(
        self,
        token: str,
        action: str,
        resource: str,
        *,
        presenter: str = "",
        ctx: Mapping[str, str] | None = None,
        note: str = "",
    ) -> ApprovalInfo:
        """See ``Client.request_approval``."""
        got: ApprovalInfo = await self._run(
            request_approval(token, action, resource, presenter, ctx, note)
        )
        return got

    async def get_approval(self, approval_id: str, *, token: str = "") -> ApprovalInfo:
        """See ``Client.get_approval``."""
        got: ApprovalInfo = await self._run(get_approval(approval_id, token))
        return got

    async def list_approvals(
        self, *, status: str = "pending", limit: int = 100
    ) -> list[ApprovalInfo]:
        """See ``Client.list_approvals``."""
        got: list[ApprovalInfo] = await self._run(list_approvals(status, limit))
        return got

    async def watch_approvals(self) -> AsyncIterator[ApprovalInfo]:
        """See ``Client.watch_approvals``."""
        call = self._stubs_here()["approval"].WatchApprovals(
            approval_pb2.WatchApprovalsRequest(), metadata=self._metadata
        )
        try:
            async for reply in call:
                yield approval_info(reply)
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.target) from None

    async def approve(
        self, approval_id: str, reason: str, *, ttl: int | None = None, uses: int | None = None
    ) -> ApprovalInfo:
        """See ``Client.approve``."""
        got: ApprovalInfo = await self._run(decide_approval(approval_id, True, reason, ttl, uses))
        return got

    async def deny(self, approval_id: str, reason: str) -> ApprovalInfo:
        """See ``Client.deny``."""
        got: ApprovalInfo = await self._run(decide_approval(approval_id, False, reason, None, None))
        return got
