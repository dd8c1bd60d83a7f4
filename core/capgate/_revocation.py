"""``RevocationSet``: revoked token and delegation ids, O(1) to check.

Ids are 128-bit values kept as Python ints (smaller than their hex text, and
hashed without work). Each entry is filed under the hour its token expires;
once that hour has passed, the bucket is dropped: an expired token is denied
anyway, so its revocation need not be remembered. Revoking an id again with a
later expiry moves it to the later hour; an entry is never shortened.
"""

from __future__ import annotations

import math
from collections.abc import Container, Iterable

__all__ = ["RevocationSet", "lineage_key"]

_BUCKET = 3600


def lineage_key(hex_id: str) -> int:
    """The set's key for a 32-hex-digit token or delegation id."""
    return int(hex_id, 16)


class RevocationSet:
    """Revoked lineage ids with their expiry; ``key in set`` is one hash lookup."""

    __slots__ = ("_buckets", "_hours", "_ids", "version")

    def __init__(self) -> None:
        self._ids: dict[int, int] = {}  # key -> the hour bucket it expires in
        self._buckets: dict[int, list[int]] = {}
        self._hours: dict[int, int] = {}
        self.version = 0  # moves on every change (the verifier's memo depends on it)

    def add(self, hex_id: str, expires_at: float) -> None:
        key = lineage_key(hex_id)
        bucket = math.ceil(expires_at / _BUCKET)
        known = self._ids.get(key)
        if known is not None and known >= bucket:
            return
        bucket = self._hours.setdefault(bucket, bucket)  # one int object per hour, shared
        self._buckets.setdefault(bucket, []).append(key)
        self._ids[key] = bucket
        self.version += 1

    def update(self, entries: Iterable[tuple[str, float]]) -> None:
        for hex_id, expires_at in entries:
            self.add(hex_id, expires_at)

    @property
    def ids(self) -> Container[int]:
        """The live set of revoked keys, for hot loops (read it, never change it)."""
        return self._ids

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def is_revoked(self, hex_id: str) -> bool:
        return lineage_key(hex_id) in self._ids

    def prune(self, now: float) -> int:
        """Forget entries whose tokens have expired; returns how many were dropped."""
        current = math.floor(now / _BUCKET)
        dropped = 0
        ids = self._ids
        for bucket in [b for b in self._buckets if b <= current]:
            self._hours.pop(bucket, None)
            for key in self._buckets.pop(bucket):
                if ids.get(key, current + 1) <= current:  # not moved to a later hour
                    del ids[key]
                    dropped += 1
        self.version += 1
        return dropped

    def __len__(self) -> int:
        return len(self._ids)
