"""The ``capgate`` command: ``serve`` and the client commands of DESIGN §6."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from capgate import CapgateError, InvalidArgumentError, __version__
from capgate_cli import _agents, _bench, _keys, _tokens
from capgate_cli._common import EXIT_ERROR, EXIT_OK, common_options, duration, fail

__all__ = ["main"]


def _serve(args: argparse.Namespace) -> int:
    from capgate_server import Settings, serve

    settings = Settings(
        data_dir=args.data_dir, listen=args.listen, store_url=args.store, kek_file=args.kek_file,
        role=args.role, tls_cert=args.tls_cert, tls_key=args.tls_key,
        tls_client_ca=args.tls_client_ca, insecure=args.insecure,
        stale_after=args.stale_after, poll_interval=args.poll_interval,
    )
    if args.max_ttl:
        settings.max_ttl_cap = duration(args.max_ttl) or settings.max_ttl_cap
    if args.audit_retention is not None:  # "0" keeps every record
        settings.audit_retention = float(duration(args.audit_retention) or 0)
    if args.limit:
        settings.limits = settings.limits.with_settings(args.limit)

    def ready(app: object) -> None:
        from capgate_server import CapgateServer

        assert isinstance(app, CapgateServer)
        where = app.admin_credential_path
        print(f"capgate {__version__} serving on {app.address}"
              + (f"; admin credential written to {where}" if where else ""), flush=True)

    asyncio.run(serve(settings, on_ready=ready))
    return EXIT_OK


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the capgate server")
    env = os.environ.get
    p.add_argument("--data-dir", type=Path, default=Path(env("CAPGATE_DATA_DIR", ".capgate")),
                   help="where the embedded store, the KEK and admin.credential live")
    p.add_argument("--listen", default=env("CAPGATE_LISTEN", "127.0.0.1:50051"),
                   metavar="HOST:PORT")
    p.add_argument("--store", default=env("CAPGATE_STORE"), metavar="URL",
                   help="postgresql://… to share state between replicas (default: SQLite)")
    p.add_argument("--role", choices=["full", "verifier"], default="full",
                   help="verifier: serve Verify and health only")
    p.add_argument("--kek-file", type=Path, metavar="F",
                   help="key-encryption key for the root keys (or env CAPGATE_KEK)")
    p.add_argument("--tls-cert", type=Path, metavar="PEM")
    p.add_argument("--tls-key", type=Path, metavar="PEM")
    p.add_argument("--tls-client-ca", type=Path, metavar="PEM", help="require client certs (mTLS)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback address without TLS")
    p.add_argument("--max-ttl", metavar="DURATION", help="cap on any token's lifetime (30d)")
    p.add_argument("--stale-after", type=float, default=10.0, metavar="S",
                   help="fail closed after this long without the store")
    p.add_argument("--poll-interval", type=float, default=1.0, metavar="S",
                   help="catch-up read of the change feed")
    p.add_argument("--audit-retention", metavar="DURATION",
                   help="delete audit records older than this (default 90d; 0 keeps all)")
    p.add_argument("--limit", action="append", metavar="NAME=VALUE",
                   help="change one resource limit (see docs/deployment.md), e.g. "
                        "calls_per_principal=128")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(run=_serve)


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
    parser = argparse.ArgumentParser(
        prog="capgate", parents=[common],
        description="Identity-based access control for AI agents.",
        epilog="Exit status: 0 ok/allowed, 1 denied, 2 error.")
    parser.add_argument("--version", action="version", version=f"capgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub)
    _agents.add_parsers(sub, common)
    _tokens.add_parsers(sub, common)
    _keys.add_parsers(sub, common)
    _bench.add_parsers(sub, common)
    return parser




def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: usage errors exit 2 already; --help exits 0
        return int(e.code or 0)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) or args.command == "serve"
        else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.run(args))
    except CapgateError as e:
        return fail(args, e)
    except OSError as e:
        return fail(args, InvalidArgumentError(f"{e.strerror or e}: {e.filename or ''}".strip()))
    except KeyboardInterrupt:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
