"""Approval caveats and their discharges in the core: the caveat's format and grammar,
adding one offline, the verifier's decisions with and without discharges (each deny
code and what it names), binding to one token and one request, agents' standing
rules, and interoperation with pymacaroons (it reads and verifies both)."""

from __future__ import annotations

import pymacaroons
import pytest

from capgate import (
    APPROVAL_LOCATION,
    Agent,
    ApprovalRule,
    CaveatSyntaxError,
    Ceiling,
    DenyCode,
    Request,
    RevocationSet,
    Token,
    TokenIdentifier,
    Verifier,
    append_server_delegation,
    bind_signature,
    describe,
    format_timestamp,
    mint_discharge,
    parse_approval_caveat,
    parse_condition,
    request_digest,
    token_digest,
)

KEY = b"r" * 32
TID = "0123456789abcdef0123456789abcdef"
AID = "a" * 32


@pytest.fixture
def world(clock):
    agents = {
        "payer": Agent("payer", Ceiling.parse(["pay,read:/invoices/**"])),
        "clerk": Agent("clerk", Ceiling.parse(["pay,read:/invoices/**"])),
    }
    return agents, Verifier({"k1": KEY}, agents, RevocationSet(), clock=clock)


def issue(clock, holder="payer", tid=TID):
    t = Token.mint(KEY, TokenIdentifier("k1", tid, int((clock.now - 10) * 1000)).encode())
    for c in (
        f"agent = {holder}",
        "action in pay,read",
        "resource /invoices/*",
        f"expires < {format_timestamp(clock.now + 3600)}",
    ):
        t = t.append_raw(c.encode())
    return t


def pay(amount="4200", presenter="payer", resource="/invoices/8", **ctx):
    return Request("pay", resource, presenter, {"amount": amount, **ctx})


def discharges_for(verifier, token, request, clock, aid=AID, ttl=300):
    """What the approval service hands out for ``request``: a bound discharge per caveat."""
    st = verifier.analyse(token.to_text())
    digest = request_digest(request.action, request.resource, request.presenter, request.ctx)
    return [
        mint_discharge(k, a.cid, aid, digest, clock.now + ttl, st.signature).to_text()
        for a, k in zip(st.approvals, st.approval_keys, strict=True)
    ]


# -- the caveat ---------------------------------------------------------------------------


def test_an_approval_caveat_is_a_standard_third_party_caveat(clock):
    t = issue(clock).require_approval("ctx amount > 1000", approvers=2)
    (raw,) = [c for c in t.raw.caveats if c.vid is not None]
    assert raw.location == APPROVAL_LOCATION.encode() == b"capgate:approval"
    a = parse_approval_caveat(raw.cid)
    assert a.approvers == 2 and a.condition == "ctx amount > 1000" and len(a.nonce) == 16
    assert a.text == f"approval n=2 nonce={a.nonce} when ctx amount > 1000"
    assert len(raw.vid) == 24 + 16 + 32  # secretbox nonce, tag, the 32-byte key
    assert t.caveats == issue(clock).caveats  # first-party caveats are unchanged
    assert t.third_party_caveats == ((APPROVAL_LOCATION, a.text),)
    # V1 and V2, every text form, read it back the same
    for text in (t.to_text(), t.to_text("v1")):
        assert Token.parse(text).raw.caveats == t.raw.caveats


def test_the_approval_key_is_sealed_in_the_verification_id_the_standard_way(clock, world):
    from nacl.secret import SecretBox

    _, v = world
    base = issue(clock)
    t = base.require_approval("action in pay")
    st = v.analyse(t.to_text())
    (raw,) = [c for c in t.raw.caveats if c.vid is not None]
    assert SecretBox(base.signature).decrypt(raw.vid) == st.approval_keys[0]


@pytest.mark.parametrize(
    "condition, request_, needed",
    [
        ("", pay("1"), True),  # no condition: every request
        ("ctx amount > 1000", pay("1000"), False),
        ("ctx amount > 1000", pay("1000.01"), True),
        ("ctx amount >= 1000", pay("1000"), True),
        ("ctx amount < 10", pay("9.99"), True),
        ("ctx amount <= 10", pay("11"), False),
        ("ctx amount > 1000", Request("pay", "/invoices/8", "payer", {}), True),  # missing: met
        ("ctx amount > 1000", pay("lots"), True),  # not a number: met (fail closed)
        ("ctx payee = acme", pay(payee="acme"), True),
        ("ctx payee in acme,initech", pay(payee="globex"), False),
        ("action in pay", Request("read", "/invoices/8", "payer", {}), False),
        ("resource /invoices/**", pay(), True),
        ("action in pay and ctx amount > 1000", pay("50"), False),
        ("action in pay and ctx amount > 1000", pay("5000"), True),
        ("ctx memo = and and action in pay", pay(memo="and"), True),  # a value may be "and"
    ],
)
def test_conditions_say_which_requests_need_approval(condition, request_, needed):
    assert ApprovalRule(condition).needed(request_) is needed


