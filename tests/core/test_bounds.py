"""What the verifier remembers is bounded in bytes, and a never-seen glob costs no regex.

Tokens are the sender's: one entry of a cache can be a 4 KiB token and its
parsed caveats, so every cache is charged by size. tracemalloc shows that the
charges cover what is really held, and that the budgets hold under tokens built
to be as large as the limits allow. Globs are matched segment by segment (the
model in prop_world is the reference) and compiled only when hot and short.
"""

from __future__ import annotations

import gc
import re
import secrets
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from capgate import (
    Agent,
    Ceiling,
    Directory,
    Glob,
    Request,
    RevocationSet,
    Token,
    TokenIdentifier,
    Verifier,
    append_server_delegation,
    format_timestamp,
)

from prop_world import glob_match, path_segments

NOW = 1_800_000_000.0
KEY = b"k" * 32
MIB = 1 << 20


def token(i: int, *caveats: str, holder: str = "alice") -> Token:
    t = Token.mint(KEY, TokenIdentifier("k1", f"{i:032x}", int(NOW * 1000) - 5000).encode())
    for c in (f"agent = {holder}", f"expires < {format_timestamp(NOW + 3600)}", *caveats):
        t = t.append_raw(c.encode())  # unparsed: nothing is cached before the verifier
    return t


def hex_(n: int) -> str:
    return secrets.token_hex(n)[:n]


# Hostile shapes, each as large as the token limits allow for a cached chain (4 KiB).
def long_globs(i: int) -> str:
    return token(
        i, *[f"resource /data/{'/'.join(hex_(6) for _ in range(60))}" for _ in range(3)]
    ).to_text()


def many_short_globs(i: int) -> str:
    return token(i, *[f"resource /data/*/{hex_(8)}/**" for _ in range(60)]).to_text()


def action_lists(i: int) -> str:
    return token(i, "action in " + ",".join(f"a{hex_(3)}" for _ in range(400))).to_text()


def ctx_lists(i: int) -> str:
    return token(i, "ctx tool in " + ",".join(hex_(3) for _ in range(500))).to_text()


def delegated(i: int) -> str:
    t = token(i, holder="a0")
    for k in range(1, 4):
        t, _ = append_server_delegation(t, KEY, f"a{k}", int(NOW * 1000) - 4000 + k)
    return t.to_text()


def approvals(i: int) -> str:
    t = token(i)
    for _ in range(6):  # approval caveats, each with conditions as long as fits
        t = t.require_approval(
            "ctx tool in "
            + ",".join(hex_(3) for _ in range(60))
            + " and resource /data/*/"
            + hex_(8)
        )
    return t.to_text()


SHAPES = [long_globs, many_short_globs, action_lists, ctx_lists, delegated, approvals]


def world(**budgets: int) -> Verifier:
    agents = Directory(
        {
            n: Agent(n, Ceiling.parse(["read,write:/data/**"]), max_depth=5)
            for n in ("alice", "a0", "a1", "a2", "a3")
        }
    )
    return Verifier(
        {"k1": KEY}, agents, RevocationSet(), clock=lambda: NOW, memo_size=1_000_000, **budgets
    )


def traced(fn) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        fn()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_the_charges_cover_what_is_held():
    for shape in SHAPES:
        texts = [shape(i) for i in range(150)]
        assert all(len(t) <= 4096 for t in texts), shape.__name__
        big = 1 << 40
        v = world(cache_bytes=big, caveat_bytes=big, memo_bytes=big, prefix_bytes=big)
        holder = "a3" if shape is delegated else "alice"
        req = Request("read", "/data/x", holder)

        def fill():
            for t in texts:
                v.verify(t, req)
                v.verify(t, req)  # a chain is kept on its second sighting

        held = traced(fill)
        assert v.cached == len(texts), shape.__name__
        assert held <= v.cache_bytes, (shape.__name__, held, v.cache_bytes)


def test_the_memo_is_charged_for_long_requests():
    v = world(memo_bytes=1 << 40)
    text = token(1).to_text()
    resources = [f"/data/{hex_(10)}/" + "/".join(hex_(14) for _ in range(60)) for _ in range(2000)]
    v.check(text, "read", "/data/x", "alice")
    before = v.cache_bytes

    def fill():
        for r in resources:
            assert v.check(text, "read", r, "alice").allowed

    held = traced(fill)
    assert held <= v.cache_bytes - before


def test_budgets_hold_under_hostile_tokens():
    texts = [shape(i) for i in range(600) for shape in SHAPES]
    resources = [f"/data/{hex_(10)}/" + "/".join(hex_(14) for _ in range(60)) for _ in range(3000)]
    budget = dict(
        cache_bytes=2 * MIB, caveat_bytes=2 * MIB, memo_bytes=1 * MIB, prefix_bytes=1 * MIB
    )
    v = world(**budget)
    plain = token(0).to_text()

    def flood():
        for t in texts:
            v.verify(t, Request("read", "/data/x", "a3" if "delegate" in t else "alice"))
        for r in resources:
            v.check(plain, "read", r, "alice")

    held = traced(flood)
    assert v.cache_bytes <= sum(budget.values())
    # what tracemalloc sees: the caches, plus the request-validity memo and slack
    assert held <= sum(budget.values()) + 2 * MIB, held


@settings(max_examples=300, deadline=None)
@given(
    pattern=st.lists(st.sampled_from(["a", "b", "*", "**"]), min_size=1, max_size=6).filter(
        lambda p: p.count("**") <= 2
    ),
    resource=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=7),
)
def test_globs_match_like_the_model(pattern, resource):
    glob = Glob.parse("/" + "/".join(pattern))
    path = "/" + "/".join(resource)
    expected = glob_match(path_segments(glob.pattern), path_segments(path))
    for _ in range(12):  # before and after it turns hot (and is compiled)
        assert glob.matches(path) is expected


def test_globs_refuse_what_a_regex_would():
    for pattern in ("/a/*", "/a/**", "/**", "/a/**/b/**", "/a/b"):
        glob = Glob.parse(pattern)
        for bad in ("", "/", "a/b", "/a//b", "/a/", "//a", "/a/b/"):
            assert not glob.matches(bad), (pattern, bad)
        assert not glob.matches(42)  # type: ignore[arg-type]


def test_a_never_seen_glob_compiles_no_regex(monkeypatch):
    compiled = []
    real = re.compile
    monkeypatch.setattr(re, "compile", lambda p, *a: compiled.append(p) or real(p, *a))
    long_ = [Glob.parse(f"/data/*/{'/'.join(hex_(14) for _ in range(60))}") for _ in range(50)]
    for g in long_:
        assert not g.matches("/data/x/y")
    assert compiled == []  # parsing and first matches: segment comparisons only
    short = Glob.parse("/data/*/reports/**")
    for _ in range(20):
        assert short.matches("/data/x/reports/q3")
    assert len(compiled) == 1  # hot and short: compiled once
    for _ in range(20):
        long_[0].matches("/data/x/y")
    assert len(compiled) == 1  # long globs are never compiled
