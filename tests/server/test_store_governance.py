"""The store's governance rows, one suite for SQLite and PostgreSQL: usage counts add up
across writers (as replicas flushing at once do) and keep their first and last instants;
an alert with a key that exists is not raised again, however many writers race to raise
it, and the one raised is audited; policies round-trip."""

from __future__ import annotations

import concurrent.futures

from capgate_server.store import (
    AlertRecord,
    AuditEvent,
    AuditQuery,
    Containment,
    GovernancePolicy,
    UsageKind,
    UsageRow,
)

T0 = 1_800_000_000.0


def _row(count: int, first: float, last: float, subject: str = "/data/a") -> UsageRow:
    return UsageRow("reader", UsageKind.USE, "read", subject, count, first, last)


def test_usage_adds_up_across_writers_and_widens_its_instants(opener):
    stores = [opener() for _ in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(
            pool.map(
                lambda i: stores[i % 4].record_usage(
                    [_row(1, T0 + i, T0 + i + 1), _row(2, T0 + i, T0 + i, "/data/b")]
                ),
                range(40),
            )
        )
    rows = {r.subject: r for r in stores[0].usage("reader")}
    assert rows["/data/a"].count == 40 and rows["/data/b"].count == 80
    assert rows["/data/a"].first_at == T0 and rows["/data/a"].last_at == T0 + 40
    assert stores[0].usage("reader", since=T0 + 100) == []
    assert stores[0].usage("nobody") == []


def test_usage_not_seen_since_is_pruned_in_chunks(opener):
    s = opener()
    s.record_usage([_row(1, T0, T0 + i, f"/data/{i}") for i in range(12)])
    assert s.prune_usage(T0 + 10, limit=5) == 5
    assert s.prune_usage(T0 + 10, limit=5) == 5
    assert s.prune_usage(T0 + 10, limit=5) == 0
    assert [r.subject for r in s.usage("reader")] == ["/data/11", "/data/10"]


def test_an_alert_is_raised_once_however_many_race_for_it(opener):
    stores = [opener() for _ in range(4)]
    alert = AlertRecord(
        "reader|new-resource|read|/secrets",
        "reader",
        T0,
        "new-resource",
        "reader read /secrets/** for the first time",
        {"code": "allowed"},
        "suspend",
    )

    def raise_(i: int) -> AlertRecord | None:
        return stores[i % 4].raise_alert(
            alert, AuditEvent(T0, "capgate", "governance.alert", "reader")
        )

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        raised = [a for a in pool.map(raise_, range(12)) if a is not None]
    assert len(raised) == 1
    listed = stores[0].alerts()
    assert [(a.seq, a.key, a.reason, a.containment, a.detail) for a in listed] == [
        (raised[0].seq, alert.key, alert.reason, "suspend", {"code": "allowed"})
    ]
    assert stores[0].alerts(after_seq=raised[0].seq) == []
    audited = stores[0].list_audit(AuditQuery(kind="governance.alert"))
    assert len(audited) == 1 and audited[0].detail["alert"] == raised[0].seq


def test_policies_round_trip_and_are_replaced(opener):
    s = opener()
    s.set_policy(
        GovernancePolicy("reader", Containment.NARROW, 2.0, 60.0),
        AuditEvent(T0, "admin", "governance.policy", "reader"),
    )
    s.set_policy(
        GovernancePolicy("reader", Containment.SUSPEND, 0.5, -1.0),
        AuditEvent(T0, "admin", "governance.policy", "reader"),
    )
    assert s.policies() == [GovernancePolicy("reader", Containment.SUSPEND, 0.5, -1.0)]
