"""``Metrics``: what a replica exposes to Prometheus (``capgate serve --metrics-listen``).

Nothing here runs on the decision path: the counters it reports are ones the
replica keeps anyway (the audit tally's per-code counts, the verifier's cache
misses), read when Prometheus scrapes. Calls are timed where they are admitted
(``CallMeter``, one histogram observation per call). The endpoint is off by
default and, like the API, local unless told otherwise.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capgate_server._replica import Replica

__all__ = ["BUCKETS", "CallMeter", "Metrics", "start_metrics"]

# seconds: from a memo hit to a batch under load
BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class CallMeter:
    """Calls per method and outcome, and a latency histogram per method."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.calls: dict[tuple[str, str], int] = {}
        self.buckets: dict[str, list[int]] = {}  # method -> counts per bucket (+Inf last)
        self.sums: dict[str, float] = {}

    def observe(self, method: str, status: str, seconds: float) -> None:
        key = (method, status)
        self.calls[key] = self.calls.get(key, 0) + 1
        counts = self.buckets.get(method)
        if counts is None:
            counts = self.buckets[method] = [0] * (len(BUCKETS) + 1)
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.sums[method] = self.sums.get(method, 0.0) + seconds


class Metrics:
    """A Prometheus collector over one replica's state (read at scrape time)."""

    def __init__(
        self, replica: Replica, calls: CallMeter, workers: Callable[[], int] = lambda: 1
    ) -> None:
        self._replica = replica
        self._calls = calls
        self._workers = workers

    def describe(self) -> list[Any]:
        return []  # collected fresh each scrape; no fixed description to register

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        r = self._replica
        decided = CounterMetricFamily(
            "capgate_decisions", "Verify decisions, by outcome code", labels=["code"]
        )
        for code, n in sorted(r.audit.decided.copy().items()):
            decided.add_metric([code], n)
        yield decided
        checks = CounterMetricFamily(
            "capgate_verify_checks", "Verify decisions made (including memo hits)"
        )
        checks.add_metric([], r.audit.decisions)
        yield checks
        v = r.verifier
        for name, value, text in (
            (
                "capgate_chain_cache_misses",
                v.cache_misses,
                "Tokens analysed afresh (not in the chain cache)",
            ),
            (
                "capgate_memo_misses",
                v.memo_misses,
                "Memo-eligible checks decided afresh (not in the decision memo)",
            ),
            ("capgate_caveats_compiled", v.compiled, "Caveats parsed afresh"),
            (
                "capgate_audit_sealed",
                r.ledger.sealed,
                "Audit records this replica sealed into the ledger",
            ),
            (
                "capgate_budget_leases",
                r.budgets.leased,
                "Leases of budget uses this replica took from the store",
            ),
            (
                "capgate_budget_leased_uses",
                r.budgets.leased_uses,
                "Budget uses this replica leased from the store",
            ),
        ):
            c = CounterMetricFamily(name, text)
            c.add_metric([], value)
            yield c
        governance = r.governance
        for name, by_label, label, text in (
            (
                "capgate_governance_alerts",
                governance.alerts,
                "kind",
                "Deviation alerts this replica raised, by kind",
            ),
            (
                "capgate_governance_containments",
                governance.containments,
                "containment",
                "Containments this replica applied, by what it did",
            ),
        ):
            family = CounterMetricFamily(name, text, labels=[label])
            for label_value, total in sorted(by_label.copy().items()):
                family.add_metric([label_value], total)
            yield family
        calls = CounterMetricFamily(
            "capgate_rpcs", "RPCs answered, by method and status", labels=["method", "status"]
        )
        for (method, status), n in sorted(self._calls.calls.copy().items()):
            calls.add_metric([method, status], n)
        yield calls
        latency = HistogramMetricFamily(
            "capgate_rpc_seconds", "RPC latency, by method", labels=["method"]
        )
        for method, counts in sorted(self._calls.buckets.copy().items()):
            running, points = 0.0, []
            for edge, n in zip((*BUCKETS, float("inf")), list(counts), strict=True):
                running += n
                points.append(("+Inf" if edge == float("inf") else repr(edge), running))
            latency.add_metric([method], points, self._calls.sums.get(method, 0.0))
        yield latency
        gauges: tuple[tuple[str, float, str], ...] = (
            ("capgate_revocations", len(r.revocations), "Revoked ids this replica holds in memory"),
            ("capgate_agents", len(r.agents), "Agents this replica knows"),
            (
                "capgate_replica_staleness_seconds",
                r.staleness(),
                "Seconds since this replica last heard from its store",
            ),
            (
                "capgate_replica_fresh",
                float(r.fresh()),
                "1 while the replica serves decisions, 0 while it fails closed",
            ),
            (
                "capgate_change_feed_position",
                r.applied_seq,
                "The last change of the store's feed this replica applied",
            ),
            (
                "capgate_audit_pending_records",
                r.audit.pending,
                "Audit records waiting to be written",
            ),
            (
                "capgate_audit_write_lag_seconds",
                r.audit.lag(),
                "Age of the oldest audit record not written yet",
            ),
            ("capgate_budgets_held", r.budgets.held, "Budgets this replica holds a lease of"),
            (
                "capgate_budget_unspent_uses",
                r.budgets.unspent(),
                "Leased budget uses this replica has not spent yet",
            ),
            (
                "capgate_clock_agrees",
                float(r.trusted.agrees),
                "1 while this replica's clock agrees with the store's",
            ),
            ("capgate_workers", self._workers(), "Worker processes serving"),
        )
        for name, level, text in gauges:
            g = GaugeMetricFamily(name, text)
            g.add_metric([], level)
            yield g


def start_metrics(
    listen: str, metrics: Metrics, *, certfile: str | None = None, keyfile: str | None = None
) -> tuple[Any, int]:
    """Serve ``/metrics`` on ``HOST:PORT`` (a thread of its own); returns (server, port)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(
        int(port),
        host.strip("[]") or "127.0.0.1",
        registry=registry,
        certfile=certfile,
        keyfile=keyfile,
    )
    return server, int(server.server_port)
