"""``AuditLedger``: the audit record made tamper-evident, verified, and followed live.

Every replica writes audit records unsealed; the ledger seals them (one replica
at a time) into one hash chain, in an order every reader agrees on, and signs
the new head with the store's Ed25519 ledger key. That key is made once, sealed
under the key-encryption key and kept in the store, so every replica signs with
the same one and nobody without the KEK can make a signature that verifies.
A signed head is kept as a checkpoint at most every ``checkpoint_every`` seconds;
retention leaves a signed checkpoint where it cuts.

``verify`` walks the chain from its start (or a checkpoint) and names the first
break; ``watch`` follows the sealed records by position, so a client resuming
from its last position neither misses nor repeats one, whichever replica it asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from capgate import Clock, FailedPreconditionError
from capgate_server._keyring import KeyEncryptionKey
from capgate_server.store import (
    AuditEvent,
    AuditQuery,
    Break,
    Checkpoint,
    LedgerKey,
    Store,
    walk,
)

__all__ = ["AuditLedger", "LedgerReport"]

log = logging.getLogger("capgate.ledger")
T = TypeVar("T")
_KEY_ID = "audit-ledger"  # the sealed key's associated data
_PAGE = 2000


@dataclass(frozen=True)
class LedgerReport:
    """What ``audit verify`` found."""

    intact: bool
    first_break: Break | None
    start: int  # the position the walk started after
    head: int  # the last position walked
    records: int  # records checked
    checkpoints: int  # signed checkpoints the walk met
    key_id: str
    against: Checkpoint | None = None  # an exported checkpoint the record still extends


def vouch(store: Store, kek: KeyEncryptionKey, now: float) -> LedgerKey:
    """The store's ledger key (made on a first start), unsealed with ``kek``; from now
    on every audit record written through ``store`` carries its writer's MAC."""
    mine = LedgerKey.generate()
    sealed, public = store.ledger_key(kek.seal(_KEY_ID, mine.private_bytes()), mine.public_key, now)
    key = LedgerKey.from_bytes(kek.open(_KEY_ID, sealed))
    if key.public_key != public:
        raise FailedPreconditionError(
            "the audit ledger's key does not match its public key: the store was altered"
        )
    store.record_key = key.record_key()
    return key


