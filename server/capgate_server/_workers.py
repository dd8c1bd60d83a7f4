"""``capgate serve --workers N``: one supervisor and N worker processes on one address.

One Python process is bound by its interpreter lock, so a host uses its cores by
running several. The supervisor (this process) does the first start once — the
store's migrations, the signing key, the admin credential — then starts N
workers, each a whole capgate replica serving the same ``HOST:PORT`` with
``SO_REUSEPORT``: the kernel spreads new connections across them. With port 0
the supervisor picks the port first, and holds it (bound, never listening) for
as long as it runs, so a restarted worker finds it free of strangers.

It restarts a worker that dies (after 0.1 s, doubling to 10 s while they keep
dying young), forwards SIGTERM and SIGINT so every worker drains as one server
does (``CapgateServer.stop``), and kills none unless they outlast the grace. A
worker dies with its supervisor (``PR_SET_PDEATHSIG`` where Linux has it, and a
watch on its parent everywhere). Workers share a private run directory: the
host's change version and their wake-up sockets (``Siblings``), which is how a
change acknowledged by one worker is enforced by all of them before the caller
hears back. Each worker answers health for itself, and they answer alike: the
same store, the same version, drained together; and each says, under the name
``capgate.workers``, whether every worker of the host is serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import copyreg
import ctypes
import dataclasses
import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from capgate import InvalidArgumentError, UnavailableError
from capgate_server._app import (
    _cannot_listen,
    _check_free,
    _is_loopback,
    _replica_id,
    _write_secret,
    serve,
)
from capgate_server._keyring import load_kek
from capgate_server._replica import Replica, Settings
from capgate_server._siblings import Siblings, prepare_run_dir, set_serving
from capgate_server.store import open_store

__all__ = ["WorkerPool", "serve_workers", "usable_cores"]

log = logging.getLogger("capgate.workers")
_BACKOFF_FIRST, _BACKOFF_MAX = 0.1, 10.0
_HEALTHY_AFTER = 30.0  # a worker that ran this long before dying starts the backoff afresh
_EXTRA_GRACE = 10.0  # beyond the drain's grace before a worker is killed
# Each worker is a whole server (its caches, its store connections): past this, a
# count is a typo that would exhaust the host's memory, not a deployment.
MAX_WORKERS = 256


def _read_only(d: dict[str, Any]) -> MappingProxyType[str, Any]:
    return MappingProxyType(d)


# the settings cross to the workers pickled; their read-only mappings go as dicts
copyreg.pickle(MappingProxyType, lambda m: (_read_only, (dict(m),)))


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class _WorkerSpec:
    """What one worker is told (pickled to its stdin by the supervisor that made it)."""

    settings: Settings
    run_dir: Path
    index: int
    workers: int
    parent: int
    log_level: int


class WorkerPool:
    """The supervisor: ``start()`` does the first start, waits until every worker
    serves, and from then on restarts the ones that die, until ``stop()``."""

    def __init__(self, settings: Settings, workers: int) -> None:
        if not 1 <= workers <= MAX_WORKERS:
            raise InvalidArgumentError(f"--workers takes a whole number from 1 to {MAX_WORKERS}")
        settings.check()
        self.settings = settings
        self.workers = workers
        self.port = 0
        self.admin_credential_path: Path | None = None
        self.console_url = ""  # worker 0 serves the operator console (--console-listen)
        self.restarts = 0
        self._procs: list[asyncio.subprocess.Process | None] = [None] * workers
        self._reserve: socket.socket | None = None
        self._run_dir: Path | None = None
        self._stopping = asyncio.Event()
        self._slots: list[asyncio.Task[None]] = []
        self._readers: set[asyncio.Task[None]] = set()  # each worker's stdout, read to the end

    @property
    def address(self) -> str:
        return f"{self.settings.listen.rsplit(':', 1)[0]}:{self.port}"

    @property
    def pids(self) -> list[int]:
        """The live workers' process ids."""
        return [p.pid for p in self._procs if p is not None and p.returncode is None]

    async def start(self) -> int:
        s = self.settings
        if not s.insecure and s.tls_cert is None and not _is_loopback(s.listen):
            raise InvalidArgumentError(
                f"refusing to listen on {s.listen} without TLS: pass --tls-cert/--tls-key, "
                "or --insecure if the network is trusted"
            )
        try:
            _check_free(s.listen)
            self._reserve = _reserve_port(s.listen)
        except OSError:
            raise _cannot_listen(s.listen) from None
        self.port = self._reserve.getsockname()[1]
        try:
            await self._first_start()
            self._run_dir = Path(tempfile.mkdtemp(prefix="capgate-workers-"))
            prepare_run_dir(self._run_dir)
            started = await asyncio.gather(*(self._spawn(i) for i in range(self.workers)))
            if not all(started):
                raise UnavailableError("a worker process did not start (its error is above)")
        except BaseException:
            await self.stop()
            raise
        self._slots = [
            asyncio.get_running_loop().create_task(self._supervise(i)) for i in range(self.workers)
        ]
        log.info(
            "%d workers serving on %s (pids %s)",
            self.workers,
            self.address,
            " ".join(map(str, self.pids)),
        )
        return self.port

    async def _first_start(self) -> None:
        """Migrate, make the signing key and the admin, once, before any worker runs."""
        s = self.settings
        if not s.replica_id:
            s.replica_id = _replica_id(s.data_dir)
        store = open_store(s.store_url, s.data_dir, s.db_timeouts, writer=s.replica_id)
        shared = bool(s.store_url) and not (s.store_url or "").startswith("sqlite:")
        kek = load_kek(s.kek_file, None if shared else s.data_dir / "kek.key")
        replica = Replica(store, kek, s)
        try:
            credential = await replica.start()
        finally:
            await replica.close()
        if credential is not None:
            self.admin_credential_path = _write_secret(s.data_dir / "admin.credential", credential)
            log.warning("first start: admin credential written to %s", self.admin_credential_path)

    def _spec(self, index: int) -> _WorkerSpec:
        s = self.settings
        metrics = s.metrics_listen
        if metrics:  # worker i serves its own metrics at PORT+i (port 0: each picks one)
            host, _, port = metrics.rpartition(":")
            metrics = f"{host}:{int(port) + index if int(port) else 0}"
        assert self._run_dir is not None
        return _WorkerSpec(
            settings=dataclasses.replace(
                s,
                listen=self.address,
                reuse_port=True,
                replica_id=f"{s.replica_id}-w{index}",
                metrics_listen=metrics,
                # one console for the host: worker 0's (it reads
                # what every worker records, through the store)
                console_listen=s.console_listen if index == 0 else "",
            ),
            run_dir=self._run_dir,
            index=index,
            workers=self.workers,
            parent=os.getpid(),
            log_level=logging.getLogger().getEffectiveLevel(),
        )

    async def _spawn(self, index: int) -> bool:
        """Start worker ``index``; True once it serves, False if it died first."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from capgate_server._workers import _main; _main()",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self._procs[index] = proc
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(pickle.dumps(self._spec(index)))
        await proc.stdin.drain()
        proc.stdin.close()
        line = await proc.stdout.readline()
        if not line.startswith(b"ready"):
            await proc.wait()
            log.error("worker %d exited before serving (status %s)", index, proc.returncode)
            return False
        if index == 0:  # "ready URL": where its console answers, if it serves one
            self.console_url = line.decode().strip().removeprefix("ready").strip()
        drain = asyncio.get_running_loop().create_task(_drain(proc.stdout))
        self._readers.add(drain)  # held: the loop keeps only a weak reference
        drain.add_done_callback(self._readers.discard)
        log.info("worker %d serving (pid %d)", index, proc.pid)
        self._count()
        return True

    def _count(self) -> None:
        if self._run_dir is not None:
            set_serving(self._run_dir, len(self.pids))

    async def _supervise(self, index: int) -> None:
        backoff = _BACKOFF_FIRST
        while True:
            proc = self._procs[index]
            started = time.monotonic()
            if proc is not None:
                await proc.wait()
                if self._stopping.is_set():
                    return
                self._count()
                if time.monotonic() - started > _HEALTHY_AFTER:
                    backoff = _BACKOFF_FIRST
                log.error(
                    "worker %d (pid %d) exited with status %s; restarting it in %.1fs",
                    index,
                    proc.pid,
                    proc.returncode,
                    backoff,
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            backoff = min(backoff * 2, _BACKOFF_MAX)
            self.restarts += 1
            if await self._spawn(index):
                continue
            self._procs[index] = None  # it died before serving: wait, then try again

    def draining(self) -> None:
        """From now on a worker that exits is not restarted."""
        self._stopping.set()

    async def stop(self) -> None:
        """Forward SIGTERM to every worker and wait for them to drain."""
        self._stopping.set()
        live = [p for p in self._procs if p is not None and p.returncode is None]
        for p in live:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        wait = self.settings.shutdown_grace + _EXTRA_GRACE
        for p in live:
            try:
                async with asyncio.timeout(wait):
                    await p.wait()
            except TimeoutError:
                log.error("worker pid %d did not drain in time: killing it", p.pid)
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
        for task in self._slots:
            task.cancel()
        for task in self._slots:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._reserve is not None:
            self._reserve.close()
            self._reserve = None
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None


async def serve_workers(
    settings: Settings, workers: int, *, on_ready: Callable[[WorkerPool], Any] | None = None
) -> None:
    """Run ``workers`` worker processes until SIGTERM or SIGINT, then drain them all."""
    pool = WorkerPool(settings, workers)
    await pool.start()
    stop = asyncio.Event()

    def stopping() -> None:  # at once: a worker that exits now is not restarted
        pool.draining()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping)
    if on_ready is not None:
        on_ready(pool)
    await stop.wait()
    log.info("shutting down %d workers", workers)
    await pool.stop()


def _reserve_port(listen: str) -> socket.socket:
    """Bind (never listen on) ``HOST:PORT`` with SO_REUSEPORT: port 0 becomes a concrete
    port that the workers, and only they, may share."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host or "0.0.0.0", int(port)))  # noqa: S104 - the operator's choice
    except BaseException:
        sock.close()
        raise
    return sock


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


