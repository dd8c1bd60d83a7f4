"""Several replicas on one PostgreSQL: fan-out, failing closed, a replica cut off while it
holds the change-feed lock, migrations, key rotation."""

from __future__ import annotations

import concurrent.futures
import threading
import time
import urllib.parse

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capgate import PermissionDeniedError, UnavailableError
from capgate_client import Client

from harness import ServerProcess, TcpProxy, wait_for

pytestmark = pytest.mark.slow
BOUND = 3.0  # seconds: generous; the measured propagation is in benchmarks/README.md


@pytest.fixture
def kek(tmp_path):
    from capgate_server import new_kek_text

    path = tmp_path / "kek"
    path.write_text(new_kek_text())
    return path


def replica(tmp_path, name, store, kek, *extra):
    return ServerProcess(
        tmp_path / name,
        ["--store", store, "--kek-file", str(kek), "--poll-interval", "0.5", *extra],
    ).start()


@pytest.fixture
def fleet(tmp_path, pg_url, kek):
    a = replica(tmp_path, "a", pg_url, kek)
    b = replica(tmp_path, "b", pg_url, kek)
    c = replica(tmp_path, "c", pg_url, kek)
    admin_cred = a.admin_credential  # the first replica made the admin
    yield (a, b, c), admin_cred
    for p in (a, b, c):
        p.stop()


def setup_agent(p, admin_cred, name="alice"):
    with Client(p.address, admin_cred) as admin:
        _, cred = admin.create_agent(name, ["read,write:/data/**"])
        svc = admin.create_principal(f"svc-{name}", "service").credential
    with Client(p.address, cred) as agent:
        token = agent.issue("read,write:/data/**").token
    return cred, svc, token


def denies(p, svc, token, presenter="alice", code=None):
    def check():
        with Client(p.address, svc) as c:
            try:
                d = c.verify(token, "read", "/data/x", presenter=presenter)
            except UnavailableError:
                # a replica cut off from the store that must look the caller up there
                # refuses the call itself: as closed as a deny that says unavailable
                return code in (None, "unavailable")
        return not d.allowed and (code is None or d.code == code)

    return check


def test_revocation_and_live_control_fan_out(fleet):
    (a, b, c), admin_cred = fleet
    cred, svc, token = setup_agent(a, admin_cred)
    for p in (b, c):  # the agent, its credential and the token work on every replica
        wait_for(lambda p=p: not denies(p, svc, token)(), timeout=BOUND)
    with Client(b.address, cred) as agent_at_b:
        other = agent_at_b.issue("read:/data/**").token
    with Client(a.address, admin_cred) as admin:
        t0 = time.monotonic()
        admin.revoke(token, "fan-out test")
        for p in (b, c):
            wait_for(denies(p, svc, token, code="revoked"), timeout=BOUND)
        took = time.monotonic() - t0
        assert took < BOUND
        with Client(c.address, svc) as s:  # the other token is untouched
            assert s.verify(other, "read", "/data/x", presenter="alice").allowed

        admin.suspend_agent("alice")
        wait_for(denies(c, svc, other, code="agent_suspended"), timeout=BOUND)
        admin.resume_agent("alice")
        wait_for(lambda: not denies(c, svc, other)(), timeout=BOUND)

        admin.update_agent("alice", grants=["write:/data/**"])
        wait_for(denies(b, svc, other, code="beyond_ceiling"), timeout=BOUND)
        admin.update_agent("alice", grants=["read:/data/**"])
        wait_for(lambda: not denies(b, svc, other)(), timeout=BOUND)

        admin.revoke_all("alice")
        wait_for(denies(b, svc, other, code="agent_tokens_revoked"), timeout=BOUND)
        wait_for(denies(c, svc, other, code="agent_tokens_revoked"), timeout=BOUND)


