"""The decision path of the core verifier, step by step, with exact reasons."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capgate import (
    Agent,
    AgentStatus,
    Ceiling,
    DenyCode,
    Request,
    RevocationSet,
    Token,
    TokenIdentifier,
    Verifier,
    format_timestamp,
)

KEY = b"r" * 32
TID = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def world(clock):
    agents = {
        "alice": Agent("alice", Ceiling.parse(["read,write:/data/**"])),
        "bob": Agent("bob", Ceiling.parse(["read:/data/**"])),
    }
    revoked = RevocationSet()
    keys = {"k1": KEY}
    return keys, agents, revoked, Verifier(keys, agents, revoked, clock=clock)


def mint(clock, *caveats, key=KEY, kid="k1", tid=TID, issued=None):
    issued_ms = int((clock.now - 10 if issued is None else issued) * 1000)
    t = Token.mint(key, TokenIdentifier(kid, tid, issued_ms).encode())
    for c in caveats:
        t = t.append_raw(c.encode())
    return t.to_text()


def expires(clock, seconds):
    return f"expires < {format_timestamp(clock.now + seconds)}"


def req(action="read", resource="/data/x", presenter="alice", **ctx):
    return Request(action, resource, presenter, ctx)


def test_allowed_with_everything_in_order(world, clock):
    *_, v = world
    text = mint(clock, "agent = alice", "action in read", "resource /data/*", expires(clock, 60))
    d = v.verify(text, req())
    assert d.allowed and d.code is DenyCode.ALLOWED
    assert d.token_id == TID and d.chain == ("alice",)


@pytest.mark.parametrize(
    "mutate, code, words",
    [
        (lambda t: t[:-4], DenyCode.MALFORMED, "malformed token"),
        (lambda t: "x" + t, DenyCode.MALFORMED, "malformed"),
        (
            lambda t: t[:-2] + ("A" if t[-2] != "A" else "Q") + t[-1],
            DenyCode.BAD_SIGNATURE,
            "signature does not match",
        ),
    ],
)
def test_parse_and_signature_failures(world, clock, mutate, code, words):
    *_, v = world
    d = v.verify(mutate(mint(clock, "agent = alice")), req())
    assert not d.allowed and d.code is code and words in d.reason


def test_signature_is_checked_before_caveats(world, clock):
    *_, v = world
    forged = mint(clock, "agent = alice", "frobnicate = 1", key=b"w" * 32)
    d = v.verify(forged, req())
    assert d.code is DenyCode.BAD_SIGNATURE  # not the unknown caveat


def test_unknown_key_and_foreign_tokens(world, clock):
    *_, v = world
    assert v.verify(mint(clock, "agent = alice", kid="k9"), req()).code is DenyCode.UNKNOWN_KEY
    foreign = Token.mint(KEY, b"keyid").append_raw(b"agent = alice").to_text()
    assert v.verify(foreign, req()).code is DenyCode.UNSUPPORTED


def test_unknown_caveat_denies_and_names_it(world, clock):
    *_, v = world
    d = v.verify(mint(clock, "agent = alice", "budget <= 5"), req())
    assert d.code is DenyCode.BAD_CAVEAT and d.caveat == "budget <= 5"


def test_revoked_token_id_denies(world, clock):
    *_, revoked, v = world
    text = mint(clock, "agent = alice")
    assert v.verify(text, req()).allowed
    revoked.add(TID, clock.now + 60)
    d = v.verify(text, req())
    assert d.code is DenyCode.REVOKED and TID in d.reason


def test_revoked_did_caveat_denies(world, clock):
    *_, revoked, v = world
    did = "f" * 32
    text = mint(clock, "agent = alice", f"did = {did}")
    revoked.add(did, clock.now + 60)
    assert v.verify(text, req()).code is DenyCode.REVOKED


def test_agent_state_is_read_live(world, clock):
    _, agents, _, v = world
    text = mint(clock, "agent = alice")
    agents["alice"] = agents["alice"].with_changes(status=AgentStatus.SUSPENDED)
    assert v.verify(text, req()).code is DenyCode.AGENT_SUSPENDED
    agents["alice"] = agents["alice"].with_changes(status=AgentStatus.ACTIVE)
    assert v.verify(text, req()).allowed
    agents["alice"] = agents["alice"].with_changes(epoch=1, revoked_before_ms=int(clock.now * 1000))
    d = v.verify(text, req())
    assert d.code is DenyCode.AGENT_REVOKED and "epoch 1" in d.reason
    assert v.verify(mint(clock, "agent = alice", issued=clock.now + 1), req()).allowed
    del agents["alice"]
    assert v.verify(text, req()).code is DenyCode.UNKNOWN_AGENT


def test_presenter_must_be_the_holder(world, clock):
    *_, v = world
    text = mint(clock, "agent = alice")
    assert v.verify(text, req(presenter=None)).code is DenyCode.NO_PRESENTER
    assert v.verify(text, req(presenter="")).code is DenyCode.NO_PRESENTER
    d = v.verify(text, req(presenter="bob"))
    assert d.code is DenyCode.NOT_HOLDER and "'bob'" in d.reason


def test_an_extra_agent_caveat_must_agree_with_the_holder(world, clock):
    *_, v = world
    assert v.verify(mint(clock, "agent = alice", "agent = alice"), req()).allowed
    d = v.verify(mint(clock, "agent = alice", "agent = bob"), req(presenter="bob"))
    assert d.code is DenyCode.NOT_HOLDER


def test_token_without_holder_is_refused(world, clock):
    *_, v = world
    assert v.verify(mint(clock, "action in read"), req()).code is DenyCode.UNSUPPORTED


def test_the_current_ceiling_applies_to_live_tokens(world, clock):
    _, agents, _, v = world
    text = mint(clock, "agent = alice")
    assert v.verify(text, req(action="write")).allowed
    agents["alice"] = agents["alice"].with_changes(ceiling=Ceiling.parse(["read:/data/**"]))
    d = v.verify(text, req(action="write"))
    assert d.code is DenyCode.CEILING and "beyond its ceiling" in d.reason
    assert v.verify(text, req(action="read")).allowed


def test_caveats_against_the_clock(world, clock):
    *_, v = world
    text = mint(clock, "agent = alice", expires(clock, 30))
    assert v.verify(text, req()).allowed
    clock.advance(30)
    d = v.verify(text, req())
    assert (
        d.code is DenyCode.CAVEAT_FAILED
        and "expired" in d.reason
        and d.caveat.startswith("expires <")
    )


def test_tokens_from_the_future_deny(world, clock):
    *_, v = world
    assert (
        v.verify(mint(clock, "agent = alice", issued=clock.now + 3600), req()).code
        is DenyCode.FUTURE
    )


@pytest.mark.parametrize(
    "request_, words",
    [
        (req(action="re ad"), "not a valid action"),
        (req(resource="/data/../etc"), "'..' segment"),
        (req(resource="data"), "must start"),
        (Request("read", "/data/x", "alice", {"Bad Key": "v"}), "context key"),
        (Request("read", "/data/x", "alice", {"k": "v" * 5000}), "context value"),
    ],
)
def test_invalid_requests_deny_with_a_reason(world, clock, request_, words):
    *_, v = world
    d = v.verify(mint(clock, "agent = alice"), request_)
    assert d.code is DenyCode.INVALID_REQUEST and words in d.reason


class _Liar(str):
    """A str that claims to equal (and hash like) every valid value it was made to mimic."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash(self.mimic)

    mimic = ""


