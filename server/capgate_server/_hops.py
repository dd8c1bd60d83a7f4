"""``HopLedger``: delegation hops the server first learns of when they are used.

Server-minted hops are recorded when they are made; hops signed offline are
recorded the first time a token carrying them is *allowed* (a denied token,
however its hops were made, records nothing). A hop's id is derived from the
chain before it, so a recorded hop can never claim a place in another tree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from capgate import Chain, describe, hop_expiry
from capgate_server.store import DelegationRecord

__all__ = ["HopLedger"]

_SEEN_LIMIT = 100_000  # delegation ids already recorded (32 characters each)


class HopLedger:
    """Told of each chain's first allow; hands the hops not yet seen to ``record``."""

    def __init__(self, record: Callable[[Sequence[DelegationRecord]], None]) -> None:
        self._record = record
        self._seen: set[str] = set()

    def __call__(self, st: Chain) -> None:
        if len(st.hops) < 2:
            return
        seen = self._seen
        if all(h.did in seen for h in st.hops[1:]):
            return
        if len(seen) > _SEEN_LIMIT:
            seen.clear()
        d = describe(st.token)
        records = []
        for i, hop in enumerate(d.hops[1:], start=1):
            assert hop.did is not None
            if hop.did in seen:
                continue
            seen.add(hop.did)
            records.append(
                DelegationRecord(
                    hop.did,
                    st.token_id,
                    st.hops[i - 1].did or st.token_id,
                    st.hops[i - 1].agent,
                    hop.agent,
                    hop.at_ms / 1000,
                    hop_expiry(d, i),
                    hop.offline,
                    tuple(hop.restrictions),
                )
            )
        if records:
            self._record(records)
