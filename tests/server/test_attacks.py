"""What an outside attack found, each reproduced against a real server.

With one agent's credential (and a registered Ed25519 key): forging a delegation
id to revoke a victim's tree, and going on after being suspended or having all
its tokens revoked. With nothing: reading server state through InspectToken.
And the operator's side: principals that can be cut off, and an admin recovered.
"""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from capgate import (
    AuthenticationError,
    FailedPreconditionError,
    NotFoundError,
    PermissionDeniedError,
    Token,
    delegate_offline,
    delegation_message,
    describe,
    public_key_id,
)
from capgate_server import load_kek, recover_admin
from capgate_server.store import SqliteStore


def _public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _hop_with_chosen_did(token: str, key: Ed25519PrivateKey, to: str, at_ms: int, did: str) -> str:
    """What the attacker did: sign a hop on its own token, naming a victim's id."""
    t = Token.parse(token)
    unsigned = f"delegate = {to} did={did} at={at_ms}"
    sig = key.sign(delegation_message(t.signature, unsigned.encode()))
    proof = base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    return t.append_raw(
        f"{unsigned} proof=ed25519:{public_key_id(_public(key))}:{proof}".encode()
    ).to_text()


@pytest.fixture
def world(server):
    """An admin, a service, a victim with a delegated tree, and an attacker with a key."""
    admin = server.client()
    service = server.client(admin.create_principal("files", "service").credential)
    _, victim_cred = admin.create_agent("victim", ["read:/data/**"], max_depth=2)
    _, helper_cred = admin.create_agent("helper", ["read:/data/**"])
    key = Ed25519PrivateKey.generate()
    _, attacker_cred = admin.create_agent("mallory", ["read:/data/**"], public_key=_public(key))
    victim, attacker = server.client(victim_cred), server.client(attacker_cred)
    root = victim.issue("read:/data/**")
    child = victim.delegate(root.token, "helper")
    yield admin, service, victim, attacker, key, root, child
    for c in (admin, service, victim, attacker):
        c.close()


def _verifies(service, token: str, presenter: str) -> bool:
    return service.verify(token, "read", "/data/x", presenter=presenter).allowed


def test_an_agent_cannot_revoke_another_agents_tree_with_a_chosen_did(world, clock):
    admin, service, victim, attacker, key, root, child = world
    own = attacker.issue("read:/data/**")
    at_ms = int(describe(Token.parse(own.token)).issued_ms or 0) + 1
    for target in (root.token_id, child.delegation_id):
        forged = _hop_with_chosen_did(own.token, key, "mallory", at_ms, target)
        assert (
            service.verify(forged, "read", "/data/x", presenter="mallory").code == "bad_delegation"
        )
        with pytest.raises(Exception) as refused:
            attacker.revoke(forged)
        assert "does not verify" in str(refused.value)
        with pytest.raises(PermissionDeniedError):  # nor by id
            attacker.revoke(target)
    assert _verifies(service, root.token, "victim")
    assert _verifies(service, child.token, "helper")
    # an honest offline hop of its own can be revoked, and reaches nothing else
    honest, did = delegate_offline(Token.parse(own.token), key, "mallory", at_ms)
    assert _verifies(service, honest.to_text(), "mallory")
    assert attacker.revoke(honest.to_text()).id == did
    assert not _verifies(service, honest.to_text(), "mallory")
    assert _verifies(service, root.token, "victim") and _verifies(service, child.token, "helper")


def test_a_suspended_agent_may_only_read_its_own_record(world):
    admin, service, victim, attacker, key, root, child = world
    own = attacker.issue("read:/data/**")
    admin.suspend_agent("mallory")
    assert attacker.get_agent("mallory").status == "suspended"  # it may learn why
    for attempt in (
        lambda: attacker.revoke(own.token),
        lambda: attacker.revoke(own.token_id),
        lambda: attacker.inspect(own.token),
        lambda: attacker.issue("read:/data/x"),
        lambda: attacker.attenuate(own.token, ["action in read"]),
        lambda: attacker.verify(own.token, "read", "/data/x"),
        lambda: attacker.tree(own.token_id),
    ):
        with pytest.raises(PermissionDeniedError, match="suspended"):
            attempt()
    admin.resume_agent("mallory")
    assert attacker.inspect(own.token).signature_valid


