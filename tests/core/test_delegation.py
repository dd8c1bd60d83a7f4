"""Delegation: holder binding, proofs, depth, cascades — and a thief's attempts."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from capgate import (
    Agent,
    AgentStatus,
    Ceiling,
    DenyCode,
    RawMacaroon,
    Request,
    RevocationSet,
    Token,
    TokenIdentifier,
    Verifier,
    append_server_delegation,
    delegate_offline,
    delegation_id,
    delegation_message,
    public_key_id,
)
from capgate._token import chain_signature, derive_key

KEY = b"r" * 32
TID = "0123456789abcdef0123456789abcdef"


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@pytest.fixture
def keys():
    return {name: Ed25519PrivateKey.generate() for name in ("orch", "res", "sum", "thief")}


@pytest.fixture
def world(clock, keys):
    def agent(name, grants="read,write:/data/**", depth=3):
        pub = raw_public(keys[name])
        return Agent(name, Ceiling.parse([grants]), max_depth=depth).with_changes(
            public_keys={public_key_id(pub): pub}
        )

    agents = {n: agent(n) for n in ("orch", "res", "sum", "thief")}
    revoked = RevocationSet()
    return agents, revoked, Verifier({"k1": KEY}, agents, revoked, clock=clock)


def root(clock, holder="orch", tid=TID) -> Token:
    t = Token.mint(KEY, TokenIdentifier("k1", tid, int(clock.now * 1000) - 5000).encode())
    return t.attenuate(f"agent = {holder}").attenuate("action in read,write")


def at(clock) -> int:
    return int(clock.now * 1000) - 1000


def allowed(v, token, who, action="read", resource="/data/x"):
    return v.verify(token.to_text(), Request(action, resource, who))


def three_hops(clock, keys, offline=False):
    """orch → res → sum, each hop narrower."""
    t0 = root(clock)
    if offline:
        t1, d1 = delegate_offline(t0, keys["orch"], "res", at(clock))
    else:
        t1, d1 = append_server_delegation(t0, KEY, "res", at(clock))
    t1 = t1.attenuate("resource /data/**")
    if offline:
        t2, d2 = delegate_offline(t1, keys["res"], "sum", at(clock))
    else:
        t2, d2 = append_server_delegation(t1, KEY, "sum", at(clock))
    t2 = t2.attenuate("action in read")
    return t0, (t1, d1), (t2, d2)


@pytest.mark.parametrize("offline", [False, True])
def test_each_hop_is_bound_to_its_holder(world, clock, keys, offline):
    *_, v = world
    t0, (t1, _), (t2, _) = three_hops(clock, keys, offline)
    assert allowed(v, t0, "orch").allowed
    assert allowed(v, t1, "res").allowed
    d = allowed(v, t2, "sum")
    assert d.allowed and d.chain == ("orch", "res", "sum")
    assert allowed(v, t2, "sum", action="write").code is DenyCode.CAVEAT_FAILED
    for who in ("orch", "res", "thief"):
        assert allowed(v, t2, who).code is DenyCode.NOT_HOLDER
    assert allowed(v, t1, "orch").code is DenyCode.NOT_HOLDER


def test_thief_cannot_rebind_without_a_proof(world, clock, keys):
    *_, v = world
    t0 = root(clock)
    fake = base64.urlsafe_b64encode(b"\x00" * 32).rstrip(b"=").decode()
    did = delegation_id(t0.signature, "thief", at(clock))  # the right id, a made-up proof
    forged = t0.append_raw(f"delegate = thief did={did} at={at(clock)} proof=srv:{fake}".encode())
    d = allowed(v, forged, "thief")
    assert d.code is DenyCode.BAD_DELEGATION and "no valid proof from 'orch'" in d.reason


def _signed_hop(token: Token, key, to: str, at_ms: int, did: str) -> Token:
    """A hop signed with a real registered key, but with a did of the signer's choosing."""
    unsigned = f"delegate = {to} did={did} at={at_ms}"
    sig = key.sign(delegation_message(token.signature, unsigned.encode()))
    kid = public_key_id(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    b64sig = base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    return token.append_raw(f"{unsigned} proof=ed25519:{kid}:{b64sig}".encode())


def test_a_delegation_id_cannot_be_chosen_even_with_a_valid_signature(world, clock, keys):
    """The holder signs its own hop, but names a victim's id: the id is not derived, so
    the hop denies, and revoking it could never reach the victim's tree."""
    *_, v = world
    victim_id = "f" * 32
    forged = _signed_hop(root(clock), keys["orch"], "res", at(clock), victim_id)
    d = allowed(v, forged, "res")
    assert d.code is DenyCode.BAD_DELEGATION and "does not derive" in d.reason
    honest = _signed_hop(
        root(clock),
        keys["orch"],
        "res",
        at(clock),
        delegation_id(root(clock).signature, "res", at(clock)),
    )
    assert allowed(v, honest, "res").allowed


def test_a_lineage_that_names_an_id_twice_is_malformed(world, clock, keys):
    *_, v = world
    t0 = root(clock)
    for twice in (
        t0.attenuate(f"did = {TID}"),
        t0.attenuate(f"did = {'e' * 32}").attenuate(f"did = {'e' * 32}"),
    ):
        d = allowed(v, twice, "orch")
        assert d.code is DenyCode.MALFORMED and "twice" in d.reason


def test_thief_cannot_reuse_a_proof_from_another_token(world, clock, keys):
    *_, v = world
    other, _ = append_server_delegation(root(clock, tid="f" * 32), KEY, "thief", at(clock))
    stolen_caveat = other.caveats[-1]
    victim = root(clock)
    d = allowed(v, victim.append_raw(stolen_caveat.encode()), "thief")
    assert d.code is DenyCode.BAD_DELEGATION


def test_thief_cannot_move_a_proof_to_another_position(world, clock, keys):
    *_, v = world
    t1, _ = append_server_delegation(root(clock), KEY, "res", at(clock))
    moved = root(clock).attenuate("resource /data/**").append_raw(t1.caveats[-1].encode())
    assert allowed(v, moved, "res").code is DenyCode.BAD_DELEGATION


def test_thief_cannot_sign_with_its_own_key(world, clock, keys):
    *_, v = world
    t0 = root(clock)  # held by orch; the thief signs the hop with its own registered key
    forged, _ = delegate_offline(t0, keys["thief"], "thief", at(clock))
    d = allowed(v, forged, "thief")
    assert d.code is DenyCode.BAD_DELEGATION and "has not registered" in d.reason


def test_forged_ed25519_signature_is_refused(world, clock, keys):
    *_, v = world
    good, _ = delegate_offline(root(clock), keys["orch"], "res", at(clock))
    caveat = good.caveats[-1]
    head, sig = caveat.rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[0] ^= 1
    tampered = head + ":" + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    d = allowed(v, root(clock).append_raw(tampered.encode()), "res")
    assert d.code is DenyCode.BAD_DELEGATION


def test_reordered_or_dropped_caveats_break_the_signature(world, clock, keys):
    *_, v = world
    _, _, (t2, _) = three_hops(clock, keys)
    raw = t2.raw
    for caveats in (
        raw.caveats[::-1],
        raw.caveats[:-1],
        raw.caveats[:2] + raw.caveats[3:],
        (raw.caveats[1], raw.caveats[0], *raw.caveats[2:]),
    ):
        t = Token(RawMacaroon(raw.location, raw.identifier, caveats, raw.signature))
        assert allowed(v, t, "sum").code is DenyCode.BAD_SIGNATURE


def test_dropping_trailing_restrictions_needs_the_previous_signature(world, clock, keys):
    """Even re-signing the chain honestly cannot help without the root key."""
    *_, v = world
    _, _, (t2, _) = three_hops(clock, keys)
    raw = t2.raw
    # an attacker who guesses the wrong root key cannot recompute a valid chain
    sig = chain_signature(derive_key(b"guess" * 6 + b"!!"), raw.identifier, raw.caveats[:-1])
    t = Token(RawMacaroon(raw.location, raw.identifier, raw.caveats[:-1], sig))
    assert allowed(v, t, "sum", action="write").code is DenyCode.BAD_SIGNATURE


def test_offline_hops_need_a_registered_key_of_the_current_holder(world, clock, keys):
    agents, _, v = world
    t1, _ = delegate_offline(root(clock), keys["orch"], "res", at(clock))
    assert allowed(v, t1, "res").allowed
    agents["orch"] = agents["orch"].with_changes(public_keys={})  # key removed
    v.invalidate()
    d = allowed(v, t1, "res")
    assert d.code is DenyCode.BAD_DELEGATION and "has not registered" in d.reason


def test_depth_limits_from_agents_and_caveats(world, clock, keys):
    agents, _, v = world
    t0, (t1, _), (t2, _) = three_hops(clock, keys)
    agents["orch"] = agents["orch"].with_changes(max_depth=1)
    d = allowed(v, t2, "sum")
    assert d.code is DenyCode.DEPTH and "'orch' allows 1" in d.reason
    assert allowed(v, t1, "res").allowed
    agents["orch"] = agents["orch"].with_changes(max_depth=3)
    capped = t0.attenuate("depth <= 1")
    c1, _ = append_server_delegation(capped, KEY, "res", at(clock))
    assert allowed(v, c1, "res").allowed
    c2, _ = append_server_delegation(c1, KEY, "sum", at(clock))
    d = allowed(v, c2, "sum")
    assert d.code is DenyCode.DEPTH and d.caveat == "depth <= 1"
    assert allowed(v, t0.attenuate("depth <= 0"), "orch").allowed


def test_cascade_revoking_the_middle_hop(world, clock, keys):
    _, revoked, v = world
    t0, (t1, d1), (t2, d2) = three_hops(clock, keys)
    sibling, ds = append_server_delegation(t1, KEY, "thief", at(clock))  # another child of res
    other_branch, _ = append_server_delegation(t0, KEY, "sum", at(clock))
    revoked.add(d2, clock.now + 60)
    assert allowed(v, t2, "sum").code is DenyCode.REVOKED
    assert allowed(v, t2.attenuate("resource /data/x"), "sum").code is DenyCode.REVOKED
    assert allowed(v, sibling, "thief").allowed
    assert allowed(v, t1, "res").allowed and allowed(v, t0, "orch").allowed
    revoked.add(d1, clock.now + 60)
    for t, who in ((t1, "res"), (t2, "sum"), (sibling, "thief")):
        assert allowed(v, t, who).code is DenyCode.REVOKED
    assert allowed(v, other_branch, "sum").allowed and allowed(v, t0, "orch").allowed
    revoked.add(TID, clock.now + 60)
    assert allowed(v, other_branch, "sum").code is DenyCode.REVOKED


def test_suspending_anyone_in_the_chain_denies_and_resuming_restores(world, clock, keys):
    agents, _, v = world
    _, _, (t2, _) = three_hops(clock, keys)
    for name in ("orch", "res", "sum"):
        agents[name] = agents[name].with_changes(status=AgentStatus.SUSPENDED)
        d = allowed(v, t2, "sum")
        assert d.code is DenyCode.AGENT_SUSPENDED and name in d.reason
        agents[name] = agents[name].with_changes(status=AgentStatus.ACTIVE)
        assert allowed(v, t2, "sum").allowed


def test_epoch_bump_denies_hops_made_before_it(world, clock, keys):
    agents, _, v = world
    _, (t1, _), (t2, _) = three_hops(clock, keys)
    agents["res"] = agents["res"].with_changes(epoch=1, revoked_before_ms=int(clock.now * 1000))
    assert allowed(v, t2, "sum").code is DenyCode.AGENT_REVOKED
    clock.advance(1)
    fresh, _ = append_server_delegation(root(clock), KEY, "res", at(clock) + 2000)
    assert allowed(v, fresh, "res").allowed


def test_every_hop_is_narrowed_by_its_holders_current_ceiling(world, clock, keys):
    agents, _, v = world
    t0 = root(clock)
    t1, _ = append_server_delegation(t0, KEY, "res", at(clock))
    assert allowed(v, t1, "res", action="write").allowed
    agents["res"] = agents["res"].with_changes(ceiling=Ceiling.parse(["read:/data/**"]))
    assert allowed(v, t1, "res", action="write").code is DenyCode.CEILING


def test_narrowing_a_delegators_ceiling_narrows_everything_below_it(world, clock, keys):
    agents, _, v = world
    _, (t1, _), (t2, _) = three_hops(clock, keys)
    assert allowed(v, t1, "res", action="write").allowed
    agents["orch"] = agents["orch"].with_changes(ceiling=Ceiling.parse(["read:/data/public/**"]))
    d = allowed(v, t2, "sum", resource="/data/x")
    assert d.code is DenyCode.CEILING and "delegator 'orch'" in d.reason
    assert allowed(v, t2, "sum", resource="/data/public/x").allowed


def test_a_childs_chain_reuses_its_verified_parent_but_checks_what_is_new(world, clock, keys):
    *_, v = world
    t0, (t1, _), (t2, _) = three_hops(clock, keys, offline=True)
    assert allowed(v, t1, "res").allowed  # the parent is verified and remembered
    assert allowed(v, t2, "sum").allowed  # the child starts from it
    # a forged hop appended to the verified parent is still checked
    fake = base64.urlsafe_b64encode(b"\x00" * 32).rstrip(b"=").decode()
    did = delegation_id(t1.signature, "thief", at(clock))
    forged = t1.append_raw(f"delegate = thief did={did} at={at(clock)} proof=srv:{fake}".encode())
    assert allowed(v, forged, "thief").code is DenyCode.BAD_DELEGATION
    # and a forged chain is never remembered, so nothing built on it passes either
    deeper, _ = append_server_delegation(forged, KEY, "sum", at(clock))
    assert allowed(v, deeper, "sum").code is DenyCode.BAD_DELEGATION
    v.invalidate()
    assert allowed(v, t2, "sum").allowed


def test_prefix_reuse_after_a_key_is_removed(world, clock, keys):
    agents, _, v = world
    _, (t1, _), (t2, _) = three_hops(clock, keys, offline=True)
    assert allowed(v, t1, "res").allowed
    agents["orch"] = agents["orch"].with_changes(public_keys={})
    v.invalidate()  # the replica does this whenever agent keys change
    assert allowed(v, t2, "sum").code is DenyCode.BAD_DELEGATION