class _Pairs(dict):  # a mapping whose keys need not be text
    def items(self):
        return self["pairs"]


def test_odd_request_values_deny_and_never_pass_as_remembered_ones(world, clock):
    """What a request's action, resource and context keys were found valid is
    remembered; a value that is not exactly a str is checked in full every time, so
    an unhashable one denies (no exception) and one that lies about equality does not
    pass as a remembered valid one."""
    *_, v = world
    text = mint(clock, "agent = alice")
    assert v.verify(text, req(tool="search")).allowed  # 'read', '/data/x', 'tool' remembered
    liar = type("L", (_Liar,), {"mimic": "read"})("NOT AN ACTION!")
    d = v.verify(text, Request(liar, "/data/x", "alice", {}))
    assert d.code is DenyCode.INVALID_REQUEST and "not a valid action" in d.reason
    liar = type("L", (_Liar,), {"mimic": "/data/x"})("no slash")
    d = v.verify(text, Request("read", liar, "alice", {}))
    assert d.code is DenyCode.INVALID_REQUEST and "must start" in d.reason
    liar = type("L", (_Liar,), {"mimic": "tool"})("Bad Key")
    d = v.verify(text, Request("read", "/data/x", "alice", {liar: "search"}))
    assert d.code is DenyCode.INVALID_REQUEST and "context key" in d.reason
    for odd in (
        Request(["read"], "/data/x", "alice", {}),  # type: ignore[arg-type]
        Request("read", ["/data/x"], "alice", {}),  # type: ignore[arg-type]
        Request("read", "/data/x", "alice", _Pairs(pairs=[(["tool"], "search")])),
    ):
        assert v.verify(text, odd).code is DenyCode.INVALID_REQUEST
    # an ordinary str subclass with a valid value is still a valid request
    assert v.verify(text, Request(type("A", (str,), {})("read"), "/data/x", "alice", {})).allowed


