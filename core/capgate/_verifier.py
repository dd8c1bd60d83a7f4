"""``Verifier``: the decision path, from token text and request to allow or deny.

1. parse (bounded), 2. signature chain with the key named by the identifier
(constant-time compare) and every delegation proof, 3. lineage ∩ revoked = ∅,
4. every agent in the chain registered, active and within its epoch and depth,
5. presenter = current holder, 6. the *current* ceiling of the holder (and of
every delegator above it) allows the request, 7. every caveat holds for the
request and the clock.

Steps 1–2 depend neither on the request nor on the clock, so their result (a
valid ``Chain``) is cached per token text in a bounded LRU. Whatever
the keys or agent keys they used change, call ``invalidate()``.
"""

from __future__ import annotations

import hmac
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from capgate._agent import Agent, AgentStatus
from capgate._caveats import (
    Caveat,
    ExpiresCaveat,
    Request,
    compile_caveat,
)
from capgate._clock import Clock, format_timestamp, system_clock
from capgate._codec import DEFAULT_LIMITS, Limits
from capgate._delegation import DelegateCaveat, DepthCaveat
from capgate._errors import CaveatSyntaxError, MalformedTokenError
from capgate._grants import resource_problem
from capgate._revocation import RevocationSet, lineage_key
from capgate._text import ACTION_RE, CTX_KEY_RE
from capgate._token import Token, TokenIdentifier, derive_key, hmac_digest

__all__ = ["Chain", "Decision", "DenyCode", "Hop", "Verifier"]

# How far ahead of this server's clock a token or hop may claim to have been made.
CLOCK_SKEW_MS = 300_000
_CACHE_MAX_TEXT = 4096
_MAX_CTX_ITEMS = 32
_MAX_CTX_VALUE = 1024


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


# Hop, Decision and Chain are built on the hot path: plain slotted dataclasses
# (a frozen dataclass pays object.__setattr__ per field). Treat them as read-only.
@dataclass(slots=True)
class Hop:
    """One holder in the chain: the agent, when it received the token, and the hop's id."""

    agent: str
    at_ms: int
    did: str | None = None  # None for the issued-to agent (the token id names that hop)
    offline: bool = False


@dataclass(slots=True)
class Decision:
    allowed: bool
    code: DenyCode
    reason: str
    caveat: str | None = None
    token_id: str | None = None
    chain: tuple[str, ...] = ()  # issued-to agent first, current holder last

    @property
    def holder(self) -> str | None:
        return self.chain[-1] if self.chain else None


@dataclass(slots=True)
class Chain:
    """A token whose signature and delegation proofs are valid: what it says, parsed."""

    token: Token
    token_id: str
    key_id: str
    issued_ms: int
    hops: tuple[Hop, ...]
    lineage: tuple[str, ...]  # token id, then every did in order
    checks: tuple[Caveat, ...]  # request- and clock-dependent caveats
    expires: float | None
    lineage_keys: tuple[int, ...] = field(repr=False, default=())
    agents: tuple[str, ...] = field(repr=False, default=())
    latest_ms: int = 0
    allowed: Decision | None = field(repr=False, default=None)  # shared by every allow

    @property
    def holder(self) -> str:
        return self.hops[-1].agent