def test_a_cut_off_replica_fails_closed_and_catches_up(tmp_path, pg_url, kek):
    u = urllib.parse.urlsplit(pg_url)
    proxy = TcpProxy(u.hostname or "127.0.0.1", u.port or 5432)
    via_proxy = urllib.parse.urlunsplit(
        u._replace(netloc=f"{u.username or 'postgres'}@127.0.0.1:{proxy.port}")
    )
    a = replica(tmp_path, "a", pg_url, kek)
    b = replica(tmp_path, "b", via_proxy, kek, "--stale-after", "2")
    try:
        cred, svc, token = setup_agent(a, a.admin_credential)
        wait_for(lambda: not denies(b, svc, token)(), timeout=BOUND)
        with grpc.insecure_channel(b.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            serving = health_pb2.HealthCheckResponse.SERVING
            assert health.Check(health_pb2.HealthCheckRequest()).status == serving

            proxy.cut()
            wait_for(denies(b, svc, token, code="unavailable"), timeout=15)
            wait_for(
                lambda: health.Check(health_pb2.HealthCheckRequest()).status != serving, timeout=5
            )
            with Client(a.address, a.admin_credential) as admin:  # meanwhile, at A
                admin.revoke(token, "while B was cut off")
                admin.suspend_agent("alice")
                admin.resume_agent("alice")
            time.sleep(0.5)
            assert denies(b, svc, token, code="unavailable")()  # still closed, not stale-open

            proxy.restore()
            wait_for(denies(b, svc, token, code="revoked"), timeout=20)
            wait_for(
                lambda: health.Check(health_pb2.HealthCheckRequest()).status == serving, timeout=5
            )
    finally:
        a.stop()
        b.stop()
        proxy.close()


def behind_proxy(pg_url):
    u = urllib.parse.urlsplit(pg_url)
    proxy = TcpProxy(u.hostname or "127.0.0.1", u.port or 5432)
    return proxy, urllib.parse.urlunsplit(
        u._replace(netloc=f"{u.username or 'postgres'}@127.0.0.1:{proxy.port}")
    )


def test_a_replica_cut_off_holding_the_feed_lock_does_not_wedge_the_fleet(tmp_path, pg_url, kek):
    proxy, via_proxy = behind_proxy(pg_url)
    quick = ("--db-idle-timeout", "2", "--db-lock-timeout", "6")
    b = replica(tmp_path, "b", pg_url, kek, *quick)
    c = replica(tmp_path, "c", pg_url, kek, *quick)
    a = replica(tmp_path, "a", via_proxy, kek, *quick)
    stuck: list[object] = []
    try:
        admin_cred = b.admin_credential
        cred, svc, _ = setup_agent(b, admin_cred)
        with Client(b.address, cred) as agent:
            tokens = {name: agent.issue("read:/data/**") for name in "abc"}
        wait_for(lambda: not denies(a, svc, tokens["a"].token)(), timeout=BOUND)

        # A revokes; the proxy forwards the statement that takes the feed lock, then
        # nothing more: A is partitioned holding the lock, its transaction open
        frozen = proxy.freeze_after(b"pg_advisory_xact_lock")

        def revoke_at_a():
            try:
                with Client(a.address, admin_cred, timeout=20) as admin:
                    stuck.append(admin.revoke(tokens["a"].token_id))
            except Exception as e:
                stuck.append(e)

        threading.Thread(target=revoke_at_a, daemon=True).start()
        assert frozen.wait(10)

        health = {p: health_pb2_grpc.HealthStub(grpc.insecure_channel(p.address)) for p in (b, c)}
        serving = health_pb2.HealthCheckResponse.SERVING
        done: dict[str, float] = {}

        def revoke_at(p, name):
            t0 = time.monotonic()
            with Client(p.address, admin_cred) as admin:
                assert admin.revoke(tokens[name].token_id).newly_revoked
            done[name] = time.monotonic() - t0

        workers = [threading.Thread(target=revoke_at, args=(p, n)) for p, n in ((b, "b"), (c, "c"))]
        for w in workers:
            w.start()
        while any(w.is_alive() for w in workers):  # the others keep serving meanwhile
            for h in health.values():
                assert h.Check(health_pb2.HealthCheckRequest()).status == serving
            time.sleep(0.2)
        # they waited for the dead holder's session to be ended (2 s), and no longer
        assert sorted(done) == ["b", "c"] and max(done.values()) < 6, done
        for p in (b, c):  # the feed went on in order: each sees both revocations
            for name in "bc":
                wait_for(denies(p, svc, tokens[name].token, code="revoked"), timeout=BOUND)
            assert health[p].Check(health_pb2.HealthCheckRequest()).status == serving
        # A's revoke was never committed (its session was ended), nor acknowledged
        assert not denies(b, svc, tokens["a"].token)()
        assert not [x for x in stuck if not isinstance(x, Exception)]
    finally:
        proxy.close()
        for p in (a, b, c):
            p.stop()


def test_replicas_migrating_at_once(tmp_path, pg_url, kek):
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        procs = list(pool.map(lambda n: replica(tmp_path, f"m{n}", pg_url, kek), range(3)))
    try:
        creds = [p.data_dir / "admin.credential" for p in procs]
        made = [c for c in creds if c.exists()]
        assert len(made) == 1  # exactly one replica created the admin
        admin_cred = made[0].read_text().strip()
        for p in procs:
            with Client(p.address, admin_cred) as admin:
                assert admin.list_agents() == []
    finally:
        for p in procs:
            p.stop()


def test_key_rotation_across_replicas(fleet):
    (a, b, c), admin_cred = fleet
    cred, svc, old_token = setup_agent(a, admin_cred)
    with Client(a.address, admin_cred) as admin:
        old_key = next(k for k in admin.list_keys() if k.signing)
        new_key = admin.rotate_key()
        assert new_key.signing and new_key.id != old_key.id
    wait_for(
        lambda: (
            next(k for k in Client(b.address, admin_cred).list_keys() if k.signing).id == new_key.id
        ),
        timeout=BOUND,
    )
    with Client(b.address, cred) as agent:
        new_token = agent.issue("read:/data/**").token
    with Client(c.address, admin_cred) as admin:
        assert admin.inspect(new_token).key_id == new_key.id
    with Client(c.address, svc) as s:  # both verify until the old key is retired
        assert s.verify(old_token, "read", "/data/x", presenter="alice").allowed
        assert s.verify(new_token, "read", "/data/x", presenter="alice").allowed
    with Client(b.address, admin_cred) as admin:
        admin.retire_key(old_key.id)
    for p in (a, c):
        wait_for(denies(p, svc, old_token, code="unknown_key"), timeout=BOUND)
        assert not denies(p, svc, new_token)()


def test_verifier_only_replica(tmp_path, pg_url, kek):
    a = replica(tmp_path, "a", pg_url, kek)
    v = replica(tmp_path, "v", pg_url, kek, "--role", "verifier")
    try:
        cred, svc, token = setup_agent(a, a.admin_credential)
        assert not (v.data_dir / "admin.credential").exists()
        wait_for(lambda: not denies(v, svc, token)(), timeout=BOUND)
        with Client(v.address, a.admin_credential) as admin:
            with pytest.raises(PermissionDeniedError, match="verification only"):
                admin.list_agents()
            with pytest.raises(PermissionDeniedError, match="verification only"):
                admin.revoke(token)
        with Client(v.address, cred) as agent:
            with pytest.raises(PermissionDeniedError, match="verification only"):
                agent.issue("read:/data/x")
        with Client(a.address, a.admin_credential) as admin:
            admin.revoke(token)
        wait_for(denies(v, svc, token, code="revoked"), timeout=BOUND)
    finally:
        a.stop()
        v.stop()


def test_root_keys_are_sealed_in_the_database(tmp_path, pg_url, kek):
    import psycopg

    a = replica(tmp_path, "a", pg_url, kek)
    try:
        with Client(a.address, a.admin_credential) as admin:
            kid = admin.list_keys()[0].id
    finally:
        a.stop()
    with psycopg.connect(pg_url) as conn:
        sealed = conn.execute("SELECT sealed FROM root_keys WHERE id = %s", (kid,)).fetchone()[0]
    from capgate_server import KeyEncryptionKey, load_kek

    key = load_kek(kek, None)
    secret = key.open(kid, bytes(sealed))
    assert len(secret) == 32 and secret not in bytes(sealed)
    with pytest.raises(Exception, match="wrong key-encryption key"):
        KeyEncryptionKey(b"\x00" * 32).open(kid, bytes(sealed))
    # without a KEK a shared store refuses to start
    p = ServerProcess(tmp_path / "nokek", ["--store", pg_url])
    with pytest.raises(RuntimeError, match="key-encryption key"):
        p.start(timeout=20)
