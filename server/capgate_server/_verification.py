"""``Verification``: Verify for services, with an audit record for every decision.

The decision itself is the core ``Verifier``'s, entirely in memory. This layer
adds who asked (a service speaks for the presenter it authenticated; an agent
only for itself), fails closed when the replica is stale, and writes the audit
record.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from capgate import Decision, DenyCode, PermissionDeniedError
from capgate_server._replica import Replica
from capgate_server.store import Principal, Role

__all__ = ["Verification"]


class Verification:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

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
