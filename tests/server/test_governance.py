"""Governance against a real server: usage fed by the audit flushes, alerts listed and
streamed, ``narrow`` dropping only the grant that allowed a first-seen resource,
policies validated, admins only, and the counters in metrics."""

from __future__ import annotations

import threading
import urllib.request

import grpc
import pytest

from capgate import CapgateError, InvalidArgumentError, NotFoundError, PermissionDeniedError

from harness import ServerThread, wait_for

DAY = 86400.0


@pytest.fixture
def world(tmp_path, clock):
    server = ServerThread(tmp_path / "data", clock=clock, metrics_listen="127.0.0.1:0").start()
    admin = server.client()
    _, cred = admin.create_agent(
        "reporter", ["read:/reports/**", "read:/secrets/**", "write:/drafts/**"], max_ttl=9 * 86400
    )
    svc = server.client(admin.create_principal("svc", "service").credential)
    with server.client(cred) as agent:
        token = agent.issue("read:/reports/**", ttl=9 * 86400).token
        secrets = agent.issue("read:/secrets/**", ttl=9 * 86400).token
    replica = server.app.replica

    def settle() -> None:
        server.run(replica.audit.flush())
        server.run(replica.governance.step())

    yield server, admin, svc, (token, secrets), settle, cred
    svc.close()
    admin.close()
    server.stop()


def test_usage_alerts_and_narrowing(world, clock):
    server, admin, svc, (token, secrets), settle, _ = world
    for i in range(3):
        assert svc.verify(token, "read", f"/reports/q{i}", presenter="reporter").allowed
    settle()
    used = admin.usage("reporter")
    assert {(u.kind, u.subject, u.count) for u in used if u.kind == "use"} == {
        ("use", f"/reports/q{i}", 1) for i in range(3)
    }
    assert admin.set_policy("reporter", containment="narrow").containment == "narrow"

    seen = []
    watcher = server.client()

    def watch() -> None:
        try:
            for a in watcher.watch_alerts("reporter"):
                seen.append(a)
        except CapgateError:
            pass  # the channel closed

    threading.Thread(target=watch, daemon=True).start()
    clock.advance(2 * DAY)  # past the warm-up
    assert svc.verify(secrets, "read", "/secrets/db", presenter="reporter").allowed
    settle()
    [alert] = admin.alerts("reporter")
    assert (alert.kind, alert.containment, alert.resource) == (
        "new-resource",
        "narrow",
        "/secrets/db",
    )
    # only the grant that allowed it went; the rest of the ceiling stands, live
    assert admin.get_agent("reporter").ceiling == ("read:/reports/**", "write:/drafts/**")
    assert svc.verify(secrets, "read", "/secrets/db", presenter="reporter").code == "beyond_ceiling"
    assert svc.verify(token, "read", "/reports/q1", presenter="reporter").allowed
    wait_for(lambda: [a.seq for a in seen] == [alert.seq], timeout=5)
    watcher.close()

    settle()  # the same deviation again is no new alert
    assert len(admin.alerts("reporter")) == 1

    port = server.app.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'capgate_governance_alerts_total{kind="new-resource"} 1.0' in text
    assert 'capgate_governance_containments_total{containment="narrow"} 1.0' in text


def test_policies_are_validated_and_governance_is_for_admins(world):
    server, admin, svc, token, settle, cred = world
    with pytest.raises(InvalidArgumentError):
        admin.set_policy("reporter", containment="delete")
    with pytest.raises(InvalidArgumentError):
        admin.set_policy("reporter", sensitivity=1000)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(InvalidArgumentError):
            admin.set_policy("reporter", warmup=bad)
    with pytest.raises(InvalidArgumentError):
        admin.set_policy("reporter", shadow=["read:/a/***"])
    with pytest.raises(NotFoundError):
        admin.set_policy("nobody", containment="suspend")
    with pytest.raises(NotFoundError):
        admin.review("nobody")
    with pytest.raises(InvalidArgumentError):
        admin.alerts(limit=100_000)
    for principal in (svc, server.client(cred)):
        with pytest.raises(PermissionDeniedError):
            principal.alerts()
        with pytest.raises(PermissionDeniedError):
            principal.review()
        with pytest.raises(PermissionDeniedError):
            principal.set_policy("reporter", containment="alert")
    assert admin.get_policy("reporter").containment == "alert"


