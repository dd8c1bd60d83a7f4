"""``capgate serve``: run one server (replica) until SIGTERM; the server loads lazily.

``--workers N`` runs N worker processes on the one address under a supervisor
(default: one per usable core; 1 is a single process, as before).

An SDK user's ``capgate`` command never imports the server: only this command
does, when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from capgate import InvalidArgumentError, __version__
from capgate_cli._common import EXIT_OK, duration, store_url


def serve(args: argparse.Namespace) -> int:
    from capgate_server import Settings, serve, serve_workers, usable_cores
    from capgate_server.store import SessionTimeouts

    settings = Settings(
        data_dir=args.data_dir,
        listen=args.listen,
        store_url=store_url(args),
        kek_file=args.kek_file,
        role=args.role,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca,
        insecure=args.insecure,
        stale_after=args.stale_after,
        poll_interval=args.poll_interval,
        prune_margin=args.prune_margin,
        max_clock_skew=args.max_clock_skew,
        shutdown_grace=args.shutdown_grace,
        budget_block=args.budget_block,
        require_proof=args.require_proof,
        proof_window=args.proof_window,
        ext_authz=args.ext_authz,
        ext_authz_header=args.ext_authz_header,
        spiffe_prefix=args.spiffe_prefix,
        metrics_listen=args.metrics_listen or "",
        console_listen=args.console_listen or "",
        db_timeouts=SessionTimeouts(
            statement=args.db_statement_timeout,
            lock=args.db_lock_timeout,
            idle_in_transaction=args.db_idle_timeout,
        ),
    )
    if args.max_ttl:
        settings.max_ttl_cap = duration(args.max_ttl) or settings.max_ttl_cap
    if args.audit_retention is not None:  # "0" keeps every record
        settings.audit_retention = (
            0.0
            if args.audit_retention.strip() == "0"
            else float(duration(args.audit_retention) or 0)
        )
    if args.limit:
        settings.limits = settings.limits.with_settings(args.limit)
    for name in ("approval_ttl", "approval_max_ttl", "approval_wait"):
        value = duration(getattr(args, name))
        if value is not None:
            setattr(settings, name, float(value))
    settings.governance = not args.no_governance
    if args.governance_warmup is not None:
        settings.governance_warmup = float(duration(args.governance_warmup) or 0)
    # the server and the worker pool check the settings before anything is written

    workers = args.workers
    if workers is None:
        workers = _workers(os.environ.get("CAPGATE_WORKERS", "")) or usable_cores()

    def ready(app: Any) -> None:  # a CapgateServer, or a WorkerPool
        where = app.admin_credential_path
        print(
            f"capgate {__version__} serving on {app.address}"
            + (f"; {workers} worker processes" if workers > 1 else "")
            + (f"; admin credential written to {where}" if where else ""),
            flush=True,
        )
        if app.console_url:
            print(f"operator console at {app.console_url}", flush=True)

    if workers == 1:
        asyncio.run(serve(settings, on_ready=ready))
    else:
        asyncio.run(serve_workers(settings, workers, on_ready=ready))
    return EXIT_OK


def _workers(text: str) -> int | None:
    """``CAPGATE_WORKERS``: a whole number from 1 ("": the default)."""
    if not text.strip():
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise InvalidArgumentError(f"--workers takes a whole number from 1, not {text!r}")
    return int(text)


def _workers_flag(text: str) -> int:
    """``--workers N``: a usage error (exit 2) unless a whole number from 1."""
    try:
        n = _workers(text)
    except InvalidArgumentError as e:
        raise argparse.ArgumentTypeError(e.message) from None
    if n is None:
        raise argparse.ArgumentTypeError("--workers takes a whole number from 1")
    return n


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve",
        help="run the capgate server",
        epilog="example: capgate serve --data-dir /var/lib/capgate --listen 127.0.0.1:50051",
    )
    env = os.environ.get
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(env("CAPGATE_DATA_DIR", ".capgate")),
        help="where the embedded store, the KEK and admin.credential live",
    )
    p.add_argument(
        "--listen",
        default=env("CAPGATE_LISTEN", "127.0.0.1:50051"),
        metavar="HOST:PORT",
        help="where to serve (default 127.0.0.1:50051)",
    )
    p.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="postgresql://… to share state between replicas (default: SQLite; "
        "or env CAPGATE_STORE)",
    )
    p.add_argument(
        "--store-file",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="F",
        help="a file holding the store URL (keeps a password out of `ps`)",
    )
    p.add_argument(
        "--workers",
        type=_workers_flag,
        default=None,
        metavar="N",
        help="worker processes serving the one address, 1 to 256 (default: one "
        "per usable core; 1: a single process; or env "
        "CAPGATE_WORKERS)",
    )
    p.add_argument(
        "--role",
        choices=["full", "verifier"],
        default="full",
        help="verifier: serve Verify and health only",
    )
    p.add_argument(
        "--kek-file",
        type=Path,
        metavar="F",
        help="key-encryption key for the root keys (or env CAPGATE_KEK)",
    )
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="serve TLS with this certificate")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the certificate's private key")
    p.add_argument("--tls-client-ca", type=Path, metavar="PEM", help="require client certs (mTLS)")
    p.add_argument(
        "--insecure", action="store_true", help="allow a non-loopback address without TLS"
    )
    p.add_argument("--max-ttl", metavar="DURATION", help="cap on any token's lifetime (30d)")
    p.add_argument(
        "--stale-after",
        type=float,
        default=10.0,
        metavar="S",
        help="fail closed after this long without the store",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="catch-up read of the change feed",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        default=env("CAPGATE_METRICS_LISTEN", ""),
        help="serve Prometheus metrics at http://HOST:PORT/metrics (off by default; "
        "e.g. 127.0.0.1:9464); TLS when the server has --tls-cert",
    )
    p.add_argument(
        "--console-listen",
        metavar="HOST:PORT",
        default=env("CAPGATE_CONSOLE_LISTEN", ""),
        help="serve the operator console at http://HOST:PORT/ (off by default; "
        "e.g. 127.0.0.1:8080; docs/console.md); a non-loopback address "
        "needs --tls-cert or --insecure",
    )
    p.add_argument(
        "--audit-retention",
        metavar="DURATION",
        help="delete audit records older than this (default 90d; 0 keeps all)",
    )
    p.add_argument(
        "--limit",
        action="append",
        metavar="NAME=VALUE",
        help="change one resource limit (see docs/deployment.md), e.g. calls_per_principal=128",
    )
    p.add_argument(
        "--prune-margin",
        type=float,
        default=3600.0,
        metavar="S",
        help="keep a revocation this long after its tokens have expired",
    )
    p.add_argument(
        "--max-clock-skew",
        type=float,
        default=2.0,
        metavar="S",
        help="warn (log, health capgate.clock) while this replica's clock is "
        "further than this from the store's",
    )
    p.add_argument(
        "--shutdown-grace",
        type=float,
        default=5.0,
        metavar="S",
        help="SIGTERM: time to finish the calls already accepted",
    )
    p.add_argument(
        "--budget-block",
        type=int,
        default=256,
        metavar="N",
        help="most uses of one budget ('uses', 'rate') a replica leases at once: "
        "fewer store writes, more uses a replica may hold that others lack "
        "(docs/design.md, Budgets)",
    )
    pop = p.add_argument_group("how agents present tokens (docs/integrations.md)")
    pop.add_argument(
        "--require-proof",
        action="store_true",
        help="every token needs its holder's proof of possession (an agent "
        "can also require it for itself: agent update --require-proof)",
    )
    pop.add_argument(
        "--proof-window",
        type=float,
        default=30.0,
        metavar="S",
        help="accept a proof this long either side of its instant",
    )
    pop.add_argument(
        "--ext-authz",
        action="store_true",
        help="serve Envoy's ext_authz Check (needs capgate[envoy])",
    )
    pop.add_argument(
        "--ext-authz-header",
        default="authorization",
        metavar="NAME",
        help="the request header that carries the token",
    )
    pop.add_argument(
        "--spiffe-prefix",
        default="",
        metavar="PREFIX",
        help="a peer principal PREFIX+AGENT (mTLS, e.g. spiffe://example.org/"
        "agent/) presents as AGENT in Check",
    )
    ap = p.add_argument_group('approvals (docs/caveats.md, "Approval caveats")')
    ap.add_argument(
        "--approval-ttl",
        metavar="DURATION",
        help="how long an approval lasts once granted, unless the approver says (5m)",
    )
    ap.add_argument(
        "--approval-max-ttl", metavar="DURATION", help="the longest an approver may grant (1h)"
    )
    ap.add_argument(
        "--approval-wait",
        metavar="DURATION",
        help="how long a request waits for approvers before it lapses (1h)",
    )
    gv = p.add_argument_group("governance (docs/governance.md)")
    gv.add_argument(
        "--governance-warmup",
        metavar="DURATION",
        help="how long an agent's baseline learns, from its creation, before "
        "deviations raise alerts (1d; an agent's policy may say otherwise)",
    )
    gv.add_argument(
        "--no-governance", action="store_true", help="record no usage and detect no deviation"
    )
    db = p.add_argument_group("PostgreSQL session timeouts (0 turns one off)")
    db.add_argument(
        "--db-statement-timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="end a statement that runs longer",
    )
    db.add_argument(
        "--db-lock-timeout",
        type=float,
        default=8.0,
        metavar="S",
        help="keep it above --db-idle-timeout",
    )
    db.add_argument(
        "--db-idle-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="end a session idle inside a transaction (a replica cut off "
        "mid-write) so it lets go of its locks",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    p.set_defaults(run=serve)
