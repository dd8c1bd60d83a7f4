"""Scale-out on one host: ``capgate serve --workers N`` for N = 1, 2, 4, 8, pinned to cores.

Run by ``scale.sh`` on a machine with at least 16 cores (CPU only). For each N the
server's whole process tree is pinned (taskset) to cores 0..N-1 and the load
generator, ``capgate bench`` with one client process per core, to the cores left
over (at least 8 of them). Batch (256 checks per call) and unary Verify are
measured for ``--seconds`` each. Prints a Markdown table (throughput, the multiple
of one worker, p50/p99 per call) and writes every figure to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CAPGATE = [sys.executable, "-m", "capgate_cli"]


def cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def cpuset(ids: list[int]) -> str:
    return ",".join(map(str, ids))


class Server:
    def __init__(self, workers: int, pinned: list[int], data: Path) -> None:
        args = [
            "taskset",
            "-c",
            cpuset(pinned),
            *CAPGATE,
            "serve",
            "--data-dir",
            str(data),
            "--listen",
            "127.0.0.1:0",
            "--workers",
            str(workers),
        ]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.address = ""
        deadline = time.monotonic() + 60
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.search(r"serving on (\S+?)(;|$)", line)
            if m:
                self.address = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        if not self.address:
            self.stop()
            raise SystemExit(f"capgate serve --workers {workers} did not start")
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        admin = (data / "admin.credential").read_text().strip()
        from capgate_client import Client

        with Client(self.address, admin) as c:
            _, agent = c.create_agent("bench", ["read:/data/**"], max_ttl=86400)
            self.service = c.create_principal("bench-svc", "service").credential
        with Client(self.address, agent) as c:
            self.token = c.issue("read:/data/**").token

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def bench(
    server: Server, load_cores: list[int], mode: str, seconds: float, concurrency: int
) -> dict[str, Any]:
    batch = 256 if mode == "batch" else 1
    r = subprocess.run(
        [
            "taskset",
            "-c",
            cpuset(load_cores),
            *CAPGATE,
            "--server",
            server.address,
            "--json",
            "bench",
            server.token,
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
            str(len(load_cores)),
            "--concurrency",
            str(concurrency),
            "--duration",
            str(seconds),
        ],
        env={**os.environ, "CAPGATE_CREDENTIAL": server.service},
        capture_output=True,
        text=True,
        timeout=seconds * 4 + 120,
        check=True,
    )
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,2,4,8", help="worker counts to measure")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds per measurement")
    p.add_argument("--concurrency", type=int, default=32, help="calls in flight per client")
    p.add_argument("--out", type=Path, default=Path("scale-results.json"))
    p.add_argument(
        "--min-load-cores",
        type=int,
        default=8,
        help="cores the load generator needs beside the largest server (a smoke "
        "test on a small machine may lower it)",
    )
    args = p.parse_args()
    counts = [int(x) for x in args.workers.split(",")]
    ids = cores()
    need = max(counts) + args.min_load_cores
    if len(ids) < need:
        print(f"needs at least {need} usable cores, has {len(ids)}", file=sys.stderr)
        return 2
    if shutil.which("taskset") is None:
        print("needs taskset (util-linux)", file=sys.stderr)
        return 2
    machine = {
        "cores": len(ids),
        "cpu": _cpu_name(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
    rows: list[dict[str, Any]] = []
    for n in counts:
        server_cores, load_cores = ids[:n], ids[n:]
        with tempfile.TemporaryDirectory(prefix="capgate-scale-") as tmp:
            server = Server(n, server_cores, Path(tmp) / "data")
            try:
                for mode in ("batch", "unary"):
                    bench(server, load_cores, mode, 2.0, args.concurrency)  # warm up
                    out = bench(server, load_cores, mode, args.seconds, args.concurrency)
                    rows.append(
                        {
                            "workers": n,
                            "mode": mode,
                            "server_cores": cpuset(server_cores),
                            "load_processes": len(load_cores),
                            **out,
                        }
                    )
                    print(
                        f"workers {n} {mode}: {out['checks_per_second']:,} checks/s "
                        f"(p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms)",
                        flush=True,
                    )
            finally:
                server.stop()
    args.out.write_text(json.dumps({"machine": machine, "runs": rows}, indent=2) + "\n")
    print()
    print(f"{machine['cores']} cores, {machine['cpu']}, Python {machine['python']}")
    print()
    print("| workers | mode | checks/s | × 1 worker | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for mode in ("batch", "unary"):
        base = next(r["checks_per_second"] for r in rows if r["mode"] == mode)
        for r in (r for r in rows if r["mode"] == mode):
            print(
                f"| {r['workers']} | {mode} | {r['checks_per_second']:,} | "
                f"{r['checks_per_second'] / base:.2f} | {r['p50_ms']} | {r['p99_ms']} |"
            )
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