def test_an_agent_whose_tokens_were_revoked_cannot_act_on_them(world):
    admin, service, victim, attacker, key, root, child = world
    old = attacker.issue("read:/data/**")
    admin.revoke_all("mallory")
    for attempt in (
        lambda: attacker.revoke(old.token),
        lambda: attacker.revoke(old.token_id),
        lambda: attacker.inspect(old.token),
        lambda: attacker.tree(old.token_id),
        lambda: attacker.attenuate(old.token, ["action in read"]),
    ):
        with pytest.raises(PermissionDeniedError):
            attempt()
    new = attacker.issue("read:/data/**")  # it may still work from now on
    assert _verifies(service, new.token, "mallory")
    assert attacker.inspect(new.token).signature_valid


def test_an_agent_acts_only_on_tokens_it_is_part_of(world):
    admin, service, victim, attacker, key, root, child = world
    for attempt in (
        lambda: attacker.inspect(root.token),
        lambda: attacker.revoke(root.token),
        lambda: attacker.attenuate(root.token, ["action in read"]),
    ):
        with pytest.raises(PermissionDeniedError, match="part of"):
            attempt()
    # a delegator may still act on what it handed down
    assert victim.inspect(child.token).signature_valid
    assert victim.revoke(child.token).id == child.delegation_id


def test_inspecting_an_invalid_token_tells_nothing_but_invalid(world):
    admin, service, victim, attacker, key, root, child = world
    admin.suspend_agent("helper")
    admin.revoke(root.token_id)
    t = Token.parse(child.token)
    tampered = Token(t.raw._replace(signature=bytes(32))).to_text()
    for asker in (admin, service):
        r = asker.inspect(tampered)
        assert not r.signature_valid and r.status.startswith("invalid")
        assert (r.chain, r.lineage, r.caveats, r.revoked) == ((), (), (), False)
        assert "suspended" not in r.status and "revoked" not in r.status
        valid = asker.inspect(child.token)  # a valid token: the server's view
        assert valid.revoked and "helper" in [h.agent for h in valid.chain]


def test_a_denied_verification_records_no_delegation_hops(world, server):
    admin, service, victim, attacker, key, root, child = world
    own = attacker.issue("read:/data/**")
    offline, did = delegate_offline(
        Token.parse(own.token), key, "helper", describe(Token.parse(own.token)).issued_ms + 1
    )
    admin.suspend_agent("helper")
    assert (
        service.verify(offline.to_text(), "read", "/data/x", presenter="helper").code
        == "agent_suspended"
    )
    assert [n.id for n in admin.tree(own.token_id).children] == []
    admin.resume_agent("helper")
    assert _verifies(service, offline.to_text(), "helper")
    server.run(server.app.replica.call(lambda: None))  # the background write has landed
    assert [n.id for n in admin.tree(own.token_id).children] == [did]


def test_a_token_tree_is_bounded_and_never_fails(world, server):
    admin, service, victim, attacker, key, root, child = world
    server.settings.tree_max_nodes = 5
    own = attacker.issue("read:/data/**")
    issued = describe(Token.parse(own.token)).issued_ms
    hops = [
        delegate_offline(Token.parse(own.token), key, "mallory", issued + i)[0].to_text()
        for i in range(1, 9)
    ]
    results = service.verify_batch([(h, "read", "/data/x", "mallory", None) for h in hops])
    assert all(r.allowed for r in results)
    server.run(server.app.replica.call(lambda: None))
    tree = admin.tree(own.token_id)
    assert tree.truncated and len(tree.children) == 5


