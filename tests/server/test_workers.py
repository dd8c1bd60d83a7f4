"""``capgate serve --workers N``: worker processes on one address, supervised.

Real processes: the workers start and share one address, a worker killed with
SIGKILL is replaced, SIGTERM drains them all, and a revocation (or suspension, or
ceiling change) acknowledged by one worker is enforced by every worker before the
acknowledgement returns: calls made right after it on many fresh connections,
which the kernel spreads over the workers, all deny. In one process, two workers
side by side: one that cannot apply a sibling's change fails closed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import re
import signal
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from capgate_client import Client
from capgate_server import CapgateServer

from harness import ServerProcess, ServerThread, wait_for

FRESH_CONNECTIONS = 24  # each lands on a worker the kernel picks: all of them, in practice


def _pids(p: ServerProcess, workers: int = 2) -> dict[int, int]:
    """Worker index -> pid of its latest start, from the supervisor's log (its stderr,
    read by a thread of its own: waited for)."""
    wait_for(lambda: len(_read_pids(p)) >= workers)
    return _read_pids(p)


def _read_pids(p: ServerProcess) -> dict[int, int]:
    out: dict[int, int] = {}
    for line in list(p.log):
        m = re.search(r"worker (\d+) serving \(pid (\d+)\)", line)
        if m:
            out[int(m.group(1))] = int(m.group(2))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(FileNotFoundError):  # a zombie is dead too
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    return True


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[ServerProcess]:
    p = ServerProcess(tmp_path / "data", workers=2).start()
    yield p
    p.stop()


def _verdicts(
    p: ServerProcess,
    credential: str,
    token: str,
    presenter: str = "alice",
    resource: str = "/data/a",
) -> list[tuple[bool, str]]:
    """One verification on each of many fresh connections."""
    out = []
    for _ in range(FRESH_CONNECTIONS):
        with Client(p.address, credential) as c:
            r = c.verify(token, "read", resource, presenter=presenter)
            out.append((r.allowed, r.code))
    return out


def _setup(p: ServerProcess) -> tuple[str, str]:
    """An agent's token and a service's credential."""
    with p.client() as admin:
        _, cred = admin.create_agent("alice", ["read,write:/data/**"])
        service = admin.create_principal("files", "service").credential
    with p.client(cred) as alice:
        token = alice.issue("read:/data/**").token
    return token, service


def test_workers_start_and_serve_one_address(workers: ServerProcess) -> None:
    pids = _pids(workers)
    assert sorted(pids) == [0, 1] and all(_alive(pid) for pid in pids.values())
    assert any("2 worker processes" in line for line in workers.log)
    token, service = _setup(workers)
    assert _verdicts(workers, service, token) == [(True, "allowed")] * FRESH_CONNECTIONS


def test_every_worker_denies_right_after_a_revoke_returns(workers: ServerProcess) -> None:
    token, service = _setup(workers)
    assert all(ok for ok, _ in _verdicts(workers, service, token))
    with workers.client() as admin:
        admin.revoke(token, "leaked")
    assert _verdicts(workers, service, token) == [(False, "revoked")] * FRESH_CONNECTIONS


def test_every_worker_follows_a_suspension_and_a_narrowed_ceiling(workers: ServerProcess) -> None:
    token, service = _setup(workers)
    with workers.client() as admin:
        admin.suspend_agent("alice")
        assert not any(ok for ok, _ in _verdicts(workers, service, token))
        admin.resume_agent("alice")
        assert all(ok for ok, _ in _verdicts(workers, service, token))
        admin.update_agent("alice", grants=["read:/data/b/*"])
        assert not any(ok for ok, _ in _verdicts(workers, service, token))


def test_a_killed_worker_is_restarted(workers: ServerProcess) -> None:
    before = _pids(workers)
    os.kill(before[1], signal.SIGKILL)
    wait_for(lambda: _read_pids(workers).get(1) not in (None, before[1]), timeout=30)
    after = _pids(workers)
    assert after[0] == before[0] and _alive(after[1])
    token, service = _setup(workers)  # both serve, and writes reach the new one
    with workers.client() as admin:
        admin.revoke(token)
    assert _verdicts(workers, service, token) == [(False, "revoked")] * FRESH_CONNECTIONS


def test_sigterm_drains_every_worker(workers: ServerProcess) -> None:
    pids = list(_pids(workers).values())
    assert workers.terminate() == 0
    wait_for(lambda: not any(_alive(pid) for pid in pids))
    assert any("shutting down 2 workers" in line for line in workers.log)


def test_workers_default_to_the_usable_cores(tmp_path: Path) -> None:
    p = ServerProcess(tmp_path / "data")
    p.args.remove("--workers")
    p.args.remove("1")
    p.workers = len(os.sched_getaffinity(0))
    p.start()
    try:
        cores = len(os.sched_getaffinity(0))
        if cores > 1:
            assert sorted(_pids(p, cores)) == list(range(cores))
        else:
            assert not _read_pids(p)
    finally:
        p.stop()


# -- a worker that cannot catch up, in one process ------------------------------------


class _Worker(ServerThread):
    """A ``CapgateServer`` with siblings, on a port of its own (to pick which answers)."""

    def __init__(self, data_dir: Path, siblings: Any) -> None:
        super().__init__(data_dir)
        self._siblings = siblings

    def start(self) -> _Worker:
        self._thread.start()
        self.app = CapgateServer(self.settings, siblings=self.run(self._make()))
        self.run(self.app.start())
        return self

    async def _make(self) -> Any:  # the siblings' socket belongs to this worker's loop
        return self._siblings()


def test_a_worker_that_cannot_catch_up_fails_closed(tmp_path: Path) -> None:
    from capgate_server._siblings import Siblings, prepare_run_dir

    run = tmp_path / "run"
    prepare_run_dir(run)
    a = _Worker(tmp_path / "data", lambda: Siblings(run, 0, bound=0.5)).start()
    b = _Worker(tmp_path / "data", lambda: Siblings(run, 1, bound=0.5)).start()
    try:
        with a.client() as admin:
            _, cred = admin.create_agent("alice", ["read:/data/**"])
            service = admin.create_principal("files", "service").credential
        with a.client(cred) as alice:
            token = alice.issue("read:/data/**").token
        with Client(b.address, service) as c:
            assert c.verify(token, "read", "/data/a", presenter="alice").allowed
        assert b.app is not None and b.app.replica is not None
        store = b.app.replica.store
        real = store.changes_since

        def unreachable(*args: Any) -> Any:
            raise OSError("the store is unreachable")

        store.changes_since = unreachable  # type: ignore[method-assign]
        with a.client() as admin:
            admin.revoke(token, "leaked")  # returns once its bound passed, unconfirmed
        with Client(a.address, service) as c:
            assert c.verify(token, "read", "/data/a", presenter="alice").code == "revoked"
        with Client(b.address, service) as c:
            r = c.verify(token, "read", "/data/a", presenter="alice")
            assert not r.allowed and r.code == "unavailable" and "failing closed" in r.reason
        store.changes_since = real  # type: ignore[method-assign]
        with Client(b.address, service) as c:
            assert c.verify(token, "read", "/data/a", presenter="alice").code == "revoked"
    finally:
        b.stop()
        a.stop()


def test_siblings_confirm_before_the_ack(tmp_path: Path) -> None:
    """The barrier: once the revoke returns, the sibling has applied it already (its
    next decision reads nothing from the store)."""
    from capgate_server._siblings import Siblings, prepare_run_dir

    run = tmp_path / "run"
    prepare_run_dir(run)
    a = _Worker(tmp_path / "data", lambda: Siblings(run, 0)).start()
    b = _Worker(tmp_path / "data", lambda: Siblings(run, 1)).start()
    try:
        with a.client() as admin:
            _, cred = admin.create_agent("alice", ["read:/data/**"])
            with a.client(cred) as alice:
                token = alice.issue("read:/data/**").token
            result = admin.revoke(token)
        assert b.app is not None and b.app.replica is not None
        assert b.app.replica.applied_seq >= a.app.replica.applied_seq  # type: ignore[union-attr]
        assert not b.app.replica.behind() and result.newly_revoked
        assert a.app.replica.siblings.unconfirmed == 0  # type: ignore[union-attr]
    finally:
        b.stop()
        a.stop()


def test_workers_on_postgresql_enforce_a_revoke_everywhere(tmp_path: Path, pg_url: str) -> None:
    from capgate_server import new_kek_text

    kek = tmp_path / "kek"
    kek.write_text(new_kek_text())
    p = ServerProcess(
        tmp_path / "data", ["--store", pg_url, "--kek-file", str(kek)], workers=2
    ).start()
    try:
        assert sorted(_pids(p)) == [0, 1]
        token, service = _setup(p)
        assert all(ok for ok, _ in _verdicts(p, service, token))
        with p.client() as admin:
            admin.revoke(token, "leaked")
        assert _verdicts(p, service, token) == [(False, "revoked")] * FRESH_CONNECTIONS
    finally:
        p.stop()


def test_each_worker_reports_the_workers_serving(tmp_path: Path) -> None:
    def free_pair() -> int:
        """A port that is free with the one after it (worker i serves its metrics at
        PORT+i), below Linux's ephemeral range, where outgoing connections take theirs."""
        for port in random.sample(range(20000, 32000, 2), 200):
            try:
                with socket.socket() as a, socket.socket() as b:
                    a.bind(("127.0.0.1", port))
                    b.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue
        raise RuntimeError("no two free ports next to each other")

    port = free_pair()
    p = ServerProcess(
        tmp_path / "data", ["--metrics-listen", f"127.0.0.1:{port}"], workers=2
    ).start()
    try:
        for i in (0, 1):
            url = f"http://127.0.0.1:{port + i}/metrics"
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            assert "capgate_workers 2.0" in text
    finally:
        p.stop()