@pytest.mark.parametrize(
    "bad",
    [
        "amount > 1000",
        "ctx amount >> 1000",
        "ctx amount > 1e3",
        "ctx Amount > 1",
        "action in pay and",
        "and action in pay",
        "action in pay or resource /x",
        "action in pay  and resource /x",
        "resource invoices",
        "agent = payer",
        "expires < 2030-01-01T00:00:00Z",
        " and ".join(["action in pay"] * 9),
    ],
)
def test_malformed_conditions_are_refused(bad):
    with pytest.raises(CaveatSyntaxError):
        parse_condition(bad)
    with pytest.raises(CaveatSyntaxError):
        Token.mint(KEY, b"cg1:k1:" + TID.encode() + b":1").require_approval(bad)


@pytest.mark.parametrize("n", [0, 10, -1, True])
def test_an_approval_asks_one_to_nine_approvers(clock, n):
    with pytest.raises(CaveatSyntaxError):
        issue(clock).require_approval("", approvers=n)


@pytest.mark.parametrize(
    "cid, code",
    [
        (b"approval n=1 nonce=0123456789abcdef when ctx amount >> 3", DenyCode.BAD_CAVEAT),
        (b"approval n=0 nonce=0123456789abcdef", DenyCode.BAD_CAVEAT),
        (b"approve me", DenyCode.BAD_CAVEAT),
        (b"\xff\xfe", DenyCode.BAD_CAVEAT),
    ],
)
def test_a_malformed_approval_caveat_id_denies(clock, world, cid, code):
    _, v = world
    t = issue(clock).append_third_party(cid, b"v" * 72, APPROVAL_LOCATION)
    assert v.verify(t.to_text(), pay("1")).code is code


def test_any_other_third_party_caveat_still_fails_closed(clock, world):
    _, v = world
    cid = b"approval n=1 nonce=0123456789abcdef"
    for location in ("https://auth.example.org", "capgate", ""):
        t = issue(clock).append_third_party(cid, b"v" * 72, location)
        d = v.verify(t.to_text(), pay("1"))
        assert d.code is DenyCode.UNSUPPORTED, location
        assert "only capgate's approvals" in d.reason


def test_inspect_shows_the_approval_caveat_where_it_was_added(clock):
    t = issue(clock).require_approval("ctx amount > 1000")
    d = describe(t)
    assert d.problems == []
    assert d.hops[0].restrictions[-1].startswith("approval n=1 nonce=")
    assert d.caveats[-1] == d.hops[0].restrictions[-1]


# -- the verifier -------------------------------------------------------------------------


def test_a_request_the_caveat_does_not_meet_passes_without_a_discharge(clock, world):
    _, v = world
    t = issue(clock).require_approval("ctx amount > 1000").to_text()
    d = v.verify(t, pay("999"))
    assert d.allowed and d.approvals == ()


def test_a_request_it_meets_is_denied_until_a_discharge_comes(clock, world):
    _, v = world
    t = issue(clock).require_approval("ctx amount > 1000")
    d = v.verify(t.to_text(), pay())
    assert d.code is DenyCode.APPROVAL_REQUIRED and not d.allowed
    assert d.caveat is not None and d.caveat.startswith("approval n=1 ")
    assert "needs approval by an approver" in d.reason
    allowed = v.verify(t.to_text(), pay(), discharges_for(v, t, pay(), clock))
    assert allowed.allowed and allowed.approvals == (AID,)
    assert allowed.reason == f"allowed with approval {AID}"


@pytest.mark.parametrize(
    "other",
    [
        pay("4201"),
        pay(resource="/invoices/9"),
        pay(presenter="clerk"),
        pay(note="x"),
        Request("read", "/invoices/8", "payer", {"amount": "4200"}),
    ],
)
def test_a_discharge_is_for_one_request(clock, world, other):
    _, v = world
    t = issue(clock).require_approval("")
    ds = discharges_for(v, t, pay(), clock)
    d = v.verify(t.to_text(), other, ds)
    if other.presenter != "payer":
        assert d.code is DenyCode.NOT_HOLDER  # the holder binding comes first
    else:
        assert d.code is DenyCode.APPROVAL_INVALID and "for another request" in d.reason


