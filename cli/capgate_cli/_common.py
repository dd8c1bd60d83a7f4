"""What every CLI command shares: connection options, reading inputs, output, exit codes.

Exit codes: 0 ok / allowed, 1 denied, 2 error (one line on stderr).
``--json`` prints exactly one JSON object on stdout for every command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import urllib.parse
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
    p.add_argument(
        "--server",
        default=S,
        metavar="HOST:PORT",
        help=f"capgate server (env CAPGATE_SERVER, default {DEFAULT_SERVER})",
    )
    p.add_argument(
        "--credential-file",
        default=S,
        metavar="F",
        type=Path,
        help="file holding your credential (or env CAPGATE_CREDENTIAL)",
    )
    p.add_argument(
        "--timeout", default=S, type=_timeout, metavar="S", help="deadline in seconds (10)"
    )
    p.add_argument(
        "--tls-ca",
        default=S,
        type=Path,
        metavar="PEM",
        help="use TLS; verify the server against this CA",
    )
    p.add_argument(
        "--tls-cert", default=S, type=Path, metavar="PEM", help="client certificate (mTLS)"
    )
    p.add_argument("--tls-key", default=S, type=Path, metavar="PEM", help="client key (mTLS)")
    p.add_argument(
        "--tls-server-name",
        default=S,
        metavar="NAME",
        help="expected name in the server certificate",
    )
    return p


def opt(args: argparse.Namespace, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


def _timeout(text: str) -> float:
    """``--timeout S``: seconds, more than 0 and at most a day (a usage error else)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 86400:  # NaN too
        raise argparse.ArgumentTypeError(f"--timeout takes seconds from 0 to 86400, not {text!r}")
    return value


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def credential(args: argparse.Namespace) -> str:
    path = opt(args, "credential_file")
    if path is not None:
        try:
            return Path(path).read_text().strip()
        except OSError as e:
            raise InvalidArgumentError(
                f"cannot read credential file {path}: {e.strerror}"
            ) from None
    env = os.environ.get("CAPGATE_CREDENTIAL", "").strip()
    if env:
        return env
    raise InvalidArgumentError(
        "no credential: pass --credential-file F or set CAPGATE_CREDENTIAL "
        "(the admin's is in DATA_DIR/admin.credential after the first start)"
    )


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
    c = Client(target, credential(args), tls=tls(args), timeout=_or(opt(args, "timeout"), 10.0))
    try:
        yield c
    finally:
        c.close()


def save_credential(path: Path | None, credential: str) -> None:
    """Write a new credential to a file only its owner can read (refusing to overwrite)."""
    if path is None:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(credential + "\n")


def credential_shown(
    args: argparse.Namespace, what: str, credential: str, done: str = "created"
) -> str:
    """What to tell a person about a new credential: where it went, or the credential once."""
    if args.credential_out is not None:
        return f"{what} {done}; its credential is in {args.credential_out}"
    return f"{what} {done}; its credential (shown once):\n{credential}"


def store_url(args: argparse.Namespace) -> str | None:
    """The store URL from ``--store``, ``--store-file`` or env ``CAPGATE_STORE``.

    A URL on the command line is visible to every user of the host (``ps``): when it
    carries a password, say so once on stderr.
    """
    url = opt(args, "store")
    if url:
        if urllib.parse.urlsplit(url).password:
            print(
                "capgate: warning: the password in --store is visible to other users "
                "(ps); use --store-file, CAPGATE_STORE or PGPASSFILE",
                file=sys.stderr,
            )
        return str(url)
    path = opt(args, "store_file")
    if path is not None:
        try:
            text = Path(path).read_text().strip()
        except OSError as e:
            raise InvalidArgumentError(f"cannot read store file {path}: {e.strerror}") from None
        if not text:
            raise InvalidArgumentError(f"store file {path} is empty")
        return text
    return os.environ.get("CAPGATE_STORE") or None


def read_token(value: str) -> str:
    """A token argument; ``-`` reads it from stdin. Surrounding whitespace is dropped."""
    text = sys.stdin.read() if value == "-" else value
    text = text.strip()
    if not text:
        raise InvalidArgumentError("empty token")
    return text


def duration(value: str | None) -> int | None:
    """``15m``, ``1h30m``, ``7d``: a unit is required (a bare ``15`` is refused, not
    silently taken as seconds)."""
    if value is None:
        return None
    if value.strip().isdigit():
        raise InvalidArgumentError(
            f"duration {value!r} needs a unit: {value}s, {value}m, {value}h or {value}d"
        )
    return parse_duration(value)


def pairs(values: list[str] | None, what: str = "--ctx") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"{what} takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def safe(text: object) -> str:
    """Text that may come from an attacker (a caveat, an id, a reason), made harmless
    for a terminal: control, format and line-separator characters are escaped, so
    no escape sequence or bidi override reaches the screen raw."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else _escaped(c) for c in s)


def _escaped(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def emit(args: argparse.Namespace, obj: dict[str, Any], human: str | None = None) -> None:
    """One JSON object with ``--json`` (control characters escaped by JSON), else text
    for people, every line of it passed through ``safe``."""
    if opt(args, "json"):
        print(json.dumps(obj, sort_keys=True))
    elif human is not None:
        print("\n".join(safe(line) for line in human.split("\n")))
    else:
        for key, value in obj.items():
            print(f"{key}: {safe(value)}")


def fail(args: argparse.Namespace, error: CapgateError) -> int:
    message = safe(" ".join(str(error).split()))  # one line
    if opt(args, "json"):
        print(json.dumps({"error": type(error).__name__, "message": message}))
    print(f"capgate: error: {message}", file=sys.stderr)
    return EXIT_ERROR