def test_the_audit_ledger_holds_with_two_workers_writing(workers: ServerProcess) -> None:
    from harness import cli

    for _ in range(3):
        token, service, agent = _setup_again(workers)
        assert all(ok for ok, _ in _verdicts(workers, service, token, presenter=agent))
        with workers.client() as admin:
            admin.revoke(token, "round")
    r = cli("audit", "verify", server=workers.address, credential=workers.admin_credential)
    assert r.returncode == 0, r.stdout + r.stderr


_again = itertools.count()


def _setup_again(p: ServerProcess) -> tuple[str, str, str]:
    n = next(_again)
    with p.client() as admin:
        _, cred = admin.create_agent(f"agent{n}", ["read:/data/**"])
        service = admin.create_principal(f"svc{n}", "service").credential
    with p.client(cred) as agent:
        token = agent.issue("read:/data/**").token
    return token, service, f"agent{n}"


def test_a_bad_worker_count_is_an_error(tmp_path: Path) -> None:
    from harness import cli

    r = cli("serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "--workers", "0")
    assert r.returncode == 2 and "--workers takes a whole number from 1" in r.stderr
    r = cli(
        "serve",
        "--data-dir",
        str(tmp_path / "d"),
        "--listen",
        "127.0.0.1:0",
        env={"CAPGATE_WORKERS": "many"},
    )
    assert r.returncode == 2 and "--workers takes a whole number from 1" in r.stderr
    for flag, env in ((["--workers", "100000"], {}), ([], {"CAPGATE_WORKERS": "100000"})):
        r = cli(
            "serve", "--data-dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", *flag, env=env
        )  # a typo, not a deployment: refused before a single process is started
        assert r.returncode == 2 and "from 1 to 256" in r.stderr, r.stderr
    assert not (tmp_path / "d").exists()  # refused before anything was written


def test_workers_stop_when_their_supervisor_is_killed(workers: ServerProcess) -> None:
    pids = list(_pids(workers).values())
    workers.kill()  # SIGKILL: the supervisor runs no code at all
    wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=30)