def test_valid_chains_are_cached_and_invalidated(world, clock):
    keys, _, _, v = world
    text = mint(clock, "agent = alice")
    v.verify(text, req())
    assert v.cached == 0 and v.cached_chain(text) is None  # seen once: not kept
    v.verify(text, req())
    assert v.cached == 1  # seen again: kept
    chain = v.cached_chain(text)
    assert chain is not None and chain.holder == "alice"
    v.verify(text[:-3] + "AAA", req())  # invalid ones are not kept
    assert v.cached == 1
    del keys["k1"]  # the key is retired
    v.invalidate()
    assert v.cached == 0
    assert v.verify(text, req()).code is DenyCode.UNKNOWN_KEY


def test_tokens_seen_once_push_out_no_warm_chain(clock):
    agents = {"alice": Agent("alice", Ceiling.parse(["read:/**"]))}
    v = Verifier({"k1": KEY}, agents, RevocationSet(), clock=clock, cache_size=10)
    warm = mint(clock, "agent = alice")
    for _ in range(3):
        assert v.verify(warm, req()).allowed
    misses, held = v.cache_misses, v.cache_bytes
    for i in range(1, 301):  # many more one-shot tokens than the cache holds
        assert v.verify(mint(clock, "agent = alice", tid=f"{i:032x}"), req()).allowed
    assert v.verify(warm, req()).allowed
    assert v.cache_misses == misses + 300  # the warm chain was still kept
    assert v.cached == 1
    # and they left nothing behind but their hashes (at most the cache's entries):
    # no chain, no verified prefix, no memo
    assert v.cache_bytes <= held + 10 * 80


def test_cache_is_bounded(clock):
    agents = {"alice": Agent("alice", Ceiling.parse(["read:/**"]))}
    v = Verifier({"k1": KEY}, agents, RevocationSet(), clock=clock, cache_size=3)
    for i in range(10):
        v.verify(mint(clock, "agent = alice", tid=f"{i:032x}"), req())
    assert v.cached <= 3


def test_huge_garbage_is_denied_cheaply(world, clock):
    *_, v = world
    d = v.verify("A" * 10_000_000, req())
    assert d.code is DenyCode.MALFORMED and "over the limit" in d.reason
    assert v.verify(12345, req()).code is DenyCode.MALFORMED  # type: ignore[arg-type]


@pytest.fixture
def memo_world(clock):
    from capgate import Directory

    agents = Directory(alice=Agent("alice", Ceiling.parse(["read,write:/data/**"])))
    revoked = RevocationSet()
    keys = {"k1": KEY}
    return keys, agents, revoked, Verifier(keys, agents, revoked, clock=clock, memo_size=100)


def test_memo_needs_a_directory(clock):
    with pytest.raises(TypeError):
        Verifier({}, {}, RevocationSet(), clock=clock, memo_size=10)


