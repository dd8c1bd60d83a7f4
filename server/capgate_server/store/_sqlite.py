"""The embedded SQLite backend: one file, WAL, synchronous commits."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from capgate import UnavailableError
from capgate_server.store._sql import SqlStore

_TYPES = {"blob": "BLOB", "real": "REAL", "bigint": "INTEGER",
          "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"}


class SqliteStore(SqlStore):
    """A single connection shared by the server's store thread, guarded by a lock.

    WAL lets readers proceed during a write; ``synchronous=FULL`` makes every
    commit durable before the call returns (a revocation survives kill -9 and
    power loss alike).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        if self.path != ":memory:":  # credential hashes and sealed keys: owner only
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None,
                                         check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as e:
            raise UnavailableError(f"cannot open SQLite store {self.path}: {e}") from None

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                self._conn.rollback()
                raise
            else:
                self._conn.commit()
            finally:
                cur.close()

    @contextmanager
    def _read(self) -> Iterator[Any]:
        with self._lock:
            cur = self._conn.cursor()
            try:
                yield cur
            finally:
                cur.close()

    def _lock_changes(self, cur: Any) -> None:
        """BEGIN IMMEDIATE already serializes SQLite writers."""

    def migrate(self) -> None:
        with self._tx() as cur:
            self._apply_migrations(cur, _TYPES)

    def ping(self) -> None:
        try:
            with self._read() as cur:
                cur.execute("SELECT 1")
        except sqlite3.Error as e:
            raise UnavailableError(f"SQLite store unavailable: {e}") from None

    def close(self) -> None:
        with self._lock:
            self._conn.close()
