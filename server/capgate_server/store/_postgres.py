"""The PostgreSQL backend: state shared by many replicas, changes pushed with NOTIFY.

psycopg 3 (sync) on the replica's store thread: the server already runs store
calls off the event loop, psycopg's binary wheel needs no system library, and
``Connection.notifies()`` gives LISTEN without a second event loop.

Writers of the change feed take one advisory transaction lock, so change
sequence numbers become visible in commit order and a reader following
``seq > last`` can never skip one. The lock is taken in the statement that
appends the change row, the last one before the commit, and the sequence number
is drawn under it. Each change also sends ``NOTIFY capgate_changes``; replicas
wake at once and read the feed.

No session of capgate's may hold that lock across a stall: every connection
sets ``SessionTimeouts``. A holder cut off between its append and its commit
sits idle in its transaction until ``idle_in_transaction_session_timeout``
ends its session; its transaction rolls back (its seq is never seen, a gap
readers step over) and the lock passes on. Writers queued behind it wait at
most ``lock_timeout``, which is longer, so they go through; if not, they fail
as ``UnavailableError``. Readers never take the lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import psycopg.sql

from capgate import UnavailableError
from capgate_server.store._base import ChangeKind
from capgate_server.store._sql import SqlStore

__all__ = ["PostgresStore", "SessionTimeouts"]

log = logging.getLogger("capgate.store.postgres")
_TYPES = {
    "blob": "BYTEA",
    "real": "DOUBLE PRECISION",
    "bigint": "BIGINT",
    "serial": "BIGSERIAL PRIMARY KEY",
    # the writing transaction of an audit record, for the order the ledger seals in
    "txid": "BIGINT DEFAULT ((pg_current_xact_id())::text)::bigint",
}
_CHANNEL = "capgate_changes"
_CHANGES_LOCK = 0x63617067  # advisory lock ids ("capg", "capm")
_MIGRATE_LOCK = 0x6361706D
_SEAL_LOCK = 0x63617073  # ("caps"): one replica seals the audit ledger at a time


@dataclass(frozen=True)
class SessionTimeouts:
    """Bounds set on each of capgate's sessions, in seconds (0 turns one off).

    ``idle_in_transaction`` ends the session of a replica that stopped talking in
    the middle of a transaction (capgate never pauses inside one); ``lock`` bounds
    how long a write waits for a lock, longer than ``idle_in_transaction`` so that
    a writer queued behind a dead holder outlasts it; ``statement`` bounds any
    one statement, lock waits included.
    """

    statement: float = 15.0
    lock: float = 8.0
    idle_in_transaction: float = 5.0

    def options(self) -> dict[str, str]:
        return {
            "statement_timeout": _ms(self.statement),
            "lock_timeout": _ms(self.lock),
            "idle_in_transaction_session_timeout": _ms(self.idle_in_transaction),
        }


class PostgresStore(SqlStore):
    placeholder = "%s"
    _lock_row = " FOR UPDATE"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        timeouts: SessionTimeouts | None = None,
        writer: str = "",
    ) -> None:
        self.url = url
        self.writer = writer
        self._timeout = connect_timeout
        self.timeouts = timeouts or SessionTimeouts()
        # one connection per calling thread: the server's lanes (writes, the change
        # feed, audit records) never wait on each other's round trips
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._guard = threading.Lock()
        self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        try:
            conn = self._open()
        except psycopg.Error as e:
            raise _unavailable(e) from None
        self._local.conn = conn
        with self._guard:
            self._all = [c for c in self._all if not c.closed]
            self._all.append(conn)
        return conn

    def _open(self) -> psycopg.Connection[Any]:
        """A new session with capgate's timeouts (set after connecting, so options
        given in the URL, such as a search_path, are kept)."""
        conn = psycopg.connect(self.url, autocommit=True, **self._params())
        try:
            for name, value in self.timeouts.options().items():
                conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        except BaseException:
            conn.close()
            raise
        return conn

    def _params(self) -> dict[str, Any]:
        """Connection options: a cut-off database is noticed in seconds, not minutes."""
        return {
            "connect_timeout": max(1, int(self._timeout)),
            "application_name": "capgate",
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "tcp_user_timeout": int(self._timeout * 1000),
        }

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        conn = self._connect()
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield cur
        except _UNAVAILABLE as e:
            raise _unavailable(e) from None

    @contextmanager
    def _read(self) -> Iterator[Any]:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                yield cur
        except _UNAVAILABLE as e:
            raise _unavailable(e) from None

    def _change(self, cur: Any, kind: ChangeKind, key: str, value: float | None = None) -> None:
        # One statement takes the feed lock, then draws the seq and appends the row;
        # the lock is held from here to the commit and no longer.
        cur.execute(
            "WITH feed_lock AS MATERIALIZED ("
            "SELECT pg_advisory_xact_lock(%s), pg_notify(%s, '')) "
            "INSERT INTO changes (kind, key, value) "
            "SELECT %s::text, %s::text, %s::double precision FROM feed_lock",
            (_CHANGES_LOCK, _CHANNEL, str(kind), key, value),
        )

    def _seal_lock(self, cur: Any) -> bool:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (_SEAL_LOCK,))
        return bool(cur.fetchone()[0])

    def _seal_order(self) -> tuple[str, str]:
        # Only records of transactions older than every one still running: no record
        # written from now on can come before them, so the order never changes.
        return ("AND txid < (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint", "txid, seq")

    def _store_clock(self, cur: Any) -> float | None:
        cur.execute("SELECT extract(epoch FROM clock_timestamp())::double precision")
        return float(cur.fetchone()[0])

    def migrate(self) -> None:
        with self._tx() as cur:
            # a migration may wait for another replica's and may take long: no bounds
            # but the idle one (a migrator that died still lets go)
            cur.execute("SET LOCAL lock_timeout = 0")
            cur.execute("SET LOCAL statement_timeout = 0")
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            self._create_own_schema(cur)
            self._apply_migrations(cur, _TYPES)

    @staticmethod
    def _create_own_schema(cur: Any) -> None:
        """Create the schema ``search_path`` names first (``?options=-csearch_path=X``),
        so capgate can be given a schema of its own without a separate setup step."""
        cur.execute("SELECT current_setting('search_path')")
        first = cur.fetchone()[0].split(",")[0].strip().strip('"')
        if first and first not in ("$user", "public", "pg_catalog"):
            cur.execute(
                psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    psycopg.sql.Identifier(first)
                )
            )

    def ping(self) -> None:
        with self._read() as cur:
            cur.execute("SELECT 1")

    def close(self) -> None:
        with self._guard:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()

    def listen(self, on_change: Callable[[], None], stop: threading.Event) -> None:
        """Block, calling ``on_change`` for each NOTIFY, until ``stop`` is set.

        Reconnects after errors; the replica's periodic catch-up covers any gap.
        """
        while not stop.is_set():
            try:
                with self._open() as conn:
                    conn.execute(f"LISTEN {_CHANNEL}")
                    on_change()  # catch up on whatever happened while not listening
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            on_change()
            except psycopg.Error as e:
                log.warning("LISTEN connection lost: %s", _one_line(e))
                stop.wait(1.0)


# Errors that mean "the database cannot do this now", not "this request is wrong":
# connection loss, timeouts, disk full (OperationalError), a read-only server, and
# this session ended for idling in a transaction.
_UNAVAILABLE = (
    psycopg.OperationalError,
    psycopg.errors.ReadOnlySqlTransaction,
    psycopg.errors.IdleInTransactionSessionTimeout,
    # a concurrent transaction won a race this one should have waited out:
    # nothing was written, and the caller may try again
    psycopg.errors.UniqueViolation,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
)


def _unavailable(e: psycopg.Error) -> UnavailableError:
    return UnavailableError(f"PostgreSQL unavailable: {_one_line(e)}", reason=_one_line(e))


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _ms(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"
