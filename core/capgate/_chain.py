"""The verifier's values: a verified token as a ``Chain`` of ``Hop``s, and the
``Decision`` on a request, with its ``DenyCode``.

A chain is what the static half of verification (parse, signature, proofs)
found, cached per token text; it carries an estimate of the bytes it holds, so
the cache that keeps it is bounded in bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from capgate._approval import ApprovalCaveat
from capgate._caveats import Caveat
from capgate._grants import Glob
from capgate._token import Token

__all__ = ["Budget", "Chain", "Decision", "DenyCode", "Hop", "budget_id"]

# Estimated bytes a cached chain and each of its hops hold, on top of its text and
# its caveats (measured with tracemalloc; tests/core/test_bounds.py checks them).
CHAIN_BASE = 1500
PER_HOP = 250


class DenyCode(StrEnum):
    """Why a verification ended as it did; ``ALLOWED`` is the one allow."""

    ALLOWED = "allowed"
    MALFORMED = "malformed_token"
    UNSUPPORTED = "unsupported_token"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    BAD_DELEGATION = "bad_delegation"
    BAD_CAVEAT = "bad_caveat"
    DEPTH = "depth_exceeded"
    REVOKED = "revoked"
    UNKNOWN_AGENT = "unknown_agent"
    AGENT_SUSPENDED = "agent_suspended"
    AGENT_REVOKED = "agent_tokens_revoked"
    FUTURE = "issued_in_future"
    NO_PRESENTER = "no_presenter"
    NOT_HOLDER = "not_holder"
    INVALID_REQUEST = "invalid_request"
    CEILING = "beyond_ceiling"
    CAVEAT_FAILED = "caveat_failed"
    UNAVAILABLE = "unavailable"
    # how a token was presented (``capgate._presentation``): decided around the verifier
    MISSING_TOKEN = "missing_token"  # noqa: S105 - the request brought no token at all
    PROOF_REQUIRED = "proof_required"
    BAD_PROOF = "bad_proof"
    PROOF_REPLAYED = "proof_replayed"
    # stateful budgets (``uses``, ``rate``, an agent's rate): counted by the server
    BUDGET_EXHAUSTED = "budget_exhausted"
    # approval caveats (``capgate._approval``): the discharges a request brought
    APPROVAL_REQUIRED = "approval_required"
    APPROVAL_INVALID = "approval_invalid"
    APPROVAL_EXPIRED = "approval_expired"
    APPROVAL_USED = "approval_used"  # the store's redemption: decided around the verifier


class Budget(NamedTuple):
    """A budget a token carries: ``limit`` uses in all (``period`` 0) or per ``period``
    seconds. ``id`` names it for every token derived from the one it was added to
    (a digest of the identifier and the caveats up to it), so they share the count."""

    id: str
    caveat: str
    limit: int
    period: float  # seconds; 0 for a number of uses in all
    until: float = float("inf")  # after this the count matters no more (the token expired)


def budget_id(token_id: str, cids: Sequence[bytes]) -> str:
    """The id of the budget whose caveat ends ``cids``: a digest of the token id and the
    caveats up to it, so every token derived from the one it was added to shares it,
    and no other token does. (Not the chain's signature there: that attenuates.)"""
    h = hashlib.sha256(token_id.encode("ascii"))
    for cid in cids:
        h.update(len(cid).to_bytes(4, "big"))
        h.update(cid)
    return h.hexdigest()[:32]


# Hop, Decision and Chain are built on the hot path: plain slotted dataclasses
# (a frozen dataclass pays object.__setattr__ per field), built with positional
# arguments (keywords cost a dataclass's __init__ half as much again). Treat them
# as read-only.
@dataclass(slots=True)
class Hop:
    """One holder in the chain: the agent, when it received the token, and the hop's id."""

    agent: str
    at_ms: int
    did: str | None = None  # None for the issued-to agent (the token id names that hop)
    offline: bool = False


@dataclass(slots=True, eq=False)
class Decision:
    """The outcome. Hashed by identity: one allow object is shared by every request
    a chain allows, so callers can key caches and tallies on it cheaply.

    ``approvals``: an allow that rests on approvals names them; it stands only once
    the caller has redeemed each (an approval is good for its uses, fleet-wide: the
    server's store does it). A verifier alone cannot count uses."""

    allowed: bool
    code: DenyCode
    reason: str
    caveat: str | None = None
    token_id: str | None = None
    chain: tuple[str, ...] = ()  # issued-to agent first, current holder last
    budgets: tuple[Budget, ...] = ()  # an allow: the budgets it must be counted against
    approvals: tuple[str, ...] = ()

    @property
    def holder(self) -> str | None:
        return self.chain[-1] if self.chain else None


@dataclass(slots=True)
class Chain:
    """A token whose signature and delegation proofs are valid: what it says, parsed.

    Chains live in the verifier's cache, so they hold few objects the garbage
    collector must trace: the token's text rather than its parsed form.
    """

    text: str
    token_id: str
    key_id: str
    issued_ms: int
    hops: tuple[Hop, ...]
    lineage: tuple[str, ...]  # token id, then every did in order
    # request- and clock-dependent caveats, in order; None for a chain read through a
    # shared body (the verifier reads them again when a deny must name one)
    checks: tuple[Caveat, ...] | None
    lineage_keys: tuple[int, ...] = field(repr=False, default=())
    agents: tuple[str, ...] = field(repr=False, default=())
    latest_ms: int = 0
    # The checks folded together (AND): actions intersected, the validity window,
    # the resource globs, and whatever else (ctx). Only when one fails are the
    # caveats walked one by one, to name the one that failed.
    actions: frozenset[str] | None = field(repr=False, default=None)
    not_before: float = float("-inf")
    not_after: float = float("inf")
    resources: tuple[Glob, ...] = field(repr=False, default=())
    other: tuple[Caveat, ...] = field(repr=False, default=())
    size: int = field(repr=False, default=0)  # estimated bytes held, for the cache
    budgets: tuple[Budget, ...] = field(repr=False, default=())
    allowed: Decision | None = field(repr=False, default=None)  # shared by every allow
    # approval caveats, the key of each (from the signature before it), and the
    # token's signature (discharges are bound to it); empty for most tokens
    approvals: tuple[ApprovalCaveat, ...] = field(repr=False, default=())
    approval_keys: tuple[bytes, ...] = field(repr=False, default=())
    signature: bytes = field(repr=False, default=b"")

    @property
    def holder(self) -> str:
        return self.hops[-1].agent

    @property
    def expires(self) -> float | None:
        """The earliest ``expires`` caveat, or None when the token has none."""
        return None if self.not_after == float("inf") else self.not_after

    @property
    def token(self) -> Token:
        return Token.parse(self.text)
