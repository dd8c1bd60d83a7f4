"""``AuditLog``: every decision and change, attributed to a principal.

Changes (issue, revoke, admin actions) are written in the same transaction as
the change itself. Verify decisions are buffered and group-committed every
``interval`` seconds (or sooner when ``max_batch`` pile up), so a busy verifier
does one fsync per batch instead of one per decision; on shutdown the buffer
is flushed. A crash can lose at most the last interval of verify records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from capgate_server.store import AuditEvent

__all__ = ["AuditLog"]

log = logging.getLogger("capgate.audit")


class AuditLog:
    def __init__(self, write: Callable[[Sequence[AuditEvent]], Awaitable[None]], *,
                 interval: float = 0.2, max_batch: int = 20000) -> None:
        self._write = write
        self._interval = interval
        self._max_batch = max_batch
        self._buffer: list[AuditEvent] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.failed = 0

    def record(self, event: AuditEvent) -> None:
        self._buffer.append(event)
        if len(self._buffer) >= self._max_batch:
            self._wake.set()

    def extend(self, events: Sequence[AuditEvent]) -> None:
        self._buffer.extend(events)
        if len(self._buffer) >= self._max_batch:
            self._wake.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-flush")

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        try:
            await self._write(batch)
            self.written += len(batch)
        except Exception:  # keep serving; the records go back for the next attempt
            log.exception("audit flush of %d events failed; will retry", len(batch))
            self.failed += 1
            self._buffer[:0] = batch

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self.flush()
