"""Proof of possession through a real server: a proof makes the presenter proven; a token
presented without one is denied where proof is required (by the server or by its
agent); a proof is good for one request, on one token, within its window, fleet-wide."""

from __future__ import annotations

import json
import time

import pytest

from capgate import (
    InvalidArgumentError,
    PossessionProof,
    UnavailableError,
    load_private_key,
    new_private_key_pem,
    prove_possession,
)
from capgate_client import Client, Presenter, Proof

from harness import KeyedAgent, ServerThread, cli, wait_for

R = "/data/reports/q3"


class World(KeyedAgent):
    def proof(self, method="GET", target=R, token=None, **kw):
        kw.setdefault("audience", self.service_id)
        return Proof(
            prove_possession(token or self.token, self.key, method, target, **kw), method, target
        )

    def verify(self, proof=None, presenter="", token=None, action="read", resource=R):
        return self.svc.verify(
            token or self.token, action, resource, presenter=presenter, proof=proof
        )


@pytest.fixture
def world(server):
    w = World(server)
    yield w
    w.close()


def test_a_proof_makes_the_presenter_proven(world):
    r = world.verify(world.proof())
    assert r.allowed and r.proven and r.chain == ("alice",)
    # the service may also name the presenter it knows; it must be the holder
    assert world.verify(world.proof(), presenter="alice").proven
    r = world.verify(world.proof(), presenter="mallory")
    assert r.code == "not_holder" and not r.proven
    # without a proof nothing is proven (and nothing is required here)
    r = world.verify(presenter="alice")
    assert r.allowed and not r.proven


def test_a_stolen_token_without_proof_is_denied_where_its_agent_requires_proof(world):
    assert world.verify(presenter="alice").allowed
    world.admin.update_agent("alice", require_proof=True)
    # a thief (or a service that lies) names the holder: no longer enough
    r = world.verify(presenter="alice")
    assert not r.allowed and r.code == "proof_required" and r.chain == ("alice",)
    assert "prove possession" in r.reason
    assert world.verify(world.proof()).proven  # the agent itself, with its key
    # a proof signed by a key the agent never registered is no proof
    other = load_private_key(new_private_key_pem()[0])
    forged = Proof(
        prove_possession(world.token, other, "GET", R, audience=world.service_id), "GET", R
    )
    assert world.verify(forged, presenter="alice").code == "bad_proof"
    # an agent verifying for itself proved who it is with its own credential
    assert world.agent.verify(world.token, "read", R).allowed
    world.admin.update_agent("alice", require_proof=False)
    assert world.verify(presenter="alice").allowed


def test_the_server_can_require_proof_of_every_token(tmp_path):
    s = ServerThread(tmp_path / "d", require_proof=True).start()
    try:
        w = World(s)
        assert w.verify(presenter="alice").code == "proof_required"
        assert w.verify(w.proof()).proven
        # batch and stream are held to it too
        items = [(w.token, "read", R, "alice", None), (w.token, "read", R, "", None, w.proof())]
        assert [r.code for r in w.svc.verify_batch(items)] == ["proof_required", "allowed"]
        items[1] = (w.token, "read", R, "", None, w.proof())
        assert [r.code for r in w.svc.verify_stream(iter(items))] == ["proof_required", "allowed"]
        w.close()
    finally:
        s.stop()


def test_a_proof_is_good_for_one_request(world):
    proof = world.proof()
    assert world.verify(proof).allowed
    r = world.verify(proof)
    assert r.code == "proof_replayed" and not r.proven
    # even where the first use was denied: a proof is spent once it verified
    write = world.proof("POST", R)
    assert world.verify(write, action="write").code == "caveat_failed"
    assert world.verify(write, action="write").code == "proof_replayed"
    # in one batch, the second use of a proof is the replay; order is kept
    p = world.proof()
    items = [
        (world.token, "read", R, "", None, p),
        (world.token, "read", R, "alice", None),
        (world.token, "read", R, "", None, p),
    ]
    assert [r.code for r in world.svc.verify_batch(items)] == [
        "allowed",
        "allowed",
        "proof_replayed",
    ]


def test_a_proof_is_bound_to_its_request_its_token_and_its_window(world):
    # signed for another request than the one the service received
    for method, target in (("GET", "/data/reports/q4"), ("DELETE", R), ("GET", R + "?x=1")):
        signed = world.proof(method, target)
        assert world.verify(Proof(signed.text, "GET", R)).code == "bad_proof"
    other = world.agent.issue("read:/data/reports/*").token
    r = world.verify(world.proof(token=other))  # made for another token of the same agent
    assert r.code == "bad_proof" and "does not verify" in r.reason
    old = world.proof(clock=lambda: time.time() - 120)
    assert (
        world.verify(old).code == "bad_proof"
        and "too old" in world.verify(world.proof(clock=lambda: time.time() - 120)).reason
    )
    ahead = world.proof(clock=lambda: time.time() + 120)
    assert "future" in world.verify(ahead).reason
    # a removed key's proofs stop at once
    kid = world.admin.get_agent("alice").public_keys[0]
    world.admin.remove_public_key("alice", kid)
    assert "not registered" in world.verify(world.proof()).reason


