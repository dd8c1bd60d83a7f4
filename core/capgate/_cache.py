"""``BoundedCache``: what the verifier remembers, bounded in bytes as well as entries.

Attackers choose what a verifier sees, so a cache bounded only by its number of
entries is bounded by nothing: one entry can be a 16 KiB token and its parsed
caveats. Each entry here is charged an estimate of the memory it holds (the
caller's ``cost``), and the cache never holds more than its budget.

Entries live in two generations. A lookup reads the young one; a hit in the
old one moves the entry back to the young one. When the young generation
passes half the budget (in bytes or entries), the old one is dropped and the
young one becomes old. That is close to LRU, costs one dict lookup per hit,
and never evicts on a hit. An entry costing more than half the budget is not
kept at all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["BoundedCache"]

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A map of at most ``max_bytes`` (by ``cost(key, value)``) and ``max_entries``."""

    __slots__ = (
        "_cost",
        "_half_bytes",
        "_half_entries",
        "_old",
        "_old_bytes",
        "_young_bytes",
        "young",
    )

    def __init__(
        self, max_bytes: int, cost: Callable[[K, V], int], max_entries: int = 1 << 62
    ) -> None:
        self._cost = cost
        self._half_bytes = max(1, max_bytes // 2)
        self._half_entries = max(1, max_entries // 2)
        # the young generation, read directly by a hot loop's first lookup (then
        # ``recall`` on a miss); replaced when it turns old, so never kept aside
        self.young: dict[K, V] = {}
        self._old: dict[K, V] = {}
        self._young_bytes = 0
        self._old_bytes = 0

    def get(self, key: K) -> V | None:
        value = self.young.get(key)
        return value if value is not None else self.recall(key)

    def recall(self, key: K) -> V | None:
        """``get`` for a key the young generation has just been found not to hold."""
        if not self._old:
            return None
        value = self._old.pop(key, None)
        if value is not None:  # still in use: back to the young generation
            self._add(key, value, self._cost(key, value))
        return value

    def put(self, key: K, value: V, cost: int | None = None) -> None:
        """Remember ``value`` (the caller has just missed ``key``); ``cost`` when known."""
        if cost is None:
            cost = self._cost(key, value)
        if cost <= self._half_bytes:
            self._add(key, value, cost)

    def _add(self, key: K, value: V, cost: int) -> None:
        young = self.young
        young[key] = value
        self._young_bytes += cost
        if self._young_bytes > self._half_bytes or len(young) > self._half_entries:
            self._turn()

    def charge(self, cost: int) -> None:
        """An entry just used has grown by ``cost``: count it (as a young entry's)."""
        self._young_bytes += cost
        if self._young_bytes > self._half_bytes:
            self._turn()

    def _turn(self) -> None:
        """The young generation becomes the old one; the old one is dropped."""
        self._old, self._old_bytes = self.young, self._young_bytes
        self.young, self._young_bytes = {}, 0

    def clear(self) -> None:
        self.young.clear()
        self._old.clear()
        self._young_bytes = self._old_bytes = 0

    def __len__(self) -> int:
        return len(self.young) + len(self._old)

    @property
    def nbytes(self) -> int:
        """The estimated bytes held (entries moved back from the old generation count twice)."""
        return self._young_bytes + self._old_bytes
