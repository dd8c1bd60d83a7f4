"""``Siblings``: the other worker processes of one host, and read-your-writes among them.

``capgate serve --workers N`` runs N processes on one address; a client's next
call may land on any of them. So a change one worker acknowledges (a revocation,
a suspension, an epoch bump, a ceiling or key change) must be enforced by every
worker of the host before the acknowledgement returns. Two things make it so:

- **The host's version.** A small file shared by the workers (memory-mapped)
  holds the highest change-feed position any worker of the host has written
  and acknowledged. A worker publishes its own write's position there before it
  answers. Every decision reads it first (one 8-byte read): a worker that has
  not applied that position catches up from the store before deciding, and
  denies (fails closed) if it cannot within ``bound`` seconds. This alone is
  the guarantee: it holds for a sibling that is slow, busy or hung.
- **The barrier.** So that the next call does not pay for the catching up, the
  writer also wakes every sibling (a datagram on a Unix socket in the host's
  private run directory) and waits, at most ``bound`` seconds, until each one
  that is alive says it has applied the position. A sibling that does not answer
  in time is logged; the version above still keeps it from deciding on old state.

The run directory is made by the supervisor, mode 0700: only the same user can
send a wake-up, and a wake-up only ever makes a worker read the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import mmap
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

__all__ = ["Siblings", "prepare_run_dir", "set_serving"]

log = logging.getLogger("capgate.workers")
# the file holding the host's version and the workers serving (8 bytes each, little-endian)
_VERSION = "version"
_SOCKET = "worker-{}.sock"
_WORD = struct.Struct("<q")


def prepare_run_dir(run_dir: Path) -> None:
    """Make the shared version file (0, 0) in ``run_dir``; the supervisor calls it once."""
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(run_dir / _VERSION, "wb") as f:
        f.write(_WORD.pack(0) * 2)


def set_serving(run_dir: Path, workers: int) -> None:
    """The supervisor's count of workers serving, for every worker's metrics."""
    with open(run_dir / _VERSION, "r+b") as f, mmap.mmap(f.fileno(), 2 * _WORD.size) as m:
        _WORD.pack_into(m, _WORD.size, workers)


class Siblings:
    """One worker's view of its siblings: the host's version, wake-ups, the barrier."""

    def __init__(self, run_dir: Path, index: int, *, bound: float = 2.0, expected: int = 1) -> None:
        self.run_dir = run_dir
        self.index = index
        self.bound = bound
        self.expected = expected  # the workers the supervisor runs when all is well
        self._file = open(run_dir / _VERSION, "r+b")
        self._map = mmap.mmap(self._file.fileno(), 2 * _WORD.size)
        self._path = run_dir / _SOCKET.format(index)
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()  # a worker before this one, killed, left it
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self._path))
        self._sock.setblocking(False)
        self._tokens = itertools.count(1)
        self._waiting: dict[int, tuple[int, set[str], asyncio.Event]] = {}
        self._catch_up: Callable[[int], Awaitable[int]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._answering: set[asyncio.Task[None]] = set()
        self.unconfirmed = 0  # barriers that ended with a sibling still silent

    # -- the host's version -------------------------------------------------------------

    def required(self) -> int:
        """The highest change any worker of this host has acknowledged."""
        return int(_WORD.unpack_from(self._map)[0])

    def serving(self) -> int:
        """The host's workers serving, as the supervisor last counted them."""
        return int(_WORD.unpack_from(self._map, _WORD.size)[0])

    def publish(self, seq: int) -> None:
        """Raise the host's version to ``seq`` (never lowers it)."""
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
        try:
            if seq > self.required():
                _WORD.pack_into(self._map, 0, seq)
        finally:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)

    # -- wake-ups -------------------------------------------------------------------------

    def start(self, catch_up: Callable[[int], Awaitable[int]]) -> None:
        """Answer siblings' wake-ups: ``catch_up(seq)`` applies the feed up to at least
        ``seq`` and returns the position now applied."""
        self._catch_up = catch_up
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        while True:
            try:
                data, sender = self._sock.recvfrom(128)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # pragma: no cover - a local datagram socket
                log.warning("wake-up socket: %s", e)
                return
            parts = data.split()
            if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
                continue
            kind, a, b = parts[0], int(parts[1]), int(parts[2])
            if kind == b"w" and sender and self._loop is not None:
                task = self._loop.create_task(self._answer(a, b, sender))
                self._answering.add(task)  # held: the loop keeps only a weak reference
                task.add_done_callback(self._answering.discard)
            elif kind == b"a":
                self._acked(a, b, sender)

    async def _answer(self, seq: int, token: int, sender: str) -> None:
        assert self._catch_up is not None
        try:
            async with asyncio.timeout(self.bound):
                applied = await self._catch_up(seq)
        except Exception as e:  # the store is down: stay silent, the version guards
            log.warning("cannot catch up with a sibling's change %d: %s", seq, e or "timed out")
            return
        self._send(sender, b"a %d %d" % (token, applied))

    def _acked(self, token: int, applied: int, sender: str) -> None:
        waiting = self._waiting.get(token)
        if waiting is None:
            return
        seq, pending, done = waiting
        if applied >= seq:
            pending.discard(sender)
            if not pending:
                done.set()

    def _send(self, to: str, data: bytes) -> bool:
        try:
            self._sock.sendto(data, to)
            return True
        except (FileNotFoundError, ConnectionRefusedError):  # that worker is gone
            return False
        except OSError as e:  # its queue is full: it is busy, the version guards
            log.warning("cannot wake sibling %s: %s", to, e)
            return False

    # -- the barrier ----------------------------------------------------------------------

    async def barrier(self, seq: int) -> bool:
        """Publish ``seq``, wake every sibling and wait (at most ``bound``) until each one
        alive has applied it. Returns whether every one confirmed."""
        self.publish(seq)
        token = next(self._tokens)
        pending: set[str] = set()
        done = asyncio.Event()
        self._waiting[token] = (seq, pending, done)
        try:
            message = b"w %d %d" % (seq, token)
            for path in self.run_dir.glob(_SOCKET.format("*")):
                if path != self._path and self._send(str(path), message):
                    pending.add(str(path))
            if not pending:
                return True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.bound):
                    await done.wait()
            if pending:
                self.unconfirmed += 1
                log.warning(
                    "%d sibling(s) did not confirm change %d within %.1fs; they "
                    "deny until they have applied it",
                    len(pending),
                    seq,
                    self.bound,
                )
            return not pending
        finally:
            del self._waiting[token]

    def close(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        self._map.close()
        self._file.close()
