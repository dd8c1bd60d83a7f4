"""The stores under faults: full and read-only databases, a writer that stops talking
inside its transaction, and clocks — the store's own, and the order it gives root keys."""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from capgate import UnavailableError
from capgate_server.store import (
    MIGRATIONS,
    AuditEvent,
    ChangeKind,
    DelegationRecord,
    PostgresStore,
    RootKeyRecord,
    SessionTimeouts,
    SqliteStore,
    Store,
    TokenRecord,
)

NOW = time.time()  # the real time, which a database's clock also reads


def ev(kind: str = "revoke") -> AuditEvent:
    return AuditEvent(at=NOW, principal="admin", kind=kind)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    s: Store = (
        SqliteStore(tmp_path / "s.db")
        if request.param == "sqlite"
        else PostgresStore(request.getfixturevalue("pg_url"))
    )
    s.migrate()
    yield s
    s.close()


# -- store errors are UNAVAILABLE with the reason, and nothing is half-written ---------------


def test_a_full_sqlite_database_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.migrate()
    assert store.revoke("a" * 32, NOW, NOW + 60, "admin", "", ev())
    # the database may not grow by a page more (a limit of the store's connection)
    for conn in store._all:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
    seq = store.last_change()
    with pytest.raises(UnavailableError, match="database or disk is full"):
        for i in range(1000):  # until a page more is needed
            store.revoke(f"{i:032x}", NOW, NOW + 60, "admin", "x" * 2000, ev())
    before_full = store.last_change()
    assert before_full >= seq  # what was acknowledged is there; the failed one is not
    assert len(store.revocations(0)) == 1 + (before_full - seq)
    store.ping()  # reads still work


def test_a_read_only_sqlite_database_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "s.db").migrate()
    store = SqliteStore(f"file:{tmp_path / 's.db'}?mode=ro")
    with pytest.raises(UnavailableError, match="readonly database"):
        store.revoke("a" * 32, NOW, NOW + 60, "admin", "", ev())
    assert store.revocations(0) == []


# -- a writer cut off inside its transaction ----------------------------------------------


def _stall_holding_the_feed_lock(
    store: PostgresStore,
    resume: threading.Event,
    holding: threading.Event,
    outcome: list[BaseException],
) -> None:
    """Append a change (taking the feed lock), then stop talking before the commit."""
    try:
        with store._tx() as cur:
            store._change(cur, ChangeKind.REVOCATION, "f" * 32, NOW + 60)
            holding.set()
            resume.wait(30)
    except BaseException as e:
        outcome.append(e)


@pytest.mark.postgres
def test_a_writer_stalled_holding_the_feed_lock_is_ended_and_the_feed_goes_on(pg_url) -> None:
    quick = SessionTimeouts(statement=10, lock=5, idle_in_transaction=0.5)
    stalled, other = PostgresStore(pg_url, timeouts=quick), PostgresStore(pg_url, timeouts=quick)
    try:
        stalled.migrate()
        resume, holding, outcome = threading.Event(), threading.Event(), []
        t = threading.Thread(
            target=_stall_holding_the_feed_lock, args=(stalled, resume, holding, outcome)
        )
        t.start()
        assert holding.wait(10)
        start = time.monotonic()
        # waits for the stalled session to be ended, then goes through
        assert other.revoke("a" * 32, NOW, NOW + 60, "admin", "", ev())
        waited = time.monotonic() - start
        assert 0.3 < waited < 4
        resume.set()
        t.join(10)
        assert len(outcome) == 1 and isinstance(outcome[0], UnavailableError)
        # the stalled change never became visible; the feed has no hole a reader waits on
        changes = other.changes_since(0)
        assert [(c.kind, c.key) for c in changes] == [(ChangeKind.REVOCATION, "a" * 32)]
        # and the stalled replica's next write works on a new session
        assert stalled.revoke("b" * 32, NOW, NOW + 60, "admin", "", ev())
        assert [c.key for c in other.changes_since(changes[-1].seq)] == ["b" * 32]
    finally:
        resume.set()
        stalled.close()
        other.close()