@pytest.mark.parametrize(
    "text",
    [
        "x",
        "v1",
        "v1....",
        "v2.0123456789abcdef.1.nnnnnnnnnnnnnnnn." + "A" * 86,
        "v1.0123456789ABCDEF.1.nnnnnnnnnnnnnnnn." + "A" * 86,  # upper-case key id
        "v1.0123456789abcdef.1.short." + "A" * 86,
        "v1.0123456789abcdef.1.nnnnnnnnnnnnnnnn.AAAA",
        "v1.0123456789abcdef.-1.nnnnnnnnnnnnnnnn." + "A" * 86,
        "v1.0123456789abcdef.1.nnnnnnnnnnnnnnnn." + "A" * 85 + "B",  # not canonical base64
        "v1.0123456789abcdef.1.nnnnnnnnnnnnnnnn." + "A" * 86 + "\u202e",
        "\x00" * 10,
        "é" * 300,
        "v1." + "a" * 10_000,
    ],
)
def test_malformed_proofs_deny_and_never_crash(world, text):
    r = world.verify(Proof(text, "GET", R))
    assert not r.allowed and r.code == "bad_proof"


@pytest.mark.parametrize(
    "method,target",
    [("GET", ""), ("", R), ("GE\nT", R), ("GET", R + "\r\n"), ("GET", "/x" * 5000), ("G" * 100, R)],
)
def test_unusable_request_lines_deny(world, method, target):
    good = world.proof()
    r = world.verify(Proof(good.text, method, target))
    assert r.code == "bad_proof"


def test_core_refuses_to_sign_what_it_could_not_check(world):
    with pytest.raises(InvalidArgumentError):
        prove_possession(world.token, world.key, "GET", "a\nb", audience="svc")
    with pytest.raises(InvalidArgumentError):
        prove_possession(world.token, world.key, "GET", R, audience="svc", nonce="bad nonce")
    with pytest.raises(InvalidArgumentError):
        prove_possession(world.token, b"not a key", "GET", R, audience="svc")  # type: ignore[arg-type]
    p = PossessionProof.parse(world.proof().text)
    assert PossessionProof.parse(p.to_text()) == p


def test_a_proof_with_an_invalid_token_denies_as_the_token_does(world):
    r = world.verify(world.proof(), token=world.token[:-4] + "AAAA")
    assert r.code in ("bad_signature", "malformed_token") and not r.proven


def test_a_store_that_cannot_redeem_nonces_fails_closed(world):
    replica = world.server.app.replica

    def down(*args, **kwargs):
        raise UnavailableError("database is down")

    original = replica.store.redeem_nonces
    replica.store.redeem_nonces = down
    try:
        r = world.verify(world.proof())
        assert not r.allowed and r.code == "unavailable" and "database is down" in r.reason
        assert world.verify(presenter="alice").allowed  # no proof, nothing to redeem
    finally:
        replica.store.redeem_nonces = original
    assert world.verify(world.proof()).proven


def test_the_presenter_attaches_what_a_service_checks(world):
    presenter = Presenter(world.token, world.pem, audience=world.service_id)
    headers = presenter.headers("GET", R)
    assert headers["authorization"] == f"Capgate {world.token}"
    r = world.verify(Proof(headers["capgate-proof"], "GET", R))
    assert r.proven
    md = dict(presenter.grpc_metadata("/files.v1.Files/Read"))
    assert world.verify(Proof(md["capgate-proof"], "POST", "/files.v1.Files/Read")).proven
    meta = presenter.mcp_meta("read_file")
    assert meta["capgate/token"] == world.token
    assert world.verify(Proof(meta["capgate/proof"], "tools/call", "read_file")).proven
    assert "capgate-proof" not in Presenter(world.token).headers("GET", R)  # no key, no proof


def test_the_cli_sets_and_shows_require_proof(world):
    env = {"CAPGATE_CREDENTIAL": world.server.admin_credential}
    out = cli(
        "agent",
        "update",
        "alice",
        "--require-proof",
        "--json",
        server=world.server.address,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["require_proof"] is True
    shown = cli("agent", "show", "alice", server=world.server.address, env=env)
    assert "proof:       required" in shown.stdout
    out = cli(
        "agent",
        "update",
        "alice",
        "--no-require-proof",
        "--json",
        server=world.server.address,
        env=env,
    )
    assert json.loads(out.stdout)["require_proof"] is False
    out = cli(
        "agent",
        "create",
        "bob",
        "--grant",
        "read:/x/*",
        "--require-proof",
        "--json",
        server=world.server.address,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert world.admin.get_agent("bob").require_proof


@pytest.mark.slow
def test_a_nonce_redeemed_at_one_replica_is_refused_at_another(tmp_path, pg_url):
    from capgate_server import new_kek_text

    kek = tmp_path / "kek"
    kek.write_text(new_kek_text())
    a = ServerThread(tmp_path / "a", store_url=pg_url, kek_file=kek).start()
    b = ServerThread(tmp_path / "b", store_url=pg_url, kek_file=kek).start()
    try:
        w = World(a)
        with Client(b.address, w.service_credential) as at_b:  # the same service, at B
            proof = w.proof()
            assert w.verify(proof).proven  # redeemed at A
            # B follows the agent through the change feed; the nonce is the fleet's
            wait_for(lambda: "alice" in b.app.replica.agents)
            r = at_b.verify(w.token, "read", R, proof=proof)
            assert r.code == "proof_replayed"
            assert at_b.verify(w.token, "read", R, proof=w.proof()).proven
        w.close()
    finally:
        b.stop()
        a.stop()


def test_a_proof_is_good_only_at_the_service_it_names(world):
    """A service that receives a proof cannot spend it at another service, even for the
    same method and path: the proof names its audience, and Verify checks the caller."""
    other = world.admin.create_principal("svc-other", "service").credential
    relayed = world.proof()  # made for world.service_id
    with world.server.client(other) as at_other:
        r = at_other.verify(world.token, "read", R, proof=relayed)
        assert r.code == "bad_proof" and "'svc-other'" in r.reason
        assert at_other.verify(
            world.token, "read", R, proof=world.proof(audience="svc-other")
        ).proven
    assert world.verify(relayed).proven  # still good where it was meant to go
