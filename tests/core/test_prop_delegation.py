"""Property: delegation never widens; proofs and holders cannot be forged."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from capgate import (
    Ceiling,
    DelegateCaveat,
    DenyCode,
    Directory,
    Request,
    Token,
    TokenIdentifier,
    delegate_offline,
    delegation_id,
    delegation_message,
    describe,
    parse_caveat,
    public_key_id,
    server_proof,
)

from prop_world import (
    ACTIONS,
    AGENT_IDS,
    ISSUED_MS,
    KEY,
    KID,
    PRIVATE,
    PUBLIC,
    VALID_KINDS,
    VERIFIER,
    AllowedChain,
    Cav,
    allowed_chains,
    b64,
    caveats,
    decide,
    examples,
    glob_match,
    hex32,
    hop,
    mint,
    model_ceiling_allows,
    path_segments,
    presenting,
    random_globs,
    registry,
    requests,
    resources,
    verifier,
)


@dataclass
class HopSpec:
    holder: str
    offline: bool
    caveats: list[Cav]


@dataclass
class DelegationWorld:
    ceilings: dict[str, tuple[str, ...]]
    depths: dict[str, int]
    hops: list[HopSpec]
    tokens: list[Token]
    reqs: list[Request]


grants = st.builds(
    lambda acts, glob: f"{','.join(acts)}:/{'/'.join(glob)}",
    st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=4, unique=True),
    random_globs | st.just(["**"]),
)


@st.composite
def delegation_worlds(draw: st.DrawFn) -> DelegationWorld:
    ceilings = {a: tuple(draw(st.lists(grants, min_size=1, max_size=3))) for a in AGENT_IDS}
    depths = {a: draw(st.sampled_from((0, 1, 2, 3, 3, 3))) for a in AGENT_IDS}
    reqs = draw(st.lists(requests, min_size=1, max_size=6))
    specs: list[HopSpec] = []
    tokens: list[Token] = []
    holder = draw(st.sampled_from(AGENT_IDS))
    token = mint(holder, draw(hex32))
    for n in range(draw(st.integers(0, 3)) + 1):
        offline = False
        if n:
            prev = holder
            holder = draw(st.sampled_from(AGENT_IDS))
            offline = draw(st.booleans())
            token, _ = hop(token, prev, holder, offline, n)
        cavs = []
        for kind in draw(st.lists(st.sampled_from(VALID_KINDS), max_size=3)):
            cav = draw(caveats(kind, draw(st.sampled_from(reqs)), holder))
            if cav.did is not None and cav.did in describe(token).lineage:
                continue  # an id names one hop, once (a repeat is malformed: other tests)
            token = token.attenuate(cav.text)  # type: ignore[arg-type]
            cavs.append(cav)
        specs.append(HopSpec(holder, offline, cavs))
        tokens.append(token)
    return DelegationWorld(ceilings, depths, specs, tokens, reqs)


def model_allows(
    w: DelegationWorld, j: int, req: Request, ceilings: dict[str, tuple[str, ...]] | None = None
) -> bool:
    """What the j-th prefix token should decide: every hop's ceiling, caveats and depth."""
    ceilings = ceilings or w.ceilings
    holders = [h.holder for h in w.hops[: j + 1]]
    if req.presenter != holders[-1]:
        return False
    for i, spec in enumerate(w.hops[: j + 1]):
        below = j - i  # delegations after hop i
        if not model_ceiling_allows(ceilings[spec.holder], req.action, req.resource):
            return False
        if below > w.depths[spec.holder]:
            return False
        for cav in spec.caveats:
            if cav.depth is not None:
                if below > cav.depth:
                    return False
            elif not cav.holds(req, spec.holder):
                return False
    return True


@examples(150)
@given(delegation_worlds(), st.booleans())
def test_delegation_never_widens(w: DelegationWorld, memo: bool) -> None:
    """A chain allows exactly what every hop allows: each holder's ceiling, each hop's
    restrictions, depth limits; so the final holder never gets more than any prefix."""
    v = verifier(registry(w.ceilings, w.depths), memo=memo)
    for base in w.reqs:
        allowed = []
        for j, (spec, token) in enumerate(zip(w.hops, w.tokens, strict=True)):
            req = presenting(base, spec.holder)
            d = decide(v, token, req)
            assert d.allowed == model_allows(w, j, req), (j, req, d)
            allowed.append(d.allowed)
        for j in range(1, len(allowed)):
            # a chain is only as wide as its narrowest hop
            assert not allowed[j] or all(allowed[:j]), allowed