@pytest.mark.postgres
def test_a_write_blocked_past_its_lock_timeout_is_unavailable(pg_url) -> None:
    stalled = PostgresStore(pg_url, timeouts=SessionTimeouts(idle_in_transaction=0))
    other = PostgresStore(pg_url, timeouts=SessionTimeouts(lock=0.3))
    resume, holding, outcome = threading.Event(), threading.Event(), []
    try:
        stalled.migrate()
        t = threading.Thread(
            target=_stall_holding_the_feed_lock, args=(stalled, resume, holding, outcome)
        )
        t.start()
        assert holding.wait(10)
        with pytest.raises(UnavailableError, match="lock timeout"):
            other.revoke("a" * 32, NOW, NOW + 60, "admin", "", ev())
        assert other.revocations(0) == []  # rolled back whole
    finally:
        resume.set()
        stalled.close()
        other.close()


@pytest.mark.postgres
def test_sessions_carry_the_timeouts(pg_url) -> None:
    store = PostgresStore(
        pg_url, timeouts=SessionTimeouts(statement=7, lock=3, idle_in_transaction=2)
    )
    try:
        with store._read() as cur:
            cur.execute(
                "SELECT current_setting('statement_timeout'), "
                "current_setting('lock_timeout'), "
                "current_setting('idle_in_transaction_session_timeout'), "
                "current_setting('search_path')"
            )
            statement, lock, idle, search_path = cur.fetchone()
        assert (statement, lock, idle) == ("7s", "3s", "2s")
        # options given in the URL (here the test's schema) are kept
        assert search_path in urllib.parse.unquote(pg_url)
    finally:
        store.close()


# -- clocks ---------------------------------------------------------------------------------


def test_the_store_clock(store: Store) -> None:
    clock = store.clock()
    if isinstance(store, SqliteStore):
        assert clock is None  # the store's clock is this host's
    else:
        assert clock is not None and abs(clock - time.time()) < 5


def test_pruning_follows_the_store_clock_not_a_fast_caller(store: Store) -> None:
    store.revoke("a" * 32, NOW, NOW + 60, "admin", "", ev())  # expires in a minute
    fast = NOW + 2 * 3600  # a replica whose clock runs two hours ahead
    removed = store.prune_revocations(fast, margin=600)
    if isinstance(store, SqliteStore):
        assert removed == 1  # one host, one clock: the caller's says when
    else:
        assert removed == 0 and store.revocations(0) == [("a" * 32, NOW + 60)]


def test_latest_hop_into_an_agent(store: Store) -> None:
    assert store.latest_hop_into("alice") == 0.0
    store.record_token(TokenRecord("t1", "alice", "k", NOW + 90, NOW + 600, ()), ev("issue"))
    store.record_token(TokenRecord("t2", "bob", "k", NOW + 500, NOW + 600, ()), ev("issue"))
    assert store.latest_hop_into("alice") == NOW + 90
    store.record_delegations(
        [DelegationRecord("d1", "t2", "t2", "bob", "alice", NOW + 120, None, True)]
    )
    assert store.latest_hop_into("alice") == NOW + 120
    assert store.latest_hop_into("bob") == NOW + 500


def test_root_key_generations_survive_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path, isolation_level=None)
    types = {
        "blob": "BLOB",
        "real": "REAL",
        "bigint": "INTEGER",
        "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
    }
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for stmt in MIGRATIONS[0]:  # a database made before generations existed
        conn.execute(stmt.format(**types))
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.executemany(
        "INSERT INTO root_keys (id, sealed, created_at) VALUES (?, ?, ?)",
        [("k-late", b"s", 200.0), ("k-early", b"s", 100.0), ("k-mid", b"s", 150.0)],
    )
    conn.close()
    store = SqliteStore(path)
    store.migrate()
    assert [(r.id, r.generation) for r in store.root_keys()] == [
        ("k-early", 1),
        ("k-mid", 2),
        ("k-late", 3),
    ]  # the order their clocks gave them
    store.add_root_key(RootKeyRecord("k-new", b"s", 50.0))  # added last, dated earliest
    assert store.root_keys()[-1].id == "k-new" and store.root_keys()[-1].generation == 4
    store.close()
