"""``Verification``: Verify for services, with an audit record for every decision.

The decision itself is the core ``Verifier``'s, entirely in memory. This layer
adds who asked (a service speaks for the presenter it authenticated; an agent
only for itself), fails closed when the replica is stale, writes the audit
record, and records delegation hops it sees for the first time.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from capgate import Chain, Decision, DenyCode, PermissionDeniedError, describe, hop_expiry
from capgate_server._replica import Replica
from capgate_server.store import DelegationRecord, Principal, Role

__all__ = ["Verification"]

_SEEN_LIMIT = 1_000_000


class Verification:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._seen_hops: set[str] = set()
        replica.verifier.on_chain = self._on_chain

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
        replica.audit.decision(caller.id, decision, action, resource, presenter, replica.clock())
        return decision

    def _on_chain(self, st: Chain) -> None:
        """Record delegation hops the server has not seen yet (offline ones, mostly)."""
        if len(st.hops) < 2:
            return
        seen = self._seen_hops
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
            records.append(DelegationRecord(
                hop.did, st.token_id, st.hops[i - 1].did or st.token_id, st.hops[i - 1].agent,
                hop.agent, hop.at_ms / 1000, hop_expiry(d, i), hop.offline,
                tuple(hop.restrictions)))
        if records:
            self.replica.call_soon(self.replica.store.record_delegations, records)
