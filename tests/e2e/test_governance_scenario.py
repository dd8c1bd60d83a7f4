"""Governance on a replayed fleet: a synthetic stretch of normal work (``scenario.Fleet``)
against a real server raises no alert after the warm-up; the access review of it
proposes the narrower ceilings the traffic implies, and applying one through the CLI
makes it live; then each injected deviation (a prompt-injected researcher reading
/secrets and handing its token on, a leaked token used by someone else, a slow creep
into new directories, a burst of denied calls) is flagged, and under ``suspend`` the
agent is contained, its next decision denied. ``CAPGATE_SCENARIO_DAYS`` sets the length
(default 7: a day of warm-up, six watched); ``benchmarks/scenario_figures.py`` runs
the week and writes the figures into benchmarks/README.md."""

from __future__ import annotations

import json
import os

import pytest

from harness import ServerThread, cli
from scenario import DAY, WORKERS, Fleet

DAYS = int(os.environ.get("CAPGATE_SCENARIO_DAYS", "7"))


@pytest.fixture
def fleet(tmp_path, clock):
    server = ServerThread(tmp_path / "data", clock=clock).start()
    replica = server.app.replica
    admin = server.client()

    def settle() -> None:
        server.run(replica.audit.flush())
        server.run(replica.governance.step())

    f = Fleet(server.address, admin, clock, settle=settle)
    for agent, containment in (
        ("researcher", "suspend"),
        ("billing", "suspend"),
        ("summariser", "alert"),
        ("orchestrator", "alert"),
    ):
        admin.set_policy(agent, containment=containment)
    yield f, server
    f.close()
    admin.close()
    server.stop()


def test_a_week_of_normal_work_then_injected_deviations(fleet):
    f, server = fleet
    f.days(DAYS)
    false_alerts = f.admin.alerts(limit=1000)
    agent_weeks = len(WORKERS) * (DAYS - 1) / 7
    assert len(false_alerts) <= agent_weeks, [a.reason for a in false_alerts]

    reviews = {r.agent: r for r in f.admin.review(since=int(DAYS * DAY))}
    assert reviews["researcher"].proposed == (
        "read:/data/papers/**",
        "read:/web/arxiv/**",
        "write:/notes/**",
    )
    assert sorted(reviews["billing"].proposed) == [
        "pay:/billing/invoices/**",
        "read:/billing/accounts/**",
        "write:/billing/invoices/**",
    ]
    assert [g.proposed for g in reviews["summariser"].grants][1] == ("write:/summaries/**",)
    assert reviews["orchestrator"].proposed_max_depth == 1
    assert reviews["scraper"].idle

    injected = f.inject_prompt_injection()
    assert injected.flagged and injected.contained
    kinds = {(a.agent, a.kind) for a in injected.alerts}
    assert ("researcher", "new-resource") in kinds and ("researcher", "new-delegate") in kinds
    assert any(a.containment == "suspend" for a in injected.alerts if a.agent == "researcher")
    assert (
        f.service.verify(
            f.tokens["researcher"], "read", "/data/papers/1", presenter="researcher"
        ).code
        == "agent_suspended"
    )

    leaked = f.inject_leaked_token()
    assert leaked.flagged and leaked.contained and leaked.allowed == 0
    assert leaked.alerts[0].kind == "new-presenter"

    creep = f.inject_creep()
    assert creep.flagged and not f.suspended("summariser")()  # its policy only alerts
    assert creep.alerts[0].reason.startswith("summariser read /data/")

    burst = f.inject_deny_burst()
    assert burst.flagged and burst.alerts[0].kind == "denies"

    # the containment is the system's own audited action, naming the alert
    events = f.admin.audit(kind="governance.contain")
    assert {e.subject for e in events} == {"researcher", "billing"}
    assert all(e.principal == "capgate" and '"alert"' in e.detail for e in events)
    # an operator undoes it like any change
    f.admin.resume_agent("billing")
    assert f.admin.get_agent("billing").status == "active"


def test_review_applied_from_the_cli_is_live(fleet):
    f, server = fleet
    f.days(1)
    env = {"CAPGATE_SERVER": server.address, "CAPGATE_CREDENTIAL": server.admin_credential}
    shown = cli("review", "billing", "--since", "2d", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "- refund:/billing/**    (never used)" in shown.stdout
    applied = cli("--json", "review", "billing", "--since", "2d", "--apply", env=env)
    assert applied.returncode == 0, applied.stderr
    assert sorted(json.loads(applied.stdout)["applied"]["grants"]) == [
        "pay:/billing/invoices/**",
        "read:/billing/accounts/**",
        "write:/billing/invoices/**",
    ]
    refund = f.wide["billing"][2]
    assert (
        f.service.verify(refund, "refund", "/billing/invoices/1", presenter="billing").code
        == "beyond_ceiling"
    )
    usage = cli("agent", "usage", "billing", env=env)
    assert usage.returncode == 0 and "/billing" in usage.stdout and "/accounts" in usage.stdout

    policy = cli(
        "agent",
        "policy",
        "billing",
        "--containment",
        "narrow",
        "--sensitivity",
        "2",
        "--warmup",
        "0s",
        env=env,
    )
    assert policy.returncode == 0, policy.stderr
    assert policy.stdout.strip() == ("billing: on deviation narrow; sensitivity 2; warm-up 0s")
    assert cli("agent", "policy", "billing", "--containment", "delete", env=env).returncode == 2
    f.service.verify(f.wide["billing"][0], "read", "/billing/ledger/1", presenter="billing")
    f.settle()
    alerts = cli("--json", "alerts", "--agent", "billing", env=env)
    assert alerts.returncode == 0, alerts.stderr
    [alert] = json.loads(alerts.stdout)["alerts"]
    assert alert["reason"] == "billing read /billing/ledger/** for the first time (denied)"
    assert alert["containment"] == "narrow"
    text = cli("alerts", env=env).stdout
    assert "billing new-resource: billing read /billing/ledger/**" in text and "[narrow]" in text
