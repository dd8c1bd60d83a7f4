"""What every CLI command shares: connection options, reading inputs, output, exit codes.

Exit codes: 0 ok / allowed, 1 denied, 2 error (one line on stderr).
``--json`` prints exactly one JSON object on stdout for every command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from capgate import CapgateError, InvalidArgumentError, parse_duration
from capgate_client import TLS, Client

EXIT_OK, EXIT_DENIED, EXIT_ERROR = 0, 1, 2
DEFAULT_SERVER = "127.0.0.1:50051"


def common_options() -> argparse.ArgumentParser:
    """Options accepted before or after the command (defaults suppressed so either works)."""
    p = argparse.ArgumentParser(add_help=False)
    S = argparse.SUPPRESS
    p.add_argument("--json", action="store_true", default=S, help="one JSON object on stdout")
    p.add_argument("--server", default=S, metavar="HOST:PORT",
                   help=f"capgate server (env CAPGATE_SERVER, default {DEFAULT_SERVER})")
    p.add_argument("--credential-file", default=S, metavar="F", type=Path,
                   help="file holding your credential (or env CAPGATE_CREDENTIAL)")
    p.add_argument("--timeout", default=S, type=float, metavar="S", help="deadline in seconds")
    p.add_argument("--tls-ca", default=S, type=Path, metavar="PEM",
                   help="use TLS; verify the server against this CA")
    p.add_argument("--tls-cert", default=S, type=Path, metavar="PEM",
                   help="client certificate (mTLS)")
    p.add_argument("--tls-key", default=S, type=Path, metavar="PEM", help="client key (mTLS)")
    p.add_argument("--tls-server-name", default=S, metavar="NAME",
                   help="expected name in the server certificate")
    return p


def opt(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


def credential(args: argparse.Namespace) -> str:
    path = opt(args, "credential_file")
    if path is not None:
        try:
            return Path(path).read_text().strip()
        except OSError as e:
            raise InvalidArgumentError(
                f"cannot read credential file {path}: {e.strerror}") from None
    env = os.environ.get("CAPGATE_CREDENTIAL", "").strip()
    if env:
        return env
    raise InvalidArgumentError(
        "no credential: pass --credential-file F or set CAPGATE_CREDENTIAL "
        "(the admin's is in DATA_DIR/admin.credential after the first start)")


def tls(args: argparse.Namespace) -> TLS | None:
    ca, cert, key = opt(args, "tls_ca"), opt(args, "tls_cert"), opt(args, "tls_key")
    if not (ca or cert or key):
        return None
    if bool(cert) != bool(key):
        raise InvalidArgumentError("--tls-cert and --tls-key go together")
    return TLS(ca=ca, cert=cert, key=key, server_name=opt(args, "tls_server_name"))


@contextmanager
def client(args: argparse.Namespace) -> Iterator[Client]:
    target = opt(args, "server") or os.environ.get("CAPGATE_SERVER") or DEFAULT_SERVER
    c = Client(target, credential(args), tls=tls(args), timeout=opt(args, "timeout") or 10.0)
    try:
        yield c
    finally:
        c.close()


def read_token(value: str) -> str:
    """A token argument; ``-`` reads it from stdin. Surrounding whitespace is dropped."""
    text = sys.stdin.read() if value == "-" else value
    text = text.strip()
    if not text:
        raise InvalidArgumentError("empty token")
    return text


def duration(value: str | None) -> int | None:
    return None if value is None else parse_duration(value)


def pairs(values: list[str] | None, what: str = "--ctx") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"{what} takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def emit(args: argparse.Namespace, obj: dict[str, Any], human: str | None = None) -> None:
    if opt(args, "json"):
        print(json.dumps(obj, sort_keys=True))
    elif human is not None:
        print(human)
    else:
        for key, value in obj.items():
            print(f"{key}: {value}")


def fail(args: argparse.Namespace, error: CapgateError) -> int:
    message = " ".join(str(error).split())  # one line
    if opt(args, "json"):
        print(json.dumps({"error": type(error).__name__, "message": message}))
    print(f"capgate: error: {message}", file=sys.stderr)
    return EXIT_ERROR