class AuditLedger:
    def __init__(
        self,
        store: Store,
        kek: KeyEncryptionKey,
        clock: Clock,
        *,
        interval: float = 0.2,
        checkpoint_every: float = 60.0,
    ) -> None:
        self._store = store
        self._kek = kek
        self._clock = clock
        self._interval = interval
        self._checkpoint_every = checkpoint_every
        self._key: LedgerKey | None = None
        self._kept_at = float("-inf")
        self._sealed = asyncio.Event()  # set whenever this replica sealed records
        self._wake = asyncio.Event()
        # walks and watches read on their own thread (and connection): a long verify
        # never holds up the change feed or the decision records
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capgate-ledger")
        self._task: asyncio.Task[None] | None = None
        self.sealed = 0  # records this replica sealed (for metrics)

    async def _read(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._reader, fn, *args)

    @property
    def key(self) -> LedgerKey:
        if self._key is None:
            raise FailedPreconditionError("the audit ledger has not started")
        return self._key

    async def start(self) -> None:
        """Load the store's ledger key (making it on a first start), then seal on."""
        self._key = await self._read(vouch, self._store, self._kek, self._clock())
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-seal")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._key is not None:
            try:
                await self.seal()  # what the last flush wrote
            except Exception as e:  # the store is gone: the next start seals it
                log.warning("final seal of the audit ledger failed: %s", e)
        self._reader.shutdown(wait=True)

    def wake(self) -> None:
        """New records were written: seal soon."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
            # that lands as the wait ends, and this task would never stop
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                while await self.seal() >= _PAGE:  # a backlog: keep going
                    await asyncio.sleep(0)
            except Exception as e:  # the store is down: the records wait, nothing is lost
                log.warning("cannot seal the audit ledger: %s", e)

    def _sign(self, pos: int, digest: bytes, at: float, cut: bool = False) -> Checkpoint:
        return self.key.sign(pos, digest, at, cut)

    async def seal(self) -> int:
        """Seal what can be sealed now; returns how many records."""
        now = self._clock()
        keep = now - self._kept_at >= self._checkpoint_every
        n: int = await self._read(self._store.seal_audit, self._sign, now, keep, _PAGE)
        if n:
            self.sealed += n
            if keep:
                self._kept_at = now
            self._sealed.set()
        return n

    async def prune(self, before: float, limit: int) -> int:
        """Retention: delete sealed records older than ``before``, signing the cut."""
        deleted: int = await self._read(self._store.prune_audit, before, self._sign, limit)
        return deleted

    # -- verifying ---------------------------------------------------------------------

    async def checkpoint(self) -> Checkpoint | None:
        """The signed head, to keep off the machine (``capgate audit checkpoint --out``)."""
        await self.seal()
        head: Checkpoint | None = await self._read(self._store.audit_head)
        return head

    async def verify(self, since: int = 0, against: Checkpoint | None = None) -> LedgerReport:
        """Walk the ledger (from the kept checkpoint at or before ``since``) and name the
        first break; ``against``: an exported checkpoint it must still extend."""
        await self.seal()
        report: LedgerReport = await self._read(self._verify, since, against)
        return report

    def _verify(self, since: int, against: Checkpoint | None) -> LedgerReport:
        store, key_id = self._store, self.key.key_id
        start_pos, start = store.audit_start()  # 0 and GENESIS, or the last retention cut
        kept = store.audit_checkpoints(max(0, start_pos - 1))  # the cut itself, and on
        head = store.audit_head()
        marks = [*kept, *([head] if head is not None else [])]
        if start_pos and not any(c.pos == start_pos for c in kept):
            marks.append(Checkpoint(start_pos, start.hex(), 0.0, "", "", "", True))  # unsigned
        forged = next((c for c in marks if not c.valid([key_id])), None)
        if forged is not None:  # a cut must be signed as one: a checkpoint relabelled
            what = "a retention cut" if forged.cut else "a checkpoint"  # a cut fails here
            return LedgerReport(
                False,
                Break(
                    forged.pos, f"{what} at {forged.pos} is not signed by this store's ledger key"
                ),
                start_pos,
                start_pos,
                0,
                0,
                key_id,
            )
        marks = [c for c in marks if c.pos > start_pos]
        if against is not None:
            problem = self._against(against, start_pos)
            if problem is not None:
                return LedgerReport(False, problem, start_pos, start_pos, 0, 0, key_id, against)
            if against.pos > start_pos:
                marks.append(against)
        if since > start_pos:  # start at the last kept checkpoint at or before `since`
            base = max((c for c in kept if c.pos <= since), key=lambda c: c.pos, default=None)
            if base is not None:
                start_pos, start = base.pos, bytes.fromhex(base.digest)
        broke, pos, _ = walk(
            self._pages(start_pos), start_pos, start, [c for c in marks if c.pos > start_pos]
        )
        return LedgerReport(
            broke is None,
            broke,
            start_pos,
            pos,
            pos - start_pos,
            sum(1 for c in marks if start_pos < c.pos <= pos),
            key_id,
            against,
        )

    def _against(self, exported: Checkpoint, start_pos: int) -> Break | None:
        if not exported.valid([self.key.key_id]):  # its pos is the sender's word: not reported
            return Break(
                start_pos, "the exported checkpoint is not signed by this store's ledger key"
            )
        if exported.pos <= start_pos:  # pruned since: only a kept cut can speak for it
            same = [
                c for c in self._store.audit_checkpoints(exported.pos - 1) if c.pos == exported.pos
            ]
            if not same or same[0].digest != exported.digest:
                return Break(
                    exported.pos,
                    f"the exported checkpoint at {exported.pos} is older "
                    f"than the retention cut at {start_pos}: it cannot "
                    "be checked",
                )
        return None

    def _pages(self, after: int) -> Iterator[tuple[int, bytes, bytes]]:
        while True:
            page = self._store.audit_proof_page(after, _PAGE)
            yield from page
            if len(page) < _PAGE:
                return
            after = page[-1][0]

    # -- following ---------------------------------------------------------------------

    async def watch(
        self, after: int, query: AuditQuery | None, *, follow: bool = True, poll: float = 0.5
    ) -> AsyncIterator[AuditEvent]:
        """Sealed records after position ``after`` that match ``query``, in order; with
        ``follow``, then each new one as it is sealed (here or at another replica)."""
        while True:
            self._sealed.clear()
            head: Checkpoint | None = await self._read(self._store.audit_head)
            page: list[AuditEvent] = await self._read(self._store.sealed_audit, after, 500, query)
            for event in page:
                yield event
            if page:
                after = page[-1].pos
                continue
            # nothing after `after` matched, up to the head read before the query: a
            # filtered scan resumes there instead of walking the same records again
            after = max(after, head.pos if head is not None else 0)
            if not follow:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await self._sealed.wait()
