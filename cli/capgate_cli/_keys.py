"""``capgate keys …``: root-key rotation (admin) and making a key-encryption key."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from capgate import InvalidArgumentError
from capgate_cli._common import EXIT_OK, client, emit


def _line(k: Any) -> str:
    state = "signing" if k.signing else ("retired " + k.retired_at if k.retired_at else "active")
    return f"{k.id:12} created {k.created_at}  {state}"


def list_(args: argparse.Namespace) -> int:
    with client(args) as c:
        keys = c.list_keys()
    emit(args, {"keys": [asdict(k) for k in keys]}, "\n".join(_line(k) for k in keys))
    return EXIT_OK


def rotate(args: argparse.Namespace) -> int:
    with client(args) as c:
        key = c.rotate_key()
    emit(args, asdict(key), f"new signing key {key.id}; older keys verify until retired")
    return EXIT_OK


def retire(args: argparse.Namespace) -> int:
    with client(args) as c:
        key = c.retire_key(args.id)
    emit(args, asdict(key), f"retired {key.id}: every token signed with it now denies")
    return EXIT_OK


def new_kek(args: argparse.Namespace) -> int:
    """Offline: a fresh key-encryption key, written to a 0600 file."""
    out: Path = args.out
    if out.exists():
        raise InvalidArgumentError(f"{out} exists; not overwriting a key")
    from capgate_server import new_kek_text  # only this offline command needs the server

    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(new_kek_text() + "\n")
    emit(
        args,
        {"kek_file": str(out)},
        f"key-encryption key written to {out}; give it to every replica (--kek-file)",
    )
    return EXIT_OK


def health(args: argparse.Namespace) -> int:
    """The standard gRPC health check (no credential needed): 0 serving, 1 not."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from capgate_cli._common import DEFAULT_SERVER, EXIT_DENIED, opt, tls

    target = opt(args, "server") or os.environ.get("CAPGATE_SERVER") or DEFAULT_SERVER
    creds = tls(args)
    channel = (
        grpc.secure_channel(target, creds.credentials(), creds.options())
        if creds
        else grpc.insecure_channel(target)
    )
    try:
        with channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)  # the stubs' typing lacks Check
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service),
                timeout=opt(args, "timeout") or 3.0,
            )
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    except grpc.RpcError as e:
        status = f"UNREACHABLE ({e.code().name})"
    serving = status == "SERVING"
    emit(args, {"server": target, "status": status}, f"{target}: {status}")
    return EXIT_OK if serving else EXIT_DENIED


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "health",
        parents=[common],
        help="is the server serving? (exit 0/1)",
        epilog="example: capgate --server 127.0.0.1:50051 health",
    )
    p.add_argument("--service", default="", help="a service name (default: the server)")
    p.set_defaults(run=health)

    keys = sub.add_parser("keys", help="root keys: rotate, retire (admin)")
    cmds = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    p = cmds.add_parser(
        "list",
        parents=[common],
        help="the root keys and which one signs",
        epilog="example: capgate keys list",
    )
    p.set_defaults(run=list_)
    p = cmds.add_parser(
        "rotate",
        parents=[common],
        help="add a new signing key",
        epilog="example: capgate keys rotate",
    )
    p.set_defaults(run=rotate)
    p = cmds.add_parser(
        "retire",
        parents=[common],
        help="retire a key: its tokens deny",
        epilog="example: capgate keys retire k1a2b3c4d",
    )
    p.add_argument("id", help="the key's id (see keys list)")
    p.set_defaults(run=retire)
    p = cmds.add_parser(
        "new-kek",
        parents=[common],
        help="make a key-encryption key (offline)",
        epilog="example: capgate keys new-kek --out /etc/capgate/kek",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help="where to write it (mode 0600; never overwritten)",
    )
    p.set_defaults(run=new_kek)
