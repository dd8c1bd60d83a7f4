"""``capgate agent …`` and ``capgate service create``: operator commands."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from capgate import (
    InvalidArgumentError,
    format_duration,
    load_public_key,
    new_private_key_pem,
    public_key_id,
)
from capgate_cli._approvals import rules
from capgate_cli._common import (
    EXIT_OK,
    client,
    credential_shown,
    duration,
    emit,
    safe,
    save_credential,
)
from capgate_cli._governance import add_agent_parsers, set_mode
from capgate_cli._tokens import add_approval_options
from capgate_client import AgentInfo, Client


def _agent_obj(a: AgentInfo) -> dict[str, Any]:
    obj = {
        "agent": a.id,
        **{
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(a).items()
            if k not in ("id", "approvals")
        },
    }
    obj["approvals"] = [{"condition": r.condition, "approvers": r.approvers} for r in a.approvals]
    return obj


def _agent_text(a: AgentInfo) -> str:
    return "\n".join(
        [
            f"agent:       {a.id} ({a.status})",
            f"owner:       {a.owner}",
            f"ceiling:     {' '.join(a.ceiling)}",
            f"max ttl:     {format_duration(a.max_ttl)}   max depth: {a.max_depth}   "
            f"epoch: {a.epoch}",
            *([f"description: {a.description}"] if a.description else []),
            *([f"public keys: {' '.join(a.public_keys)}"] if a.public_keys else []),
            *(
                ["proof:       required (its tokens pass only with a proof of possession)"]
                if a.require_proof
                else []
            ),
            *(
                [f"rate:        at most {a.rate} allowed requests (tokens it holds or delegated)"]
                if a.rate
                else []
            ),
            *(f"approval:    {r}" for r in a.approvals),
        ]
    )


def _public_key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    return load_public_key(path.read_bytes())


# Actions a grant may name without a second look; anything else must already be in
# some agent's ceiling, or the operator is warned (a typo like `reed` grants nothing).
_COMMON_ACTIONS = frozenset(
    (
        "read",
        "write",
        "list",
        "get",
        "put",
        "post",
        "create",
        "update",
        "delete",
        "search",
        "fetch",
        "query",
        "execute",
        "run",
        "call",
        "invoke",
        "send",
        "pay",
        "approve",
    )
)


def _warn_unknown_actions(c: Client, agent_id: str, grants: list[str]) -> None:
    """One line on stderr for each action in ``grants`` that no other agent's ceiling,
    nor the common vocabulary, has: it may be a typo."""
    known = set(_COMMON_ACTIONS)
    for other in c.list_agents():
        if other.id != agent_id:
            known.update(a for g in other.ceiling for a in g.split(":", 1)[0].split(","))
    for grant in grants:
        for action in grant.split(":", 1)[0].split(","):
            if action and action not in known:
                close = difflib.get_close_matches(action, sorted(known), n=1, cutoff=0.7)
                hint = f"; did you mean '{close[0]}'?" if close else " (a typo?)"
                print(
                    f"capgate: warning: action {safe(action)!r} is in no other agent's "
                    f"ceiling{hint}",
                    file=sys.stderr,
                )


def create(args: argparse.Namespace) -> int:
    if args.credential_out is not None and args.credential_out.exists():
        raise InvalidArgumentError(f"{args.credential_out} exists; not overwriting it")
    with client(args) as c:
        _warn_unknown_actions(c, args.id, args.grant)
        agent, credential = c.create_agent(
            args.id,
            args.grant,
            max_ttl=duration(args.max_ttl),
            max_depth=args.max_depth,
            owner=args.owner or "",
            description=args.description or "",
            public_key=_public_key(args.public_key),
            require_proof=args.require_proof,
            approvals=rules(args.approval, args.approvers),
            rate=args.rate or "",
        )
    save_credential(args.credential_out, credential)
    emit(
        args,
        {"agent": agent.id, "credential": credential},
        credential_shown(args, f"agent {agent.id}", credential),
    )
    return EXIT_OK


def show(args: argparse.Namespace) -> int:
    with client(args) as c:
        agent = c.get_agent(args.id)
    emit(args, _agent_obj(agent), _agent_text(agent))
    return EXIT_OK


def list_(args: argparse.Namespace) -> int:
    with client(args) as c:
        agents = c.list_agents()
    lines = [f"{a.id:24} {a.status:10} {' '.join(a.ceiling)}" for a in agents]
    emit(args, {"agents": [_agent_obj(a) for a in agents]}, "\n".join(lines) or "(no agents)")
    return EXIT_OK


def update(args: argparse.Namespace) -> int:
    if args.no_approvals and args.approval:
        raise InvalidArgumentError("--approval and --no-approvals do not go together")
    approvals = [] if args.no_approvals else rules(args.approval, args.approvers) or None
    if args.mode is not None:
        return set_mode(args, approvals)
    if not (
        args.grant
        or args.max_ttl
        or args.max_depth is not None
        or args.description
        or args.require_proof is not None
        or approvals is not None
        or args.rate is not None
    ):
        raise InvalidArgumentError(
            "nothing to update: give --grant, --max-ttl, --max-depth, "
            "--description, --[no-]require-proof, --rate, --approval, "
            "--no-approvals or --mode"
        )
    with client(args) as c:
        if args.grant:
            _warn_unknown_actions(c, args.id, args.grant)
        agent = c.update_agent(
            args.id,
            grants=args.grant,
            max_ttl=duration(args.max_ttl),
            max_depth=args.max_depth,
            description=args.description,
            require_proof=args.require_proof,
            approvals=approvals,
            rate=None if args.rate is None else "" if args.rate == "none" else args.rate,
        )
    emit(args, _agent_obj(agent), _agent_text(agent))
    return EXIT_OK


def _simple(method: str, done: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        with client(args) as c:
            agent = getattr(c, method)(args.id)
        emit(
            args,
            _agent_obj(agent),
            f"agent {agent.id} {done} (status {agent.status}, epoch {agent.epoch})",
        )
        return EXIT_OK

    return run


def key_add(args: argparse.Namespace) -> int:
    with client(args) as c:
        agent = c.add_public_key(args.id, load_public_key(args.public_key.read_bytes()))
    emit(args, _agent_obj(agent), f"agent {agent.id} keys: {' '.join(agent.public_keys)}")
    return EXIT_OK


def key_remove(args: argparse.Namespace) -> int:
    with client(args) as c:
        agent = c.remove_public_key(args.id, args.key_id)
    emit(args, _agent_obj(agent), f"agent {agent.id} keys: {' '.join(agent.public_keys) or '-'}")
    return EXIT_OK


def delete(args: argparse.Namespace) -> int:
    with client(args) as c:
        c.delete_agent(args.id)
    emit(
        args,
        {"agent": args.id, "deleted": True},
        f"agent {args.id} deleted: every token it holds or passed on now denies",
    )
    return EXIT_OK


def keygen(args: argparse.Namespace) -> int:
    """Offline: a new Ed25519 key pair for an agent to sign delegations with."""
    out: Path = args.out
    if out.exists():
        raise InvalidArgumentError(f"{out} exists; not overwriting a key")
    pem, public = new_private_key_pem()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path = out.with_name(out.name + ".pub")
    import base64

    pub_path.write_text(base64.b64encode(public).decode() + "\n")
    emit(
        args,
        {"private_key": str(out), "public_key": str(pub_path), "key_id": public_key_id(public)},
        f"private key: {out} (keep it secret)\npublic key:  {pub_path}\n"
        f"key id:      {public_key_id(public)}",
    )
    return EXIT_OK


def service_create(args: argparse.Namespace) -> int:
    if args.credential_out is not None and args.credential_out.exists():
        raise InvalidArgumentError(f"{args.credential_out} exists; not overwriting it")
    with client(args) as c:
        cred = c.create_principal(args.id, args.role)
    save_credential(args.credential_out, cred.credential)
    emit(
        args,
        {"principal": cred.principal, "role": cred.role, "credential": cred.credential},
        credential_shown(args, f"{cred.role} {cred.principal}", cred.credential),
    )
    return EXIT_OK


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    agent = sub.add_parser("agent", help="register and control agents (admin)")
    cmds = agent.add_subparsers(dest="agent_command", required=True, metavar="COMMAND")

    p = cmds.add_parser(
        "create",
        parents=[common],
        help="register an agent",
        epilog="example: capgate agent create reporter --grant 'read,write:/data/reports/**' "
        "--max-ttl 1h --credential-out reporter.cred",
    )
    p.add_argument("id", help="the agent's id (1-64 of A-Z a-z 0-9 . _ -)")
    p.add_argument(
        "--grant",
        action="append",
        required=True,
        metavar="ACTIONS:GLOB",
        help="a grant of its ceiling, e.g. read,write:/data/** (repeatable)",
    )
    p.add_argument(
        "--max-ttl", metavar="DURATION", help="longest token it may get, with a unit (e.g. 15m, 1h)"
    )
    p.add_argument("--max-depth", type=int, help="delegations allowed below it (0-16)")
    p.add_argument("--owner", help="who answers for it (default: you)")
    p.add_argument("--description", help="what it is for")
    p.add_argument(
        "--public-key", type=Path, metavar="FILE", help="Ed25519 public key for offline delegation"
    )
    p.add_argument(
        "--credential-out",
        type=Path,
        metavar="FILE",
        help="write the new credential to FILE (mode 0600) instead of the screen",
    )
    p.add_argument(
        "--require-proof",
        action="store_true",
        help="its tokens pass only with a proof of possession signed by its key",
    )
    p.add_argument(
        "--rate",
        metavar="N/PERIOD",
        help="at most N allowed requests per period, e.g. 100/1m, on tokens it "
        "holds or delegated (counted fleet-wide)",
    )
    add_approval_options(
        p,
        "its requests meeting CONDITION need a person's approval (e.g. "
        "'ctx amount > 1000'; 'always'); repeatable",
    )
    p.set_defaults(run=create)

    p = cmds.add_parser(
        "list", parents=[common], help="list agents", epilog="example: capgate agent list --json"
    )
    p.set_defaults(run=list_)
    p = cmds.add_parser(
        "show",
        parents=[common],
        help="show one agent",
        epilog="example: capgate agent show reporter",
    )
    p.add_argument("id", help="the agent")
    p.set_defaults(run=show)

    p = cmds.add_parser(
        "update",
        parents=[common],
        help="change ceiling or limits (live)",
        epilog="example: capgate agent update reporter "
        "--grant 'read:/data/reports/**' --rate 10/1m",
    )
    p.add_argument("id", help="the agent")
    p.add_argument(
        "--grant",
        action="append",
        metavar="ACTIONS:GLOB",
        help="the new ceiling (replaces the old one; repeatable)",
    )
    p.add_argument("--max-ttl", metavar="DURATION", help="longest token it may get (e.g. 1h)")
    p.add_argument("--max-depth", type=int, help="delegations allowed below it (0-16)")
    p.add_argument("--description", help="what it is for")
    p.add_argument(
        "--require-proof",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="whether its tokens pass only with a proof of possession",
    )
    p.add_argument(
        "--rate",
        metavar="N/PERIOD",
        help="at most N allowed requests per period (e.g. 100/1m); 'none' lifts it",
    )
    add_approval_options(p, "the new approval rules (replace the old ones; repeatable)")
    p.add_argument("--no-approvals", action="store_true", help="remove every approval rule")
    p.add_argument(
        "--mode",
        choices=["shadow", "enforce"],
        help="shadow: the --grant ceiling is only watched (what it would deny is "
        "recorded and alerted on, and allowed); enforce: make the watched "
        "ceiling (or --grant) the ceiling",
    )
    p.set_defaults(run=update)

    for name, method, done, text in (
        ("suspend", "suspend_agent", "suspended", "deny every token it appears in"),
        ("resume", "resume_agent", "resumed", "undo suspend"),
        (
            "revoke-all",
            "revoke_all",
            "had all its tokens revoked",
            "bump the epoch: every token issued to or delegated through it so far denies",
        ),
    ):
        p = cmds.add_parser(
            name, parents=[common], help=text, epilog=f"example: capgate agent {name} reporter"
        )
        p.add_argument("id", help="the agent")
        p.set_defaults(run=_simple(method, done))

    p = cmds.add_parser(
        "delete",
        parents=[common],
        help="delete an agent: its credential and keys go; every token it holds or passed "
        "on denies for good, even if the id is registered again",
        epilog="example: capgate agent delete reporter",
    )
    p.add_argument("id", help="the agent")
    p.set_defaults(run=delete)

    add_agent_parsers(cmds, common)  # usage, policy

    key = cmds.add_parser("key", help="Ed25519 keys for offline delegation")
    kcmds = key.add_subparsers(dest="key_command", required=True, metavar="COMMAND")
    p = kcmds.add_parser(
        "add",
        parents=[common],
        help="register a public key",
        epilog="example: capgate agent key add archivist --public-key archivist.key.pub",
    )
    p.add_argument("id", help="the agent that will sign with it")
    p.add_argument(
        "--public-key",
        type=Path,
        required=True,
        metavar="FILE",
        help="the public key (PEM, OpenSSH, or base64 of the raw 32 bytes)",
    )
    p.set_defaults(run=key_add)
    p = kcmds.add_parser(
        "remove",
        parents=[common],
        help="retire a key (its delegations deny)",
        epilog="example: capgate agent key remove archivist 3f2a9c0d1e2b4a5c",
    )
    p.add_argument("id", help="the agent")
    p.add_argument("key_id", help="the key's id (16 hex digits; see agent show)")
    p.set_defaults(run=key_remove)
    p = kcmds.add_parser(
        "generate",
        parents=[common],
        help="make a key pair (offline)",
        epilog="example: capgate agent key generate --out archivist.key",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="FILE",
        help="private key file (FILE.pub gets the public key)",
    )
    p.set_defaults(run=keygen)

    svc = sub.add_parser("service", help="principals for resource services (admin)")
    scmds = svc.add_subparsers(dest="service_command", required=True, metavar="COMMAND")
    p = scmds.add_parser(
        "create",
        parents=[common],
        help="a principal that may verify",
        epilog="example: capgate service create files-api --credential-out files-api.cred",
    )
    p.add_argument("id", help="the principal's id")
    p.add_argument(
        "--role",
        choices=["service", "approver", "operator", "admin"],
        default="service",
        help="service (verifies tokens; the default), approver (approves or denies "
        "requests for approval), operator (suspends, narrows, revokes) or admin",
    )
    p.add_argument(
        "--credential-out",
        type=Path,
        metavar="FILE",
        help="write the new credential to FILE (mode 0600) instead of the screen",
    )
    p.set_defaults(run=service_create)
