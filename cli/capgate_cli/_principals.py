"""``capgate principal …`` (admin) and ``capgate admin recover`` (local, no server).

Every principal — admin, service or agent — can be listed, disabled, enabled
and given a new credential; each change takes effect on every replica at once
and is audited. ``admin recover`` is for an operator who lost every admin
credential but can reach the data directory or the database.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from capgate import InvalidArgumentError
from capgate_cli._common import (
    EXIT_OK,
    client,
    credential_shown,
    emit,
    safe,
    save_credential,
    store_url,
)
from capgate_client import PrincipalInfo


def _line(p: PrincipalInfo) -> str:
    state = "disabled" if p.disabled else "enabled"
    return f"{safe(p.id):24} {p.role:8} {state:9} created {p.created_at}"


def create(args: argparse.Namespace) -> int:
    if args.credential_out is not None and args.credential_out.exists():
        raise InvalidArgumentError(f"{args.credential_out} exists; not overwriting it")
    with client(args) as c:
        cred = c.create_principal(args.id, args.role)
    save_credential(args.credential_out, cred.credential)
    emit(
        args,
        {"principal": cred.principal, "role": cred.role, "credential": cred.credential},
        credential_shown(args, f"{cred.role} {safe(cred.principal)}", cred.credential),
    )
    return EXIT_OK


def list_(args: argparse.Namespace) -> int:
    with client(args) as c:
        principals = c.list_principals()
    emit(
        args,
        {"principals": [asdict(p) for p in principals]},
        "\n".join(_line(p) for p in principals) or "no principals",
    )
    return EXIT_OK


def _set_disabled(disabled: bool) -> Any:
    def run(args: argparse.Namespace) -> int:
        with client(args) as c:
            p = (c.disable_principal if disabled else c.enable_principal)(args.id)
        word = "disabled: every call with its credential is refused" if disabled else "enabled"
        emit(args, asdict(p), f"{p.role} {safe(p.id)} {word}")
        return EXIT_OK

    return run


def rotate(args: argparse.Namespace) -> int:
    if args.credential_out is not None and args.credential_out.exists():
        raise InvalidArgumentError(f"{args.credential_out} exists; not overwriting it")
    with client(args) as c:
        cred = c.rotate_credential(args.id)
    save_credential(args.credential_out, cred.credential)
    emit(
        args,
        {"principal": cred.principal, "role": cred.role, "credential": cred.credential},
        credential_shown(
            args,
            f"{cred.role} {safe(cred.principal)}",
            cred.credential,
            "has a new credential (the old one no longer works)",
        ),
    )
    return EXIT_OK


def recover(args: argparse.Namespace) -> int:
    """Offline: a new admin credential, straight into the store."""
    from capgate_server import load_kek, recover_admin  # only this command needs the server
    from capgate_server.store import open_store

    out: Path = args.credential_out or args.data_dir / "admin.credential"
    url = store_url(args)
    shared = bool(url) and not str(url).startswith("sqlite:")
    kek = None
    if args.kek_file is not None or os.environ.get("CAPGATE_KEK") or not shared:
        kek = load_kek(args.kek_file, None if shared else args.data_dir / "kek.key")
    else:
        print(
            "capgate: warning: without the key-encryption key (--kek-file) the recovery's "
            "audit record cannot be vouched for: the servers will keep it out of the ledger "
            "and report it as unvouched",
            file=sys.stderr,
        )
    store = open_store(url, args.data_dir)
    try:
        by = f"local-recovery:{getpass.getuser()}@{socket.gethostname()}"
        credential = recover_admin(store, args.id, time.time(), by[:64], kek)
    finally:
        store.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(credential + "\n")
    os.replace(tmp, out)
    emit(
        args,
        {"principal": args.id, "role": "admin", "credential_file": str(out)},
        f"admin {safe(args.id)} has a new credential in {out} (the old one no longer works)",
    )
    return EXIT_OK


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    principal = sub.add_parser(
        "principal",
        help="admins, services, approvers and agents: "
        "create, list, disable, enable, rotate "
        "credentials (admin)",
    )
    cmds = principal.add_subparsers(dest="principal_command", required=True, metavar="COMMAND")
    p = cmds.add_parser(
        "create",
        parents=[common],
        help="a service, an approver, an operator or an admin",
        description="Services verify tokens; approvers approve or deny requests for approval "
        "(and nothing else); operators watch agents and the audit, suspend, "
        "resume, narrow ceilings and revoke (docs/console.md); admins administer. "
        "Agents: capgate agent create.",
        epilog="example: capgate principal create carol --role approver "
        "--credential-out carol.cred",
    )
    p.add_argument("id", help="the principal's id (1-64 of A-Z a-z 0-9 . _ -)")
    p.add_argument(
        "--role",
        required=True,
        choices=["service", "approver", "operator", "admin"],
        help="what it may do",
    )
    p.add_argument(
        "--credential-out",
        type=Path,
        metavar="FILE",
        help="write the new credential to FILE (mode 0600) instead of the screen",
    )
    p.set_defaults(run=create)
    p = cmds.add_parser(
        "list",
        parents=[common],
        help="every principal and its state",
        epilog="example: capgate principal list --json",
    )
    p.set_defaults(run=list_)
    p = cmds.add_parser(
        "disable",
        parents=[common],
        help="refuse every call with this principal's credential, at once",
        epilog="example: capgate principal disable files-api",
    )
    p.add_argument("id", help="the principal (an admin, a service or an agent)")
    p.set_defaults(run=_set_disabled(True))
    p = cmds.add_parser(
        "enable",
        parents=[common],
        help="undo disable",
        epilog="example: capgate principal enable files-api",
    )
    p.add_argument("id", help="the principal")
    p.set_defaults(run=_set_disabled(False))
    p = cmds.add_parser(
        "rotate",
        parents=[common],
        help="a new credential; the old one stops working at once",
        epilog="example: capgate principal rotate files-api --credential-out files-api.cred",
    )
    p.add_argument("id", help="the principal")
    p.add_argument(
        "--credential-out",
        type=Path,
        metavar="FILE",
        help="write the new credential to FILE (mode 0600) instead of the screen",
    )
    p.set_defaults(run=rotate)

    admin = sub.add_parser("admin", help="local operator tools (no server needed)")
    acmds = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    p = acmds.add_parser(
        "recover",
        parents=[common],
        help="a new credential for an admin, written straight into the store",
        description="For an operator who lost every admin credential but can reach the "
        "data directory (SQLite) or the database (--store). Creates the admin "
        "if missing, enables it if disabled; its old credential stops working. "
        "Audited as a local recovery.",
        epilog="example: capgate admin recover --data-dir .capgate",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("CAPGATE_DATA_DIR", ".capgate")),
        help="the server's data directory (default .capgate)",
    )
    p.add_argument(
        "--store",
        default=argparse.SUPPRESS,
        metavar="URL",
        help="postgresql://… for a fleet (or env CAPGATE_STORE)",
    )
    p.add_argument(
        "--store-file",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="F",
        help="a file holding the store URL (keeps a password out of `ps`)",
    )
    p.add_argument(
        "--kek-file",
        type=Path,
        metavar="F",
        help="the key-encryption key of a shared store (or env CAPGATE_KEK), so "
        "the recovery's audit record is vouched for; SQLite's is in DATA_DIR",
    )
    p.add_argument("--id", default="admin", help="the admin to recover (default admin)")
    p.add_argument(
        "--credential-out",
        type=Path,
        metavar="FILE",
        help="where to write the credential (default DATA_DIR/admin.credential)",
    )
    p.set_defaults(run=recover)
