"""Real capgate servers for tests: in a thread of this process, or as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from capgate_client import Client
from capgate_server import CapgateServer, Settings

CAPGATE = [sys.executable, "-m", "capgate_cli"]
PG_URL = os.environ.get("CAPGATE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pg_reachable(timeout: float = 2.0) -> bool:
    """Whether the PostgreSQL of ``CAPGATE_TEST_PG`` answers (checked once per session)."""
    global _PG_REACHABLE
    if _PG_REACHABLE is None:
        import psycopg

        try:
            psycopg.connect(PG_URL, connect_timeout=int(timeout)).close()
            _PG_REACHABLE = True
        except psycopg.Error:
            _PG_REACHABLE = False
    return _PG_REACHABLE


_PG_REACHABLE: bool | None = None


def load_libmacaroons() -> Any:
    """The real libmacaroons (C library, V1 format) through ctypes, or None if absent."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("macaroons") or "libmacaroons.so.0"
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A PostgreSQL URL whose tables live in a fresh schema, dropped on exit.

    When it cannot be reached the test fails (outside CI, tests that need PostgreSQL are
    skipped before they start: see conftest.py).
    """
    import psycopg
    import pytest

    schema = "capgate_t_" + secrets.token_hex(6)
    try:
        admin = psycopg.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as e:
        pytest.fail(f"PostgreSQL is required at {PG_URL} (set CAPGATE_TEST_PG): {e}")
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in PG_URL else "?"
        try:
            yield f"{PG_URL}{sep}options={urllib.parse.quote(f'-csearch_path={schema}')}"
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


class ServerThread:
    """A ``CapgateServer`` on port 0 with its own event loop in a background thread.

    ``clock`` stands in for the wall clock and ``monotonic`` for the monotonic one
    (a wall-clock jump is moving the first alone)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        clock: Callable[[], float] | None = None,
        monotonic: Callable[[], float] | None = None,
        **settings: Any,
    ) -> None:
        self.settings = Settings(data_dir=data_dir, listen="127.0.0.1:0", **settings)
        self._clocks = {k: v for k, v in (("clock", clock), ("monotonic", monotonic)) if v}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.app: CapgateServer | None = None

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> ServerThread:
        self._thread.start()
        self.app = CapgateServer(self.settings, **self._clocks)
        self.run(self.app.start())
        return self

    @property
    def address(self) -> str:
        assert self.app is not None
        return f"127.0.0.1:{self.app.port}"

    @property
    def admin_credential(self) -> str:
        return (self.settings.data_dir / "admin.credential").read_text().strip()

    def client(self, credential: str | None = None, **kw: Any) -> Client:
        return Client(self.address, credential or self.admin_credential, **kw)

    def stop(self) -> None:
        if self.app is not None:
            self.run(self.app.stop(grace=1))
            self.app = None
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class ServerProcess:
    """``capgate serve`` in a subprocess; ``kill()`` is a real kill -9.

    ``file_size_limit`` (bytes) caps every file it writes (RLIMIT_FSIZE): a full disk.
    ``workers``: worker processes (one by default: a single process, pid ``proc.pid``)."""

    def __init__(
        self,
        data_dir: Path,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
        listen: str = "127.0.0.1:0",
        file_size_limit: int | None = None,
        workers: int = 1,
    ) -> None:
        self.data_dir = data_dir
        self.args = [
            *CAPGATE,
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            listen,
            "--workers",
            str(workers),
            *extra,
        ]
        self.workers = workers
        self.env = {**os.environ, **(env or {})}
        self.file_size_limit = file_size_limit
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.log: list[str] = []

    def start(self, timeout: float = 30) -> ServerProcess:
        args = self.args
        if self.file_size_limit is not None:  # set in a fresh interpreter that then execs
            # the server: a preexec_fn would make this process fork with grpc's threads
            # running, and grpc's fork handlers can kill the child before it execs
            args = [
                sys.executable,
                "-c",
                "import os, resource, sys; "
                "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]),) * 2); "
                "os.execv(sys.argv[2], sys.argv[2:])",
                str(self.file_size_limit),
                *args,
            ]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env
        )
        ready: Future[str] = Future()

        def read_stdout() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log.append(line)
                m = re.search(r"serving on (\S+?)(;|$)", line)
                if m and not ready.done():
                    ready.set_result(m.group(1))
            if not ready.done():
                ready.set_exception(RuntimeError("server exited"))

        def read_stderr() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log.append(line)

        threading.Thread(target=read_stdout, daemon=True).start()
        threading.Thread(target=read_stderr, daemon=True).start()
        try:
            self.address = ready.result(timeout)
        except Exception as e:
            self.stop()
            raise RuntimeError("capgate serve did not start:\n" + "".join(self.log)) from e
        return self

    @property
    def admin_credential(self) -> str:
        return (self.data_dir / "admin.credential").read_text().strip()

    def client(self, credential: str | None = None, **kw: Any) -> Client:
        return Client(self.address, credential or self.admin_credential, **kw)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 15) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.workers > 1:  # let the supervisor stop its workers and tidy up
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.terminate()
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)


