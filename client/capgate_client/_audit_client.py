"""The audit trail from the SDK: reading, following, verifying the ledger (admin).

Mixed into ``Client`` and ``AsyncClient``, which run the calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import grpc

from capgate_client import _calls as calls
from capgate_client._calls import Call, audit_record, watch_request
from capgate_client._errors import from_rpc_error
from capgate_client._types import AuditCheckpoint, AuditRecord, LedgerCheck

__all__ = ["AsyncAuditCalls", "AuditCalls"]

T = TypeVar("T")


class AuditCalls:
    """The blocking client's audit methods."""

    target: str
    _stubs: dict[str, Any]
    _metadata: tuple[tuple[str, str]]
    _run: Callable[..., Any]

    def audit(
        self,
        *,
        principal: str = "",
        agent: str = "",
        kind: str = "",
        token_id: str = "",
        after_seq: int = 0,
        limit: int = 100,
        newest_first: bool = False,
        code: str = "",
        ok: bool | None = None,
    ) -> list[AuditRecord]:
        """Audit records by write order (after ``after_seq``; newest first: before it),
        filtered by who acted, an agent of the chain, kind, token, code and outcome."""
        got: list[AuditRecord] = self._run(
            calls.audit(principal, agent, kind, token_id, after_seq, limit, newest_first, code, ok)
        )
        return got

    def watch_audit(
        self,
        *,
        after_pos: int = 0,
        follow: bool = True,
        principal: str = "",
        agent: str = "",
        kind: str = "",
        code: str = "",
        ok: bool | None = None,
        since: float = 0.0,
    ) -> Iterator[AuditRecord]:
        """Sealed records after ``after_pos`` in ledger order (last seen at or after
        ``since``), then (``follow``) each new one. Resume from the last record's
        ``pos``: nothing is missed or repeated."""
        request = watch_request(after_pos, follow, principal, agent, kind, code, ok, since)
        try:
            for e in self._stubs["audit"].WatchEvents(request, metadata=self._metadata):
                yield audit_record(e)
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.target) from None

    def audit_checkpoint(self) -> AuditCheckpoint:
        """The ledger's signed head: keep it off the machine (``to_json``)."""
        got: AuditCheckpoint = self._run(calls.audit_checkpoint())
        return got

    def verify_audit(
        self, *, since: int = 0, against: AuditCheckpoint | None = None
    ) -> LedgerCheck:
        """Walk the ledger; ``against``: an exported checkpoint it must still extend."""
        got: LedgerCheck = self._run(calls.verify_ledger(since, against), timeout=300)
        return got


class AsyncAuditCalls:
    """The asyncio client's audit methods (see ``AuditCalls``)."""

    target: str
    _metadata: tuple[tuple[str, str]]
    _stubs_here: Callable[[], dict[str, Any]]

    async def _run(self, call: Call[T], timeout: float | None = None) -> T:
        raise NotImplementedError

    async def audit(
        self,
        *,
        principal: str = "",
        agent: str = "",
        kind: str = "",
        token_id: str = "",
        after_seq: int = 0,
        limit: int = 100,
        newest_first: bool = False,
        code: str = "",
        ok: bool | None = None,
    ) -> list[AuditRecord]:
        """See ``Client.audit``."""
        return await self._run(
            calls.audit(principal, agent, kind, token_id, after_seq, limit, newest_first, code, ok)
        )

    async def watch_audit(
        self,
        *,
        after_pos: int = 0,
        follow: bool = True,
        principal: str = "",
        agent: str = "",
        kind: str = "",
        code: str = "",
        ok: bool | None = None,
        since: float = 0.0,
    ) -> AsyncIterator[AuditRecord]:
        """See ``Client.watch_audit``."""
        request = watch_request(after_pos, follow, principal, agent, kind, code, ok, since)
        try:
            async for e in self._stubs_here()["audit"].WatchEvents(
                request, metadata=self._metadata
            ):
                yield audit_record(e)
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.target) from None

    async def audit_checkpoint(self) -> AuditCheckpoint:
        """See ``Client.audit_checkpoint``."""
        return await self._run(calls.audit_checkpoint())

    async def verify_audit(
        self, *, since: int = 0, against: AuditCheckpoint | None = None
    ) -> LedgerCheck:
        """See ``Client.verify_audit``."""
        return await self._run(calls.verify_ledger(since, against), timeout=300)
