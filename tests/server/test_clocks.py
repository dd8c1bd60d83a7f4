"""Wrong clocks let no revoked token through: revoke-all's cut-off, issue dates, pruning,
the signing key's order, and the warning while a replica's clock is off the store's.

Every clock here is injected (``FakeClock``): a wall-clock jump moves the wall clock
alone; time passing moves the wall and the monotonic clock together.
"""

from __future__ import annotations

import logging
import re
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capgate import prove_possession
from capgate_client import Client, Proof
from capgate_server import CLOCK_HEALTH, new_kek_text

from conftest import FakeClock
from harness import KeyedAgent, ServerThread

HOUR = 3600.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def monotonic() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def kek(tmp_path):
    path = tmp_path / "kek"
    path.write_text(new_kek_text())
    return path


@pytest.fixture
def servers():
    """Start ``ServerThread``s; all are stopped afterwards."""
    started: list[ServerThread] = []

    def start(*args, **kwargs) -> ServerThread:
        started.append(ServerThread(*args, **kwargs).start())
        return started[-1]

    yield start
    for s in started:
        s.stop()


def create_agent(s: ServerThread, name: str) -> str:
    with s.client() as admin:
        return admin.create_agent(name, ["read:/data/**"], max_ttl=600)[1]


def service(s: ServerThread) -> str:
    with s.client() as admin:
        return admin.create_principal("svc", "service").credential


def code(s: ServerThread, svc: str, token: str, presenter: str) -> str:
    with Client(s.address, svc) as c:
        d = c.verify(token, "read", "/data/x", presenter=presenter)
    return "allowed" if d.allowed else d.code


def health(s: ServerThread, name: str = "") -> int:
    with grpc.insecure_channel(s.address) as ch:
        return (
            health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=name)).status
        )


# -- revoke-all and issue dates -----------------------------------------------------------


def test_revoke_all_reaches_tokens_dated_by_a_clock_since_stepped_back(tmp_path, clock, servers):
    s = servers(tmp_path / "d", clock=clock)
    alice, svc = create_agent(s, "alice"), service(s)
    with s.client(alice) as agent:
        token = agent.issue("read:/data/**").token
        clock.advance(-90)  # the clock ran 90 s ahead when it issued; now it is put right
        with s.client() as admin:
            admin.revoke_all("alice")
        assert code(s, svc, token, "alice") == "agent_tokens_revoked"
        # a token issued now, on a clock behind the cut-off, is not born revoked
        assert code(s, svc, agent.issue("read:/data/**").token, "alice") == "allowed"


@pytest.mark.postgres
def test_revoke_all_on_a_lagging_replica_reaches_what_the_others_issued(
    tmp_path, pg_url, kek, servers
):
    ahead, behind = FakeClock(), FakeClock(FakeClock().now - 90)
    a = servers(tmp_path / "a", clock=ahead, store_url=pg_url, kek_file=kek)
    b = servers(tmp_path / "b", clock=behind, store_url=pg_url, kek_file=kek)
    alice, bob, svc = create_agent(a, "alice"), create_agent(a, "bob"), service(a)
    with a.client(alice) as agent:  # issued and delegated at A, 90 s "after" B's now
        token = agent.issue("read:/data/**").token
        handed = agent.delegate(token, "bob").token
    b.run(b.app.replica.sync())
    with Client(b.address, a.admin_credential) as admin:
        admin.revoke_all("alice")
        admin.revoke_all("bob")
    for s in (a, b):
        s.run(s.app.replica.sync())
        assert code(s, svc, token, "alice") == "agent_tokens_revoked"
        assert code(s, svc, handed, "bob") == "agent_tokens_revoked"
    with Client(b.address, bob) as agent:  # B's clock lags the cut-off; its tokens live
        fresh = agent.issue("read:/data/**").token
    assert code(a, svc, fresh, "bob") == "allowed"


# -- pruning --------------------------------------------------------------------------------


def test_a_wall_clock_jump_prunes_nothing(tmp_path, clock, monotonic, servers, caplog):
    s = servers(tmp_path / "d", clock=clock, monotonic=monotonic, prune_margin=600)
    alice, svc = create_agent(s, "alice"), service(s)
    with s.client(alice) as agent:
        issued = agent.issue("read:/data/**", ttl=600)
    with s.client() as admin:
        admin.revoke(issued.token_id, "leaked")
    replica = s.app.replica
    clock.advance(2 * HOUR)  # the wall clock jumps two hours ahead; no time has passed
    with caplog.at_level(logging.WARNING, "capgate"):
        assert s.run(replica.prune_revocations()) == 0
    assert "ahead of what this replica can vouch for" in caplog.text
    assert replica.revocations.is_revoked(issued.token_id)
    assert [i for i, _ in replica.store.revocations(0)] == [issued.token_id]
    s.stop()
    clock.advance(-2 * HOUR)  # put right, and restarted: the token is still revoked
    s = servers(tmp_path / "d", clock=clock)
    assert code(s, svc, issued.token, "alice") == "revoked"