def cli(
    *args: str,
    server: str = "",
    credential: str = "",
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run the ``capgate`` CLI as a user would."""
    full_env = {**os.environ, **(env or {})}
    if server:
        full_env["CAPGATE_SERVER"] = server
    if credential:
        full_env["CAPGATE_CREDENTIAL"] = credential
    return subprocess.run(
        [*CAPGATE, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 10, step: float = 0.02) -> float:
    """Poll until ``predicate()`` holds; returns the seconds it took (fails on timeout)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)
    return time.monotonic() - start


class TcpProxy:
    """A TCP forwarder the test controls: ``cut()`` drops every connection and refuses
    new ones (a network partition, without touching the shared database);
    ``freeze_after(marker)`` stops forwarding, without closing anything, right after the
    client sends bytes holding ``marker`` (a partition in the middle of a conversation)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        import socket

        self._target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._open = True
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self.frozen = threading.Event()
        self._released = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze_after(self, marker: bytes) -> threading.Event:
        """From now on, once client→server bytes hold ``marker``, forward them and then
        nothing more, either way, on any connection; ``frozen`` is set then."""
        self._marker = marker
        return self.frozen

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b, outbound in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, outbound), daemon=True).start()

    def _pipe(self, src: Any, dst: Any, outbound: bool) -> None:
        try:
            while data := src.recv(65536):
                if self.frozen.is_set():
                    self._released.wait()  # hold everything; closing the proxy ends it
                    return
                dst.sendall(data)
                if outbound and self._marker is not None and self._marker in data:
                    self.frozen.set()
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        import socket

        self._open = False
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        self._open = True

    def close(self) -> None:
        self._released.set()
        self.cut()
        self._server.close()


class KeyedAgent:
    """On a real server: agent ``alice`` with an Ed25519 key, a token of hers, and a
    service principal (``svc``) that verifies; ``presenter()`` is her side of it all."""

    def __init__(
        self,
        server: Any,
        agent: str = "alice",
        *,
        grants: Sequence[str] = ("read,write:/data/**",),
        token_grant: str = "read:/data/reports/*",
        require_proof: bool = False,
    ) -> None:
        from capgate import load_private_key, new_private_key_pem

        self.server = server
        self.id = agent
        self.admin = server.client()
        self.pem, public = new_private_key_pem()
        self.key = load_private_key(self.pem)
        _, self.credential = self.admin.create_agent(
            agent, list(grants), public_key=public, require_proof=require_proof
        )
        self.agent = server.client(self.credential)
        self.token = self.agent.issue(token_grant).token
        self.service_id = f"svc-{secrets.token_hex(3)}"  # the audience of alice's proofs
        self.service_credential = self.admin.create_principal(self.service_id, "service").credential
        self.svc = server.client(self.service_credential)

    def presenter(self, token: str | None = None, *, key: bool = True) -> Any:
        from capgate_client import Presenter

        return Presenter(
            token or self.token,
            self.key if key else None,
            audience=self.service_id if key else None,
        )

    def close(self) -> None:
        for c in (self.admin, self.agent, self.svc):
            c.close()


def make_pki(folder: Path, client_uri: str) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost, and a client certificate whose
    URI SAN is ``client_uri`` (a SPIFFE id); returns the PEM files by name."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(
        cn: str, key: Any, issuer: Any, issuer_key: Any, sans: list[Any] | None, usage: Any | None
    ) -> Any:
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=sans is None, path_length=None), critical=True)
        )
        if sans is not None:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "guard test CA")])
    pems: dict[str, bytes] = {
        "ca.crt": cert("guard test CA", ca_key, ca_name, ca_key, None, None).public_bytes(
            serialization.Encoding.PEM
        )
    }
    for name, sans, usage in (
        (
            "server",
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
            ExtendedKeyUsageOID.SERVER_AUTH,
        ),
        ("client", [x509.UniformResourceIdentifier(client_uri)], ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        pems[f"{name}.crt"] = cert(name, key, ca_name, ca_key, sans, usage).public_bytes(
            serialization.Encoding.PEM
        )
        pems[f"{name}.key"] = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, data in pems.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out


class AsgiServer:
    """An ASGI app served by uvicorn on 127.0.0.1, port 0, in a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self.port = 0

    def start(self) -> AsgiServer:
        self._thread.start()
        wait_for(lambda: self.server.started, timeout=15)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)