def _deny(code: DenyCode, reason: str, caveat: str | None = None,
          token_id: str | None = None, chain: tuple[str, ...] = ()) -> Decision:
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
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self._keys = keys
        self._agents = agents
        self._revocations = revocations
        self._clock = clock
        self._limits = limits
        self._derived: dict[str, tuple[bytes, bytes]] = {}
        self._cache: OrderedDict[str, Chain] = OrderedDict()
        self._cache_size = cache_size

    # -- cache ------------------------------------------------------------------------

    def invalidate(self) -> None:
        """Forget cached signature results (after a key or agent-key change)."""
        self._derived.clear()
        self._cache.clear()

    @property
    def cached(self) -> int:
        return len(self._cache)

    # -- the static half: parse, signature, proofs --------------------------------------

    def analyse(self, text: str) -> Chain | Decision:
        """The cached, request-independent half: a valid ``Chain`` or the deny."""
        cache = self._cache
        st = cache.get(text)
        if st is not None:
            cache.move_to_end(text)
            return st
        if not isinstance(text, str):
            return _deny(DenyCode.MALFORMED, "token must be text")
        result = self._analyse(text)
        # Only valid chains are kept (a flood of garbage cannot fill the cache), and only
        # tokens of ordinary size, so the cache's memory stays bounded.
        if type(result) is Chain and len(text) <= _CACHE_MAX_TEXT:
            cache[text] = result
            if len(cache) > self._cache_size:
                cache.popitem(last=False)
        return result

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
        try:
            token = Token.parse(text, limits=self._limits)
        except MalformedTokenError as e:
            return _deny(DenyCode.MALFORMED, f"malformed token: {e.message}")
        raw = token.raw
        if token.has_third_party_caveats:
            return _deny(DenyCode.UNSUPPORTED, "third-party caveats are not supported")
        try:
            ident = TokenIdentifier.decode(raw.identifier)
        except MalformedTokenError as e:
            return _deny(DenyCode.UNSUPPORTED, e.message)
        tid = ident.token_id
        keys = self._root_key(ident.key_id)
        if keys is None:
            return _deny(DenyCode.UNKNOWN_KEY, f"unknown or retired root key {ident.key_id!r}",
                         token_id=tid)
        root, derived = keys
        # The chain, remembering the signature before each caveat for delegation proofs.
        digest = hmac_digest
        sig = digest(derived, raw.identifier, "sha256")
        prefix: list[bytes] = []
        for c in raw.caveats:
            prefix.append(sig)
            sig = digest(sig, c.cid, "sha256")
        if not hmac.compare_digest(sig, raw.signature):
            return _deny(DenyCode.BAD_SIGNATURE, "signature does not match", token_id=tid)
        return self._read_chain(token, ident, root, prefix)

    def _read_chain(self, token: Token, ident: TokenIdentifier, root: bytes,
                    prefix: list[bytes]) -> Chain | Decision:
        tid = ident.token_id
        hops: list[Hop] = []
        lineage = [tid]
        checks: list[Caveat] = []
        depth_caps: list[tuple[int, DepthCaveat]] = []
        expires: float | None = None
        holder: str | None = None
        CHECK, HOLDER, DELEGATE = Caveat.CHECK, Caveat.HOLDER, Caveat.DELEGATE
        LINEAGE = Caveat.LINEAGE
        for i, c in enumerate(token.raw.caveats):
            try:
                cav = compile_caveat(c.cid)
            except CaveatSyntaxError as e:
                return _deny(DenyCode.BAD_CAVEAT, e.message, caveat=e.context.get("caveat"),
                             token_id=tid)
            role = cav.role
            if role == CHECK:
                checks.append(cav)
                if type(cav) is ExpiresCaveat and (expires is None or cav.at < expires):
                    expires = cav.at
            elif role == HOLDER:
                agent = cav.agent  # type: ignore[attr-defined]
                if holder is None:
                    holder = agent
                    hops.append(Hop(agent, ident.issued_ms))
                elif agent != holder:
                    return _deny(DenyCode.NOT_HOLDER,
                                 f"caveat {cav.text!r}: the holder here is {holder!r}",
                                 caveat=cav.text, token_id=tid)
            elif role == DELEGATE:
                assert isinstance(cav, DelegateCaveat)
                denied = self._check_delegation(cav, holder, prefix[i], root, tid)
                if denied is not None:
                    return denied
                holder = cav.agent
                hops.append(Hop(holder, cav.at_ms, cav.did, cav.offline))
                lineage.append(cav.did)
            elif role == LINEAGE:
                lineage.append(cav.did)  # type: ignore[attr-defined]
            else:
                assert isinstance(cav, DepthCaveat)
                depth_caps.append((len(hops), cav))
        if holder is None:
            return _deny(DenyCode.UNSUPPORTED, "token names no holder ('agent = ID' caveat)",
                         token_id=tid)
        for at_hop, cap in depth_caps:
            below = len(hops) - max(at_hop, 1)
            if below > cap.limit:
                return _deny(DenyCode.DEPTH,
                             f"caveat {cap.text!r}: {below} delegations follow it",
                             caveat=cap.text, token_id=tid)
        return Chain(
            token, tid, ident.key_id, ident.issued_ms, tuple(hops), tuple(lineage),
            tuple(checks), expires, tuple([lineage_key(x) for x in lineage]),
            tuple([h.agent for h in hops]), max([h.at_ms for h in hops]),
        )

    def _check_delegation(self, cav: DelegateCaveat, holder: str | None, prefix_sig: bytes,
                          root: bytes, tid: str) -> Decision | None:
        if holder is None:
            return _deny(DenyCode.BAD_DELEGATION, "delegation before any holder",
                         caveat=cav.text, token_id=tid)
        pub = None
        if cav.key_id is not None:
            agent = self._agents.get(holder)
            pub = agent.public_keys.get(cav.key_id) if agent is not None else None
            if pub is None:
                return _deny(DenyCode.BAD_DELEGATION,
                             f"delegation to {cav.agent!r} is signed with key {cav.key_id}, "
                             f"which {holder!r} has not registered",
                             caveat=cav.text, token_id=tid)
        if not cav.proof_valid(prefix_sig, root, pub):
            return _deny(DenyCode.BAD_DELEGATION,
                         f"delegation to {cav.agent!r} has no valid proof from {holder!r}",
                         caveat=cav.text, token_id=tid)
        return None

    # -- the dynamic half ---------------------------------------------------------------

    def verify(self, token: str, request: Request) -> Decision:
        """Allow or deny ``request`` under ``token``, with the precise reason."""
        st = self.analyse(token)
        if isinstance(st, Decision):
            return st
        return self.decide(st, request)

    def decide_state(self, st: Chain) -> Decision | None:
        """Steps 3–4: the deny that the chain's current state gives, or None."""
        tid, chain = st.token_id, st.agents
        revoked = self._revocations.any_revoked(st.lineage_keys)
        if revoked is not None:
            which = st.lineage[st.lineage_keys.index(revoked)]
            what = "token" if which == tid else "delegation"
            return _deny(DenyCode.REVOKED, f"{what} {which} is revoked", token_id=tid, chain=chain)
        agents = self._agents
        last = len(st.hops) - 1
        for i, hop in enumerate(st.hops):
            a = agents.get(hop.agent)
            if a is None:
                return _deny(DenyCode.UNKNOWN_AGENT, f"agent {hop.agent!r} is not registered",
                             token_id=tid, chain=chain)
            if a.status is not AgentStatus.ACTIVE:
                return _deny(DenyCode.AGENT_SUSPENDED, f"agent {hop.agent!r} is suspended",
                             token_id=tid, chain=chain)
            if hop.at_ms <= a.revoked_before_ms:
                return _deny(DenyCode.AGENT_REVOKED,
                             f"tokens of agent {hop.agent!r} up to "
                             f"{format_timestamp(a.revoked_before_ms / 1000)} are revoked "
                             f"(epoch {a.epoch})", token_id=tid, chain=chain)
            if last - i > a.max_depth:
                return _deny(DenyCode.DEPTH,
                             f"agent {hop.agent!r} allows {a.max_depth} delegation(s) below it, "
                             f"the chain has {last - i}", token_id=tid, chain=chain)
        return None

    def decide(self, st: Chain, request: Request) -> Decision:
        """Steps 3–7 for an already analysed chain."""
        denied = self.decide_state(st)
        if denied is not None:
            return denied
        tid, chain = st.token_id, st.agents
        agents = self._agents
        holder = st.hops[-1].agent
        presenter = request.presenter
        if not presenter:
            return _deny(DenyCode.NO_PRESENTER,
                         f"token is bound to agent {holder!r}; no presenter identity was given",
                         token_id=tid, chain=chain)
        if presenter != holder:
            return _deny(DenyCode.NOT_HOLDER,
                         f"token is held by agent {holder!r}, presented by {presenter!r}",
                         token_id=tid, chain=chain)
        problem = _request_problem(request)
        if problem is not None:
            return _deny(DenyCode.INVALID_REQUEST, f"invalid request: {problem}",
                         token_id=tid, chain=chain)
        # Authority flows down the chain: every agent's current ceiling bounds it,
        # the holder's first (the usual reason), then each delegator's.
        action, resource = request.action, request.resource
        for name in (holder, *chain[:-1]) if len(chain) > 1 else (holder,):
            if not agents[name].ceiling.allows(action, resource):
                whose = "its" if name == holder else f"delegator {name!r}'s"
                return _deny(DenyCode.CEILING,
                             f"agent {holder!r} may not {action} {resource} "
                             f"(beyond {whose} ceiling)", token_id=tid, chain=chain)
        now = self._clock()
        if st.latest_ms > now * 1000 + CLOCK_SKEW_MS:
            return _deny(DenyCode.FUTURE, "token or delegation is dated in the future",
                         token_id=tid, chain=chain)
        for cav in st.checks:
            failed = cav.check(request, now)
            if failed is not None:
                return _deny(DenyCode.CAVEAT_FAILED, f"caveat {cav.text!r} failed: {failed}",
                             caveat=cav.text, token_id=tid, chain=chain)
        allowed = st.allowed
        if allowed is None:
            allowed = st.allowed = Decision(True, DenyCode.ALLOWED, "allowed", None, tid, chain)
        return allowed


def _request_problem(request: Request) -> str | None:
    action, resource, ctx = request.action, request.resource, request.ctx
    if not isinstance(action, str) or ACTION_RE.fullmatch(action) is None:
        return f"action {action!r} is not a valid action name"
    problem = resource_problem(resource)
    if problem is not None:
        return f"resource {resource!r} {problem}"
    if ctx:
        if len(ctx) > _MAX_CTX_ITEMS:
            return f"more than {_MAX_CTX_ITEMS} context entries"
        for k, v in ctx.items():
            if not isinstance(k, str) or CTX_KEY_RE.fullmatch(k) is None:
                return f"context key {k!r} is not valid"
            if not isinstance(v, str) or len(v) > _MAX_CTX_VALUE:
                return f"context value for {k!r} is not text of at most {_MAX_CTX_VALUE} chars"
    return None

