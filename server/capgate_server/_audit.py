"""``AuditLog``: every decision and change, attributed to a principal, in bounded space.

Changes (issue, revoke, delegate, admin actions) are written in the same
transaction as the change itself. Verify decisions are tallied in memory and
group-committed every ``interval`` seconds: identical decisions in one interval
become one record with a ``count`` and the first and last instants. Allows are
identical when caller, token chain and request are; denies when caller, token
id, code, failed caveat, chain and request are (the first reason is kept). A
service hammering a revoked token writes one row per interval, not one per call.

Everything is bounded. The tally holds at most ``tally_bytes``, and one caller
at most ``denies_per_caller`` distinct denies per interval (so a hostile call
adds a bounded number of rows, however many different denies it provokes);
beyond either, a decision with a new key is counted in a coarse record per
(caller, outcome, code) without its request (those few records may pass the
budget), and the flush writes an ``audit.overflow`` record saying how many
decisions lost their detail. Records go to the store in
transactions of at most ``rows_per_write`` rows on the replica's audit lane, so
audit never holds the store's write lock long enough to delay a revocation.
While the store refuses them, records wait in a backlog of at most ``backlog``;
beyond that the oldest are dropped and counted in the next overflow record.
Records older than ``retention`` seconds are deleted. A crash can lose the last
interval of verify records; SIGTERM flushes them.

An allow for an agent in shadow mode (``shadow``: its shadow ceiling) that the
shadow ceiling would deny is tallied a second time, as a ``verify.shadow``
record with the deny's code and reason; the allow is untouched.

``observe`` (governance) is handed each interval's new records once, when they
are drained: by the flush, or, while a slow write holds the flush, by a stager
that moves them to the backlog for the next write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from capgate import Ceiling, Clock, Decision, DenyCode, system_clock
from capgate_server.store import AUDIT_FIELD_LIMITS, AuditEvent

__all__ = ["AuditLog"]

log = logging.getLogger("capgate.audit")

_ACTION = AUDIT_FIELD_LIMITS["action"]
_RESOURCE = AUDIT_FIELD_LIMITS["resource"]
_PRESENTER = AUDIT_FIELD_LIMITS["presenter"]
_ENTRY_BYTES = 600  # a tally entry: its key tuple, the counters, the dict slot
_PRUNE_EVERY = 600.0  # seconds between retention passes
_PRUNE_CHUNK = 5000  # records deleted per transaction
_COARSE = "coarse"  # first element of the key of a record whose request was left out
_SHADOW = "shadow"  # last element of the key of a shadow deny
_REFUSALS = 1000  # distinct refused calls kept apart per flush interval


class _Entry:
    """One record in the making: how many identical decisions, first and last seen."""

    __slots__ = ("count", "cut", "decision", "first", "last")

    def __init__(self, d: Decision, now: float, cut: dict[str, int] | None) -> None:
        self.count = 1
        self.first = self.last = now
        self.decision = d
        self.cut = cut  # the original lengths of fields cut to their stored size


class AuditLog:
    def __init__(
        self,
        write: Callable[[Sequence[AuditEvent]], Awaitable[None]],
        *,
        prune: Callable[[float, int], Awaitable[int]] | None = None,
        on_written: Callable[[], None] | None = None,
        observe: Callable[[Sequence[AuditEvent]], None] | None = None,
        shadow: Mapping[str, Ceiling] | None = None,
        clock: Clock = system_clock,
        interval: float = 0.2,
        retention: float = 0.0,
        tally_bytes: int = 16 << 20,
        backlog: int = 10_000,
        rows_per_write: int = 500,
        denies_per_caller: int = 100,
    ) -> None:
        self._write = write
        self._on_written = on_written  # e.g. the ledger: new records to seal
        self._observe = observe  # e.g. governance: each interval's new records, once
        # agent -> shadow ceiling: an allow it would deny is recorded as verify.shadow
        self._shadow = shadow if shadow is not None else {}
        self._prune = prune
        self._clock = clock
        self._interval = interval
        self._retention = retention  # seconds; 0 keeps every record
        self._tally_budget = tally_bytes
        self._backlog_limit = backlog
        self._rows = max(1, rows_per_write)
        self._backlog: list[AuditEvent] = []  # records a failed flush must retry
        self._tally: dict[tuple[object, ...], _Entry] = {}
        self._tally_bytes = 0
        self._denies_per_caller = denies_per_caller
        self._denies: dict[str, int] = {}  # caller -> distinct denies in this interval
        # refused calls: (kind, principal, subject, code, reason) -> [count, first, last]
        self._refusals: dict[tuple[str, str, str, str, str], list[float]] = {}
        self._coarse = 0  # decisions counted without their request since the last flush
        self._dropped = 0  # records dropped from a full backlog since the last flush
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()  # one flush at a time: a flush waits for the one under way
        self._task: asyncio.Task[None] | None = None
        self._stager: asyncio.Task[None] | None = None
        self.decisions = 0  # verify decisions seen (for metrics)
        self.decided: dict[str, int] = {}  # verify decisions by code, as they are written

    def decision(
        self,
        principal: str,
        d: Decision,
        action: str,
        resource: str,
        presenter: str,
        now: float,
        ctx_keys: tuple[str, ...] = (),
    ) -> None:
        """Tally one verify decision (the hot path: a tuple and a dict lookup).

        The verifier shares one allow object per token chain, so allows are keyed by
        it; denies are built per call, so they are keyed by what they say.
        """
        self.decisions += 1
        if d.allowed:
            if self._shadow and d.chain:  # some agent is in shadow mode (else: one check)
                self._shadow_check(principal, d, action, resource, presenter, now, ctx_keys)
            key: tuple[object, ...] = (principal, d, action, resource, presenter, ctx_keys)
        else:
            if len(action) > _ACTION or len(resource) > _RESOURCE or len(presenter) > _PRESENTER:
                self._new_cut(principal, d, action, resource, presenter, now, ctx_keys)
                return
            key = (
                principal,
                d.token_id,
                d.code,
                d.caveat,
                d.chain,
                action,
                resource,
                presenter,
                ctx_keys,
            )
        entry = self._tally.get(key)
        if entry is None:
            self._new(key, d, now, len(action) + len(resource) + len(presenter), None)
        else:
            entry.count += 1
            entry.last = now

    def _shadow_check(
        self,
        principal: str,
        d: Decision,
        action: str,
        resource: str,
        presenter: str,
        now: float,
        ctx_keys: tuple[str, ...],
    ) -> None:
        """Record what the holder's shadow ceiling would deny (the allow stands)."""
        holder = d.chain[-1]
        ceiling = self._shadow.get(holder)
        if ceiling is None or ceiling.allows(action, resource):
            return
        would = Decision(
            False,
            DenyCode.CEILING,
            f"beyond the shadow ceiling of {holder!r} ({ceiling}); allowed: shadow mode",
            None,
            d.token_id,
            d.chain,
        )
        self._new_cut(
            principal,
            would,
            action[:_ACTION],
            resource[:_RESOURCE],
            presenter[:_PRESENTER],
            now,
            ctx_keys,
            shadow=True,
        )

    def refusal(
        self, kind: str, principal: str, subject: str, code: str, reason: str, now: float
    ) -> None:
        """Tally one refused call that changed nothing (a failed login, a refused issue
        or delegation): identical ones in an interval fold into one record, and at
        most ``_REFUSALS`` distinct ones are kept per interval (beyond, per kind)."""
        key = (kind, principal[:64], subject[:128], code, reason[:256])
        entry = self._refusals.get(key)
        if entry is None:
            if len(self._refusals) >= _REFUSALS:
                key = (kind, "*", "", code, "more refusals than the audit keeps apart")
                entry = self._refusals.get(key)
            if entry is None:
                self._refusals[key] = [1, now, now]
                return
        entry[0] += 1
        entry[2] = now

    def _new_cut(
        self,
        principal: str,
        d: Decision,
        action: str,
        resource: str,
        presenter: str,
        now: float,
        ctx_keys: tuple[str, ...],
        shadow: bool = False,
    ) -> None:
        """A deny for a request with oversized fields: keyed and kept by their prefixes
        (and a shadow deny, keyed apart from real ones)."""
        cut = {
            name: len(value)
            for name, value, limit in (
                ("action", action, _ACTION),
                ("resource", resource, _RESOURCE),
                ("presenter", presenter, _PRESENTER),
            )
            if len(value) > limit
        }
        action, resource, presenter = action[:_ACTION], resource[:_RESOURCE], presenter[:_PRESENTER]
        key = (
            principal,
            d.token_id,
            d.code,
            d.caveat,
            d.chain,
            action,
            resource,
            presenter,
            ctx_keys,
            *((_SHADOW,) if shadow else ()),
        )
        entry = self._tally.get(key)
        if entry is None:
            self._new(key, d, now, len(action) + len(resource) + len(presenter), cut)
        else:
            entry.count += 1
            entry.last = now

    def _new(
        self,
        key: tuple[object, ...],
        d: Decision,
        now: float,
        size: int,
        cut: dict[str, int] | None,
    ) -> None:
        cost = _ENTRY_BYTES + size + (0 if d.allowed else len(d.reason))
        over = self._tally_bytes + cost > self._tally_budget
        if not d.allowed and not over:
            caller = str(key[0])
            n = self._denies.get(caller, 0)
            over = n >= self._denies_per_caller
            if not over:
                self._denies[caller] = n + 1
        if over:
            self._coarse += 1
            if key[-1] == _SHADOW:  # never a coarse record: it would read as a real deny
                return
            # full: count it without its request, in one record per caller and outcome
            key = (_COARSE, key[0], d.allowed, d.code)
            entry = self._tally.get(key)
            if entry is not None:
                entry.count += 1
                entry.last = now
                return
            cost, cut = _ENTRY_BYTES, None
        self._tally[key] = _Entry(d, now, cut)
        self._tally_bytes += cost
        if self._tally_bytes > self._tally_budget // 2:
            self._wake.set()  # flush early rather than fill up

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="audit-flush")
        if self._observe is not None:
            self._stager = loop.create_task(self._stage_while_writing(), name="audit-stage")

    async def _stage_while_writing(self) -> None:
        """While a write is slow, still hand each interval's new records to ``observe``
        (they wait in the backlog for the next write): detection never waits for the
        store."""
        while True:
            await asyncio.sleep(self._interval)
            if self._flushing.locked() and (self._tally or self._refusals):
                self._keep(self._drain())

    async def _run(self) -> None:
        next_prune = 0.0
        while True:
            with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            await self.flush()
            if self._retention and self._prune is not None and self._clock() >= next_prune:
                next_prune = self._clock() + _PRUNE_EVERY
                try:
                    await self.prune()
                except Exception as e:  # the store is down: next time
                    log.warning("audit retention pass failed: %s", e)

    async def prune(self) -> int:
        """Delete records older than the retention period; returns how many."""
        if not self._retention or self._prune is None:
            return 0
        before, total = self._clock() - self._retention, 0
        while True:
            deleted = await self._prune(before, _PRUNE_CHUNK)
            total += deleted
            if deleted < _PRUNE_CHUNK:
                break
        if total:
            log.info(
                "deleted %d audit records older than %.0f days", total, self._retention / 86400
            )
        return total

    def _drain(self) -> list[AuditEvent]:
        backlog, self._backlog = self._backlog, []
        events: list[AuditEvent] = []
        tally, self._tally = self._tally, {}
        self._tally_bytes = 0
        self._denies = {}
        refusals, self._refusals = self._refusals, {}
        for (kind, principal, subject, code, reason), (count, first, last) in refusals.items():
            events.append(
                AuditEvent(
                    first,
                    principal,
                    kind,
                    subject,
                    False,
                    code,
                    reason,
                    count=int(count),
                    last_at=last,
                )
            )
        for key, e in tally.items():
            d = e.decision
            code = str(d.code)
            shadow = key[-1] == _SHADOW
            if not shadow:  # a shadow deny's decision was an allow, counted as such
                self.decided[code] = self.decided.get(code, 0) + e.count
            if key[0] == _COARSE:
                events.append(
                    AuditEvent(
                        e.first,
                        str(key[1]),
                        "verify",
                        "",
                        d.allowed,
                        str(d.code),
                        "" if d.allowed else "request detail dropped: audit tally full",
                        count=e.count,
                        last_at=e.last,
                        detail={"coarse": True},
                    )
                )
                continue
            action, resource, presenter, ctx_keys = key[-5:-1] if shadow else key[-4:]
            events.append(
                AuditEvent(
                    e.first,
                    str(key[0]),
                    "verify.shadow" if shadow else "verify",
                    d.token_id or "",
                    d.allowed,
                    str(d.code),
                    "" if d.allowed else d.reason,
                    d.chain,
                    action=str(action),
                    resource=str(resource),
                    presenter=str(presenter),
                    count=e.count,
                    last_at=e.last,
                    detail={"truncated": e.cut} if e.cut else {},
                    caveat=d.caveat or "",
                    ctx_keys=_strings(ctx_keys),
                )
            )
        if self._observe is not None and events:
            self._observe(events)
        return backlog + events

    @property
    def pending(self) -> int:
        """Records not written yet (in the tally and the backlog)."""
        return len(self._tally) + len(self._refusals) + len(self._backlog)

    def lag(self) -> float:
        """Age in seconds of the oldest record not written yet (0 when none waits)."""
        firsts = [e.first for e in self._tally.values()] + [e.at for e in self._backlog[:1]]
        return max(0.0, self._clock() - min(firsts)) if firsts else 0.0

    def _overflow(self) -> AuditEvent | None:
        if not (self._coarse or self._dropped):
            return None
        log.warning(
            "audit overflow: %d decisions counted without detail, %d records dropped",
            self._coarse,
            self._dropped,
        )
        return AuditEvent(
            self._clock(),
            "capgate",
            "audit.overflow",
            "",
            False,
            "audit_full",
            "audit kept counts only",
            detail={"coarse_decisions": self._coarse, "dropped_records": self._dropped},
        )

    async def flush(self) -> None:
        """Write every decision tallied so far; returns once they are in the store (or
        back in the backlog), after any flush already under way."""
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        batch = self._drain()
        rows = self._rows
        for start in range(0, len(batch), rows):
            try:
                await self._write(batch[start : start + rows])
            except Exception:  # keep serving; the records go back for the next attempt
                log.exception("audit flush of %d records failed; will retry", len(batch) - start)
                self._keep(batch[start:])
                return
        if batch and self._on_written is not None:
            self._on_written()
        overflow = self._overflow()  # said once the store takes records again
        if overflow is not None:
            coarse, dropped = self._coarse, self._dropped
            try:
                await self._write([overflow])
            except Exception:
                log.exception("audit overflow record not written; will retry")
                return
            self._coarse -= coarse
            self._dropped -= dropped

    def _keep(self, events: list[AuditEvent]) -> None:
        self._backlog[:0] = [e.bounded() for e in events]  # as small as they will be stored
        excess = len(self._backlog) - self._backlog_limit
        if excess > 0:  # the store is gone for long: bound memory, and say so later
            del self._backlog[:excess]
            self._dropped += excess
            log.error("audit backlog full: dropped the %d oldest records", excess)

    async def close(self) -> None:
        if self._stager is not None:
            self._stager.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stager
            self._stager = None
        if self._task is not None:
            async with self._flushing:  # never cancel a flush halfway through its batch
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


def _strings(value: object) -> tuple[str, ...]:
    """A tally key's context keys (a tuple of strings, stored in a key of objects)."""
    assert isinstance(value, tuple)
    return tuple(str(v) for v in value)