def test_pruning_waits_for_expiry_plus_the_margin(tmp_path, clock, monotonic, servers):
    s = servers(tmp_path / "d", clock=clock, monotonic=monotonic, prune_margin=600)
    alice = create_agent(s, "alice")
    with s.client(alice) as agent:
        issued = agent.issue("read:/data/**", ttl=600)
    with s.client() as admin:
        admin.revoke(issued.token_id)
    replica = s.app.replica

    def passes(seconds: float) -> None:
        clock.advance(seconds)
        monotonic.advance(seconds)

    passes(600 + 590)  # expired, but not yet by the margin
    s.run(replica.prune_revocations())
    assert replica.revocations.is_revoked(issued.token_id)
    assert len(replica.store.revocations(0)) == 1
    passes(2 * HOUR)  # (the in-memory set forgets by the hour)
    s.run(replica.prune_revocations())
    assert not replica.revocations.is_revoked(issued.token_id)
    assert replica.store.revocations(0) == []


@pytest.mark.postgres
def test_a_fast_replica_prunes_nothing_from_the_shared_store(tmp_path, pg_url, kek, servers):
    right = servers(tmp_path / "r", store_url=pg_url, kek_file=kek)  # the real clock
    alice, svc = create_agent(right, "alice"), service(right)
    with right.client(alice) as agent:
        issued = agent.issue("read:/data/**", ttl=60)
    with right.client() as admin:
        admin.revoke(issued.token_id)
    # a replica whose clock has run two hours ahead since before it started
    fast = servers(
        tmp_path / "f",
        clock=FakeClock(time.time() + 2 * HOUR),
        monotonic=FakeClock(),
        store_url=pg_url,
        kek_file=kek,
        prune_margin=60,
    )
    fast.run(fast.app.replica.prune_revocations())
    assert fast.app.replica.revocations.is_revoked(issued.token_id)
    right.stop()  # a restart at the right time still finds the revocation
    right = servers(tmp_path / "r", store_url=pg_url, kek_file=kek)
    assert code(right, svc, issued.token, "alice") == "revoked"


# -- the signing key ----------------------------------------------------------------------


def test_rotation_on_a_lagging_clock_makes_the_new_key_sign(tmp_path, clock, servers):
    s = servers(tmp_path / "d", clock=clock)
    alice = create_agent(s, "alice")
    clock.advance(-HOUR)  # this replica's clock lags the one that made the first key
    with s.client() as admin:
        new = admin.rotate_key()
        assert new.signing
        assert [k.id for k in admin.list_keys() if k.signing] == [new.id]
        with s.client(alice) as agent:
            assert admin.inspect(agent.issue("read:/data/x").token).key_id == new.id


# -- the clock warning ----------------------------------------------------------------------


@pytest.mark.postgres
def test_health_warns_while_the_clock_is_off_the_stores(tmp_path, pg_url, kek, servers, caplog):
    wall = FakeClock(time.time() + 90)
    with caplog.at_level(logging.WARNING, "capgate"):
        s = servers(tmp_path / "d", clock=wall, store_url=pg_url, kek_file=kek)
    assert re.search(r"clock is (89|90)\.\ds ahead of the store's", caplog.text)
    assert health(s, CLOCK_HEALTH) == NOT_SERVING
    assert health(s) == SERVING  # a warning: the replica stays in rotation
    wall.now = time.time()  # put right
    s.run(s.app.replica.check_clock())
    assert health(s, CLOCK_HEALTH) == SERVING
    wall.now = time.time() - 30  # now behind
    s.run(s.app.replica.check_clock())
    assert health(s, CLOCK_HEALTH) == NOT_SERVING
    assert "behind the store's" in caplog.text


def test_an_embedded_store_has_no_clock_to_disagree_with(tmp_path, clock, servers):
    s = servers(tmp_path / "d", clock=clock)  # 46 days ahead of the real time
    assert health(s, CLOCK_HEALTH) == SERVING


def test_a_wall_clock_that_jumps_ahead_does_not_make_a_replica_forget_proofs(tmp_path):
    """Proof nonces are forgotten by the replica's trusted clock, not its wall clock: a
    jump ahead (and back) does not delete them early, so a captured proof cannot be
    replayed after a restart inside its window."""
    offset = [0.0]

    def clock() -> float:
        return time.time() + offset[0]

    data = tmp_path / "d"
    s = ServerThread(data, clock=clock, poll_interval=3600).start()
    alice = KeyedAgent(s, require_proof=True)
    svc, token, key = alice.service_credential, alice.token, alice.key
    target = "/data/reports/q3"

    def verify(server, proof):
        with server.client(svc) as c:
            return c.verify(token, "read", target, proof=Proof(proof, "GET", target)).code

    captured = prove_possession(token, key, "GET", target, audience=alice.service_id)
    try:
        assert [verify(s, captured), verify(s, captured)] == ["allowed", "proof_replayed"]
        offset[0] = 200.0  # the wall clock jumps ahead: the next redemption forgets
        assert (
            verify(
                s,
                prove_possession(token, key, "GET", target, audience=alice.service_id, clock=clock),
            )
            == "allowed"
        )
        offset[0] = 0.0  # and is stepped back
    finally:
        alice.close()
        s.stop()
    s = ServerThread(data, clock=clock, poll_interval=3600).start()
    try:
        assert verify(s, captured) == "proof_replayed"
    finally:
        s.stop()
