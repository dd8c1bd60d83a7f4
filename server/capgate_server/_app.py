"""``CapgateServer``: the store, the replica and the gRPC server put together.

Health: the overall status and every service's follow the replica's freshness;
``capgate.clock`` reports NOT_SERVING while this replica's clock disagrees with
the store's (a warning: it does not take the replica out of rotation). Stopping
drains first (``Intake``): NOT_SERVING, new calls refused as not executed, the
running ones finished within the grace, then the gRPC server stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import secrets
import signal
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from capgate import CapgateError, Clock, InvalidArgumentError, UnavailableError, system_clock
from capgate_server._admission import Admission
from capgate_server._intake import Intake
from capgate_server._interceptor import POLICY, Authenticator
from capgate_server._keyring import load_kek
from capgate_server._metrics import CallMeter, Metrics, start_metrics
from capgate_server._replica import Replica, Settings
from capgate_server._servicers import register_all
from capgate_server._siblings import Siblings
from capgate_server._verification import Verification
from capgate_server.store import Role, open_store

__all__ = ["CLOCK_HEALTH", "WORKERS_HEALTH", "CapgateServer", "serve"]

log = logging.getLogger("capgate.server")
MAX_SEND = 16 * 1024 * 1024  # replies: a batch of 1,024 verdicts, a page of audit records
_VERIFIER_OK = (
    "/capgate.v1.VerifierService/",
    "/envoy.service.auth.v3.Authorization/",
    "/grpc.reflection.",
)
CLOCK_HEALTH = "capgate.clock"  # health name: NOT_SERVING while the clock is off
# health name, with --workers: NOT_SERVING while a worker of the host is down (restarting)
WORKERS_HEALTH = "capgate.workers"


def _is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CapgateServer:
    """One capgate replica serving gRPC. ``start()`` returns the bound port."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        monotonic: Clock = time.monotonic,
        extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
        extra_policy: Mapping[str, frozenset[Role]] | None = None,
        siblings: Siblings | None = None,
    ) -> None:
        settings.check()
        self.settings = settings
        self.siblings = siblings  # a worker of ``capgate serve --workers N``
        self.clock = clock
        self.monotonic = monotonic
        self._extra = list(extra_handlers)  # e.g. the benchmarks' no-op baseline
        self._policy = {**POLICY, **(extra_policy or {})}
        self.replica: Replica | None = None
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.intake = Intake()
        self._services: list[str] = []
        self.port = 0
        self.calls = CallMeter()  # every call timed, for metrics
        self._metrics: Any = None
        self.metrics_port = 0
        self.admin_credential_path: Path | None = None
        self.console: Any = None  # capgate_server.console.Console, when --console-listen
        self.console_port = 0
        self._pending: set[asyncio.Task[None]] = set()  # health updates under way
        self._workers_health: asyncio.Task[None] | None = None

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` on the loop, holding a reference until it is done."""
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def start(self) -> int:
        s = self.settings
        if not s.insecure and s.tls_cert is None and not _is_loopback(s.listen):
            raise InvalidArgumentError(
                f"refusing to listen on {s.listen} without TLS: pass --tls-cert/--tls-key, "
                "or --insecure if the network is trusted"
            )
        try:  # before the store is opened or anything written: a taken port is said at once
            if not s.reuse_port:  # a worker: its supervisor checked, and holds the port
                _check_free(s.listen)
        except OSError:
            raise _cannot_listen(s.listen) from None
        if not s.replica_id:
            s.replica_id = _replica_id(s.data_dir)
        store = open_store(s.store_url, s.data_dir, s.db_timeouts, writer=s.replica_id)
        shared = bool(s.store_url) and not (s.store_url or "").startswith("sqlite:")
        kek = load_kek(s.kek_file, None if shared else s.data_dir / "kek.key")
        self.replica = replica = Replica(store, kek, s, self.clock, self.monotonic, self.siblings)
        credential = await replica.start()
        if credential is not None:
            self.admin_credential_path = _write_secret(s.data_dir / "admin.credential", credential)
            log.warning("first start: admin credential written to %s", self.admin_credential_path)
        elif s.role == "full" and not (s.data_dir / "admin.credential").exists():
            log.warning(
                "the store already has an admin (it was set up before, perhaps by "
                "another replica): no admin credential written here; use the one "
                "written then, or make a new one with `capgate admin recover`"
            )

        refuse = None
        if s.role == "verifier":

            def refuse(method: str) -> str | None:
                if method.startswith(_VERIFIER_OK):
                    return None
                return "this replica serves verification only (--role verifier)"

        limits = s.limits
        self.server = server = grpc.aio.server(
            interceptors=[
                Authenticator(replica, Admission(limits, self.calls), self._policy, refuse=refuse),
                self.intake,
            ],
            # grpc reads no message past the largest method limit; Admission applies
            # each method's own, and caps calls in flight per principal
            options=[
                ("grpc.max_receive_message_length", limits.largest_message),
                ("grpc.max_send_message_length", MAX_SEND),
                ("grpc.max_concurrent_streams", limits.streams_per_connection),
                ("grpc.so_reuseport", int(s.reuse_port)),
            ],
            maximum_concurrent_rpcs=limits.max_concurrent_rpcs,
        )
        self._services = names = register_all(server, replica)
        if s.ext_authz:
            names.append(_ext_authz(server, replica))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if self._extra:
            server.add_generic_rpc_handlers(self._extra)
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        try:
            self.port = self._bind(server)
            if s.console_listen:
                await self._start_console(s)
        except CapgateError:  # nothing was served: close the store cleanly and say why
            self.server, self.replica = None, None
            await replica.close()
            raise
        await server.start()
        await self._set_health(replica.fresh())
        await self._set_clock_health(replica.trusted.agrees)
        replica.on_freshness.append(lambda fresh: self._background(self._set_health(fresh)))
        replica.on_clock.append(lambda agrees: self._background(self._set_clock_health(agrees)))
        if self.siblings is not None:
            self._workers_health = asyncio.get_running_loop().create_task(
                self._follow_workers(self.siblings), name="workers-health"
            )
        log.info(
            "capgate listening on %s (%s store, role %s)",
            self.address,
            "PostgreSQL" if shared else "SQLite",
            s.role,
        )
        if s.metrics_listen:
            workers = self.siblings.serving if self.siblings is not None else (lambda: 1)
            self._metrics, self.metrics_port = start_metrics(
                s.metrics_listen,
                Metrics(replica, self.calls, workers),
                certfile=str(s.tls_cert) if s.tls_cert else None,
                keyfile=str(s.tls_key) if s.tls_key else None,
            )
            log.info(
                "metrics on %s:%d/metrics", s.metrics_listen.rpartition(":")[0], self.metrics_port
            )
        return self.port

    async def _start_console(self, s: Settings) -> None:
        from capgate_server.console import Console  # loaded only when asked for

        if s.role != "full":
            raise InvalidArgumentError("the console needs a full replica (not --role verifier)")
        if not s.insecure and s.tls_cert is None and not _is_loopback(s.console_listen):
            raise InvalidArgumentError(
                f"refusing to serve the console on {s.console_listen} without TLS: pass "
                "--tls-cert/--tls-key, or --insecure if the network is trusted"
            )
        tls = None
        if s.tls_cert is not None and s.tls_key is not None:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(str(s.tls_cert), str(s.tls_key))
        assert self.replica is not None
        self.console = Console(self.replica, s.console_listen, tls=tls)
        try:
            self.console_port = await self.console.start()
        except OSError as e:
            self.console = None
            raise UnavailableError(
                f"cannot serve the console on {s.console_listen}: {e} "
                "(choose another with --console-listen)",
                listen=s.console_listen,
            ) from None
        log.info("operator console at %s", self.console_url)

    @property
    def console_url(self) -> str:
        """Where the operator console answers ("" when it is off)."""
        if self.console is None:
            return ""
        host = self.settings.console_listen.rpartition(":")[0]
        scheme = "https" if self.settings.tls_cert is not None else "http"
        return f"{scheme}://{host}:{self.console_port}/"

    @property
    def address(self) -> str:
        host = self.settings.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    def _bind(self, server: grpc.aio.Server) -> int:
        s = self.settings
        if s.tls_cert is not None:
            if s.tls_key is None:
                raise InvalidArgumentError("--tls-cert needs --tls-key")
            ca = s.tls_client_ca.read_bytes() if s.tls_client_ca else None
            creds = grpc.ssl_server_credentials(
                [(s.tls_key.read_bytes(), s.tls_cert.read_bytes())],
                root_certificates=ca,
                require_client_auth=ca is not None,
            )
        try:
            port = (
                server.add_secure_port(s.listen, creds)
                if s.tls_cert is not None
                else server.add_insecure_port(s.listen)
            )
        except RuntimeError:  # grpc's "failed to bind": taken since start() checked
            port = 0
        if port == 0:
            raise _cannot_listen(s.listen)
        return port

    async def _set_health(self, fresh: bool) -> None:
        serving = fresh and not self.intake.closed  # a draining server stays out
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self._services]:
            await self.health.set(name, status)

    async def _set_clock_health(self, agrees: bool) -> None:
        await self.health.set(
            CLOCK_HEALTH,
            health_pb2.HealthCheckResponse.SERVING
            if agrees
            else health_pb2.HealthCheckResponse.NOT_SERVING,
        )

    async def _follow_workers(self, siblings: Siblings) -> None:
        """``WORKERS_HEALTH`` from the supervisor's count of the host's workers serving."""
        last = None
        while True:
            full = siblings.serving() >= siblings.expected
            if full != last:
                await self.health.set(
                    WORKERS_HEALTH,
                    health_pb2.HealthCheckResponse.SERVING
                    if full
                    else health_pb2.HealthCheckResponse.NOT_SERVING,
                )
                last = full
            await asyncio.sleep(0.5)

    async def stop(self, grace: float | None = None) -> None:
        """Drain, then stop: every call either finishes or is refused as not executed;
        only calls still running when ``grace`` (default: the setting) ends are cancelled."""
        if self._workers_health is not None:
            self._workers_health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._workers_health
            self._workers_health = None
        if grace is None:
            grace = self.settings.shutdown_grace
        deadline = time.monotonic() + grace
        if self.server is not None:
            await self._set_health(False)
            self.intake.close()
            if not await self.intake.drained(deadline):
                log.warning("calls still running after %.1fs of grace: cancelling them", grace)
            await self.server.stop(max(0.0, deadline - time.monotonic()))
            self.server = None
        if self.console is not None:
            await self.console.stop()
            self.console = None
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics = None
        if self.replica is not None:
            await self.replica.close()
            self.replica = None


def _replica_id(data_dir: Path) -> str:
    """This replica's name in the records it writes: made once, kept in the data dir."""
    path = data_dir / "replica.id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{socket.gethostname()[:40]}-{secrets.token_hex(3)}"
        _write_secret(path, name)  # not secret, but private like everything there
        return name


def _ext_authz(server: grpc.aio.Server, replica: Replica) -> str:
    """Serve Envoy's Check (loaded only when asked for: it needs the Envoy stubs)."""
    try:
        from capgate_server._ext_authz import register_ext_authz
    except ImportError as e:
        raise InvalidArgumentError(
            f"--ext-authz needs the Envoy stubs ({e.name} is missing): pip install 'capgate[envoy]'"
        ) from None
    return register_ext_authz(server, Verification(replica), replica.settings)


def _cannot_listen(listen: str) -> UnavailableError:
    return UnavailableError(
        f"cannot listen on {listen}: the address is in use or not "
        "available (is another capgate serving there? choose another "
        "with --listen)",
        listen=listen,
    )


def _check_free(listen: str) -> None:
    """Raise ``OSError`` when ``HOST:PORT`` cannot be bound (port 0 always can)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - only a probe, closed at once
    if not port.isdigit() or int(port) == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, int(port)))


def _write_secret(path: Path, secret: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    os.chmod(path, 0o600)
    return path.resolve()


async def serve(
    settings: Settings,
    *,
    on_ready: Callable[[CapgateServer], Any] | None = None,
    siblings: Siblings | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    app = CapgateServer(settings, siblings=siblings)
    await app.start()
    # What start-up made lives as long as the process: keep it out of the cyclic
    # collector's full passes, which pause every call for as long as they take.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if on_ready is not None:
        on_ready(app)
    await stop.wait()
    log.info("shutting down")
    await app.stop()
