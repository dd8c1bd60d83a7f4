"""The PostgreSQL backend: state shared by many replicas, changes pushed with NOTIFY.

psycopg 3 (sync) on the replica's store thread: the server already runs store
calls off the event loop, psycopg's binary wheel needs no system library, and
``Connection.notifies()`` gives LISTEN without a second event loop.

Writers of the change feed take one advisory transaction lock, so change
sequence numbers become visible in commit order and a reader following
``seq > last`` can never skip one. Each change also sends ``NOTIFY
capgate_changes``; replicas wake at once and read the feed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from capgate import UnavailableError
from capgate_server.store._sql import SqlStore

__all__ = ["PostgresStore"]

log = logging.getLogger("capgate.store.postgres")
_TYPES = {"blob": "BYTEA", "real": "DOUBLE PRECISION", "bigint": "BIGINT",
          "serial": "BIGSERIAL PRIMARY KEY"}
_CHANNEL = "capgate_changes"
_CHANGES_LOCK = 0x63617067  # advisory lock ids ("capg", "capm")
_MIGRATE_LOCK = 0x6361706D


class PostgresStore(SqlStore):
    placeholder = "%s"

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self._timeout = connect_timeout
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
            conn = psycopg.connect(self.url, autocommit=True, **self._params())
        except psycopg.Error as e:
            raise UnavailableError(f"PostgreSQL unavailable: {_one_line(e)}") from None
        self._local.conn = conn
        with self._guard:
            self._all = [c for c in self._all if not c.closed]
            self._all.append(conn)
        return conn

    def _params(self) -> dict[str, Any]:
        """Connection options: a cut-off database is noticed in seconds, not minutes."""
        return {"connect_timeout": max(1, int(self._timeout)), "application_name": "capgate",
                "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                "keepalives_count": 2, "tcp_user_timeout": int(self._timeout * 1000)}

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        conn = self._connect()
        try:
            with conn.transaction(), conn.cursor() as cur:
                yield cur
        except psycopg.OperationalError as e:
            raise UnavailableError(f"PostgreSQL unavailable: {_one_line(e)}") from None

    @contextmanager
    def _read(self) -> Iterator[Any]:
        conn = self._connect()
        try:
            with conn.cursor() as cur:
                yield cur
        except psycopg.OperationalError as e:
            raise UnavailableError(f"PostgreSQL unavailable: {_one_line(e)}") from None

    def _lock_changes(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_CHANGES_LOCK,))
        cur.execute("SELECT pg_notify(%s, '')", (_CHANNEL,))

    def migrate(self) -> None:
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            self._apply_migrations(cur, _TYPES)

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
                with psycopg.connect(self.url, autocommit=True, **self._params()) as conn:
                    conn.execute(f"LISTEN {_CHANNEL}")
                    on_change()  # catch up on whatever happened while not listening
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            on_change()
            except psycopg.Error as e:
                log.warning("LISTEN connection lost: %s", _one_line(e))
                stop.wait(1.0)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__
