"""Property: no agent can revoke an id outside the chains it holds a live place in.

An attacker with its own credential and a registered Ed25519 key crafts tokens
every way it can (its own tokens, offline hops with chosen or derived ids, bare
``did`` caveats naming a victim's ids, a victim's stolen tokens) and revokes each
by text and by id. Afterwards every token of the victim's tree still verifies.
"""

from __future__ import annotations

import base64
import itertools

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capgate import CapgateError, Token, delegate_offline, delegation_message, public_key_id

from harness import ServerThread

_round = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = ServerThread(tmp_path_factory.mktemp("rights") / "data").start()
    yield s
    s.stop()


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _signed(token: Token, key: Ed25519PrivateKey, to: str, at_ms: int, did: str) -> Token:
    unsigned = f"delegate = {to} did={did} at={at_ms}"
    sig = base64.urlsafe_b64encode(key.sign(delegation_message(token.signature, unsigned.encode())))
    return token.append_raw(
        f"{unsigned} proof=ed25519:{public_key_id(_raw(key))}:{sig.rstrip(b'=').decode()}".encode()
    )


ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["hop-chosen", "hop-derived", "bare-did", "stolen", "own"]),
        st.integers(0, 10),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ACTIONS)
def test_no_agent_revokes_outside_its_own_chains(server, actions) -> None:
    n = next(_round)
    victim_id, helper_id, attacker_id = f"v{n}", f"h{n}", f"m{n}"
    victim_key, attacker_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    with server.client() as admin:
        _, v_cred = admin.create_agent(victim_id, ["read:/d/**"], public_key=_raw(victim_key))
        admin.create_agent(helper_id, ["read:/d/**"])
        _, a_cred = admin.create_agent(attacker_id, ["read:/d/**"], public_key=_raw(attacker_key))
        svc = admin.create_principal(f"s{n}", "service").credential
    with (
        server.client(v_cred) as victim,
        server.client(a_cred) as attacker,
        server.client(svc) as service,
    ):
        root = victim.issue("read:/d/**")
        served = victim.delegate(root.token, helper_id)
        root_t = Token.parse(root.token)
        issued_ms = root_t.capgate_identifier().issued_ms
        offline, offline_did = delegate_offline(root_t, victim_key, helper_id, issued_ms + 1)
        victims = [
            (root.token, victim_id),
            (served.token, helper_id),
            (offline.to_text(), helper_id),
        ]
        for text, who in victims:  # the victim's tree is live (and its hops recorded)
            assert service.verify(text, "read", "/d/x", presenter=who).allowed
        victim_ids = [root.token_id, served.delegation_id, offline_did]

        own = Token.parse(attacker.issue("read:/d/**").token)
        own_ms = own.capgate_identifier().issued_ms
        crafted: list[str] = []
        for kind, i, to_helper in actions:
            target = victim_ids[i % len(victim_ids)]
            to = helper_id if to_helper else attacker_id
            if kind == "hop-chosen":
                crafted.append(_signed(own, attacker_key, to, own_ms + 1 + i, target).to_text())
            elif kind == "hop-derived":
                t, _ = delegate_offline(own, attacker_key, to, own_ms + 1 + i)
                crafted.append(t.to_text())
            elif kind == "bare-did":
                crafted.append(own.attenuate(f"did = {target}").to_text())
            elif kind == "stolen":
                crafted.append(victims[i % len(victims)][0])
            else:
                crafted.append(own.to_text())
        for text in crafted:
            for presenter in (attacker_id, helper_id):  # let the server see (and record) it
                service.verify(text, "read", "/d/x", presenter=presenter)
            for attempt in (text, *victim_ids):
                try:
                    attacker.revoke(attempt)
                except CapgateError:
                    pass
        for text, who in victims:
            d = service.verify(text, "read", "/d/x", presenter=who)
            assert d.allowed, (text, who, d)
