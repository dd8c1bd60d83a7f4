"""``TrustedClock``: which clock a replica trusts for what.

- Dates it writes (token issue and expiry, delegation hops, audit records) and
  the expiry checks of verification: its wall clock, as the host keeps it.
- Staleness (how long since it heard from the store): the monotonic clock.
- Forgetting revocations: ``now()``, the wall clock but never further than
  monotonic time has run since start (a wall-clock jump forward moves nothing)
  and, where the store has a clock of its own, never further than the store's
  clock as last read, carried forward by monotonic time.
- Agent-wide revocations take the latest of the wall clock, the store's clock
  and the latest hop the store recorded (``Registry``); the signing key is the
  one the store numbered last (no clock at all).

Each reading of the store's clock is compared with the wall clock; while they
differ by more than ``max_skew`` the replica says so (log, health).
"""

from __future__ import annotations

import logging

from capgate import Clock

__all__ = ["TrustedClock"]

log = logging.getLogger("capgate.clock")


class TrustedClock:
    def __init__(self, wall: Clock, monotonic: Clock, max_skew: float) -> None:
        self.wall = wall
        self.monotonic = monotonic
        self.max_skew = max_skew
        self._started = (wall(), monotonic())
        self._store: tuple[float, float] | None = None  # (store's clock, monotonic) read
        self.skew: float | None = None  # the wall clock minus the store's, when known
        self.agrees = True

    def now(self) -> float:
        """The latest instant this replica can vouch for (see the module docstring)."""
        now = min(self.wall(), self._started[0] + (self.monotonic() - self._started[1]))
        if self._store is not None:
            store_now, at = self._store
            now = min(now, store_now + (self.monotonic() - at))
        return now

    def store_read(self, store_now: float, before: float, after: float) -> bool:
        """Take a reading of the store's clock, made between the wall-clock readings
        ``before`` and ``after`` (the monotonic clock is read now, just after it).
        Returns True when the clocks' agreement changed."""
        self._store = (store_now, self.monotonic())  # the store's time was at least this
        self.skew = skew = (before + after) / 2 - store_now
        agrees = abs(skew) <= self.max_skew
        if agrees == self.agrees:
            return False
        self.agrees = agrees
        if agrees:
            log.warning("this replica's clock agrees with the store's again (%+.3fs)", skew)
        else:
            log.warning(
                "this replica's clock is %.1fs %s the store's (bound %.1fs): check "
                "its time sync; expiry checks here are off by as much",
                abs(skew),
                "ahead of" if skew > 0 else "behind",
                self.max_skew,
            )
        return True
