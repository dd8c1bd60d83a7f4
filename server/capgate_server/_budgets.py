"""``Budgets``: the counts behind ``uses <= N``, ``rate <= N/PERIOD`` and an agent's rate.

A budget is counted in the store, so a fleet shares it, but not one round trip
per use: a replica leases a block of uses (an atomic take of up to ``block``
from what is left) and spends them from memory. The store never hands out
more than the limit, so the fleet never allows more than N, whatever the
number of replicas, their timing or their crashes. What leasing costs is the
other way: uses a replica holds are not available to the others. A lease is
at most ``block`` uses (fewer for small limits: at most a sixteenth of N, and
at first one, doubling as it spends); once leases are 8 or more, the next one
is taken in the background when half is left, so a busy budget rarely waits
for the store, and a replica holds at most 1.5 x block. It gives back what it
has not spent after ``idle`` seconds, and all of it when it stops; so a fleet
of R replicas may deny at most (R-1) x 1.5 x block uses early, and only until
those leases come back. One replica counts exactly. One budget spent faster
than a block per store round trip waits for the store now and then.

A rate is the same count in fixed windows: window k of a budget with period P
is [k*P, (k+1)*P) on the replica's clock (checked against the store's), and
each window has its own row. At most N in each window; like any fixed window,
up to 2N can fall inside one period that straddles a boundary.

Leases that arrive together share one transaction, on a lane of their own.
When the store cannot be reached, a use that needs a lease is refused (the
caller fails closed); uses already leased still count from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from capgate import Agent, Budget, BudgetCaveat, Clock, parse_caveat
from capgate_server.store import BudgetLease, Store

__all__ = ["AGENT_RATE_PREFIX", "Budgets", "TooManyBudgets", "agent_budget"]

log = logging.getLogger("capgate.budgets")
AGENT_RATE_PREFIX = "agent:"
_MAX_PER_COMMIT = 500
_RECHECK = 1.0  # seconds a spent budget is refused from memory before asking again
_FORGET_EVERY = 60.0  # seconds between sweeps of expired rows in the store
# A row is kept this long after its token expired or its window ended: a replica whose
# clock is behind may still count in it, and must not find it gone (and start at 0).
_KEEP = 3600.0


class _Lease:
    __slots__ = ("block", "left", "low", "slot", "spent_until", "used_at")

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.left = 0
        self.low = -1  # at this many left, lease the next block ahead of need
        self.block = 1  # the next lease's size: doubles as uses are spent, to the cap
        self.spent_until = 0.0  # monotonic: the store said none remain; ask again after
        self.used_at = time.monotonic()


def agent_budget(agent: Agent) -> Budget | None:
    """The budget an agent's rate sets on every request it takes part in, if any."""
    if not agent.rate:
        return None
    cav = _rate_caveat(agent.rate)
    return Budget(
        f"{AGENT_RATE_PREFIX}{agent.id}:{int(cav.period)}",
        f"agent {agent.id} rate <= {agent.rate}",
        cav.limit,
        cav.period,
    )


def _rate_caveat(rate: str) -> BudgetCaveat:
    cav = parse_caveat(f"rate <= {rate}")
    assert isinstance(cav, BudgetCaveat)
    return cav


class TooManyBudgets(Exception):
    """A request would start more budgets than a token id may in a minute."""


