"""Worker processes on one host: one worker against two, and what a revoke's barrier costs.

Each server is ``capgate serve --workers N`` in its own process tree; the load is
``capgate bench`` in client processes of its own (a single client connection lands
on one worker: SO_REUSEPORT spreads connections, not calls). On a 2-core machine
the load generator takes a core's share too, so two workers can gain only what
the clients leave them; ``benchmarks/device/scale.sh`` is the same measurement on
a machine with cores to spare. The barrier: a revoke on a server with two workers
returns once the other worker has applied it; against a single process, the
difference is the barrier's cost (a wake-up datagram and the sibling's read of
the change feed).
"""

from __future__ import annotations

import json
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capgate_client import Client

from conftest import NOTES, RATES, ratio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import CAPGATE, ServerProcess

SECONDS = 4.0
CLIENTS = 2
REVOKES = 40


class _Served:
    def __init__(self, data: Path, workers: int) -> None:
        self.proc = ServerProcess(data, workers=workers).start()
        with self.proc.client() as admin:
            _, cred = admin.create_agent("bench", ["read:/data/**"], max_ttl=86400)
            self.service = admin.create_principal("bench-svc", "service").credential
        with Client(self.proc.address, cred) as agent:
            self.token = agent.issue("read:/data/**").token

    def bench(self, mode: str, batch: int) -> dict[str, float]:
        r = subprocess.run(
            [
                *CAPGATE,
                "--server",
                self.proc.address,
                "--json",
                "bench",
                self.token,
                "--action",
                "read",
                "--resource",
                "/data/x",
                "--agent",
                "bench",
                "--mode",
                mode,
                "--batch",
                str(batch),
                "--clients",
                str(CLIENTS),
                "--duration",
                str(SECONDS),
            ],
            env={"CAPGATE_CREDENTIAL": self.service, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        out: dict[str, float] = json.loads(r.stdout)
        assert not out["errors"] and out["allowed"] == out["checks"]
        return out

    def revoke_ms(self) -> list[float]:
        took = []
        with self.proc.client() as admin:
            admin.revoke("f" * 32)  # the connection and the store warmed
            for _ in range(REVOKES):
                start = time.perf_counter()
                admin.revoke(secrets.token_hex(16), "benchmark")
                took.append((time.perf_counter() - start) * 1000)
        return took

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, _Served]]:
    out = {n: _Served(tmp_path_factory.mktemp(f"workers-{n}") / "data", n) for n in (1, 2)}
    yield out
    for s in out.values():
        s.stop()


@pytest.mark.parametrize(("mode", "batch"), [("batch", 256), ("unary", 1)])
def test_one_worker_against_two(benchmark, served, mode: str, batch: int) -> None:
    def run() -> list[tuple[int, dict[str, float]]]:
        # alternated, so a burst of other work on the machine lands on both
        return [(n, served[n].bench(mode, batch)) for n in (1, 2, 1, 2)]

    results = benchmark.pedantic(run, rounds=1, iterations=1)
    what = "checks" if mode == "batch" else "calls"
    names = {}
    for n in (1, 2):
        runs = [out for m, out in results if m == n]
        names[n] = f"{mode} {what}, {n} worker(s), {CLIENTS} client processes"
        RATES[names[n]] = statistics.mean(out["checks_per_second"] for out in runs)
        NOTES.append(
            f"{names[n]}: "
            + "; ".join(
                f"{out['checks_per_second']:,}/s p50 {out['p50_ms']} ms p99 {out['p99_ms']} ms"
                for out in runs
            )
        )
    one = [out["checks_per_second"] for m, out in results if m == 1]
    NOTES.append(
        f"{mode}: two runs of the same 1-worker server differ by "
        f"{abs(one[0] - one[1]) / max(one):.1%} here"
    )
    # "not slower": at most the 5% by which two runs of one server differ on this
    # machine (the clients share its two cores, so two workers cannot be faster)
    ratio(f"{mode}: 2 workers vs 1 (this machine, clients beside them)", names[2], names[1], 0.95)


def test_revoke_with_the_barrier(benchmark, served) -> None:
    def run() -> dict[int, list[float]]:
        out: dict[int, list[float]] = {1: [], 2: []}
        for n in (1, 2, 1, 2, 1, 2):  # alternated: other work on the machine lands on both
            out[n] += served[n].revoke_ms()
        return out

    results = benchmark.pedantic(run, rounds=1, iterations=1)
    for n, took in results.items():
        med = statistics.median(took)
        p99 = sorted(took)[int(len(took) * 0.99) - 1]
        RATES[f"revoke, {n} worker(s), one after another"] = 1000 / med
        NOTES.append(
            f"revoke with {n} worker(s): median {med:.2f} ms, p99 {p99:.2f} ms "
            f"({len(took)} revokes)"
        )
    one, two = (statistics.median(results[n]) for n in (1, 2))
    NOTES.append(f"the barrier adds {two - one:+.2f} ms to a revoke's median")