@st.composite
def narrowings(draw: st.DrawFn, grants_: tuple[str, ...]) -> tuple[str, ...]:
    """A ceiling inside ``grants_``: fewer grants, fewer actions, literal resources."""
    out = []
    for g in draw(st.lists(st.sampled_from(grants_), max_size=len(grants_), unique=True)):
        actions, _, glob = g.partition(":")
        acts = draw(st.lists(st.sampled_from(actions.split(",")), min_size=1, unique=True))
        path = draw(resources)
        if draw(st.booleans()) and glob_match(path_segments(glob), path_segments(path)):
            glob = path
        out.append(f"{','.join(acts)}:{glob}")
    return tuple(out)


@examples(100)
@given(delegation_worlds(), st.data())
def test_narrowing_a_ceiling_in_the_chain_narrows_live_tokens(
    w: DelegationWorld, data: st.DataObject
) -> None:
    """Narrowing the current ceiling of any agent in the chain (holder or delegator)
    narrows every live token through it at once, and never widens anything."""
    memo = data.draw(st.booleans(), label="memo")
    agents = Directory(registry(w.ceilings, w.depths)) if memo else registry(w.ceilings, w.depths)
    v = verifier(agents, memo=memo)
    target = data.draw(st.sampled_from([h.holder for h in w.hops]))
    narrowed = data.draw(narrowings(w.ceilings[target]))
    before = {}
    for k, base in enumerate(w.reqs):
        for j, spec in enumerate(w.hops):
            req = presenting(base, spec.holder)
            before[j, k] = decide(v, w.tokens[j], req).allowed
    agents[target] = agents[target].with_changes(ceiling=Ceiling.parse(narrowed))
    after_ceilings = {**w.ceilings, target: narrowed}
    for k, base in enumerate(w.reqs):
        for j, spec in enumerate(w.hops):
            req = presenting(base, spec.holder)
            after = decide(v, w.tokens[j], req)
            in_chain = target in [h.holder for h in w.hops[: j + 1]]
            assert not after.allowed or before[j, k]
            assert after.allowed == (
                before[j, k]
                and (not in_chain or model_ceiling_allows(narrowed, base.action, base.resource))
            ), (j, req, after)
            assert after.allowed == model_allows(w, j, req, after_ceilings)
            if before[j, k] and not after.allowed:
                assert after.code is DenyCode.CEILING, after


def _all_presenters(holder: str) -> list[str | None]:
    return [p for p in (*AGENT_IDS, "zed", "", None) if p != holder]


