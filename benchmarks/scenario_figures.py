"""Run the governance scenarios and write their figures into benchmarks/README.md.

    .venv/bin/python benchmarks/scenario_figures.py [--days 7] [--fleet-runs 5] [--bench-runs 3]

A week of the synthetic fleet (``tests/scenario.py``) on the embedded store with the
scenario's clock: its false alerts, the access review it implies, and each injected
deviation with its detection delay; then, where PostgreSQL answers, the injected
researcher on two replicas sharing it, ``--fleet-runs`` times: the delay from the first
deviating decision until both replicas deny; and ``benchmarks/test_governance.py``
``--bench-runs`` times, for the range of its on/off throughput ratios. The section
between the governance markers of the README is replaced.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from harness import PG_URL, ServerProcess, ServerThread, pg_reachable, pg_schema  # noqa: E402
from scenario import WORKERS, Fleet, contain_across  # noqa: E402

BEGIN, END = "<!-- governance-figures -->", "<!-- /governance-figures -->"
POLICIES = {
    "researcher": "suspend",
    "billing": "suspend",
    "summariser": "alert",
    "orchestrator": "alert",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def week(days: int) -> list[str]:
    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerThread(Path(tmp) / "data", clock=clock).start()
        replica = server.app.replica
        admin = server.client()

        def settle() -> None:
            server.run(replica.audit.flush())
            server.run(replica.governance.step())

        f = Fleet(server.address, admin, clock, settle=settle)
        for agent, containment in POLICIES.items():
            admin.set_policy(agent, containment=containment)
        f.days(days)
        false_alerts = admin.alerts(limit=1000)
        reviews = admin.review(since=days * 86400)
        injections = [
            f.inject_prompt_injection(),
            f.inject_leaked_token(),
            f.inject_creep(),
            f.inject_deny_burst(),
        ]
        f.close()
        admin.close()
        server.stop()
    weeks = len(WORKERS) * (days - 1) / 7
    out = [
        f"A replayed {days}-day week (one day of warm-up), {len(WORKERS)} working agents "
        f"and an idle one, {f.decisions:,} decisions in ten-minute ticks with a daily "
        "rhythm: **false alerts "
        f"{len(false_alerts)}** ({len(false_alerts) / weeks:.2f} per agent-week; target "
        "≤ 1)" + "".join(f"\n- {a.reason}" for a in false_alerts) + ".",
        "",
        "Access review of the week (`capgate review --since 7d`):",
        "",
        "| agent | ceiling | proposed | max depth |",
        "|---|---|---|---|",
    ]
    for r in reviews:
        proposed = "idle: suspend or delete" if r.idle else "<br>".join(r.proposed)
        out.append(
            f"| {r.agent} | {'<br>'.join(r.ceiling)} | {proposed} | "
            f"{r.max_depth} → {r.proposed_max_depth} |"
        )
    out += [
        "",
        "Injected deviations, each repeated in real time until the agent was "
        "contained (policy `suspend`) or flagged (policy `alert`), the server's own "
        "0.2 s audit flush doing the detecting:",
        "",
        "| deviation | alerts | outcome | decisions until then | of them allowed | ms |",
        "|---|---|---|---|---|---|",
    ]
    for i in injections:
        reasons = "<br>".join(a.reason for a in i.alerts)
        outcome = "suspended" if i.contained else "flagged" if i.flagged else "missed"
        out.append(
            f"| {i.name} | {reasons} | {outcome} | {i.decisions} | {i.allowed} | {i.ms:.0f} |"
        )
    return out


def fleet(runs: int) -> list[str]:
    if runs <= 0:
        return []
    if not pg_reachable():
        return [f"(PostgreSQL at {PG_URL} did not answer: the fleet figures were not run.)"]
    from capgate_server import new_kek_text

    figures = []
    with tempfile.TemporaryDirectory() as tmp, pg_schema() as url:
        kek = Path(tmp) / "kek"
        kek.write_text(new_kek_text())
        replicas = [
            ServerProcess(
                Path(tmp) / n, ["--store", url, "--kek-file", str(kek), "--poll-interval", "0.5"]
            ).start()
            for n in ("a", "b")
        ]
        try:
            for i in range(runs):
                figures.append(
                    contain_across(
                        replicas[0].address,
                        replicas[1].address,
                        replicas[0].admin_credential,
                        f"researcher{i}",
                    )
                )
        finally:
            for p in replicas:
                p.stop()
    both = [max(f["contained_a_ms"], f["contained_b_ms"]) for f in figures]
    allowed = [f["allowed"] for f in figures]
    alerts = [f["alerts"] for f in figures]
    return [
        f"Two replicas on PostgreSQL, the injected researcher (`suspend`) reading "
        f"/secrets alternately at each, {runs} runs: contained at both replicas "
        f"**{statistics.median(both):.0f} ms** after the first deviating decision "
        f"(median; {min(both):.0f}–{max(both):.0f} ms), after "
        f"{statistics.median(allowed):.0f} allowed decisions (median; "
        f"{min(allowed)}–{max(allowed)}; a decision every ~1 ms here); alerts raised "
        f"per run: {sorted(set(alerts))} (once fleet-wide)."
    ]


def ratios(runs: int) -> list[str]:
    """Run ``benchmarks/test_governance.py`` ``runs`` times; the range of its ratios."""
    import os
    import subprocess

    if runs <= 0:
        return []
    found: dict[str, list[float]] = {}
    notes: list[str] = []
    for _ in range(runs):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "benchmarks/test_governance.py",
                "-p",
                "no:randomly",
                "--benchmark-only",
                "-q",
            ],
            cwd=ROOT,
            capture_output=True,
            check=False,
            env={**os.environ},
        )
        last = json.loads((ROOT / "benchmarks" / ".last-run.json").read_text())
        for r in last.get("ratios", []):
            found.setdefault(r["label"], []).append(r["ratio"])
        notes = [n for n in last.get("notes", []) if n.startswith("detector")]
    if not found:
        return ["(The throughput benchmark did not run.)"]
    load = os.getloadavg()[0]
    lines = [
        f"Verify throughput with governance on against off (`test_governance.py`, "
        f"{runs} runs on this machine, load average {load:.1f}; target ≥ 0.8):",
        "",
    ]
    for label, values in found.items():
        lines.append(
            f"- {label}: median **{statistics.median(values):.2f}** "
            f"({min(values):.2f}–{max(values):.2f})"
        )
    lines += [f"- {n}" for n in notes]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--fleet-runs", type=int, default=5)
    ap.add_argument("--bench-runs", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print, leave the README alone")
    args = ap.parse_args()
    lines = [
        BEGIN,
        "",
        "## Governance scenarios",
        "",
        "Written by `benchmarks/scenario_figures.py`.",
        "",
        *week(args.days),
        "",
        *fleet(args.fleet_runs),
        "",
        *ratios(args.bench_runs),
        "",
        END,
    ]
    section = "\n".join(lines)
    if args.no_write:
        print(section)
        return
    readme = ROOT / "benchmarks" / "README.md"
    text = readme.read_text()
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    readme.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
