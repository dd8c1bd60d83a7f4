"""``Verification``: Verify for services, with an audit record for every decision.

The decision itself is the core ``Verifier``'s, entirely in memory. This layer
adds who asked (a service speaks for the presenter it authenticated; an agent
only for itself), fails closed when the replica is stale, writes the audit
record.

It also keeps one caller from stalling the others. A batch is decided in time
slices of ``slice_seconds`` with a pause of ``slice_pause`` between them: a bare
yield is not enough, since grpc's poller thread needs the GIL to hand the event
loop other callers' messages, and it gets it while the loop sleeps. So other
callers' verifies, the change feed and the freshness watch run in between; at
most ``batches_per_principal`` batches of one principal are decided at once
(the rest wait their turn), so a principal sending many cannot crowd out the
others. The expensive part of a never-seen token is parsing its caveats: a batch
may bring at most ``new_caveats_per_call`` of them, and a stream that many per
second; beyond that the call ends with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Protocol

from capgate import (
    Decision,
    DenyCode,
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
)
from capgate_server._replica import Replica
from capgate_server.store import Principal, Role

__all__ = ["NewCaveatBudget", "Verification", "VerifyItem"]

class VerifyItem(Protocol):
    """One request of a batch or stream, as the wire delivers it."""

    token: str
    action: str
    resource: str
    presenter: str
    ctx: Mapping[str, str]


class NewCaveatBudget:
    """Never-seen caveats a stream may bring: ``rate`` per second, at most ``rate`` at once."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._level = float(rate)
        self._at = time.monotonic()

    def spend(self, n: int) -> None:
        now = time.monotonic()
        self._level = min(self._rate, self._level + (now - self._at) * self._rate) - n
        self._at = now
        if self._level < 0:
            raise _too_many_new(self._rate, "per second on one stream")


def _too_many_new(limit: int, where: str) -> ResourceExhaustedError:
    return ResourceExhaustedError(
        f"more than {limit} caveats this server has not seen {where}; send fewer never-seen "
        "tokens at once", limit="new_caveats_per_call", value=limit)


class _Turn:
    __slots__ = ("semaphore", "users")

    def __init__(self, slots: int) -> None:
        self.semaphore = asyncio.Semaphore(slots)
        self.users = 0


class Verification:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._limits = replica.settings.limits
        self._turns: dict[str, _Turn] = {}

    def presenter_for(self, caller: Principal, presenter: str) -> str:
        if caller.role is Role.AGENT:
            if presenter and presenter != caller.id:
                raise PermissionDeniedError("an agent may verify only on its own behalf")
            return caller.id
        return presenter

    def verify(self, caller: Principal, token: str, action: str, resource: str,
               presenter: str, ctx: Mapping[str, str]) -> Decision:
        """One decision; ``presenter`` must already have gone through ``presenter_for``."""
        replica = self.replica
        if time.monotonic() > replica.fresh_until:
            decision = Decision(False, DenyCode.UNAVAILABLE,
                                f"replica out of touch with the store for "
                                f"{replica.staleness():.1f}s; failing closed")
        else:
            decision = replica.verifier.check(token, action, resource, presenter, ctx)
        replica.audit.decision(caller.id, decision, action, resource, presenter, replica.clock(),
                               tuple(sorted(ctx)) if ctx else ())
        return decision

    def verify_item(self, caller: Principal, r: VerifyItem,
                    budget: NewCaveatBudget | None = None) -> Decision:
        """One request of a stream (or a unary call), charged to ``budget``."""
        verifier = self.replica.verifier
        before = verifier.compiled
        d = self.verify(caller, r.token, r.action, r.resource,
                        self.presenter_for(caller, r.presenter), r.ctx)
        if budget is not None and verifier.compiled != before:
            budget.spend(verifier.compiled - before)
        return d

    def stream_budget(self) -> NewCaveatBudget:
        return NewCaveatBudget(self._limits.new_caveats_per_call)

    async def verify_batch(self, caller: Principal,
                           requests: Sequence[VerifyItem]) -> list[Decision]:
        """Every request's decision, in order, decided in time slices."""
        limits = self._limits
        if len(requests) > limits.max_batch:
            raise InvalidArgumentError(f"at most {limits.max_batch} requests in one batch")
        if caller.role is Role.AGENT:  # refuse the whole batch before deciding any of it
            presenters = [self.presenter_for(caller, r.presenter) for r in requests]
        else:
            presenters = [r.presenter for r in requests]
        async with self._turn(caller.id):
            return await self._decide(caller, requests, presenters)

    async def _decide(self, caller: Principal, requests: Sequence[VerifyItem],
                      presenters: list[str]) -> list[Decision]:
        limits = self._limits
        verifier, verify, clock = self.replica.verifier, self.verify, time.perf_counter
        budget, slice_seconds = limits.new_caveats_per_call, limits.slice_seconds
        pause = limits.slice_pause
        out = []
        mark, used = verifier.compiled, 0
        end = clock() + slice_seconds
        for r, presenter in zip(requests, presenters, strict=True):
            out.append(verify(caller, r.token, r.action, r.resource, presenter, r.ctx))
            if clock() > end:  # this slice is spent: let everyone else run
                used += verifier.compiled - mark
                if used > budget:
                    raise _too_many_new(budget, "in one batch")
                await asyncio.sleep(pause)
                mark, end = verifier.compiled, clock() + slice_seconds
        return out

    @contextlib.asynccontextmanager
    async def _turn(self, who: str) -> AsyncIterator[None]:
        """At most ``batches_per_principal`` batches of ``who`` decided at once."""
        turn = self._turns.get(who)
        if turn is None:
            turn = self._turns[who] = _Turn(self._limits.batches_per_principal)
        turn.users += 1
        try:
            async with turn.semaphore:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[who]
