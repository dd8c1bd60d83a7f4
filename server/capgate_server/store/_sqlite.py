"""The embedded SQLite backend: one file, WAL, synchronous commits.

SQLite's operational errors (disk full, read-only file, locked, I/O error)
leave this module as ``UnavailableError`` carrying SQLite's own reason; the
transaction they interrupt is rolled back, so nothing is acknowledged.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from capgate import UnavailableError
from capgate_server.store._sql import SqlStore

_TYPES = {
    "blob": "BLOB",
    "real": "REAL",
    "bigint": "INTEGER",
    "serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "txid": "INTEGER",
}


class SqliteStore(SqlStore):
    """One connection per calling thread (the server's store lanes), all on one file.

    WAL lets readers proceed during a write, and BEGIN IMMEDIATE serializes
    writers; ``synchronous=FULL`` makes every commit durable before the call
    returns (a revocation survives kill -9 and power loss alike).
    """

    def __init__(self, path: str | Path, *, writer: str = "") -> None:
        self.path = str(path)
        self.writer = writer
        if self.path == ":memory:":  # one database only if every thread shares it
            self.path = f"file:capgate-{id(self):x}?mode=memory&cache=shared"
        elif not self.path.startswith("file:"):  # credential hashes and sealed keys: owner only
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        self._conn()  # fail now, not on first use, when the file cannot be opened

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                timeout=30,
                uri=self.path.startswith("file:"),
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise UnavailableError(f"cannot open SQLite store {self.path}: {e}") from None
        self._local.conn = conn
        with self._guard:
            self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """BEGIN IMMEDIATE serializes writers, so change seqs are visible in order."""
        conn = self._conn()
        try:
            cur = conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                conn.commit()
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
            finally:
                cur.close()
        except sqlite3.OperationalError as e:
            raise _unavailable(e) from None

    @contextmanager
    def _read(self) -> Iterator[Any]:
        try:
            cur = self._conn().cursor()
            try:
                yield cur
            finally:
                cur.close()
        except sqlite3.OperationalError as e:
            raise _unavailable(e) from None

    def redeem_nonces(
        self, claims: Sequence[tuple[str, str, float]], forget_before: float | None = None
    ) -> list[bool]:
        # A proof's nonce must outlive only the proof's window (seconds), so it is
        # committed without waiting for the disk: in WAL mode it still survives the
        # process being killed; only a power loss can take the last ones, and the host
        # is back long after their proofs have expired.
        conn = self._conn()
        conn.execute("PRAGMA synchronous=NORMAL")
        try:
            return super().redeem_nonces(claims, forget_before)
        finally:
            conn.execute("PRAGMA synchronous=FULL")

    def migrate(self) -> None:
        with self._tx() as cur:
            self._apply_migrations(cur, _TYPES)

    def _seal_lock(self, cur: Any) -> bool:
        """BEGIN IMMEDIATE already makes this the only writer."""
        return True

    def _seal_order(self) -> tuple[str, str]:
        return "", "seq"  # one writer at a time: the write order is the commit order

    def ping(self) -> None:
        try:
            with self._read() as cur:
                cur.execute("SELECT 1")
        except sqlite3.Error as e:
            raise _unavailable(e) from None

    def close(self) -> None:
        with self._guard:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


def _unavailable(e: sqlite3.Error) -> UnavailableError:
    name = getattr(e, "sqlite_errorname", "")  # e.g. SQLITE_FULL, SQLITE_IOERR_WRITE
    reason = f"{e} ({name})" if name else str(e)
    return UnavailableError(f"SQLite store unavailable: {reason}", reason=reason)
