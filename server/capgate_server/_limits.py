"""``ResourceLimits``: every bound on what one request or principal can cost a replica.

One table, so the defaults documented in docs/deployment.md ("Resource limits")
are the ones the server runs with. Each field says what it bounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["ResourceLimits"]

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class ResourceLimits:
    """Defaults sized for one replica process; see docs/deployment.md."""

    # -- bytes a request may bring (RESOURCE_EXHAUSTED beyond) -------------------------
    max_message: int = 64 * KIB  # any request message, each VerifyStream message included
    method_messages: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({
        "/capgate.v1.VerifierService/VerifyBatch": 2 * MIB,
        "/grpc.health.v1.Health/Check": 1 * KIB,
        "/grpc.health.v1.Health/Watch": 1 * KIB,
    }))
    max_batch: int = 1024  # requests in one VerifyBatch (INVALID_ARGUMENT beyond)
    # -- work one call may cause -------------------------------------------------------
    new_caveats_per_call: int = 8192  # never-seen caveats one batch may bring; per second
    #                                   on a stream (RESOURCE_EXHAUSTED beyond)
    slice_seconds: float = 0.002  # a batch yields the event loop after this much work,
    slice_pause: float = 0.001  # for this long (so a heavy batch gets 2/3 of the loop)
    batches_per_principal: int = 2  # batches of one principal decided at once; others wait
    # -- calls in flight ---------------------------------------------------------------
    calls_per_principal: int = 64  # RPCs of one principal in flight (RESOURCE_EXHAUSTED)
    batches_in_flight: int = 64  # VerifyBatch calls in flight in all (RESOURCE_EXHAUSTED)
    max_concurrent_rpcs: int = 256  # RPCs in flight in all (grpc answers RESOURCE_EXHAUSTED)
    streams_per_connection: int = 128  # HTTP/2 streams one connection may open at once
    health_watches: int = 32  # open grpc.health.v1.Health/Watch streams in all
    # -- memory ------------------------------------------------------------------------
    chain_cache_bytes: int = 64 * MIB  # verified chains (also capped at Settings.cache_size)
    caveat_cache_bytes: int = 32 * MIB  # parsed caveats, shared by the chains above
    memo_bytes: int = 48 * MIB  # remembered allows (also capped at Settings.memo_size)
    prefix_bytes: int = 8 * MIB  # verified delegation prefixes
    reply_bytes: int = 16 * MIB  # prebuilt allow replies
    audit_tally_bytes: int = 16 * MIB  # verify decisions waiting for the next audit flush
    audit_backlog: int = 10_000  # audit records kept while the store refuses them
    audit_rows_per_write: int = 500  # rows per audit transaction (keeps each one short)

    def message_limit(self, method: str) -> int:
        """The most bytes one request message of ``method`` may have."""
        return self.method_messages.get(method, self.max_message)

    @property
    def largest_message(self) -> int:
        """grpc's own receive limit: no method's messages are read beyond it."""
        return max(self.max_message, *self.method_messages.values())
