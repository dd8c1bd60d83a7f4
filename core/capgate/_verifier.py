"""``Verifier``: the decision path, from token text and request to allow or deny.

1. parse (bounded), 2. signature chain with the key named by the identifier
(constant-time compare) and every delegation proof, 3. lineage ∩ revoked = ∅,
4. every agent in the chain registered, active and within its epoch and depth,
5. presenter = current holder, 6. the *current* ceiling of the holder (and of
every delegator above it) allows the request, 7. every caveat holds for the
request and the clock.

Steps 1–2 depend neither on the request nor on the clock, so their result (a
valid ``Chain``) is cached per token text. Whatever the keys or agent keys they
used change, call ``invalidate()``.

Everything the verifier remembers (chains, verified prefixes, the decision
memo, parsed caveats) is bounded in bytes as well as entries: an attacker
chooses the tokens, so an entry can be large. ``compiled`` counts the caveats
parsed afresh, the expensive part of a never-seen token, so a server can bound
that work per request.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from capgate._agent import Agent, AgentStatus, Directory
from capgate._approval import APPROVAL_LOCATION, ApprovalCaveat, approval_key, parse_approval_caveat
from capgate._cache import BoundedCache
from capgate._caveats import (
    ActionCaveat,
    BudgetCaveat,
    Caveat,
    DelegateCaveat,
    DepthCaveat,
    ExpiresCaveat,
    NotBeforeCaveat,
    Request,
    ResourceCaveat,
    cached_caveat_cost,
    compile_new_caveat,
    quick_expiry,
)
from capgate._chain import CHAIN_BASE, PER_HOP, Budget, Chain, Decision, DenyCode, Hop, budget_id
from capgate._clock import Clock, format_timestamp, system_clock
from capgate._codec import DEFAULT_LIMITS, Limits, decode_text, unpack, unpack_first_party
from capgate._delegation import did_valid, proof_valid
from capgate._discharge import approval_decision
from capgate._errors import CaveatSyntaxError, MalformedTokenError
from capgate._grants import Glob
from capgate._requests import request_problem
from capgate._revocation import RevocationSet
from capgate._token import TokenIdentifier, derive_key, hmac_digest, third_party_signature

__all__ = ["Chain", "Decision", "DenyCode", "Hop", "Verifier"]

_log = logging.getLogger("capgate.verifier")

# How far ahead of this server's clock a token or hop may claim to have been made.
CLOCK_SKEW_MS = 300_000
_CACHE_MAX_TEXT = 4096
# Estimated bytes held per memo entry and verified prefix (on top of their text;
# measured with tracemalloc, and the tests check the bounds hold).
_MEMO_BASE = 500
_PREFIX_BASE = 300
_PER_CID = 80
_CAVEAT_KEY = 40  # a caveat cache's key: the caveat's bytes
_SEEN_COST = 80  # a text's hash remembered until its second sighting
_NO_CTX: Mapping[str, str] = MappingProxyType({})
_DELEGATE_MARK = b"delegate = "  # how every delegation caveat starts
_INF, _NEG_INF = float("inf"), float("-inf")
# An enum member read through its class costs a lookup the hot path need not pay.
_ACTIVE, _ALLOWED = AgentStatus.ACTIVE, DenyCode.ALLOWED
_CHECK, _HOLDER, _DELEGATE = Caveat.CHECK, Caveat.HOLDER, Caveat.DELEGATE
_LINEAGE, _BUDGET = Caveat.LINEAGE, Caveat.BUDGET


_EXPIRES = b"expires < "
# a chain read through a body holds its text, one hop, and small tuples
_PLAIN_CHAIN = CHAIN_BASE + PER_HOP
_BODY_BASE = 400  # a body, its key tuple and its two tuples


class _Body:
    """What an undelegated token's caveats other than its expiries say: the holder and
    the folded checks (see ``Chain``). Shared by every token with the same caveats."""

    __slots__ = ("actions", "holder", "not_before", "other", "resources", "size")

    def __init__(
        self,
        holder: str,
        actions: frozenset[str] | None,
        resources: tuple[Glob, ...],
        other: tuple[Caveat, ...],
        not_before: float,
        size: int,  # estimated bytes held, with its key and the caveats it keeps alive
    ) -> None:
        self.holder = holder
        self.actions = actions
        self.resources = resources
        self.other = other
        self.not_before = not_before
        self.size = size


def _body_cost(key: tuple[bytes, ...], body: _Body) -> int:
    return body.size


class _Rare:
    """What few tokens carry, gathered while a chain is read: depth caps, budgets
    (with the expiry before each) and approval caveats (with their keys)."""

    __slots__ = ("approval_keys", "approvals", "budgets", "depth_caps")

    def __init__(self) -> None:
        self.depth_caps: list[tuple[int, DepthCaveat]] = []
        self.budgets: list[tuple[int, BudgetCaveat, float]] = []
        self.approvals: list[ApprovalCaveat] = []
        self.approval_keys: list[bytes] = []


_MemoKey = tuple[str, str, str, str | None]
_MemoEntry = tuple[int, float, float, Decision]


def _chain_cost(text: str, chain: Chain) -> int:
    return chain.size


def _prefix_cost(key: tuple[bytes, tuple[bytes, ...]], sig: bytes) -> int:
    """An entry moved back from the old generation: charged for its own bytes."""
    identifier, cids = key
    return _PREFIX_BASE + len(identifier) + sum(map(len, cids)) + _PER_CID * len(cids)


def _whole_cost(size: int, cids: list[bytes]) -> int:
    """A whole verified chain's prefix entry: the caveats' bytes (fewer than the
    text's ``size`` characters) and a tuple of them."""
    return _PREFIX_BASE + size + _PER_CID * len(cids)


def _memo_cost(key: _MemoKey) -> int:
    token, action, resource, presenter = key
    return _MEMO_BASE + len(token) + len(action) + len(resource) + len(presenter or "")


def _deny(
    code: DenyCode,
    reason: str,
    caveat: str | None = None,
    token_id: str | None = None,
    chain: tuple[str, ...] = (),
) -> Decision:
    return Decision(False, code, reason, caveat, token_id, chain)


class Verifier:
    """Decides requests against tokens. Thread-compatible; state is read, never written.

    ``keys``: root-key id → root key (only keys that may verify).
    ``agents``: agent id → ``Agent`` (the live directory).
    ``revocations``: revoked token and delegation ids.
    """

    def __init__(
        self,
        keys: Mapping[str, bytes],
        agents: Mapping[str, Agent],
        revocations: RevocationSet,
        *,
        clock: Clock = system_clock,
        cache_size: int = 32768,
        cache_bytes: int = 64 << 20,
        memo_size: int = 0,
        memo_bytes: int = 48 << 20,
        prefix_bytes: int = 16 << 20,
        caveat_bytes: int = 32 << 20,
        limits: Limits = DEFAULT_LIMITS,
        on_first_allow: Callable[[Chain], None] | None = None,
        location: str = "capgate",
        counts_budgets: bool = False,
    ) -> None:
        if memo_size and not isinstance(agents, Directory):
            raise TypeError("a decision memo needs agents in a Directory (it tracks changes)")
        self._location = location.encode("utf-8")
        self._approvals = APPROVAL_LOCATION.encode("utf-8")
        self._keys = keys
        self._agents = agents
        self._revocations = revocations
        self._clock = clock
        self._limits = limits
        self._derived: dict[str, tuple[bytes, bytes]] = {}
        # parsed caveats by their bytes: a token's caveats are mostly ones seen before
        self._caveats: BoundedCache[bytes, Caveat] = BoundedCache(caveat_bytes, cached_caveat_cost)
        # what the caveats of undelegated tokens other than expiries say (``_read_plain``)
        self._bodies: BoundedCache[tuple[bytes, ...], _Body] = BoundedCache(
            max(1, caveat_bytes // 4), _body_cost
        )
        self._cache: BoundedCache[str, Chain] = BoundedCache(
            cache_bytes, _chain_cost, max_entries=cache_size
        )
        # Admission: a chain is kept on its second sighting, so the many tokens used
        # once (and a flood of fresh ones) cost no memory and push out no warm chain.
        # The hashes of texts seen once; cleared when full.
        self._seen: set[int] = set()
        self._seen_max = max(1, cache_size)
        # (identifier, caveats) of verified chains -> the signature there
        self._prefixes: BoundedCache[tuple[bytes, tuple[bytes, ...]], bytes] = BoundedCache(
            prefix_bytes, _prefix_cost
        )
        # The decision memo: (token, action, resource, presenter) -> (state, since,
        # until, allow). An allow stays right while nothing changes and the clock stays
        # inside the token's window; any change of agents, revocations or keys moves
        # ``state``. Two generations, like ``BoundedCache``, inline for the hot path.
        self._memo: dict[_MemoKey, _MemoEntry] = {}
        self._memo_old: dict[_MemoKey, _MemoEntry] = {}
        self._memo_size = memo_size
        self._memo_half = (max(1, memo_size // 2), max(1, memo_bytes // 2))
        self._memo_bytes = self._memo_old_bytes = 0
        self._key_version = 0
        # counters for metrics: misses only, so a hit costs nothing
        self.compiled = 0  # caveats parsed afresh (not found in the caveat cache)
        self.cache_misses = 0  # tokens analysed afresh (not found in the chain cache)
        self.memo_misses = 0  # memo-eligible checks that had to be decided
        # told of a chain the first time it allows a request (a denied chain never is)
        self._on_first_allow = on_first_allow
        # A budget ('uses <= N', 'rate <= N/P') is counted by whoever holds the counts;
        # a verifier that does not (``counts_budgets`` False) denies such tokens.
        self._counts_budgets = counts_budgets

    def _state(self) -> int:
        agents_version: int = getattr(self._agents, "version", 0)
        return agents_version + self._revocations.version + self._key_version

    @property
    def state(self) -> int:
        """A number that moves on every change of agents, revocations or keys (and on
        ``invalidate``): a decision remembered outside the verifier holds only while
        it is the one the decision was made at, as the verifier's own memo does."""
        return self._state()

    def check(
        self,
        token: str,
        action: str,
        resource: str,
        presenter: str | None,
        ctx: Mapping[str, str] | None = None,
        *,
        request: Request | None = None,
        discharges: Sequence[str] = (),
    ) -> Decision:
        """``verify`` with the request given field by field (the servers' hot path);
        ``request``, when the caller already has it built, saves building it again."""
        memo = self._memo_size and not ctx and not discharges
        if memo:
            key = (token, action, resource, presenter)
            try:
                hit = self._memo.get(key)
            except TypeError:  # an unhashable value (not text): decided, and denied, in full
                st = self.analyse(token)
                if isinstance(st, Decision):
                    return st
                return self.decide(st, Request(action, resource, presenter, _NO_CTX))
            if hit is None and self._memo_old:
                hit = self._memo_recall(key)
            if hit is not None:
                agents = self._agents.version  # type: ignore[attr-defined]
                state = agents + self._revocations.version + self._key_version
                if hit[0] == state and hit[1] < self._clock() < hit[2]:
                    return hit[3]
            self.memo_misses += 1
        st = self.analyse(token)
        if isinstance(st, Decision):
            return st
        if request is None:
            request = Request(action, resource, presenter, ctx or _NO_CTX)
        if not memo:
            return self.decide(st, request, discharges)
        state = self._state()
        decision = self.decide(st, request)
        # remembered, like the chain, from a token's second sighting on
        if decision.allowed and len(token) <= _CACHE_MAX_TEXT and token in self._cache.young:
            # valid while the clock stays inside the token's window (either way)
            since = max(st.not_before, (st.latest_ms - CLOCK_SKEW_MS) / 1000)
            self._memo_put(key, (state, since, st.not_after, decision))
        return decision

    def _memo_recall(self, key: _MemoKey) -> _MemoEntry | None:
        hit = self._memo_old.pop(key, None)
        if hit is not None:
            self._memo_put(key, hit)
        return hit

    def _memo_put(self, key: _MemoKey, entry: _MemoEntry) -> None:
        memo = self._memo
        memo[key] = entry
        self._memo_bytes += _memo_cost(key)
        entries, nbytes = self._memo_half
        if len(memo) > entries or self._memo_bytes > nbytes:
            self._memo_old, self._memo = memo, {}
            self._memo_old_bytes, self._memo_bytes = self._memo_bytes, 0

    # -- cache ------------------------------------------------------------------------

    def invalidate(self) -> None:
        """Forget cached signature results (after a key or agent-key change)."""
        self._derived.clear()
        self._cache.clear()
        self._prefixes.clear()
        self._bodies.clear()
        self._memo.clear()
        self._memo_old.clear()
        self._memo_bytes = self._memo_old_bytes = 0
        self._key_version += 1

    @property
    def cached(self) -> int:
        return len(self._cache)

    @property
    def cache_bytes(self) -> int:
        """Estimated bytes held by the chain, caveat and prefix caches and the memo."""
        return (
            self._cache.nbytes
            + self._caveats.nbytes
            + self._bodies.nbytes
            + self._prefixes.nbytes
            + self._memo_bytes
            + self._memo_old_bytes
            + _SEEN_COST * len(self._seen)
        )

    # -- the static half: parse, signature, proofs --------------------------------------

    def analyse(self, text: str) -> Chain | Decision:
        """The cached, request-independent half: a valid ``Chain`` or the deny."""
        try:
            st = self._cache.young.get(text) or self._cache.recall(text)
        except TypeError:  # unhashable, so not text
            return _deny(DenyCode.MALFORMED, "token must be text")
        if st is not None:
            return st
        if not isinstance(text, str):
            return _deny(DenyCode.MALFORMED, "token must be text")
        self.cache_misses += 1
        try:
            result = self._analyse(text)
        except Exception as e:  # a bug must deny, never crash a verifier (fail closed)
            _log.exception("token analysis failed")
            return _deny(DenyCode.MALFORMED, f"token could not be read ({type(e).__name__})")
        # Only valid chains are kept (a flood of garbage cannot fill the cache), only
        # tokens of ordinary size, so the cache's memory stays bounded, and only on
        # their second sighting.
        if type(result) is Chain and len(text) <= _CACHE_MAX_TEXT:
            seen, h = self._seen, hash(text)
            if h in seen:
                self._cache.put(text, result, result.size)
            else:
                if len(seen) >= self._seen_max:
                    seen.clear()
                seen.add(h)
        return result

    def cached_chain(self, text: str) -> Chain | None:
        """The chain kept for ``text``, or None; never reads the token (a chain is kept
        from its token's second sighting, so a caller that remembers what follows
        from one keeps nothing for a token seen once either)."""
        return self._cache.get(text)

    def _root_key(self, kid: str) -> tuple[bytes, bytes] | None:
        got = self._derived.get(kid)
        if got is None:
            root = self._keys.get(kid)
            if root is None:
                return None
            got = (root, derive_key(root))
            self._derived[kid] = got
        return got

    def _analyse(self, text: str) -> Chain | Decision:
        limits = self._limits
        vids: list[bytes | None] | None = None  # only for a token with third-party caveats
        try:
            data = decode_text(text, limits)
            parts = unpack_first_party(data, limits)
            if parts is None:  # unusual or invalid: the strict parser says what is wrong
                raw = unpack(data, limits)
                for c in raw.caveats:
                    if c.vid is None and c.location is not None:
                        return _deny(DenyCode.UNSUPPORTED, "caveat locations are not supported")
                    if c.vid is not None and c.location != self._approvals:
                        return _deny(
                            DenyCode.UNSUPPORTED,
                            f"third-party caveat located at {c.location!r}: only "
                            f"capgate's approvals ({self._approvals!r}) are supported",
                        )
                if any(c.vid is not None for c in raw.caveats):
                    vids = [c.vid for c in raw.caveats]
                parts = raw.location, raw.identifier, [c.cid for c in raw.caveats], raw.signature
        except MalformedTokenError as e:
            return _deny(DenyCode.MALFORMED, f"malformed token: {e.message}")
        location, identifier, cids, signature = parts
        # Macaroons do not sign their location: insist on ours, so no altered text verifies.
        if location != self._location:
            return _deny(
                DenyCode.UNSUPPORTED, f"token location {location!r} is not {self._location!r}"
            )
        try:
            ident = TokenIdentifier.decode(identifier)
        except MalformedTokenError as e:
            return _deny(DenyCode.UNSUPPORTED, e.message)
        tid = ident.token_id
        keys = self._root_key(ident.key_id)
        if keys is None:
            return _deny(
                DenyCode.UNKNOWN_KEY, f"unknown or retired root key {ident.key_id!r}", token_id=tid
            )
        root, derived = keys
        digest = hmac_digest
        if vids is None and _DELEGATE_MARK not in data:
            # Most tokens: first-party, no delegation, so no proof needs the signature
            # before a caveat (one scan of the bytes says so; a false alarm only takes
            # the general path below).
            sig = digest(derived, identifier, "sha256")
            for cid in cids:
                sig = digest(sig, cid, "sha256")
            if not hmac.compare_digest(sig, signature):
                return _deny(DenyCode.BAD_SIGNATURE, "signature does not match", token_id=tid)
            chain = self._read_plain(text, ident, cids)
            # A child delegated from this token starts from here: remembered, like the
            # chain, from the token's second sighting (its text's hash is in ``_seen``).
            if type(chain) is Chain and len(text) <= _CACHE_MAX_TEXT and hash(text) in self._seen:
                self._prefixes.put((identifier, tuple(cids)), sig, _whole_cost(len(text), cids))
            return chain
        # A delegated child's chain starts where its parent's (verified) chain ended:
        # only the caveats added since cost HMACs, and the parent's proofs are not redone.
        start, sig = 0, b""
        if len(cids) > 1 and vids is None:  # approval keys need every prefix: no shortcut
            start, sig = self._known_prefix(identifier, cids)
        if not start:
            sig = digest(derived, identifier, "sha256")
        prefix: list[bytes] = [b""] * start  # signatures before each caveat, for proofs
        if vids is None:
            for cid in cids[start:] if start else cids:
                prefix.append(sig)
                sig = digest(sig, cid, "sha256")
        else:
            for cid, vid in zip(cids, vids, strict=True):
                prefix.append(sig)
                sig = (
                    digest(sig, cid, "sha256")
                    if vid is None
                    else third_party_signature(sig, vid, cid)
                )
        if not hmac.compare_digest(sig, signature):
            return _deny(DenyCode.BAD_SIGNATURE, "signature does not match", token_id=tid)
        chain = self._read_chain(text, ident, root, cids, prefix, start, vids)
        if vids is not None and type(chain) is Chain:
            chain.signature = signature
        # Only a fully verified chain vouches for its prefixes (and only one of
        # ordinary size, like the chain cache, so memory stays bounded). A delegated
        # chain does from its first sighting: its holder's sub-agents are the ones
        # likely to come next, with a child of it.
        if type(chain) is Chain and len(text) <= _CACHE_MAX_TEXT and vids is None:
            self._remember_prefixes(identifier, cids, prefix, sig, len(text), len(chain.hops))
        return chain

    def _known_prefix(self, identifier: bytes, cids: list[bytes]) -> tuple[int, bytes]:
        """The longest verified prefix ending just before a delegation: (length, sig)."""
        known = self._prefixes
        if not len(known):
            return 0, b""
        for k in range(len(cids) - 1, 0, -1):
            if cids[k].startswith(_DELEGATE_MARK):
                sig = known.get((identifier, tuple(cids[:k])))
                if sig is not None:
                    return k, sig
        return 0, b""

    def _remember_prefixes(
        self,
        identifier: bytes,
        cids: list[bytes],
        prefix: list[bytes],
        final: bytes,
        size: int,
        hops: int,
    ) -> None:
        """Remember this verified chain, whole and up to each of its delegations."""
        known = self._prefixes
        # An entry per hop: the whole chain, and up to each delegation. They share the
        # caveats' bytes (at most the token's, which are fewer than its text's), so the
        # whole chain's entry is charged for them; the others for their own tuples.
        known.put((identifier, tuple(cids)), final, _whole_cost(size, cids))
        if hops > 1:
            for k in range(1, len(cids)):
                if prefix[k] and cids[k].startswith(_DELEGATE_MARK):
                    known.put((identifier, tuple(cids[:k])), prefix[k], _PREFIX_BASE + 8 * k)

    def _read_plain(self, text: str, ident: TokenIdentifier, cids: list[bytes]) -> Chain | Decision:
        """An undelegated first-party token's caveats. Tokens of one grant differ mostly
        in their expiry, so what the other caveats say (a ``_Body``) is read once and
        shared; only the expiries are read per token. The chain keeps no ``checks``:
        the rare deny that names a failed caveat reads them again (``_checks_of``)."""
        keep = []  # the caveats other than expiries: the body's key
        not_after = _INF
        for cid in cids:
            if cid.startswith(_EXPIRES):
                self.compiled += 1
                at = quick_expiry(cid)
                if at is None:  # not the form capgate writes: the full reading decides
                    return self._read_chain(text, ident, b"", cids, None)
                if at < not_after:
                    not_after = at
            else:
                keep.append(cid)
        key = tuple(keep)
        bodies = self._bodies
        body = bodies.young.get(key)
        if body is None and (body := bodies.recall(key)) is None:
            return self._read_chain(text, ident, b"", cids, None, body_key=key)
        tid, issued, holder = ident.token_id, ident.issued_ms, body.holder
        return Chain(  # positionally, in the order of its fields (the hot path)
            text,
            tid,
            ident.key_id,
            issued,
            (Hop(holder, issued),),
            (tid,),
            None,
            (int(tid, 16),),
            (holder,),
            issued,
            body.actions,
            body.not_before,
            not_after,
            body.resources,
            body.other,
            _PLAIN_CHAIN + 2 * len(text),
        )

    def _checks_of(self, st: Chain) -> tuple[Caveat, ...]:
        """The checks of a chain read through a shared body, in the token's order (read
        again, once: the chain keeps them, charged to the cache, for the next deny)."""
        if st.checks is not None:
            return st.checks
        # the strict parser: the token may be in any form ``_analyse`` reads (V1 too)
        raw = unpack(decode_text(st.text, self._limits), self._limits)
        ident = TokenIdentifier.decode(raw.identifier)
        full = self._read_chain(st.text, ident, b"", [c.cid for c in raw.caveats], None)
        assert type(full) is Chain and full.checks is not None
        st.checks = full.checks
        self._cache.charge(sum([c.size for c in full.checks]))
        return full.checks

    def _read_chain(
        self,
        text: str,
        ident: TokenIdentifier,
        root: bytes,
        cids: list[bytes],
        prefix: list[bytes] | None,
        verified: int = 0,
        vids: list[bytes | None] | None = None,
        body_key: tuple[bytes, ...] | None = None,
    ) -> Chain | Decision:
        """The caveats, read in order: the hops, the lineage and the checks (folded as
        they come). ``prefix``: the signature before each caveat, which delegation
        proofs and approval keys need; None for a token that has neither."""
        tid = ident.token_id
        hop = None  # the one hop of an undelegated token; ``hops`` once there are more
        hops: list[Hop] | None = None
        lineage = [tid]
        checks: list[Caveat] = []
        rare: _Rare | None = None  # depth caps, budgets, approvals: most tokens have none
        holder: str | None = None
        # the checks folded together: see ``Chain``
        actions: frozenset[str] | None = None
        not_before, not_after = _NEG_INF, _INF
        resources: list[Glob] = []
        other: list[Caveat] = []
        size = 0
        caveats = self._caveats
        young = caveats.young
        for i, cid in enumerate(cids):
            if vids is not None and vids[i] is not None:  # an approval caveat
                assert prefix is not None
                self.compiled += 1
                try:
                    approval = parse_approval_caveat(cid)
                except CaveatSyntaxError as e:
                    return _deny(
                        DenyCode.BAD_CAVEAT,
                        e.message,
                        caveat=cid.decode("utf-8", "replace")[:512],
                        token_id=tid,
                    )
                rare = rare or _Rare()
                if any(a.cid == cid for a in rare.approvals):
                    return _deny(
                        DenyCode.MALFORMED, "token names an approval caveat twice", token_id=tid
                    )
                rare.approvals.append(approval)
                rare.approval_keys.append(approval_key(prefix[i], cid))
                continue
            cav = young.get(cid)
            if cav is None and (cav := caveats.recall(cid)) is None:
                self.compiled += 1
                try:
                    cav = compile_new_caveat(cid)
                except CaveatSyntaxError as e:
                    return _deny(
                        DenyCode.BAD_CAVEAT, e.message, caveat=e.context.get("caveat"), token_id=tid
                    )
                if type(cav) is not ExpiresCaveat:  # an expiry is mostly one token's own
                    caveats.put(cid, cav, _CAVEAT_KEY + len(cid) + cav.size)
                    young = caveats.young  # it may have turned old
            role = cav.role
            if role == _CHECK:
                checks.append(cav)
                size += cav.size
                kind = type(cav)
                if kind is ExpiresCaveat:
                    at = cav.at  # type: ignore[attr-defined]
                    if at < not_after:
                        not_after = at
                elif kind is ResourceCaveat:
                    resources.append(cav.glob)  # type: ignore[attr-defined]
                elif kind is ActionCaveat:
                    acts = cav.actions  # type: ignore[attr-defined]
                    actions = acts if actions is None else actions & acts
                elif kind is NotBeforeCaveat:
                    at = cav.at  # type: ignore[attr-defined]
                    if at > not_before:
                        not_before = at
                else:
                    other.append(cav)
            elif role == _HOLDER:
                agent = cav.agent  # type: ignore[attr-defined]
                if holder is None:
                    holder = agent
                    hop = Hop(agent, ident.issued_ms)
                elif agent != holder:
                    return _deny(
                        DenyCode.NOT_HOLDER,
                        f"caveat {cav.text!r}: the holder here is {holder!r}",
                        caveat=cav.text,
                        token_id=tid,
                    )
            elif role == _DELEGATE:
                assert isinstance(cav, DelegateCaveat)
                if holder is None:
                    return _deny(
                        DenyCode.BAD_DELEGATION,
                        "delegation before any holder",
                        caveat=cav.text,
                        token_id=tid,
                    )
                if i >= verified:  # proofs inside an already verified prefix held
                    if prefix is None:  # cannot be: the caller saw no delegation
                        raise AssertionError("a delegation without the signatures before it")
                    denied = self._check_delegation(cav, holder, prefix[i], root, tid)
                    if denied is not None:
                        return denied
                holder = cav.agent
                if hops is None:
                    assert hop is not None
                    hops = [hop]
                hops.append(Hop(holder, cav.at_ms, cav.did, cav.offline))
                lineage.append(cav.did)
            elif role == _LINEAGE:
                lineage.append(cav.did)  # type: ignore[attr-defined]
            elif role == _BUDGET:
                assert isinstance(cav, BudgetCaveat)
                if not self._counts_budgets:
                    return _deny(
                        DenyCode.UNSUPPORTED,
                        f"caveat {cav.text!r} is a budget, and this verifier keeps "
                        "no counts (verify with the server)",
                        caveat=cav.text,
                        token_id=tid,
                    )
                # the count lives as long as the token the caveat was added to: the
                # earliest expiry before it, which every token derived from it shares
                # (never the presented token's own, which a holder may shorten)
                rare = rare or _Rare()
                rare.budgets.append((i, cav, not_after))
            else:
                assert isinstance(cav, DepthCaveat)
                rare = rare or _Rare()
                rare.depth_caps.append(
                    (0 if hop is None else 1 if hops is None else len(hops), cav)
                )
        if hop is None:
            return _deny(
                DenyCode.UNSUPPORTED, "token names no holder ('agent = ID' caveat)", token_id=tid
            )
        if len(lineage) == 1:  # the common case, without the loops
            lineage_keys: tuple[int, ...] = (int(tid, 16),)
        elif len(set(lineage)) != len(lineage):  # an id is one hop of one tree, once
            return _deny(DenyCode.MALFORMED, "token's lineage names an id twice", token_id=tid)
        else:
            lineage_keys = tuple([int(x, 16) for x in lineage])
        if hops is None:
            all_hops: tuple[Hop, ...] = (hop,)
            agents: tuple[str, ...] = (hop.agent,)
            latest = ident.issued_ms
        else:
            all_hops = tuple(hops)
            agents = tuple([h.agent for h in hops])
            latest = max([h.at_ms for h in hops])
        if rare is not None:
            for at_hop, cap in rare.depth_caps:
                below = len(all_hops) - max(at_hop, 1)
                if below > cap.limit:
                    return _deny(
                        DenyCode.DEPTH,
                        f"caveat {cap.text!r}: {below} delegations follow it",
                        caveat=cap.text,
                        token_id=tid,
                    )
        chain = Chain(
            text,
            tid,
            ident.key_id,
            ident.issued_ms,
            all_hops,
            tuple(lineage),
            tuple(checks),
            lineage_keys,
            agents,
            latest,
            actions,
            not_before,
            not_after,
            tuple(resources),
            tuple(other),
            CHAIN_BASE + 2 * len(text) + PER_HOP * len(all_hops) + size,
        )
        if rare is not None:
            if rare.approvals:
                chain.approvals = tuple(rare.approvals)
                chain.approval_keys = tuple(rare.approval_keys)
                chain.size += sum([a.size for a in rare.approvals])
            if rare.budgets:
                chain.budgets = tuple(
                    [
                        Budget(
                            budget_id(tid, cids[: i + 1]), cav.text, cav.limit, cav.period, until
                        )
                        for i, cav, until in rare.budgets
                    ]
                )
        elif body_key is not None and hops is None and len(lineage) == 1:
            held = sum([c.size for c in checks if type(c) is not ExpiresCaveat])
            body = _Body(
                hop.agent,
                actions,
                chain.resources,
                chain.other,
                not_before,
                _BODY_BASE + sum(map(len, body_key)) + _PER_CID * len(body_key) + held,
            )
            self._bodies.put(body_key, body, body.size)
        return chain

    def _check_delegation(
        self, cav: DelegateCaveat, holder: str | None, prefix_sig: bytes, root: bytes, tid: str
    ) -> Decision | None:
        if holder is None:
            return _deny(
                DenyCode.BAD_DELEGATION,
                "delegation before any holder",
                caveat=cav.text,
                token_id=tid,
            )
        if not did_valid(cav, prefix_sig):
            return _deny(
                DenyCode.BAD_DELEGATION,
                f"delegation to {cav.agent!r} carries a delegation id that its hop "
                f"does not derive (ids are not chosen)",
                caveat=cav.text,
                token_id=tid,
            )
        pub = None
        if cav.key_id is not None:
            agent = self._agents.get(holder)
            pub = agent.public_keys.get(cav.key_id) if agent is not None else None
            if pub is None:
                return _deny(
                    DenyCode.BAD_DELEGATION,
                    f"delegation to {cav.agent!r} is signed with key {cav.key_id}, "
                    f"which {holder!r} has not registered",
                    caveat=cav.text,
                    token_id=tid,
                )
        if not proof_valid(cav, prefix_sig, root, pub):
            return _deny(
                DenyCode.BAD_DELEGATION,
                f"delegation to {cav.agent!r} has no valid proof from {holder!r}",
                caveat=cav.text,
                token_id=tid,
            )
        return None

    # -- the dynamic half ---------------------------------------------------------------

    def verify(self, token: str, request: Request, discharges: Sequence[str] = ()) -> Decision:
        """Allow or deny ``request`` under ``token`` (with the ``discharges`` of its
        approval caveats, if any), with the precise reason."""
        if self._memo_size and not discharges and not request.ctx:
            return self.check(token, request.action, request.resource, request.presenter)
        st = self.analyse(token)
        return st if isinstance(st, Decision) else self.decide(st, request, discharges)

    def decide_state(self, st: Chain) -> Decision | None:
        """Steps 3–4: the deny that the chain's current state gives, or None."""
        revoked = self._revocations.ids
        for key in st.lineage_keys:
            if key in revoked:
                which = st.lineage[st.lineage_keys.index(key)]
                what = "token" if which == st.token_id else "delegation"
                return _deny(
                    DenyCode.REVOKED,
                    f"{what} {which} is revoked",
                    token_id=st.token_id,
                    chain=st.agents,
                )
        agents = self._agents
        last = len(st.hops) - 1
        for i, hop in enumerate(st.hops):
            a = agents.get(hop.agent)
            if (
                a is None
                or a.status is not _ACTIVE
                or hop.at_ms <= a.revoked_before_ms
                or last - i > a.max_depth
            ):
                return _agent_denial(st, hop, a, last - i)
        return None

    def decide(self, st: Chain, request: Request, discharges: Sequence[str] = ()) -> Decision:
        """Steps 3–7 (and the approvals) for an already analysed chain."""
        denied = self.decide_state(st)
        if denied is not None:
            return denied
        tid, chain = st.token_id, st.agents
        agents = self._agents
        holder = st.hops[-1].agent
        presenter = request.presenter
        if not presenter:
            return _deny(
                DenyCode.NO_PRESENTER,
                f"token is bound to agent {holder!r}; no presenter identity was given",
                token_id=tid,
                chain=chain,
            )
        if presenter != holder:
            return _deny(
                DenyCode.NOT_HOLDER,
                f"token is held by agent {holder!r}, presented by {presenter!r}",
                token_id=tid,
                chain=chain,
            )
        problem = request_problem(request)
        if problem is not None:
            return _deny(
                DenyCode.INVALID_REQUEST, f"invalid request: {problem}", token_id=tid, chain=chain
            )
        # Authority flows down the chain: every agent's current ceiling bounds it,
        # the holder's first (the usual reason), then each delegator's.
        action, resource = request.action, request.resource
        ruled = False  # an agent of the chain has standing approval rules
        for name in (holder, *chain[:-1]) if len(chain) > 1 else (holder,):
            a = agents[name]
            if not a.ceiling.allows(action, resource):
                whose = "its" if name == holder else f"delegator {name!r}'s"
                return _deny(
                    DenyCode.CEILING,
                    f"agent {holder!r} may not {action} {resource} (beyond {whose} ceiling)",
                    token_id=tid,
                    chain=chain,
                )
            if a.approvals:
                ruled = True
        now = self._clock()
        if st.latest_ms > now * 1000 + CLOCK_SKEW_MS:
            return _deny(
                DenyCode.FUTURE,
                "token or delegation is dated in the future",
                token_id=tid,
                chain=chain,
            )
        acts = st.actions
        passed = (acts is None or action in acts) and st.not_before < now < st.not_after
        if passed:
            for glob in st.resources:
                if not glob.match(resource):
                    passed = False
                    break
        if passed:
            for cav in st.other:
                if cav.check(request, now) is not None:
                    passed = False
                    break
        if not passed:  # walk the caveats in order to name the first that fails
            for cav in self._checks_of(st):
                failed = cav.check(request, now)
                if failed is not None:
                    return _deny(
                        DenyCode.CAVEAT_FAILED,
                        f"caveat {cav.text!r} failed: {failed}",
                        caveat=cav.text,
                        token_id=tid,
                        chain=chain,
                    )
            raise AssertionError("folded checks and caveats disagree")  # pragma: no cover
        allowed = st.allowed
        if allowed is None:
            allowed = st.allowed = Decision(True, _ALLOWED, "allowed", None, tid, chain, st.budgets)
            if self._on_first_allow is not None:
                self._on_first_allow(st)
        if st.approvals or ruled:
            return (
                approval_decision(st, request, discharges, ruled, agents, now, self._limits)
                or allowed
            )
        return allowed


def _agent_denial(st: Chain, hop: Hop, a: Agent | None, below: int) -> Decision:
    tid, chain = st.token_id, st.agents
    if a is None:
        return _deny(
            DenyCode.UNKNOWN_AGENT,
            f"agent {hop.agent!r} is not registered",
            token_id=tid,
            chain=chain,
        )
    if a.status is AgentStatus.DELETED:
        return _deny(
            DenyCode.UNKNOWN_AGENT, f"agent {hop.agent!r} was deleted", token_id=tid, chain=chain
        )
    if a.status is not AgentStatus.ACTIVE:
        return _deny(
            DenyCode.AGENT_SUSPENDED, f"agent {hop.agent!r} is suspended", token_id=tid, chain=chain
        )
    if hop.at_ms <= a.revoked_before_ms:
        return _deny(
            DenyCode.AGENT_REVOKED,
            f"tokens of agent {hop.agent!r} up to "
            f"{format_timestamp(a.revoked_before_ms / 1000)} are revoked "
            f"(epoch {a.epoch})",
            token_id=tid,
            chain=chain,
        )
    return _deny(
        DenyCode.DEPTH,
        f"agent {hop.agent!r} allows {a.max_depth} delegation(s) below it, the chain has {below}",
        token_id=tid,
        chain=chain,
    )