def test_unhashable_values_deny_through_the_memo_and_the_chain_cache(memo_world, clock):
    """Values no dict can hold (an in-process caller's mistake) reach the memo's and
    the chain cache's lookups first; they deny like any other bad input."""
    *_, v = memo_world
    text = mint(clock, "agent = alice")
    assert v.check(text, "read", "/data/x", "alice").allowed
    assert v.check(text, "read", "/data/x", "alice").allowed  # kept and memoised
    bad_token = v.check(["t"], "read", "/data/x", "alice")  # type: ignore[arg-type]
    assert bad_token.code is DenyCode.MALFORMED and "must be text" in bad_token.reason
    assert v.verify({}, req()).code is DenyCode.MALFORMED  # type: ignore[arg-type]
    for action, resource, presenter in (
        (["read"], "/data/x", "alice"),
        ("read", ["/data/x"], "alice"),
    ):
        d = v.check(text, action, resource, presenter)  # type: ignore[arg-type]
        assert d.code is DenyCode.INVALID_REQUEST, d
    d = v.check(text, "read", "/data/x", ["alice"])  # type: ignore[arg-type]
    assert not d.allowed and d.code is DenyCode.NOT_HOLDER


def test_memoized_allows_end_at_any_change(memo_world, clock):
    keys, agents, revoked, v = memo_world
    text = mint(clock, "agent = alice", expires(clock, 60))
    check = lambda: v.check(text, "read", "/data/x", "alice")  # noqa: E731
    assert check().allowed and check() is check()  # the memo answers
    revoked.add(TID, clock.now + 60)
    assert check().code is DenyCode.REVOKED
    revoked.prune(clock.now + 3600 * 2)
    assert check().allowed
    agents["alice"] = agents["alice"].with_changes(status=AgentStatus.SUSPENDED)
    assert check().code is DenyCode.AGENT_SUSPENDED
    agents["alice"] = agents["alice"].with_changes(status=AgentStatus.ACTIVE)
    assert check().allowed
    agents["alice"] = agents["alice"].with_changes(ceiling=Ceiling.parse(["write:/data/**"]))
    assert check().code is DenyCode.CEILING
    agents.update(alice=agents["alice"].with_changes(ceiling=Ceiling.parse(["read:/**"])))
    assert check().allowed
    del keys["k1"]
    v.invalidate()
    assert check().code is DenyCode.UNKNOWN_KEY
    keys["k1"] = KEY
    v.invalidate()
    assert check().allowed
    clock.advance(60)
    assert check().code is DenyCode.CAVEAT_FAILED
    agents.pop("alice")
    assert check().code is DenyCode.UNKNOWN_AGENT


def test_memo_is_per_request_and_skips_context(memo_world, clock):
    *_, v = memo_world
    text = mint(clock, "agent = alice", "ctx tool = search")
    assert v.check(text, "read", "/data/x", "alice", {"tool": "search"}).allowed
    assert not v.check(text, "read", "/data/x", "alice", {"tool": "shell"}).allowed
    assert not v.check(text, "read", "/data/x", "alice").allowed
    plain = mint(clock, "agent = alice", "resource /data/x")
    assert v.check(plain, "read", "/data/x", "alice").allowed
    assert not v.check(plain, "read", "/data/y", "alice").allowed
    assert not v.check(plain, "read", "/data/x", "bob").allowed


def test_directory_versions_every_change():
    from capgate import Directory

    d = Directory()
    a = Agent("a", Ceiling())
    seen = [d.version]
    for change in (
        lambda: d.__setitem__("a", a),
        lambda: d.update(b=a),
        lambda: d.pop("b"),
        lambda: d.setdefault("c", a),
        lambda: d.__delitem__("c"),
        lambda: d.popitem(),
        lambda: d.__ior__({"e": a}),
        d.clear,
    ):
        change()
        assert d.version > seen[-1]
        seen.append(d.version)


def test_revocation_set_forgets_only_expired_tokens():
    rs = RevocationSet()
    rs.add("a" * 32, 10_000.0)
    rs.add("b" * 32, 20_000.0)
    rs.add("a" * 32, 5_000.0)  # already there with a later expiry: unchanged
    assert len(rs) == 2 and rs.is_revoked("a" * 32)
    assert rs.prune(9_000.0) == 0 and len(rs) == 2
    assert rs.prune(10_800.0) == 1  # the hour holding 10,000 s is over
    assert not rs.is_revoked("a" * 32) and rs.is_revoked("b" * 32)
    assert rs.prune(30_000.0) == 1 and len(rs) == 0


