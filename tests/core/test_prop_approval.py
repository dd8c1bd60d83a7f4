"""Properties of approval caveats, against real ``Verifier`` decisions:

- appending one never widens what a token allows, whatever discharges come along;
- a request it applies to is allowed exactly when a discharge for that very request,
  bound to that very token and unexpired, comes with it (an independent model of the
  conditions says when it applies);
- a discharge for one request never allows another, nor works beside another token.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from capgate import Request, Token, mint_discharge, request_digest

from prop_world import (
    ACTIONS,
    AGENT_IDS,
    CTX_KEYS,
    NOW,
    VERIFIER,
    allowed_chains,
    ctx_values,
    derived_glob,
    examples,
    glob_match,
    hex32,
    number_texts,
    path_segments,
    random_globs,
    resources,
)

_COMPARE = {"<": Decimal.__lt__, "<=": Decimal.__le__, ">": Decimal.__gt__, ">=": Decimal.__ge__}


def _number(value: str) -> Decimal | None:
    import re

    return Decimal(value) if re.fullmatch(r"-?[0-9]{1,18}(?:\.[0-9]{1,18})?", value) else None


def model_needed(parts: list[tuple[str, ...]], req: Request) -> bool:
    """When an approval caveat applies: every condition met; undecidable counts as met."""
    for part in parts:
        if part[0] == "action":
            met = req.action in part[1].split(",")
        elif part[0] == "resource":
            met = glob_match(path_segments(part[1]), path_segments(req.resource))
        else:
            _, key, op, value = part
            got = req.ctx.get(key)
            if got is None:
                met = True
            elif op == "=":
                met = got == value
            elif op == "in":
                met = got in value.split(",")
            else:
                n = _number(got)
                met = n is None or _COMPARE[op](n, Decimal(value))
        if not met:
            return False
    return True


@st.composite
def conditions(draw: st.DrawFn, req: Request) -> list[tuple[str, ...]]:
    """0-3 conditions, often shaped so that ``req`` meets them."""
    out: list[tuple[str, ...]] = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(("action", "resource", "ctx")))
        fit = draw(st.booleans())
        if kind == "action":
            names = draw(st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=2, unique=True))
            if fit and req.action not in names:
                names.append(req.action)
            out.append(("action", ",".join(names)))
        elif kind == "resource":
            segs = draw(derived_glob(req.resource) if fit else random_globs)
            out.append(("resource", "/" + "/".join(segs)))
        else:
            key = draw(st.sampled_from(sorted(req.ctx) if fit and req.ctx else CTX_KEYS))
            op = draw(st.sampled_from(("=", "in", "<", "<=", ">", ">=")))
            if op in ("=", "in"):
                value = (
                    req.ctx.get(key)
                    if fit and key in req.ctx
                    else draw(st.sampled_from(("x", "search", "5")))
                )
                if "," in value or not value:
                    value = "x"
            else:
                value = draw(number_texts)
            out.append(("ctx", key, op, value))
    return out


def condition_text(parts: list[tuple[str, ...]]) -> str:
    return " and ".join(" ".join(p if p[0] != "action" else ("action", "in", p[1])) for p in parts)


@st.composite
def other_requests(draw: st.DrawFn, req: Request) -> Request:
    """``req`` with one thing changed (or, now and then, itself)."""
    what = draw(st.sampled_from(("same", "action", "resource", "presenter", "ctx", "ctx-add")))
    if what == "action":
        return Request(draw(st.sampled_from(ACTIONS)), req.resource, req.presenter, req.ctx)
    if what == "resource":
        return Request(req.action, draw(resources), req.presenter, req.ctx)
    if what == "presenter":
        return Request(req.action, req.resource, draw(st.sampled_from(AGENT_IDS)), req.ctx)
    if what in ("ctx", "ctx-add"):
        ctx = dict(req.ctx)
        key = draw(st.sampled_from(CTX_KEYS if what == "ctx-add" or not ctx else sorted(ctx)))
        ctx[key] = draw(ctx_values)
        return Request(req.action, req.resource, req.presenter, ctx)
    return req


def digest(req: Request) -> str:
    return request_digest(req.action, req.resource, req.presenter or "", req.ctx)


def discharges(token: Token, approved: list[tuple[Request, float]]) -> list[str]:
    """What the approval service would hand out for each (request, expires)."""
    st_ = VERIFIER.analyse(token.to_text())
    assert not isinstance(st_, type(None))
    out = []
    for req, expires in approved:
        for caveat, key in zip(st_.approvals, st_.approval_keys, strict=True):
            out.append(
                mint_discharge(
                    key, caveat.cid, "ab" * 16, digest(req), expires, st_.signature
                ).to_text()
            )
    return out


@given(data=st.data())
@examples(150)
def test_an_approval_caveat_never_widens_and_needs_a_discharge_for_exactly_the_request(data):
    chain = data.draw(allowed_chains())
    token, req = chain.final.token, chain.req
    if data.draw(st.booleans()):  # now and then a request the token does not allow
        req = data.draw(other_requests(req))
    parts = data.draw(conditions(req))
    ext = token.require_approval(condition_text(parts), data.draw(st.integers(1, 9)))
    approved = data.draw(
        st.lists(
            st.tuples(other_requests(req), st.sampled_from((NOW - 1, NOW, NOW + 1, NOW + 300))),
            max_size=3,
        )
    )
    ds = discharges(ext, approved)
    if data.draw(st.booleans()):  # discharges of someone else's approval caveat, too
        ds += discharges(chain.stages[0].token.require_approval(""), approved)
    orig = VERIFIER.verify(token.to_text(), req)
    got = VERIFIER.verify(ext.to_text(), req, ds)
    assert orig.allowed or not got.allowed, (orig, got)  # never wider
    if not orig.allowed:
        assert (got.code, got.reason) == (orig.code, orig.reason)  # approvals come last
    elif not model_needed(parts, req):
        assert got.allowed and got.approvals == (), got
    else:
        good = any(digest(r) == digest(req) and expires > NOW for r, expires in approved)
        assert got.allowed == good, (got, approved)
        assert not got.allowed or got.approvals == ("ab" * 16,)


@given(data=st.data())
@examples(150)
def test_a_discharge_for_one_request_never_allows_another(data):
    chain = data.draw(allowed_chains())
    token, req = chain.final.token, chain.req
    parts = data.draw(conditions(req))
    ext = token.require_approval(condition_text(parts))
    ds = discharges(ext, [(req, NOW + 300)])
    other = data.draw(other_requests(req))
    got = VERIFIER.verify(ext.to_text(), other, ds)
    if digest(other) != digest(req) and model_needed(parts, other):
        assert not got.allowed, (req, other, got)
    # beside another token (the same one narrowed, or one with its own caveat) it is void
    for elsewhere in (ext.attenuate("depth <= 9"), token.require_approval(condition_text(parts))):
        moved = VERIFIER.verify(elsewhere.to_text(), req, ds)
        if model_needed(parts, req):
            assert not moved.allowed, moved


@given(
    hex32,
    st.dictionaries(st.sampled_from(CTX_KEYS), ctx_values, max_size=3),
    st.dictionaries(st.sampled_from(CTX_KEYS), ctx_values, max_size=3),
)
@examples(200)
def test_request_digests_differ_when_requests_do(aid, ctx1, ctx2):
    a = request_digest("pay", "/x", "a", ctx1)
    assert (a == request_digest("pay", "/x", "a", ctx2)) == (ctx1 == ctx2)
    # no field can borrow from another: the framing is unambiguous
    assert request_digest("pa", "y/x", "a", ctx1) != a
    assert request_digest("pay", "/x", "", {**ctx1, "a": ""}) != a
