"""Property: appending any caveat to a token can only narrow what it allows."""

from __future__ import annotations

import calendar
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capgate import CaveatSyntaxError, DenyCode, Request, Token, describe

from prop_world import (
    AGENT_IDS,
    ALL_KINDS,
    CHECK_KINDS,
    CTX_KEYS,
    EXPECTED_CLASS,
    FIRST_UTC,
    LAST_UTC,
    NOW_DEC,
    NUMERIC_CTX,
    OFFSETS,
    VALID_KINDS,
    VERIFIER,
    Cav,
    caveats,
    ctx_values,
    decide,
    examples,
    grammar_class,
    hex32,
    hop,
    mint,
    number_texts,
    presenting,
    requests,
)


@dataclass
class Scenario:
    token: Token  # the token before the extra caveat
    holder: str  # its current holder
    req: Request
    extra: Cav


@st.composite
def scenarios(draw: st.DrawFn, kind: str) -> Scenario:
    """A random token (caveats of every valid kind, 0-2 delegations) and one more caveat."""
    req = draw(requests)
    if kind.startswith("ctx-") and draw(st.booleans()):  # give the ctx caveat a value to test
        key = draw(st.sampled_from(CTX_KEYS))
        value = draw(number_texts if kind in NUMERIC_CTX else ctx_values)
        req = Request(req.action, req.resource, None, {**req.ctx, key: value})
    holder = draw(st.sampled_from(AGENT_IDS))
    token = mint(holder, draw(hex32))
    hops = 0
    for item in draw(st.lists(st.sampled_from((*VALID_KINDS, "hop")), max_size=4)):
        if item == "hop":
            if hops == 2:
                continue
            hops += 1
            to = draw(st.sampled_from(AGENT_IDS))
            token, _ = hop(token, holder, to, draw(st.booleans()), hops)
            holder = to
        else:
            cav = draw(caveats(item, req, holder))
            if cav.holds(req, holder) or draw(st.integers(0, 2)) == 0:  # keep many allowed
                token = token.attenuate(cav.text)  # type: ignore[arg-type]
    extra = draw(caveats(kind, req, holder))
    if draw(st.integers(0, 4)):
        presenter: str | None = holder
    else:
        presenter = draw(st.sampled_from((*AGENT_IDS, "zed", None)))
    return Scenario(token, holder, presenting(req, presenter), extra)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_attenuation_never_widens(kind: str) -> None:
    """Appending any caveat (valid, unsatisfiable, unknown or garbage) can only narrow.

    The extended token allows exactly when the original allows and the new caveat
    holds; a deny names the caveat that failed.
    """
    seen: Counter[str] = Counter()

    # a numeric ctx caveat holds only for a request with a number on the right side of
    # it: more examples, so that side is reached in every run, not nearly every one
    @examples(300 if kind in NUMERIC_CTX else 100)
    @given(scenarios(kind))
    def check(sc: Scenario) -> None:
        extra = sc.extra
        cls = grammar_class(extra)
        if kind in EXPECTED_CLASS:
            assert cls is EXPECTED_CLASS[kind], (extra.text, cls)
        elif kind in ("unknown-key", "malformed"):
            assert cls is None, extra.text
        if cls is not None and kind not in ("delegate-bogus",):
            # attenuate() is append_raw() after the grammar check
            text = extra.raw.decode("utf-8")
            assert sc.token.attenuate(text) == sc.token.append_raw(extra.raw)
        extended = sc.token.append_raw(extra.raw)
        orig = decide(VERIFIER, sc.token, sc.req)
        ext = decide(VERIFIER, extended, sc.req)

        # The property: deny never turns into allow.
        assert orig.allowed or not ext.allowed, (orig, ext)

        if kind.startswith("garbage") and cls is not None:
            return  # random text that happens to be a caveat: only monotonicity is claimed
        # an id may appear once in a lineage: naming one again makes the token malformed
        repeats = extra.did is not None and extra.did in describe(sc.token).lineage
        holds = extra.holds(sc.req, sc.holder) and not repeats
        assert ext.allowed == (orig.allowed and holds), (orig, ext, holds)
        seen["orig_allowed"] += orig.allowed
        seen["ext_allowed"] += ext.allowed
        if orig.allowed and not ext.allowed:
            seen["narrowed"] += 1
            want = {
                "agent": DenyCode.NOT_HOLDER,
                "did": DenyCode.MALFORMED if repeats else DenyCode.REVOKED,
                "delegate-bogus": DenyCode.BAD_DELEGATION,
                "budget": DenyCode.UNSUPPORTED,  # this verifier keeps no counts
            }.get(kind, DenyCode.CAVEAT_FAILED if kind in CHECK_KINDS else DenyCode.BAD_CAVEAT)
            assert ext.code is want, ext
            if kind in (*CHECK_KINDS, "budget"):
                assert ext.caveat == extra.text, ext

    check()
    # The generators reach both sides of every caveat that can go either way.
    assert seen["orig_allowed"] > 0, seen
    if kind in VALID_KINDS:
        assert seen["ext_allowed"] > 0, seen
    if kind != "depth":  # a trailing `depth <= n` has no delegation below it to limit
        assert seen["narrowed"] > 0, seen


def test_instants_at_the_ends_of_the_calendar() -> None:
    """`expires` and `not-before` at the first and last instants RFC 3339 can write, in
    every offset. Inside years 1-9999 in UTC: a valid caveat, so the decision is an allow
    or a named caveat failure. Outside: the grammar refuses it, and a token carrying it
    anyway denies as a bad caveat; nothing raises."""
    token = mint("a", "ab" * 16)
    req = Request("read", "/data", "a")
    wrong = []
    for fields in ((1, 1, 1, 0, 0, 0), (9999, 12, 31, 23, 59, 59)):
        for suffix, minutes in OFFSETS:
            y, mo, d, h, mi, s = fields
            stamp = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{suffix}"
            at = Decimal(calendar.timegm((*fields, 0, 0, 0))) - minutes * 60
            for text, holds in (
                (f"expires < {stamp}", NOW_DEC < at),
                (f"not-before > {stamp}", NOW_DEC > at),
            ):
                try:
                    if not FIRST_UTC <= at <= LAST_UTC:
                        try:
                            token.attenuate(text)
                            wrong.append(f"{text!r}: accepted outside years 1-9999")
                        except CaveatSyntaxError:
                            pass
                        got = decide(VERIFIER, token.append_raw(text.encode()), req)
                        if got.allowed or got.code is not DenyCode.BAD_CAVEAT:
                            wrong.append(f"{text!r}: {got}")
                        continue
                    got = decide(VERIFIER, token.attenuate(text), req)
                except Exception as e:  # collected, so one run names every case
                    wrong.append(f"{text!r}: {type(e).__name__}: {e}")
                    continue
                if got.allowed != holds or (
                    not holds and (got.code is not DenyCode.CAVEAT_FAILED or got.caveat != text)
                ):
                    wrong.append(f"{text!r}: {got}")
    assert not wrong, "\n".join(wrong)
