"""Containment across a fleet on PostgreSQL: an agent deviates at one replica and is
contained at every replica, once; the alert is raised once fleet-wide, though both
replicas saw the deviation. The delay from the first deviating decision until both
replicas deny is measured and printed (``benchmarks/scenario_figures.py`` reports it),
never asserted against a clock."""

from __future__ import annotations

import time

import pytest

from capgate_client import Client

from harness import ServerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def fleet(tmp_path, pg_url):
    from capgate_server import new_kek_text

    kek = tmp_path / "kek"
    kek.write_text(new_kek_text())
    replicas = [ServerProcess(tmp_path / name, ["--store", pg_url, "--kek-file", str(kek),
                                                "--poll-interval", "0.5"]).start()
                for name in ("a", "b")]
    yield replicas, replicas[0].admin_credential
    for p in replicas:
        p.stop()


def contain_across(a_address: str, b_address: str, admin_cred: str) -> dict[str, float]:
    """The injected researcher of the scenario, on two replicas: returns the figures."""
    with Client(a_address, admin_cred) as admin:
        _, cred = admin.create_agent("researcher", ["read:/**"], max_ttl=3600)
        svc_cred = admin.create_principal("docs-api", "service").credential
    with Client(a_address, cred) as agent:
        token = agent.issue("read:/**", ttl=3600).token
    sa, sb = Client(a_address, svc_cred), Client(b_address, svc_cred)
    admin_a, admin_b = Client(a_address, admin_cred), Client(b_address, admin_cred)
    try:
        wait_for(lambda: sb.verify(token, "read", "/data/papers/0",
                                   presenter="researcher").allowed, timeout=10)
        for i in range(20):  # its usual work, at both replicas (learnt in its warm-up)
            for s in (sa, sb):
                assert s.verify(token, "read", f"/data/papers/{i}",
                                presenter="researcher").allowed
        wait_for(lambda: sum(u.count for u in admin_a.usage("researcher")
                             if u.kind == "use") >= 41, timeout=10)
        admin_a.set_policy("researcher", containment="suspend", warmup=0)
        wait_for(lambda: admin_b.get_policy("researcher").containment == "suspend",
                 timeout=15)
        start = time.perf_counter()
        decisions = allowed = 0
        denied: dict[str, float] = {}
        while len(denied) < 2 and time.perf_counter() - start < 15:
            for name, s in (("b", sb), ("a", sa)):
                ok = s.verify(token, "read", f"/secrets/db/{decisions}",
                              presenter="researcher").allowed
                decisions += 1
                allowed += ok
                if not ok and name not in denied:
                    denied[name] = (time.perf_counter() - start) * 1000
        alerts = admin_a.alerts("researcher")
        return {"decisions": decisions, "allowed": allowed, "alerts": len(alerts),
                "contained_a_ms": denied.get("a", -1.0), "contained_b_ms": denied.get("b", -1.0),
                "status_a": admin_a.get_agent("researcher").status == "suspended",
                "status_b": admin_b.get_agent("researcher").status == "suspended"}
    finally:
        for c in (sa, sb, admin_a, admin_b):
            c.close()


def test_a_deviation_at_one_replica_is_contained_at_every_replica_once(fleet):
    (a, b), admin_cred = fleet
    figures = contain_across(a.address, b.address, admin_cred)
    print("fleet containment:", figures)
    assert figures["contained_a_ms"] >= 0 and figures["contained_b_ms"] >= 0
    assert figures["status_a"] and figures["status_b"]
    assert figures["alerts"] == 1