def _health(address: str, name: str) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=name), timeout=5
        )
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def test_the_host_says_whether_every_worker_serves(tmp_path: Path) -> None:
    from capgate_server import WORKERS_HEALTH
    from capgate_server._siblings import Siblings, prepare_run_dir, set_serving

    run = tmp_path / "run"
    prepare_run_dir(run)
    set_serving(run, 2)
    a = _Worker(tmp_path / "data", lambda: Siblings(run, 0, expected=2)).start()
    try:
        wait_for(lambda: _health(a.address, WORKERS_HEALTH) == "SERVING")
        set_serving(run, 1)  # the supervisor counts one down: restarting it
        wait_for(lambda: _health(a.address, WORKERS_HEALTH) == "NOT_SERVING")
        assert _health(a.address, "") == "SERVING"  # this worker itself still serves
        set_serving(run, 2)
        wait_for(lambda: _health(a.address, WORKERS_HEALTH) == "SERVING")
    finally:
        a.stop()


def test_workers_health_follows_a_restart(workers: ServerProcess) -> None:
    from capgate_server import WORKERS_HEALTH

    wait_for(lambda: _health(workers.address, WORKERS_HEALTH) == "SERVING")
    before = _pids(workers)
    os.kill(before[0], signal.SIGKILL)
    wait_for(lambda: _read_pids(workers).get(0) not in (None, before[0]), timeout=30)
    wait_for(
        lambda: all(_health(workers.address, WORKERS_HEALTH) == "SERVING" for _ in range(8)),
        timeout=30,
    )


def test_the_console_on_a_port_worker_0_picks_is_announced(tmp_path: Path) -> None:
    p = ServerProcess(tmp_path / "data", ["--console-listen", "127.0.0.1:0"], workers=2).start()
    try:
        wait_for(lambda: any("operator console at" in line for line in p.log))
        url = next(line for line in p.log if "operator console at" in line).split()[-1]
        with urllib.request.urlopen(url, timeout=10) as reply:
            assert reply.status == 200
        assert sorted(_pids(p)) == [0, 1]
    finally:
        p.stop()


def test_with_workers_the_console_is_served_once_for_the_host(tmp_path: Path) -> None:
    """``--console-listen`` with several workers: worker 0 serves the console (one
    address, one set of sessions); the others serve the API only."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = ServerProcess(
        tmp_path / "data", ["--console-listen", f"127.0.0.1:{port}"], workers=2
    ).start()
    try:
        wait_for(
            lambda: any(f"operator console at http://127.0.0.1:{port}/" in line for line in p.log)
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200 and b"capgate" in r.read().lower()
        assert len(_pids(p)) == 2
    finally:
        p.stop()
