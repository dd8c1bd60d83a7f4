"""``AuditLog``: every decision and change, attributed to a principal.

Changes (issue, revoke, delegate, admin actions) are written in the same
transaction as the change itself. Verify decisions are tallied in memory and
group-committed every ``interval`` seconds: identical decisions in one interval
(same caller, token, chain, request and outcome) become one record with a
``count`` and the first and last instants, so a verifier answering a hot token
a hundred thousand times a second writes a row per distinct decision, not per
call. A crash can lose at most the last interval of verify records; SIGTERM
flushes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from capgate import Decision
from capgate_server.store import AuditEvent

__all__ = ["AuditLog"]

log = logging.getLogger("capgate.audit")

_MAX_BACKLOG = 1_000_000
# (principal, decision, action, resource, presenter)
_Key = tuple[str, Decision, str, str, str]


class AuditLog:
    def __init__(self, write: Callable[[Sequence[AuditEvent]], Awaitable[None]], *,
                 interval: float = 0.2, max_pending: int = 50_000) -> None:
        self._write = write
        self._interval = interval
        self._max_pending = max_pending
        self._backlog: list[AuditEvent] = []  # records a failed flush must retry
        self._tally: dict[_Key, list[float]] = {}  # key -> [count, first_at, last_at]
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.decisions = 0  # verify decisions seen (for metrics)

    def decision(self, principal: str, d: Decision, action: str, resource: str,
                 presenter: str, now: float) -> None:
        """Tally one verify decision (the hot path: a tuple and a dict lookup).

        Decisions are keyed by identity: the verifier shares one allow object per
        token chain, so identical allows fold into one record; each deny is its own.
        """
        key = (principal, d, action, resource, presenter)
        self.decisions += 1
        entry = self._tally.get(key)
        if entry is None:
            self._tally[key] = [1, now, now]
            if len(self._tally) >= self._max_pending:
                self._wake.set()
        else:
            entry[0] += 1
            entry[2] = now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-flush")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    def _drain(self) -> list[AuditEvent]:
        events, self._backlog = self._backlog, []
        tally, self._tally = self._tally, {}
        for (principal, d, action, resource, presenter), (count, first, last) in tally.items():
            events.append(AuditEvent(
                first, principal, "verify", d.token_id or "", d.allowed, str(d.code),
                "" if d.allowed else d.reason, d.chain, action=action, resource=resource,
                presenter=presenter, count=int(count), last_at=last))
        return events

    async def flush(self) -> None:
        batch = self._drain()
        if not batch:
            return
        try:
            await self._write(batch)
        except Exception:  # keep serving; the records go back for the next attempt
            log.exception("audit flush of %d records failed; will retry", len(batch))
            self._backlog[:0] = batch
            if len(self._backlog) > _MAX_BACKLOG:  # the store is gone for long: bound memory
                dropped = len(self._backlog) - _MAX_BACKLOG
                del self._backlog[:dropped]
                log.error("audit backlog full: dropped the %d oldest records", dropped)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
