"""``capgate approvals …``: ask for a person's yes, list and follow requests, decide
them, and fetch the discharges of an approved one."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, fields
from typing import Any

from capgate import InvalidArgumentError
from capgate_cli._common import (
    EXIT_DENIED,
    EXIT_ERROR,
    EXIT_OK,
    client,
    duration,
    emit,
    opt,
    pairs,
    read_token,
    safe,
)
from capgate_client import ApprovalInfo

_DECIDED = ("denied", "expired", "used")


def approval_obj(a: ApprovalInfo) -> dict[str, Any]:
    obj: dict[str, Any] = {f.name: getattr(a, f.name) for f in fields(a)}
    obj["ctx"] = dict(a.ctx)
    obj["votes"] = [asdict(v) for v in a.votes]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in obj.items()}


def _line(a: ApprovalInfo) -> str:
    ctx = " ".join(f"{k}={v}" for k, v in sorted(a.ctx.items()))
    votes = sum(1 for v in a.votes if v.approve)
    note = f"  “{a.note}”" if a.note else ""
    return (
        f"{a.id} {a.status:8} {votes}/{a.approvals_needed} {a.requested_by}"
        f"{'' if a.requested_by == a.presenter else ' for ' + a.presenter}: "
        f"{a.action} {a.resource}{' ' + ctx if ctx else ''}{note}  ({a.created_at})"
    )


def _text(a: ApprovalInfo) -> str:
    lines = [
        f"approval:   {a.id} ({a.status})",
        f"asked by:   {a.requested_by} at {a.created_at}"
        + ("" if a.status != "pending" else f"; lapses at {a.wait_until}"),
        f"request:    {a.presenter} would {a.action} {a.resource}",
        *(
            [f"context:    {' '.join(f'{k}={v}' for k, v in sorted(a.ctx.items()))}"]
            if a.ctx
            else []
        ),
        f"token:      {a.token_id} ({' > '.join(a.chain)})",
        f"needs:      {a.approvals_needed} approver(s)",
        *(f"condition:  {c}" for c in a.conditions),
        *([f"note:       {a.note}"] if a.note else []),
        *(
            f"vote:       {v.approver} {'yes' if v.approve else 'NO'} at {v.at}: {v.reason}"
            for v in a.votes
        ),
    ]
    if a.expires:
        lines.append(f"expires:    {a.expires} ({a.used}/{a.uses} used)")
    if a.reason:
        lines.append(f"denied:     {a.reason}")
    return "\n".join(lines)


def request(args: argparse.Namespace) -> int:
    token = read_token(args.token)
    with client(args) as c:
        a = c.request_approval(
            token,
            args.action,
            args.resource,
            presenter=args.agent or "",
            ctx=pairs(args.ctx),
            note=args.note or "",
        )
    emit(args, approval_obj(a), a.id)
    return EXIT_OK


def list_(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.follow:
            for a in c.watch_approvals():  # until interrupted
                emit(args, approval_obj(a), _line(a))
                sys.stdout.flush()
            return EXIT_OK
        found = c.list_approvals(status=args.status, limit=args.limit)
    emit(
        args,
        {"approvals": [approval_obj(a) for a in found]},
        "\n".join(_line(a) for a in found) or f"(no {args.status} approval requests)",
    )
    return EXIT_OK


def show(args: argparse.Namespace) -> int:
    with client(args) as c:
        a = c.get_approval(args.id)
    emit(args, approval_obj(a), _text(a))
    return EXIT_OK


def _decide(approve: bool) -> Any:
    def run(args: argparse.Namespace) -> int:
        with client(args) as c:
            if approve:
                a = c.approve(args.id, args.reason, ttl=duration(args.ttl), uses=args.uses)
            else:
                a = c.deny(args.id, args.reason)
        votes = sum(1 for v in a.votes if v.approve)
        human = f"approval {a.id}: {a.status}" + (
            f" ({votes} of {a.approvals_needed} approvers so far)" if a.status == "pending" else ""
        )
        emit(args, approval_obj(a), human)
        return EXIT_OK

    return run


def discharge(args: argparse.Namespace) -> int:
    """The discharges of an approved request, one per line (exit 1 once it cannot come)."""
    token = read_token(args.token)
    deadline = time.monotonic() + (duration(args.wait) or 0)
    with client(args) as c:
        while True:
            a = c.get_approval(args.id, token=token)
            if a.status != "pending" or time.monotonic() >= deadline:
                break
            time.sleep(1.0)
    if a.status == "approved" and a.discharges:
        emit(args, approval_obj(a), "\n".join(a.discharges))
        return EXIT_OK
    if a.status == "pending":
        emit(args, approval_obj(a), None if opt(args, "json") else "")
        print(
            f"capgate: approval {a.id} is still pending ({sum(v.approve for v in a.votes)} "
            f"of {a.approvals_needed} approvers); try again, or pass --wait",
            file=sys.stderr,
        )
        return EXIT_ERROR
    why = f": {a.reason}" if a.reason else ""
    emit(args, approval_obj(a), f"{a.status}{safe(why)}")
    return EXIT_DENIED


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    approvals = sub.add_parser(
        "approvals",
        help="a person's yes for one request: ask, list, approve, deny, fetch discharges",
    )
    cmds = approvals.add_subparsers(dest="approvals_command", required=True, metavar="COMMAND")

    p = cmds.add_parser(
        "request",
        parents=[common],
        help="ask for approval of one request (as the agent)",
        description="Ask for a person's approval of exactly this request under TOKEN (its "
        "approval caveat must apply to it). Prints the request's id.",
        epilog='example: capgate --credential-file payer.cred approvals request "$PAY" '
        "--action pay --resource /invoices/inv-8 --ctx amount=4200 --note 'licence'",
    )
    p.add_argument("token", help="the token, or - for stdin")
    p.add_argument("--action", required=True, help="what the agent wants to do")
    p.add_argument("--resource", required=True, help="the path it wants to do it to")
    p.add_argument(
        "--agent", metavar="ID", help="the presenting agent (a service or admin asking for it)"
    )
    p.add_argument(
        "--ctx",
        action="append",
        metavar="KEY=VALUE",
        help="request context, exactly as it will be verified",
    )
    p.add_argument("--note", help="for the approvers: why")
    p.set_defaults(run=request)

    p = cmds.add_parser(
        "list",
        parents=[common],
        help="requests for approval (approvers: all; others: own)",
        epilog="example: capgate --credential-file carol.cred approvals list --follow",
    )
    p.add_argument(
        "--status",
        default="pending",
        choices=["pending", "approved", "denied", "expired", "used", "all"],
        help="which requests (default pending)",
    )
    p.add_argument("--limit", type=int, default=100, help="at most this many")
    p.add_argument(
        "--follow",
        action="store_true",
        help="print pending requests, then each new one as it is made (approvers; "
        "with --json, one object per line)",
    )
    p.set_defaults(run=list_)

    p = cmds.add_parser(
        "show",
        parents=[common],
        help="one request, its votes and status",
        epilog="example: capgate approvals show 5f0c…",
    )
    p.add_argument("id", help="the request's id")
    p.set_defaults(run=show)

    p = cmds.add_parser(
        "approve",
        parents=[common],
        help="say yes (approvers and admins)",
        epilog="example: capgate --credential-file carol.cred approvals approve ID "
        "--reason 'budgeted in Q3'",
    )
    p.add_argument("id", help="the request's id")
    p.add_argument("--reason", required=True, help="why, for the audit trail")
    p.add_argument(
        "--ttl", metavar="DURATION", help="how long the approval lasts once granted (default 5m)"
    )
    p.add_argument("--uses", type=int, help="how many uses it gives (default 1)")
    p.set_defaults(run=_decide(True))

    p = cmds.add_parser(
        "deny",
        parents=[common],
        help="say no: the request is denied (approvers and admins)",
        epilog="example: capgate --credential-file carol.cred approvals deny ID "
        "--reason 'not in the budget'",
    )
    p.add_argument("id", help="the request's id")
    p.add_argument("--reason", required=True, help="why, for the audit trail")
    p.set_defaults(run=_decide(False))

    p = cmds.add_parser(
        "discharge",
        parents=[common],
        help="the discharges of an approved request, for `token verify --discharge`",
        description="Print the discharges of an approved request, bound to TOKEN, one per "
        "line. Exit 1 when the request was denied, lapsed or is used up; 2 while "
        "it is pending (unless --wait).",
        epilog="example: D=$(capgate --credential-file payer.cred approvals discharge ID "
        '--token "$PAY" --wait 10m)',
    )
    p.add_argument("id", help="the request's id")
    p.add_argument("--token", required=True, help="the token it is for (or - for stdin)")
    p.add_argument(
        "--wait", metavar="DURATION", help="wait this long for the approvers (default: do not wait)"
    )
    p.set_defaults(run=discharge)


def rules(conditions: list[str] | None, approvers: int | None) -> list[Any]:
    """``--approval COND`` (repeatable) with ``--approvers N`` as approval rules."""
    from capgate import ApprovalRule

    if approvers is not None and not conditions:
        raise InvalidArgumentError("--approvers goes with --approval CONDITION")
    return [ApprovalRule("" if c == "always" else c, approvers or 1) for c in conditions or ()]
