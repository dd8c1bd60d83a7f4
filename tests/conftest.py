"""Shared fixtures: a fixed clock, PostgreSQL schemas, and real servers on port 0."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


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
    """A PostgreSQL URL whose tables live in a fresh schema, dropped afterwards.

    PostgreSQL is required: when it is not reachable the test fails, it is not skipped.
    """
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