def test_an_expired_discharge_denies(clock, world):
    _, v = world
    t = issue(clock).require_approval("")
    ds = discharges_for(v, t, pay(), clock, ttl=60)
    clock.advance(60)
    d = v.verify(t.to_text(), pay(), ds)
    assert d.code is DenyCode.APPROVAL_EXPIRED and "expired at" in d.reason


def test_a_discharge_cannot_be_moved_to_another_token(clock, world):
    _, v = world
    t1 = issue(clock).require_approval("")
    t2 = issue(clock, tid="f" * 32).require_approval("")
    ds = discharges_for(v, t1, pay(), clock)
    assert v.verify(t2.to_text(), pay(), ds).code is DenyCode.APPROVAL_REQUIRED  # another cid
    # the same caveat, narrowed further: another signature, so the binding fails
    t1b = t1.attenuate("ctx amount in 4200")
    d = v.verify(t1b.to_text(), pay(), ds)
    assert d.code is DenyCode.APPROVAL_INVALID and "not bound to this token" in d.reason
    # rebinding needs the unbound signature, which only the minter had
    raw = Token.parse(ds[0]).raw
    forged = Token(raw._replace(signature=bind_signature(t1b.signature, raw.signature)))
    assert v.verify(t1b.to_text(), pay(), [forged.to_text()]).code is DenyCode.APPROVAL_INVALID


def test_a_discharge_minted_with_another_key_denies(clock, world):
    _, v = world
    t = issue(clock).require_approval("")
    st = v.analyse(t.to_text())
    cid = st.approvals[0].cid
    digest = request_digest("pay", "/invoices/8", "payer", {"amount": "4200"})
    wrong = mint_discharge(b"k" * 32, cid, AID, digest, clock.now + 60, st.signature)
    assert v.verify(t.to_text(), pay(), [wrong.to_text()]).code is DenyCode.APPROVAL_INVALID


@pytest.mark.parametrize("change", ["append", "drop", "unknown", "third-party", "location"])
def test_a_tampered_discharge_denies(clock, world, change):
    _, v = world
    t = issue(clock).require_approval("")
    raw = Token.parse(discharges_for(v, t, pay(), clock)[0]).raw
    if change == "append":
        bad = Token(raw).append_raw(b"uses <= 9")
    elif change == "drop":
        bad = Token(raw._replace(caveats=raw.caveats[:2]))
    elif change == "unknown":
        bad = Token(raw._replace(caveats=(*raw.caveats[:2], raw.caveats[2]._replace(cid=b"x y z"))))
    elif change == "third-party":
        bad = Token(raw).append_third_party(b"x", b"y", APPROVAL_LOCATION)
    else:
        bad = Token(raw._replace(location=b"elsewhere"))
    d = v.verify(t.to_text(), pay(), [bad.to_text()])
    assert d.code is DenyCode.APPROVAL_INVALID, d


def test_garbage_and_too_many_discharges_deny_never_crash(clock, world):
    _, v = world
    t = issue(clock).require_approval("").to_text()
    for ds in (["not a macaroon"], [""], ["AgEC"], ["x"] * 9):
        assert v.verify(t, pay(), ds).code is DenyCode.APPROVAL_INVALID


def test_every_caveat_the_request_meets_needs_its_discharge(clock, world):
    _, v = world
    t = issue(clock).require_approval("ctx amount > 1000").require_approval("action in pay")
    ds = discharges_for(v, t, pay(), clock)
    assert v.verify(t.to_text(), pay(), ds).approvals == (AID,)  # one approval, both caveats
    assert v.verify(t.to_text(), pay(), ds[:1]).code is DenyCode.APPROVAL_REQUIRED
    small = discharges_for(v, t, pay("5"), clock)
    assert v.verify(t.to_text(), pay("5"), small[1:]).allowed  # only the second applies


def test_approval_caveats_survive_delegation_and_further_caveats(clock, world):
    _, v = world
    t = issue(clock).require_approval("ctx amount > 1000")
    t, _ = append_server_delegation(t, KEY, "clerk", int(clock.now * 1000))
    t = t.attenuate("resource /invoices/8")
    req = pay(presenter="clerk")
    assert v.verify(t.to_text(), req).code is DenyCode.APPROVAL_REQUIRED
    assert v.verify(t.to_text(), req, discharges_for(v, t, req, clock)).allowed


def test_a_caveat_named_twice_is_malformed(clock, world):
    _, v = world
    t = issue(clock).require_approval("")
    raw = next(c for c in t.raw.caveats if c.vid is not None)
    twice = t.append_third_party(raw.cid, raw.vid, APPROVAL_LOCATION)
    assert v.verify(twice.to_text(), pay()).code is DenyCode.MALFORMED


