"""Property: revoking any id of a lineage denies the token and all below it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from capgate import Decision, DenyCode, RevocationSet, Token, Verifier

from prop_world import (
    AGENT_IDS,
    CHECK_KINDS,
    NOW,
    REVOKED_IDS,
    AllowedChain,
    allowed_chains,
    caveats,
    decide,
    examples,
    hex32,
    hop,
    presenting,
    verifier,
)


@st.composite
def descendants(draw: st.DrawFn, chain: AllowedChain) -> list[tuple[Token, str]]:
    """Tokens derived from the final one by further attenuation and delegation."""
    token, holder = chain.final.token, chain.final.holder
    out = []
    for n in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            kind = draw(st.sampled_from((*CHECK_KINDS, "did", "depth")))
            cav = draw(caveats(kind, chain.req, holder))
            token = token.attenuate(cav.text)  # type: ignore[arg-type]
        else:
            to = draw(st.sampled_from(AGENT_IDS))
            token, _ = hop(token, holder, to, draw(st.booleans()), 10 + n)
            holder = to
        out.append((token, holder))
    return out


def _warm(v: Verifier, chain: AllowedChain) -> None:
    """Every prefix is allowed before the revocation (and sits in the caches)."""
    for stage in chain.stages:
        assert decide(v, stage.token, chain.request_for(stage)).allowed


@examples(60)
@given(st.data())
def test_revoking_any_lineage_id_denies_the_token_and_its_descendants(data: st.DataObject) -> None:
    chain = data.draw(allowed_chains())
    final = chain.final
    revoked = RevocationSet()
    v = verifier(revoked=revoked, memo=data.draw(st.booleans(), label="memo"))
    _warm(v, chain)
    victim = data.draw(st.sampled_from(final.lineage), label="victim")
    revoked.add(victim, NOW + 3600)

    d = decide(v, final.token, chain.req)
    assert not d.allowed and d.code is DenyCode.REVOKED, d
    # Exactly the prefixes that carry the revoked id are denied.
    for stage in chain.stages:
        d = decide(v, stage.token, chain.request_for(stage))
        if victim in stage.lineage:
            assert not d.allowed and d.code is DenyCode.REVOKED, d
        else:
            assert d.allowed, d
    for token, holder in data.draw(descendants(chain)):
        d = decide(v, token, presenting(chain.req, holder))
        assert not d.allowed, d
        if not isinstance(v.analyse(token.to_text()), Decision):  # else refused statically
            assert d.code is DenyCode.REVOKED, d


@examples(60)
@given(st.data())
def test_revoking_ids_outside_the_lineage_changes_nothing(data: st.DataObject) -> None:
    chain = data.draw(allowed_chains())
    final = chain.final
    revoked = RevocationSet()
    v = verifier(revoked=revoked, memo=data.draw(st.booleans(), label="memo"))
    _warm(v, chain)
    # Ids a careless implementation might confuse with ours: a sibling delegation of a
    # prefix, another token's id, ids revoked elsewhere.
    stage = data.draw(st.sampled_from(chain.stages))
    to = data.draw(st.sampled_from(AGENT_IDS))
    sibling, sibling_did = hop(stage.token, stage.holder, to, data.draw(st.booleans()), 20)
    others = [sibling_did, data.draw(hex32), *REVOKED_IDS]
    victims = [
        x
        for x in data.draw(st.lists(st.sampled_from(others), min_size=1))
        if x not in final.lineage
    ]
    for x in victims:
        revoked.add(x, NOW + 3600)
    _warm(v, chain)
    # ... while the revoked sibling is denied.
    if sibling_did in victims:
        d = decide(v, sibling, presenting(chain.req, to))
        assert d.code is DenyCode.REVOKED, d
