"""The Prometheus endpoint, scraped: every metric is there, and the numbers move as
traffic does (decisions by code, calls and latency by method, caches, replica state)."""

from __future__ import annotations

import re
import urllib.request

from capgate import Token

from harness import ServerThread


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_are_scraped_and_move_with_traffic(tmp_path):
    server = ServerThread(tmp_path / "data", metrics_listen="127.0.0.1:0").start()
    try:
        port = server.app.metrics_port
        before = scrape(port)
        for name in (
            "capgate_replica_fresh",
            "capgate_replica_staleness_seconds",
            "capgate_revocations",
            "capgate_change_feed_position",
            "capgate_audit_write_lag_seconds",
            "capgate_verify_checks_total",
            "capgate_chain_cache_misses_total",
            "capgate_memo_misses_total",
            "capgate_clock_agrees",
            "capgate_workers",
        ):
            assert name in before, name
        assert before["capgate_replica_fresh"] == 1.0
        with server.client() as admin:
            _, cred = admin.create_agent("metered", ["read:/m/**"])
            svc = admin.create_principal("meter-svc", "service").credential
        with server.client(cred) as agent:
            token = agent.issue("read:/m/*").token
        with server.client(svc) as service:
            for _ in range(5):
                service.verify(token, "read", "/m/x", presenter="metered")
            service.verify(token, "write", "/m/x", presenter="metered")
            budgeted = Token.parse(token).attenuate("uses <= 1").to_text()
            for _ in range(2):
                service.verify(budgeted, "read", "/m/x", presenter="metered")
            with server.client() as admin:
                admin.revoke(token)
            service.verify(token, "read", "/m/x", presenter="metered")
        server.run(server.app.replica.audit.flush())
        after = scrape(port)
        assert after['capgate_decisions_total{code="allowed"}'] == 6
        assert after['capgate_decisions_total{code="beyond_ceiling"}'] == 1
        assert after['capgate_decisions_total{code="revoked"}'] == 1
        assert after['capgate_decisions_total{code="budget_exhausted"}'] == 1
        assert after["capgate_budget_leases_total"] == 1  # one use leased, then none left
        assert after["capgate_budget_leased_uses_total"] == 1
        assert after["capgate_budgets_held"] == 1 and after["capgate_budget_unspent_uses"] == 0
        assert after["capgate_verify_checks_total"] == 9
        assert after["capgate_revocations"] == before["capgate_revocations"] + 1
        assert after["capgate_memo_misses_total"] >= 1
        assert after["capgate_change_feed_position"] > before["capgate_change_feed_position"]
        assert after['capgate_rpcs_total{method="Verify",status="OK"}'] == 9
        buckets = {
            k: v
            for k, v in after.items()
            if re.match(r'capgate_rpc_seconds_bucket\{.*method="Verify"', k)
        }
        assert buckets and max(buckets.values()) == 9  # the +Inf bucket holds every call
        assert after['capgate_rpc_seconds_count{method="Verify"}'] == 9
    finally:
        server.stop()


def test_metrics_are_off_unless_asked_for(tmp_path):
    server = ServerThread(tmp_path / "data").start()
    try:
        assert server.app.metrics_port == 0
    finally:
        server.stop()