def test_principals_can_be_listed_disabled_enabled_and_rotated(world, server):
    admin, service, victim, attacker, key, root, child = world
    listed = {p.id: p for p in admin.list_principals()}
    assert {"admin", "files", "victim", "mallory"} <= set(listed)
    assert listed["files"].role == "service" and not listed["files"].disabled
    assert admin.disable_principal("files").disabled
    with pytest.raises(AuthenticationError, match="disabled"):
        service.verify(root.token, "read", "/data/x", presenter="victim")
    admin.enable_principal("files")
    assert _verifies(service, root.token, "victim")
    new = admin.rotate_credential("files")
    with pytest.raises(AuthenticationError):
        service.verify(root.token, "read", "/data/x", presenter="victim")
    with server.client(new.credential) as rotated:
        assert _verifies(rotated, root.token, "victim")
    admin.disable_principal("victim")  # an agent's credential too
    with pytest.raises(AuthenticationError):
        victim.issue("read:/data/x")
    events = {e.kind for e in admin.audit(kind="")}
    assert {"principal.disable", "principal.enable", "principal.rotate"} <= events


def test_the_last_enabled_admin_cannot_be_disabled_but_a_second_one_can(world, server):
    admin, *_ = world
    with pytest.raises(FailedPreconditionError, match="last enabled admin"):
        admin.disable_principal("admin")
    second = admin.create_principal("ops", "admin")
    with server.client(second.credential) as ops:
        ops.disable_principal("admin")
        with pytest.raises(AuthenticationError):
            admin.list_agents()
        with pytest.raises(FailedPreconditionError):
            ops.disable_principal("ops")
        ops.enable_principal("admin")
        admin.disable_principal("ops")  # a second admin can be removed
    with pytest.raises(AuthenticationError), server.client(second.credential) as ops:
        ops.list_agents()


def test_a_deleted_agents_tokens_stay_dead_even_if_the_id_comes_back(world, server):
    admin, service, victim, attacker, key, root, child = world
    admin.delete_agent("victim")
    assert service.verify(root.token, "read", "/data/x", presenter="victim").code == "unknown_agent"
    assert (
        service.verify(child.token, "read", "/data/x", presenter="helper").code == "unknown_agent"
    )  # a token passed on by the deleted agent dies too
    with pytest.raises(AuthenticationError):
        victim.issue("read:/data/x")
    with pytest.raises(NotFoundError):
        admin.get_agent("victim")
    assert "victim" not in {a.id for a in admin.list_agents()}
    assert "victim" not in {p.id for p in admin.list_principals()}
    _, again = admin.create_agent("victim", ["read:/data/**"], max_depth=2)
    assert (
        service.verify(root.token, "read", "/data/x", presenter="victim").code
        == "agent_tokens_revoked"
    )
    with server.client(again) as reborn:
        assert _verifies(service, reborn.issue("read:/data/**").token, "victim")


def test_a_lost_admin_is_recovered_from_the_data_directory(world, server):
    admin, *_ = world
    second = admin.create_principal("ops", "admin")
    with server.client(second.credential) as ops:
        ops.disable_principal("admin")
    store = SqliteStore(server.settings.data_dir / "capgate.db")
    try:
        credential = recover_admin(
            store,
            "admin",
            1_800_000_100.0,
            "local-recovery:root@host",
            load_kek(None, server.settings.data_dir / "kek.key"),
        )
    finally:
        store.close()
    server.run(server.app.replica.sync())
    with server.client(credential) as recovered:
        assert "admin" in {p.id for p in recovered.list_principals() if not p.disabled}
        kinds = [(e.kind, e.principal) for e in recovered.audit(kind="principal.recover")]
        assert kinds == [("principal.recover", "local-recovery:root@host")]
        recovered.audit_checkpoint()  # sealed: vouched for with the ledger key
        assert "principal.recover" in {e.kind for e in recovered.watch_audit(follow=False)}
    with pytest.raises(AuthenticationError):
        admin.list_agents()  # the lost credential no longer works
