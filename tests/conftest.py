"""Shared fixtures: a fixed clock, PostgreSQL schemas, and real servers on port 0.

Tests that need PostgreSQL (those using ``pg_url``, or marked ``postgres``), those
that need libmacaroons (marked ``libmacaroons``) and the console's browser tests
(marked ``chromium``: Debian's chromium driven by Playwright) run when it is there. On a
developer's machine without it they are skipped, with one line in the summary;
in CI (``CAPGATE_CI=1``, set by ``.ci/run``) a missing dependency fails them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest

REQUIRED = os.environ.get("CAPGATE_CI") == "1"
# CI explores the same examples on every run (a red build is always reproducible);
# a developer's run draws new ones each time.
hypothesis.settings.register_profile("ci", derandomize=True)
if REQUIRED:
    hypothesis.settings.load_profile("ci")
_MISSING: dict[str, tuple[str, int]] = {}  # dependency -> (why, tests skipped)


def _postgres_problem() -> str | None:
    from harness import PG_URL, pg_reachable

    return None if pg_reachable() else f"PostgreSQL is not reachable at {PG_URL}"


def _libmacaroons_problem() -> str | None:
    from harness import load_libmacaroons

    return None if load_libmacaroons() is not None else "libmacaroons (libmacaroons0) is missing"


def _chromium_problem() -> str | None:
    from harness import chromium_problem

    return chromium_problem()


_CHECKS = {
    "postgres": _postgres_problem,
    "libmacaroons": _libmacaroons_problem,
    "chromium": _chromium_problem,
}


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        if "pg_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
    if REQUIRED:
        return  # CI: every dependency must be there; a missing one fails its tests
    problems = {name: check() for name, check in _CHECKS.items()}
    for item in items:
        for name, why in problems.items():
            if why is not None and item.get_closest_marker(name) is not None:
                item.add_marker(pytest.mark.skip(reason=why))
                _MISSING[name] = (why, _MISSING.get(name, (why, 0))[1] + 1)
                break


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for why, count in _MISSING.values():
        terminalreporter.write_line(
            f"capgate: {why}: skipped {count} tests that need it (CI runs them all; "
            "see CONTRIBUTING.md)",
            yellow=True,
        )


class FakeClock:
    """A clock tests move by hand; nothing ever sleeps to pass time."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose tables live in a fresh schema, dropped afterwards."""
    from harness import pg_schema

    with pg_schema() as url:
        yield url


@pytest.fixture
def server(tmp_path):
    """A real capgate server on port 0 (embedded store), stopped afterwards."""
    from harness import ServerThread

    s = ServerThread(tmp_path / "data").start()
    yield s
    s.stop()


@pytest.fixture
def console(tmp_path):
    """A real capgate server with the operator console on a free loopback port."""
    from harness import ServerThread

    s = ServerThread(tmp_path / "data", console_listen="127.0.0.1:0").start()
    yield s
    s.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Opens store objects (each with connections of its own) on one fresh database,
    SQLite and PostgreSQL; all closed afterwards."""
    from capgate_server.store import PostgresStore, SqliteStore, Store

    opened: list[Store] = []
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else ""

    def open_() -> Store:
        s: Store = PostgresStore(url) if url else SqliteStore(tmp_path / "s.db")
        opened.append(s)
        return s

    open_().migrate()
    yield open_
    for s in opened:
        s.close()