@examples(60)
@given(allowed_chains(), st.data())
def test_delegate_caveats_without_a_valid_proof_never_verify(
    chain: AllowedChain, data: st.DataObject
) -> None:
    final, req = chain.final, chain.req
    token, holder = final.token, final.holder
    to = data.draw(st.sampled_from(AGENT_IDS))
    forged: list[bytes] = []

    # random proof bytes (server form, and Ed25519 under a registered key id)
    forged.append(data.draw(caveats("delegate-bogus", req, holder)).raw)
    # a valid delegation, re-pointed at another agent / did / time with the same proof
    good, _ = hop(token, holder, to, data.draw(st.booleans()), 5)
    text = good.caveats[-1]
    head, proof = text.split(" proof=")
    _, _, agent, did, at = head.split(" ")
    other = next(a for a in AGENT_IDS if a != agent)
    forged += [
        f"delegate = {other} {did} {at} proof={proof}".encode(),
        f"delegate = {agent} did={data.draw(hex32)} {at} proof={proof}".encode(),
        f"delegate = {agent} {did} at={int(at[3:]) + 1} proof={proof}".encode(),
    ]
    # a proof copied from another token (same caveats, another token id)
    tid = final.lineage[0]
    twin_id = data.draw(hex32.filter(lambda x: x != tid))
    twin = Token.mint(KEY, TokenIdentifier(KID, twin_id, ISSUED_MS).encode())
    for c in token.caveats:
        twin = twin.append_raw(c.encode())
    twin_good, _ = hop(twin, holder, to, data.draw(st.booleans()), 5)
    forged.append(twin_good.caveats[-1].encode())
    # proofs from other positions of this very chain
    forged += [s.delegation.encode() for s in chain.stages if s.delegation is not None]
    # signed offline, but with a key the holder has not registered
    thief = next(a for a in AGENT_IDS if a != holder)
    stolen, _ = delegate_offline(token, PRIVATE[thief], to, ISSUED_MS + 5000)
    forged.append(stolen.caveats[-1].encode())
    unknown = Ed25519PrivateKey.from_private_bytes(data.draw(st.binary(min_size=32, max_size=32)))
    stray, _ = delegate_offline(token, unknown, to, ISSUED_MS + 5000)
    forged.append(stray.caveats[-1].encode())

    for cid in forged:
        bad = token.append_raw(cid)
        for presenter in (*AGENT_IDS, "zed"):
            d = decide(VERIFIER, bad, presenting(req, presenter))
            assert not d.allowed and d.code is DenyCode.BAD_DELEGATION, (cid, d)
        # Nor does a forged hop become good when its would-be holder delegates onward
        # with a proof of its own (a thief rebinding a stolen token to itself).
        cav = parse_caveat(cid.decode())
        assert isinstance(cav, DelegateCaveat)
        onward = data.draw(st.sampled_from(AGENT_IDS))
        later, _ = hop(bad, cav.agent, onward, data.draw(st.booleans()), 6)
        for v in (verifier(), VERIFIER):  # fresh, and one that has seen the forgery
            d = decide(v, later, presenting(req, onward))
            assert not d.allowed and d.code is DenyCode.BAD_DELEGATION, (cid, d)
    # A valid proof moved one position later (after an extra caveat) is refused too.
    moved = token.attenuate(f"action in {','.join(ACTIONS)}").append_raw(text.encode())
    d = decide(VERIFIER, moved, presenting(req, to))
    assert not d.allowed and d.code is DenyCode.BAD_DELEGATION, d
    # ... while the genuine one passes the proof check (its holder changes to `to`).
    d = decide(VERIFIER, good, presenting(req, to))
    assert d.code is not DenyCode.BAD_DELEGATION and d.holder == to, d


@examples(60)
@given(allowed_chains())
def test_only_the_final_holder_may_present(chain: AllowedChain) -> None:
    for stage in chain.stages:
        assert decide(VERIFIER, stage.token, chain.request_for(stage)).allowed
        for presenter in _all_presenters(stage.holder):
            d = decide(VERIFIER, stage.token, presenting(chain.req, presenter))
            assert not d.allowed, (presenter, d)
            assert d.code in (DenyCode.NOT_HOLDER, DenyCode.NO_PRESENTER), d


@given(allowed_chains(), st.data())
def test_a_delegation_id_is_derived_never_chosen(chain: AllowedChain, data: st.DataObject) -> None:
    """A hop whose ``did`` is anything but the one its position derives never verifies,
    even when its proof is genuine (server-minted, or signed by the holder's own key):
    no one can make a hop that names an id of another token or tree."""
    final, req = chain.final, chain.req
    token, holder = final.token, final.holder
    to = data.draw(st.sampled_from(AGENT_IDS))
    at_ms = ISSUED_MS + 5000
    derived = delegation_id(token.signature, to, at_ms)
    # ids worth aiming at: this chain's own, and any other
    target = data.draw(st.sampled_from(final.lineage) | hex32.filter(lambda x: x != derived))
    unsigned = f"delegate = {to} did={target} at={at_ms}"
    message = delegation_message(token.signature, unsigned.encode())
    server = server_proof(KEY, token.signature, unsigned.encode())
    kid = public_key_id(PUBLIC[holder])
    for proof in ("srv:" + b64(server), f"ed25519:{kid}:" + b64(PRIVATE[holder].sign(message))):
        bad = token.append_raw(f"{unsigned} proof={proof}".encode())
        d = decide(VERIFIER, bad, presenting(req, to))
        assert not d.allowed and d.code is DenyCode.BAD_DELEGATION, d