# -- the worker process ----------------------------------------------------------------


def _die_with(parent: int) -> None:
    """Have the kernel send SIGTERM when the supervisor dies (Linux)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that took hold
        os.kill(os.getpid(), signal.SIGTERM)


async def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(1.0)
    log.error("the supervisor is gone: stopping")
    os.kill(os.getpid(), signal.SIGTERM)


async def _worker(spec: _WorkerSpec) -> None:
    siblings = Siblings(spec.run_dir, spec.index, expected=spec.workers)
    watch = asyncio.get_running_loop().create_task(_watch_parent(spec.parent))

    def ready(app: Any) -> None:
        print(f"ready {app.console_url}", flush=True)

    try:
        await serve(spec.settings, on_ready=ready, siblings=siblings)
    finally:
        watch.cancel()
        siblings.close()
        if os.getppid() != spec.parent:  # the supervisor was killed: tidy up after it
            shutil.rmtree(spec.run_dir, ignore_errors=True)


def _main() -> None:
    spec: _WorkerSpec = pickle.load(sys.stdin.buffer)  # noqa: S301 - from our own parent
    _die_with(spec.parent)
    logging.basicConfig(
        level=spec.log_level,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s %(name)s[w{spec.index}]: %(message)s",
    )
    asyncio.run(_worker(spec))
