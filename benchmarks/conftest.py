"""Benchmark plumbing: each benchmark records its rate; the summary prints the ratios.

Ratios compare runs made in the same process, one after the other, so they
hold across machines far better than absolute figures do.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import pg_schema

RATES: dict[str, float] = {}  # name -> operations per second
RATIOS: list[tuple[str, str, str, float | None]] = []  # label, name, baseline, target
NOTES: list[str] = []  # other measured figures, printed with the summary


def record(benchmark: Any, name: str, ops_per_round: int = 1) -> float:
    """Store the rate of a finished pytest-benchmark run under ``name``."""
    mean = benchmark.stats.stats.mean
    rate = ops_per_round / mean
    RATES[name] = rate
    benchmark.extra_info["ops_per_second"] = round(rate)
    return rate


def ratio(label: str, name: str, baseline: str, target: float | None = None) -> None:
    RATIOS.append((label, name, baseline, target))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RATES:
        return
    tr = terminalreporter
    tr.section("capgate: rates and ratios (same process, same run)")
    for name, rate in RATES.items():
        tr.write_line(f"  {name:48} {rate:>14,.0f} /s   ({1e6 / rate:,.2f} us each)")
    lines = []
    for label, name, base, target in RATIOS:
        if name in RATES and base in RATES:
            r = RATES[name] / RATES[base]
            verdict = (
                ""
                if target is None
                else ("  (target {:.2f}: {})".format(target, "met" if r >= target else "NOT met"))
            )
            lines.append({"label": label, "ratio": round(r, 3), "target": target})
            tr.write_line(f"  {label:60} {r:8.2f}x{verdict}")
    for note in NOTES:
        tr.write_line(f"  {note}")
    out = Path(__file__).parent / ".last-run.json"
    out.write_text(
        json.dumps(
            {"rates": {k: round(v) for k, v in RATES.items()}, "ratios": lines, "notes": NOTES},
            indent=2,
        )
        + "\n"
    )


@pytest.fixture
def pg_url() -> Iterator[str]:
    with pg_schema() as url:
        yield url
