"""Shared fixtures: a fixed clock, PostgreSQL schemas, and real servers on port 0."""

from __future__ import annotations

import os
import secrets
import urllib.parse
from collections.abc import Iterator

import psycopg
import pytest

PG_URL = os.environ.get("CAPGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


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


def pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options={urllib.parse.quote(f'-csearch_path={schema}')}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose tables live in a fresh schema, dropped afterwards.

    PostgreSQL is required: when it is not reachable the test fails, it is not skipped.
    """
    schema = "capgate_t_" + secrets.token_hex(6)
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        pytest.fail(f"PostgreSQL is required at {PG_URL} (set CAPGATE_TEST_PG): {e}")
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield pg_schema_url(schema)
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def server(tmp_path):
    """A real capgate server on port 0 (embedded store), stopped afterwards."""
    from harness import ServerThread

    s = ServerThread(tmp_path / "data").start()
    yield s
    s.stop()