class Budgets:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        block: int = 256,
        idle: float = 5.0,
        max_leases: int = 100_000,
        new_per_token: int = 1000,
    ) -> None:
        self._store = store
        self._clock = clock
        self._block = max(1, block)
        self._idle = idle
        self._max_leases = max_leases
        self._leases: dict[str, _Lease] = {}
        self._lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capgate-budgets")
        self._pending: list[tuple[BudgetLease, asyncio.Future[int]]] = []
        self._refills: dict[tuple[str, int], asyncio.Future[int]] = {}
        self._writer: asyncio.Task[None] | None = None
        self._forgot_at = 0.0
        # budgets started in this minute, per token id: each is a row in the store, and
        # a holder can make new ones at will by attenuating, so their pace is bounded
        self._new_per_token = new_per_token
        self._started: dict[str, set[str]] = {}
        self._started_window = 0
        self.leased = 0  # for metrics: leases granted by the store, and uses in them
        self.leased_uses = 0

    # -- counting ----------------------------------------------------------------------

    def take_now(self, budgets: Sequence[Budget]) -> bool:
        """Count one use against every one of ``budgets`` from this replica's leases; False
        (nothing counted) when one of them needs the store: then ``take``. A lease running
        low is topped up in the background, so a busy budget rarely waits for the store."""
        leases = self._leases
        now = 0.0
        for b in budgets:
            lease = leases.get(b.id)
            if lease is None or lease.left < 1:
                return False
            if b.period:
                now = now or self._clock()
                if lease.slot != int(now // b.period):
                    return False
        mono = time.monotonic()
        for b in budgets:
            lease = leases[b.id]
            lease.left -= 1
            lease.used_at = mono
            if lease.left <= lease.low and (b.id, lease.slot) not in self._refills:
                try:
                    self._refill(b, lease.slot)
                except RuntimeError:  # no event loop here: it is leased when needed
                    pass
        return True

    async def take(self, budgets: Sequence[Budget], token_id: str = "") -> Budget | None:
        """Count one use against every one of ``budgets``, all or none: None when counted,
        else the budget that is spent. Raises the store's error when a lease is needed
        and the store cannot give it, and ``TooManyBudgets`` when the tokens of
        ``token_id`` have started too many budgets this minute."""
        leases = self._leases
        self._pace(budgets, token_id)
        while True:
            now, mono = self._clock(), time.monotonic()
            short: list[tuple[Budget, int]] = []
            for b in budgets:
                slot = int(now // b.period) if b.period else 0
                lease = leases.get(b.id)
                if lease is None or lease.slot != slot:
                    lease = leases[b.id] = _Lease(slot)
                if lease.left < 1:
                    if lease.spent_until > mono:
                        return b
                    short.append((b, slot))
            if not short:
                for b in budgets:
                    lease = leases[b.id]
                    lease.left -= 1
                    lease.used_at = mono
                return None
            got = await asyncio.gather(*[self._refill(b, slot) for b, slot in short])
            for (b, _), n in zip(short, got, strict=True):
                if not n:
                    return b
            if len(leases) > self._max_leases:
                self.give_back(idle=0.0)

    def _pace(self, budgets: Sequence[Budget], token_id: str) -> None:
        new = [
            b.id
            for b in budgets
            if b.id not in self._leases and not b.id.startswith(AGENT_RATE_PREFIX)
        ]
        if not new or not token_id:
            return
        window = int(time.monotonic() // 60)
        if window != self._started_window:
            self._started, self._started_window = {}, window
        started = self._started.setdefault(token_id, set())
        fresh = [bid for bid in new if bid not in started]
        if len(started) + len(fresh) > self._new_per_token:
            raise TooManyBudgets(
                f"the tokens of {token_id} started more than {self._new_per_token} budgets "
                "in the last minute here (each is a row in the store); use the budgets "
                "they have, or try again in a minute"
            )
        started.update(fresh)

    def refund(self, budgets: Sequence[Budget]) -> None:
        """Give back the use ``take`` counted against each of ``budgets``, for an allow
        that turned into a deny after it was counted (an approval already spent): a deny
        spends nothing. A window that has ended since keeps its use."""
        now = 0.0
        for b in budgets:
            lease = self._leases.get(b.id)
            if lease is None:
                continue
            if b.period:
                now = now or self._clock()
                if lease.slot != int(now // b.period):
                    continue
            lease.left += 1

    def _refill(self, b: Budget, slot: int) -> asyncio.Future[int]:
        """Lease more uses of ``b`` in ``slot``, one request at a time per budget: callers
        that need it meanwhile share the answer."""
        key = (b.id, slot)
        future = self._refills.get(key)
        if future is not None:
            return future
        loop = asyncio.get_running_loop()
        future = self._refills[key] = loop.create_future()
        lease = self._leases[b.id]
        cap = max(1, min(self._block, b.limit // 16))
        want = min(lease.block, cap)
        lease.block = min(cap, lease.block * 2)
        until = (slot + 1) * b.period if b.period else b.until
        self._pending.append((BudgetLease(b.id, slot, b.limit, want, min(until, 1e15)), future))
        future.add_done_callback(lambda f: self._settled(b.id, slot, f))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write(), name="lease-budgets")
        return future

    def _settled(self, bid: str, slot: int, future: asyncio.Future[int]) -> None:
        self._refills.pop((bid, slot), None)
        lease = self._leases.get(bid)
        if future.cancelled() or future.exception() is not None:
            return
        n = future.result()
        if lease is None or lease.slot != slot:
            if n:  # the lease was given back meanwhile: so are these
                self._return_later([(bid, slot, n)])
            return
        if n:
            lease.left += n
            lease.low = n // 2 if n >= 8 else -1  # big blocks: the next one is leased ahead
            lease.spent_until = 0.0
        else:
            lease.spent_until = time.monotonic() + _RECHECK

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = self._pending[:_MAX_PER_COMMIT]
            del self._pending[:_MAX_PER_COMMIT]
            now = self._clock()
            forget = now - _KEEP if now - self._forgot_at >= _FORGET_EVERY else None
            try:
                granted = await loop.run_in_executor(
                    self._lane, self._store.lease_budgets, [r for r, _ in batch], forget
                )
            except Exception as e:  # the store is down: these uses are refused
                log.warning("cannot lease budgets: %s", e)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            if forget is not None:
                self._forgot_at = now
            for (_, future), n in zip(batch, granted, strict=True):
                if n:
                    self.leased += 1
                    self.leased_uses += n
                if not future.done():
                    future.set_result(n)

    # -- giving back -------------------------------------------------------------------

    def give_back(self, idle: float | None = None) -> None:
        """Return the unspent uses of leases not used for ``idle`` seconds (the setting
        when None), and forget those leases."""
        horizon = time.monotonic() - (self._idle if idle is None else idle)
        returns: list[tuple[str, int, int]] = []
        for bid, lease in list(self._leases.items()):
            if lease.used_at <= horizon and (bid, lease.slot) not in self._refills:
                del self._leases[bid]
                if lease.left > 0:
                    returns.append((bid, lease.slot, lease.left))
        if returns:
            self._return_later(returns)

    def _return_later(self, returns: list[tuple[str, int, int]]) -> None:
        def give() -> None:
            try:
                self._store.return_budgets(returns)
            except Exception as e:  # they stay counted as used: fewer allowed, never more
                log.warning("cannot give back %d budget leases: %s", len(returns), e)

        with contextlib.suppress(RuntimeError):  # the lane is closed: they stay spent
            self._lane.submit(give)

    async def run(self) -> None:
        """Give back idle leases, every half ``idle``."""
        while True:
            await asyncio.sleep(self._idle / 2)
            self.give_back()

    @property
    def held(self) -> int:
        """Leases this replica holds, and the unspent uses in them (for metrics)."""
        return len(self._leases)

    def unspent(self) -> int:
        return sum(lease.left for lease in self._leases.values())

    def close(self) -> None:
        """Give back every unspent use, then stop the lane."""
        self.give_back(idle=-1.0)
        self._lane.shutdown(wait=True)