def test_a_tampered_token_still_denies_as_a_bad_signature(clock, world):
    _, v = world
    t = issue(clock).require_approval("")
    raw = t.raw
    cav = raw.caveats[-1]
    other = cav._replace(vid=bytes(72))  # the verification id is signed too
    tampered = Token(raw._replace(caveats=(*raw.caveats[:-1], other)))
    assert v.verify(tampered.to_text(), pay("1")).code is DenyCode.BAD_SIGNATURE


# -- agents' standing rules ---------------------------------------------------------------


def test_an_agents_rule_denies_a_token_without_a_caveat_for_it(clock, world):
    agents, v = world
    agents["payer"] = agents["payer"].with_changes(
        approvals=(ApprovalRule("ctx amount > 1000", 2),)
    )
    plain = issue(clock).to_text()
    assert v.verify(plain, pay("10")).allowed  # the rule does not apply
    d = v.verify(plain, pay())
    assert d.code is DenyCode.APPROVAL_REQUIRED and d.caveat is None
    assert "agent 'payer' needs approval by 2" in d.reason
    weak = issue(clock).require_approval("ctx amount > 1000", approvers=1)
    assert v.verify(weak.to_text(), pay()).caveat is None  # one approver is not two
    strong = issue(clock).require_approval("", approvers=3)
    d = v.verify(strong.to_text(), pay())
    assert d.code is DenyCode.APPROVAL_REQUIRED and d.caveat is not None  # the caveat's turn
    assert v.verify(strong.to_text(), pay(), discharges_for(v, strong, pay(), clock)).allowed


def test_a_delegators_rule_binds_the_tokens_below_it(clock, world):
    agents, v = world
    agents["payer"] = agents["payer"].with_changes(approvals=(ApprovalRule("action in pay"),))
    t, _ = append_server_delegation(issue(clock), KEY, "clerk", int(clock.now * 1000))
    assert v.verify(t.to_text(), pay(presenter="clerk")).code is DenyCode.APPROVAL_REQUIRED


def test_the_memo_never_keeps_an_allow_that_rests_on_an_approval(clock):
    agents = {"payer": Agent("payer", Ceiling.parse(["pay,read:/invoices/**"]))}
    from capgate import Directory

    directory = Directory(agents)
    v = Verifier({"k1": KEY}, directory, RevocationSet(), clock=clock, memo_size=100)
    t = issue(clock).require_approval("action in pay")
    req = Request("pay", "/invoices/8", "payer", {})
    ds = discharges_for(v, t, req, clock)
    assert v.verify(t.to_text(), req, ds).allowed
    assert v.verify(t.to_text(), req).code is DenyCode.APPROVAL_REQUIRED
    assert v.verify(t.to_text(), Request("read", "/invoices/8", "payer", {})).allowed


# -- other libraries ----------------------------------------------------------------------


def test_pymacaroons_reads_the_token_and_its_discharge_and_verifies_them(clock, world):
    _, v = world
    t = issue(clock).require_approval("ctx amount > 1000")
    ds = discharges_for(v, t, pay(), clock)
    m = pymacaroons.Macaroon.deserialize(t.to_text())
    dm = pymacaroons.Macaroon.deserialize(ds[0])
    (third,) = m.third_party_caveats()
    assert third.location == APPROVAL_LOCATION
    assert third.caveat_id_bytes == dm.identifier_bytes
    assert [c.caveat_id_bytes for c in dm.first_party_caveats()][
        1
    ] == b"request = " + request_digest("pay", "/invoices/8", "payer", {"amount": "4200"}).encode()
    # with the root key, pymacaroons checks the whole chain, the discharge and its binding
    checker = pymacaroons.Verifier()
    checker.satisfy_general(lambda predicate: True)
    assert checker.verify(m, KEY, [dm])
    # and refuses the discharge beside another token
    other = pymacaroons.Macaroon.deserialize(t.attenuate("resource /invoices/8").to_text())
    with pytest.raises(pymacaroons.exceptions.MacaroonInvalidSignatureException):
        checker.verify(other, KEY, [dm])
    # pymacaroons attenuates it, and capgate reads its text
    narrowed = m.copy()
    narrowed.add_first_party_caveat("resource /invoices/8")
    assert Token.parse(narrowed.serialize()).third_party_caveats == t.third_party_caveats


def test_the_store_keeps_a_digest_of_the_signature_not_the_signature(clock):
    t = issue(clock)
    assert token_digest(t.signature) != t.signature.hex()
    assert len(token_digest(t.signature)) == 64