def test_detection_off_records_nothing(tmp_path, clock):
    server = ServerThread(tmp_path / "data", clock=clock, governance=False).start()
    try:
        with server.client() as admin:
            _, cred = admin.create_agent("quiet", ["read:/q/**"])
            with server.client(cred) as agent:
                token = agent.issue("read:/q/*").token
                assert agent.verify(token, "read", "/q/1").allowed
            server.run(server.app.replica.audit.flush())
            assert admin.usage("quiet") == []
    finally:
        server.stop()


def test_grpc_status_of_a_bad_window(world):
    server, admin, *_ = world
    from capgate_proto.v1 import governance_pb2, governance_pb2_grpc

    with grpc.insecure_channel(server.address) as channel:
        stub = governance_pb2_grpc.GovernanceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.Review(
                governance_pb2.ReviewRequest(since_seconds=-1),
                metadata=(("authorization", f"Bearer {server.admin_credential}"),),
            )
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_detection_does_not_wait_for_a_slow_audit_write():
    """While one write hangs, each interval's new decisions still reach ``observe``, and
    once the store answers they are written, none lost, none twice."""
    import asyncio

    from capgate import Decision, DenyCode
    from capgate_server import AuditLog

    async def scenario() -> tuple[list[int], int, int]:
        release = asyncio.Event()
        written: list[int] = []
        observed: list[int] = []

        async def write(events) -> None:
            if not written:
                await release.wait()  # the first write hangs until released
            written.extend(e.count for e in events)

        log = AuditLog(
            write, observe=lambda events: observed.extend(e.count for e in events), interval=0.01
        )
        log.start()
        deny = Decision(False, DenyCode.REVOKED, "revoked", None, "t1", ("a",))
        log.decision("svc", deny, "read", "/x", "a", 1.0)
        while not observed:  # the first flush took it and hangs in write
            await asyncio.sleep(0.005)
        for i in range(3):
            log.decision("svc", deny, "read", f"/y{i}", "a", 2.0)
        while len(observed) < 4:  # handed on while the write still hangs
            await asyncio.sleep(0.005)
        pending = len(written)
        release.set()
        await log.close()
        return observed, pending, len(written)

    observed, pending_while_hung, written = asyncio.run(asyncio.wait_for(scenario(), 20))
    assert observed == [1, 1, 1, 1] and pending_while_hung == 0 and written == 4


def test_a_flood_of_new_things_raises_a_bounded_number_of_alerts(world, clock):
    server, admin, svc, (token, secrets), settle, _ = world
    clock.advance(2 * DAY)
    for i in range(60):  # a token presented by sixty strangers
        svc.verify(token, "read", "/reports/q1", presenter=f"stranger-{i}")
    settle()
    alerts = admin.alerts("reporter", limit=1000)
    assert 1 <= len(alerts) <= 20
    assert {a.kind for a in alerts} <= {"new-presenter", "new-resource"}


def test_narrow_revokes_a_token_a_stranger_presented_and_spares_the_agent(world, clock):
    server, admin, svc, (token, secrets), settle, _ = world
    assert svc.verify(token, "read", "/reports/q1", presenter="reporter").allowed
    assert svc.verify(secrets, "read", "/secrets/a", presenter="reporter").allowed
    settle()
    admin.set_policy("reporter", containment="narrow")
    clock.advance(2 * DAY)
    assert not svc.verify(token, "read", "/reports/q1", presenter="intruder").allowed
    settle()
    [alert] = admin.alerts("reporter")
    assert alert.kind == "new-presenter"
    assert svc.verify(token, "read", "/reports/q1", presenter="reporter").code == "revoked"
    assert svc.verify(secrets, "read", "/secrets/a", presenter="reporter").allowed
    assert admin.get_agent("reporter").status == "active"
    [contained] = admin.audit(kind="governance.contain")
    assert contained.principal == "capgate" and '"revoke"' in contained.detail


def test_the_asyncio_client_has_the_governance_calls(world):
    import asyncio

    from capgate_client import AsyncClient

    server, admin, svc, (token, secrets), settle, _ = world
    assert svc.verify(token, "read", "/reports/q1", presenter="reporter").allowed
    settle()

    async def calls() -> tuple:
        async with AsyncClient(server.address, server.admin_credential) as c:
            policy = await c.set_policy("reporter", containment="suspend", shadow=["read:/x/**"])
            return (
                policy,
                await c.get_policy("reporter"),
                await c.usage("reporter"),
                await c.review("reporter"),
                await c.alerts(),
            )

    policy, got, usage, [review], alerts = asyncio.run(calls())
    assert policy == got and got.shadow == ("read:/x/**",) and got.containment == "suspend"
    assert [u.subject for u in usage if u.kind == "use"] == ["/reports/q1"]
    assert review.proposed == ("read:/reports/**",) and alerts == []