def test_memo_follows_the_clock_both_ways(memo_world, clock):
    *_, v = memo_world
    start = clock.now
    text = mint(
        clock, "agent = alice", f"not-before > {format_timestamp(start - 5)}", expires(clock, 60)
    )
    assert v.check(text, "read", "/data/x", "alice").allowed
    clock.now = start - 10  # the wall clock steps back before the token's window
    assert v.check(text, "read", "/data/x", "alice").code is DenyCode.CAVEAT_FAILED
    clock.now = start
    assert v.check(text, "read", "/data/x", "alice").allowed


def test_a_hostile_caveat_that_crashes_the_reader_still_denies(world, clock, monkeypatch):
    import capgate._verifier as verifier_module

    *_, v = world

    def boom(cid):
        raise ValueError("unexpected")

    monkeypatch.setattr(verifier_module, "compile_new_caveat", boom)
    d = v.verify(mint(clock, "agent = alice", "resource /data/never-seen-before"), req())
    assert not d.allowed and d.code is DenyCode.MALFORMED and "ValueError" in d.reason


def test_revoking_again_with_a_later_expiry_keeps_the_entry_longer():
    rs = RevocationSet()
    rs.add("c" * 32, 10_000.0)
    rs.add("c" * 32, 50_000.0)  # a longer-lived token carries the same id
    rs.add("c" * 32, 5_000.0)  # never shortened
    assert rs.prune(20_000.0) == 0 and rs.is_revoked("c" * 32)
    assert rs.prune(60_000.0) == 1 and not rs.is_revoked("c" * 32)


def test_tokens_that_differ_only_in_expiry_each_keep_their_own(world, clock):
    """Undelegated tokens of one grant share what their other caveats say; each is still
    decided by its own expiry, and a deny names its own first failing caveat."""
    *_, v = world
    grant = ("agent = alice", "action in read", "resource /data/reports/**")
    soon = [mint(clock, *grant, expires(clock, 60), tid=f"{i:032x}") for i in range(1, 4)]
    later = mint(clock, *grant, expires(clock, 7200), tid=f"{9:032x}")
    for text in [*soon, later]:
        assert v.verify(text, req(resource="/data/reports/q")).allowed
    clock.advance(120)
    for text in soon:
        d = v.verify(text, req(resource="/data/reports/q"))
        assert d.code is DenyCode.CAVEAT_FAILED and d.caveat.startswith("expires < ")
    assert v.verify(later, req(resource="/data/reports/q")).allowed
    # both an expiry and the resource fail: the first in the token's order is named
    first = mint(clock, "agent = alice", expires(clock, -1), "resource /data/reports/**")
    other = mint(
        clock, "agent = alice", "resource /data/reports/**", expires(clock, -1), tid=f"{8:032x}"
    )
    for _ in range(2):  # read afresh, then from the cache
        d = v.verify(first, req(resource="/data/x"))
        assert d.code is DenyCode.CAVEAT_FAILED and d.caveat.startswith("expires < ")
        d = v.verify(other, req(resource="/data/x"))
        assert d.code is DenyCode.CAVEAT_FAILED and d.caveat == "resource /data/reports/**"


def test_an_expiry_in_another_rfc3339_form_is_read_in_full(world, clock):
    *_, v = world
    at = format_timestamp(clock.now + 60).replace("Z", "+00:00")
    text = mint(clock, "agent = alice", f"expires < {at}")
    assert v.verify(text, req()).allowed
    clock.advance(120)
    assert v.verify(text, req()).code is DenyCode.CAVEAT_FAILED


_POOL = (
    "action in read",
    "action in read,write",
    "resource /data/**",
    "resource /data/reports/*",
    "resource /data/x",
    "not-before > 2020-01-01T00:00:00Z",
    "not-before > 2030-01-01T00:00:00Z",
    "ctx tool in search,fetch",
    "ctx limit <= 10",
)


