"""``NonceLedger``: each proof of possession is redeemed once, across the whole fleet.

A proof carries a random nonce; the store holds every nonce redeemed until the
proof could no longer be accepted by any replica (its instant, plus the proof
window, plus a margin for replicas whose clocks differ). A replica redeems
through the store, so a replay sent to another replica is refused too.

What it costs: one write to the store per proof, never a read-modify-write.
Redemptions that arrive together share one transaction (a group commit on a
lane of its own, so a flood of proofs never queues behind issues and
revocations, and never delays the change feed): under load the cost per proof
is a share of one round trip and one commit. A nonce seen here before is refused
from memory, without the store. When the store cannot be reached, the proof is
refused (the caller fails closed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from capgate import Clock
from capgate_server.store import Store

__all__ = ["NONCE_MARGIN", "NonceLedger"]

log = logging.getLogger("capgate.nonces")
NONCE_MARGIN = 60.0  # seconds a nonce is kept past its window: clocks of replicas differ
_MAX_PER_COMMIT = 2000
Claim = tuple[str, str, float]  # (agent, nonce, keep until)


class NonceLedger:
    def __init__(
        self, store: Store, clock: Clock, *, local_limit: int = 200_000, forget_every: float = 10.0
    ) -> None:
        self._store = store
        self._clock = clock
        self._lane = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capgate-nonces")
        # redeemed nonces this replica knows of, and until when; bounded (the store decides)
        self._known: dict[tuple[str, str], float] = {}
        self._local_limit = local_limit
        self._pending: list[tuple[Claim, asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._forget_every = forget_every
        self._forgot_at = 0.0

    async def redeem(self, claims: Sequence[Claim]) -> list[bool | BaseException]:
        """For each claim: True when this call redeemed the nonce, False when it was
        redeemed before (here or at any replica), or the store's error."""
        loop = asyncio.get_running_loop()
        now = self._clock()
        futures: list[asyncio.Future[bool]] = []
        for claim in claims:
            future: asyncio.Future[bool] = loop.create_future()
            until = self._known.get((claim[0], claim[1]))
            if until is not None and until >= now:
                future.set_result(False)
            else:
                self._pending.append((claim, future))
            futures.append(future)
        if self._pending and (self._writer is None or self._writer.done()):
            self._writer = loop.create_task(self._write(), name="redeem-nonces")
        return list(await asyncio.gather(*futures, return_exceptions=True))

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = self._pending[:_MAX_PER_COMMIT]
            del self._pending[:_MAX_PER_COMMIT]
            now = self._clock()
            forget = now if now - self._forgot_at >= self._forget_every else None
            try:
                redeemed = await loop.run_in_executor(
                    self._lane, self._store.redeem_nonces, [c for c, _ in batch], forget
                )
            except Exception as e:  # the store is down: these proofs are refused
                log.warning("cannot redeem proof nonces: %s", e)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
                continue
            if forget is not None:
                self._forgot_at = now
            for (claim, future), ok in zip(batch, redeemed, strict=True):
                self._remember(claim, now)
                if not future.done():
                    future.set_result(ok)

    def _remember(self, claim: Claim, now: float) -> None:
        known = self._known
        if len(known) >= self._local_limit:
            for key in [k for k, until in known.items() if until < now]:
                del known[key]
            if len(known) >= self._local_limit:
                known.clear()  # only a shortcut: the store still refuses every replay
        known[(claim[0], claim[1])] = claim[2]

    def close(self) -> None:
        self._lane.shutdown(wait=True)