CHROMIUM = "/usr/bin/chromium"  # Debian's package; the console's browser tests never download one


def chromium_problem() -> str | None:
    """Why the console's browser tests cannot run here, or None when they can."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"chromium is missing ({CHROMIUM}; Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (the dev extra has it)"
    return None


class ConsoleFleet:
    """A small fleet for the console to show: a delegation tree planner → worker → helper,
    an agent whose big payments need approval (with one request waiting), a suspended
    agent, a service that verifies (allows and denies), and an approver, ``carol``."""

    def __init__(self, server: Any) -> None:
        from capgate import ApprovalRule

        admin = self.admin = server.client()
        _, planner = admin.create_agent(
            "planner",
            ["read,write:/data/**"],
            owner="research",
            description="plans the nightly reports",
        )
        _, worker = admin.create_agent("worker", ["read:/data/**"], owner="research")
        admin.create_agent("helper", ["read:/data/reports/*"], owner="research")
        _, payer = admin.create_agent(
            "payer",
            ["pay,read:/invoices/**"],
            owner="finance",
            approvals=[ApprovalRule("ctx amount > 1000")],
        )
        admin.create_agent("idle-bot", ["read:/archive/**"], owner="ops")
        admin.suspend_agent("idle-bot")
        self.approver = admin.create_principal("carol", "approver").credential
        self.service = admin.create_principal("report-api", "service").credential
        with server.client(planner) as p:
            self.root = p.issue("read:/data/*")
            self.hop = p.delegate(self.root.token, "worker")
        with server.client(worker) as w:
            self.below = w.delegate(self.hop.token, "helper", ["resource /data/reports"])
        with server.client(self.service) as svc:
            for resource in ("/data/a", "/data/b", "/data/a"):
                svc.verify(self.root.token, "read", resource, presenter="planner")
            svc.verify(self.hop.token, "read", "/data/c", presenter="worker")
            svc.verify(self.root.token, "write", "/data/a", presenter="planner")  # denied
        self.payer = payer
        with server.client(payer) as pay:
            self.invoice = pay.issue("pay,read:/invoices/*").token
            self.approval = pay.request_approval(
                self.invoice,
                "pay",
                "/invoices/inv-8",
                ctx={"amount": "4200"},
                note="quarterly bill",
            )

    def close(self) -> None:
        self.admin.close()


# -- the operator console's JSON API, as its page uses it --------------------------------


def console_http(server: Any) -> Any:
    """An HTTP client of ``server``'s console (httpx, keeping the session cookie)."""
    import httpx

    return httpx.Client(base_url=f"http://127.0.0.1:{server.app.console_port}", timeout=10)


def console_login(c: Any, credential: str) -> dict[str, Any]:
    """Log in; returns the session (``principal``, ``role``, ``csrf``, ``may``)."""
    r = c.post("/api/login", json={"credential": credential})
    assert r.status_code == 200, r.text
    return dict(r.json())


def console_post(c: Any, path: str, body: dict[str, Any], csrf: str) -> Any:
    return c.post(path, json=body, headers={"X-CSRF-Token": csrf})


def audit_records(server: Any, kind: str) -> list[Any]:
    with server.client() as admin:
        return list(admin.audit(kind=kind, limit=1000))