@settings(max_examples=200, deadline=None, database=None)
@given(
    caveats=st.lists(st.sampled_from(_POOL), max_size=5),
    expiries=st.lists(st.integers(-3600, 3600), min_size=1, max_size=2),
    at=st.integers(0, 6),
    action=st.sampled_from(("read", "write")),
    resource=st.sampled_from(("/data/x", "/data/reports/q", "/other")),
    ctx=st.sampled_from(({}, {"tool": "search"}, {"limit": "5"}, {"limit": "50"})),
    v1=st.booleans(),
)
def test_a_token_read_through_a_shared_body_is_decided_as_one_read_in_full(
    caveats, expiries, at, action, resource, ctx, v1
):
    """The same decision (allow, code, caveat named) whether a token's caveats are read
    in full or through the body a sibling of the same grant left behind."""
    from conftest import FakeClock

    clock = FakeClock()
    agents = {"alice": Agent("alice", Ceiling.parse(["read,write:/data/**"]))}
    body = ["agent = alice", *caveats]
    exp = [expires(clock, s) for s in expiries]
    at = min(at, len(body))
    token = mint(clock, *body[:at], *exp, *body[at:], tid=f"{1:032x}")
    if v1:  # libmacaroons' older form, read by the strict parser
        token = Token.parse(token).to_text(format="v1")
    sibling = mint(clock, *body, expires(clock, 99), tid=f"{2:032x}")
    request = Request(action, resource, "alice", ctx)
    full = Verifier({"k1": KEY}, agents, RevocationSet(), clock=clock)
    shared = Verifier({"k1": KEY}, agents, RevocationSet(), clock=clock)
    shared.verify(sibling, request)  # leaves the body of these caveats behind
    for _ in range(3):  # first sighting, second (kept), then from the cache
        a, b = full.verify(token, request), shared.verify(token, request)
        assert (a.allowed, a.code, a.caveat) == (b.allowed, b.code, b.caveat)
        full = Verifier({"k1": KEY}, agents, RevocationSet(), clock=clock)


def test_a_v1_token_read_through_a_shared_body_names_its_failed_caveat(world, clock):
    """libmacaroons' V1 form takes the same shared-body reading as V2; a deny that
    names a caveat reads it again in that form."""
    *_, v = world
    v2 = Token.parse(mint(clock, "agent = alice", "action in read", expires(clock, 60)))
    v1 = v2.to_text(format="v1")
    for text in (v2.to_text(), v1, v1, v1):  # the body, then V1 afresh, kept, cached
        assert v.verify(text, req()).allowed
        d = v.verify(text, req(action="write"))
        assert d.code is DenyCode.CAVEAT_FAILED and d.caveat == "action in read"


_NOW = 1_800_000_000.0
_VALID = (
    Token.mint(KEY, TokenIdentifier("k1", TID, int(_NOW * 1000) - 10_000).encode())
    .attenuate("agent = alice")
    .to_text()
)
_ODD = st.one_of(
    st.none(),
    st.integers(),
    st.binary(max_size=6),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=2), st.text(max_size=2), max_size=1),
    st.text(max_size=10),
    st.sampled_from(("read", "/data/x", "alice")),
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.just(_VALID) | _ODD, _ODD, _ODD, _ODD, st.booleans())
def test_any_python_values_are_decided_never_raised(token, action, resource, presenter, memo):
    """Whatever an in-process caller passes, ``check`` and ``verify`` answer with a
    decision, and allow only the valid token, presented as text by its holder."""
    from capgate import Directory

    agents = Directory(alice=Agent("alice", Ceiling.parse(["read:/data/**"])))
    v = Verifier(
        {"k1": KEY}, agents, RevocationSet(), clock=lambda: _NOW, memo_size=100 if memo else 0
    )
    for _ in range(2):  # the second time through the caches and the memo
        for d in (
            v.check(token, action, resource, presenter),
            v.verify(token, Request(action, resource, presenter, {})),
        ):
            if d.allowed:
                assert token == _VALID and (action, resource, presenter) == (
                    "read",
                    "/data/x",
                    "alice",
                )
