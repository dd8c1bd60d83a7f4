"""``ResourceLimits``: every bound on what one request or principal can cost a replica.

One table, so the defaults documented in docs/deployment.md ("Resource limits")
are the ones the server runs with; ``capgate serve --limit NAME=VALUE`` changes
one. Each field says what it bounds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from capgate import InvalidArgumentError

__all__ = ["ResourceLimits"]

KIB = 1024
MIB = 1024 * KIB
_BATCH = "/capgate.v1.VerifierService/VerifyBatch"
_HEALTH = "/grpc.health.v1.Health/"


@dataclass(frozen=True)
class ResourceLimits:
    """Defaults sized for one replica process; see docs/deployment.md."""

    # -- bytes a request may bring (RESOURCE_EXHAUSTED beyond) -------------------------
    max_message: int = 64 * KIB  # any request message, each VerifyStream message included
    batch_message: int = 2 * MIB  # a VerifyBatch request
    health_message: int = 1 * KIB  # a health check or watch request (no credential needed)
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
    prefix_bytes: int = 16 * MIB  # verified delegation prefixes
    reply_bytes: int = 16 * MIB  # prebuilt allow replies
    audit_tally_bytes: int = 16 * MIB  # verify decisions waiting for the next audit flush
    audit_denies_per_principal: int = 100  # distinct deny records per principal per flush;
    #                                        beyond, counted only
    audit_backlog: int = 10_000  # audit records kept while the store refuses them
    audit_rows_per_write: int = 500  # rows per audit transaction (keeps each one short)
    # -- rows ---------------------------------------------------------------------------
    approvals_pending_per_principal: int = 100  # requests for approval one principal may
    #                                             have waiting (RESOURCE_EXHAUSTED beyond)
    new_budgets_per_token: int = 1000  # budgets (each a row in the store) the tokens of one
    #                                    token id may start per minute on one replica; a
    #                                    request that would start more is denied
    # other methods' own message limits (e.g. a benchmark's twin of VerifyBatch)
    method_messages: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def message_limit(self, method: str) -> int:
        """The most bytes one request message of ``method`` may have."""
        if method == _BATCH:
            return self.batch_message
        if method.startswith(_HEALTH):
            return self.health_message
        return self.method_messages.get(method, self.max_message)

    @property
    def largest_message(self) -> int:
        """grpc's own receive limit: no method's messages are read beyond it."""
        return max(
            self.max_message,
            self.batch_message,
            self.health_message,
            *self.method_messages.values(),
        )

    def with_settings(self, pairs: Iterable[str]) -> ResourceLimits:
        """These limits with ``NAME=VALUE`` changes (``capgate serve --limit``)."""
        numbers = {f.name: f.type for f in dataclasses.fields(self) if f.type in ("int", "float")}
        changes: dict[str, int | float] = {}
        for pair in pairs:
            name, sep, text = pair.partition("=")
            if not sep or name not in numbers:
                raise InvalidArgumentError(
                    f"--limit takes NAME=VALUE with NAME one of {', '.join(sorted(numbers))}; "
                    f"got {pair!r}"
                )
            try:
                value = int(text) if numbers[name] == "int" else float(text)
            except ValueError:
                raise InvalidArgumentError(f"--limit {name} needs a number, got {text!r}") from None
            if value <= 0:
                raise InvalidArgumentError(f"--limit {name} must be positive, got {text!r}")
            changes[name] = value
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
