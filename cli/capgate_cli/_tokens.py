"""``capgate token …``: issue, attenuate, delegate, inspect, verify, revoke, tree."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from capgate import (
    InvalidArgumentError,
    Token,
    delegate_offline,
    describe,
    format_timestamp,
    load_private_key,
    parse_timestamp,
    restriction_caveats,
)
from capgate_cli._approvals import rules
from capgate_cli._common import (
    EXIT_DENIED,
    EXIT_OK,
    client,
    duration,
    emit,
    pairs,
    read_token,
    safe,
)
from capgate_client import TreeNode


def _restrictions(args: argparse.Namespace) -> list[str]:
    actions = None
    if args.action:
        actions = [a for item in args.action for a in item.split(",")]
    budgets = ([f"uses <= {args.uses}"] if args.uses is not None else []) + (
        [f"rate <= {args.rate}"] if args.rate is not None else []
    )
    return restriction_caveats(
        actions=actions,
        resource=args.resource,
        ttl=duration(args.ttl),
        ctx=pairs(args.ctx),
        extra=[*budgets, *(args.caveat or ())],
        now=time.time(),
    )


def _add_restrictions(p: argparse.ArgumentParser) -> None:
    p.add_argument("--action", action="append", metavar="A[,B]", help="allow only these actions")
    p.add_argument("--resource", metavar="GLOB", help="allow only resources matching GLOB")
    p.add_argument("--ttl", metavar="DURATION", help="expire after DURATION (e.g. 10m)")
    p.add_argument(
        "--ctx",
        action="append",
        metavar="KEY=VALUE",
        help="require request context KEY to equal VALUE",
    )
    p.add_argument(
        "--uses",
        metavar="N",
        help="allow N requests in all (counted by the server, "
        "shared with every token made from this one)",
    )
    p.add_argument("--rate", metavar="N/PERIOD", help="allow N requests per period, e.g. 10/1m")
    p.add_argument("--caveat", action="append", metavar="TEXT", help="any further caveat")
    add_approval_options(
        p,
        "requests meeting CONDITION need a person's approval (e.g. "
        "'ctx amount > 1000'; 'always': every request)",
    )


def add_approval_options(p: argparse.ArgumentParser, text: str) -> None:
    p.add_argument("--approval", action="append", metavar="CONDITION", help=text)
    p.add_argument(
        "--approvers",
        type=int,
        metavar="N",
        help="distinct approvers each --approval takes (1-9, default 1)",
    )


def issue(args: argparse.Namespace) -> int:
    with client(args) as c:
        t = c.issue(args.grant, ttl=duration(args.ttl), caveats=args.caveat or ())
    emit(args, {"token": t.token, "token_id": t.token_id, "expires": t.expires}, t.token)
    return EXIT_OK


def attenuate(args: argparse.Namespace) -> int:
    token = Token.parse(read_token(args.token))
    caveats = _restrictions(args)
    approvals = rules(args.approval, args.approvers)
    if not caveats and not approvals:
        raise InvalidArgumentError(
            "nothing to add: give --action, --resource, --ttl, --ctx, "
            "--uses, --rate, --caveat or --approval"
        )
    for caveat in caveats:
        token = token.attenuate(caveat)
    for rule in approvals:
        token = token.require_approval(rule.condition, rule.approvers)
    d = describe(token)
    added = [*caveats, *(c for _, c in token.third_party_caveats[-len(approvals) :] if approvals)]
    emit(args, {"token": token.to_text(), "token_id": d.token_id, "added": added}, token.to_text())
    return EXIT_OK


def delegate(args: argparse.Namespace) -> int:
    text = read_token(args.token)
    caveats = _restrictions(args)
    approvals = rules(args.approval, args.approvers)
    if args.offline:
        if args.key is None:
            raise InvalidArgumentError("--offline needs --key FILE (the holder's private key)")
        key = load_private_key(Path(args.key).read_bytes())
        token, did = delegate_offline(Token.parse(text), key, args.to, int(time.time() * 1000))
        for caveat in caveats:
            token = token.attenuate(caveat)
        for rule in approvals:
            token = token.require_approval(rule.condition, rule.approvers)
        out, token_id = token.to_text(), describe(token).token_id
    else:
        with client(args) as c:
            t = c.delegate(text, args.to, caveats, approvals)
        out, token_id, did = t.token, t.token_id, t.delegation_id
    emit(args, {"token": out, "token_id": token_id, "delegation_id": did, "to": args.to}, out)
    return EXIT_OK


def _hops_offline(token: Token) -> dict[str, Any]:
    d = describe(token)
    chain = [
        {
            "agent": h.agent,
            "delegation_id": h.did or "",
            "at": format_timestamp(h.at_ms / 1000) if h.at_ms else "",
            "offline": h.offline,
            "restrictions": h.restrictions,
        }
        for h in d.hops
    ]
    return {
        "token_id": d.token_id,
        "key_id": d.key_id,
        "issued_at": format_timestamp(d.issued_ms / 1000) if d.issued_ms else "",
        "expires": format_timestamp(d.expires) if d.expires else "",
        "caveats": list(d.caveats),
        "lineage": d.lineage,
        "chain": chain,
        "problems": d.problems,
    }


def inspect(args: argparse.Namespace) -> int:
    text = read_token(args.token)
    if args.online:
        with client(args) as c:
            r = c.inspect(text)
        obj: dict[str, Any] = {
            "token_id": r.token_id,
            "key_id": r.key_id,
            "issued_at": r.issued_at,
            "expires": r.expires,
            "caveats": list(r.caveats),
            "lineage": list(r.lineage),
            "signature_valid": r.signature_valid,
            "revoked": r.revoked,
            "status": r.status,
            "chain": [
                {
                    "agent": h.agent,
                    "delegation_id": h.delegation_id,
                    "at": h.at,
                    "offline": h.offline,
                    "restrictions": list(h.restrictions),
                    "revoked": h.revoked,
                    "agent_status": h.agent_status,
                }
                for h in r.chain
            ],
        }
    else:
        obj = _hops_offline(Token.parse(text))
    obj["expired"] = bool(obj["expires"]) and parse_timestamp(obj["expires"]) <= time.time()
    emit(args, obj, _inspect_text(obj))
    return EXIT_OK


def _inspect_text(obj: dict[str, Any]) -> str:
    lines = [
        f"token id:  {obj['token_id']}",
        f"root key:  {obj['key_id']}",
        f"issued:    {obj['issued_at']}",
        f"expires:   {obj['expires'] or 'never'}" + ("  <EXPIRED>" if obj["expired"] else ""),
    ]
    if "status" in obj:
        lines.append(
            f"status:    {safe(obj['status'])}   signature valid: {obj['signature_valid']}"
        )
    lines.append("chain:")
    for i, hop in enumerate(obj["chain"]):
        how = (
            "issued to"
            if i == 0
            else "delegated (offline-signed) to"
            if hop["offline"]
            else "delegated to"
        )
        marks = []
        if hop.get("revoked"):
            marks.append("REVOKED")
        if hop.get("agent_status") not in (None, "active"):
            marks.append(hop["agent_status"].upper())
        ident = f" [{hop['delegation_id']}]" if hop["delegation_id"] else ""
        lines.append(
            f"  {'  ' * i}{how} {safe(hop['agent'])}{ident} at {hop['at']}"
            + (f"  <{', '.join(marks)}>" if marks else "")
        )
        for r in hop["restrictions"]:
            lines.append(f"  {'  ' * i}    {safe(r)}")
    lines.extend(f"problem:   {safe(p)}" for p in obj.get("problems", ()))
    return "\n".join(lines)


def convert(args: argparse.Namespace) -> int:
    """Offline: the same token (same signature) in another serialization."""
    token = Token.parse(read_token(args.token))
    out = token.to_text(args.format)
    emit(args, {"token": out, "format": args.format}, out)
    return EXIT_OK


def verify(args: argparse.Namespace) -> int:
    text = read_token(args.token)
    discharges = [d for item in args.discharge or () for d in item.split()]
    with client(args) as c:
        r = c.verify(
            text,
            args.action,
            args.resource,
            presenter=args.agent or "",
            ctx=pairs(args.ctx),
            discharges=discharges,
        )
    emit(
        args,
        {
            "allowed": r.allowed,
            "reason": r.reason,
            "code": r.code,
            "caveat": r.caveat,
            "token_id": r.token_id,
            "chain": list(r.chain),
        },
        "allowed" if r.allowed else f"denied: {r.reason}",
    )
    return EXIT_OK if r.allowed else EXIT_DENIED


def revoke(args: argparse.Namespace) -> int:
    target = read_token(args.target)
    with client(args) as c:
        r = c.revoke(target, args.reason or "")
    emit(
        args,
        {"revoked": r.id, "newly_revoked": r.newly_revoked, "expires": r.expires},
        f"revoked {r.id}" + ("" if r.newly_revoked else " (already revoked)"),
    )
    return EXIT_OK


def _tree_obj(n: TreeNode) -> dict[str, Any]:
    return {
        "id": n.id,
        "agent": n.agent,
        "issued_by": n.issued_by,
        "at": n.at,
        "revoked": n.revoked,
        "restrictions": list(n.restrictions),
        "truncated": n.truncated,
        "children": [_tree_obj(c) for c in n.children],
    }


def _tree_text(root: TreeNode) -> list[str]:
    out = []
    stack = [(root, 0, False)]  # depth first, without recursion
    while stack:
        n, depth, dark = stack.pop()
        mark = "  <REVOKED>" if n.revoked else "  <revoked above>" if dark else ""
        by = f" (from {safe(n.issued_by)})" if n.issued_by else ""
        out.append(f"{'    ' * depth}{safe(n.agent)}{by} [{n.id}] {n.at}{mark}")
        if n.truncated:
            out.append(f"{'    ' * (depth + 1)}… (more below; the server returns a bounded tree)")
        stack.extend((c, depth + 1, dark or n.revoked) for c in reversed(n.children))
    return out


def tree(args: argparse.Namespace) -> int:
    target = read_token(args.id)
    if not (len(target) == 32 and all(ch in "0123456789abcdefABCDEF" for ch in target)):
        token_id = describe(Token.parse(target)).token_id  # a token: its tree
        if token_id is None:
            raise InvalidArgumentError("not a capgate token")
        target = token_id
    with client(args) as c:
        node = c.tree(target)
    emit(args, _tree_obj(node), "\n".join(_tree_text(node)))
    return EXIT_OK


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    token = sub.add_parser("token", help="capability tokens")
    cmds = token.add_subparsers(dest="token_command", required=True, metavar="COMMAND")

    p = cmds.add_parser(
        "issue",
        parents=[common],
        help="get a token (as an agent)",
        epilog="example: capgate --credential-file reporter.cred token issue "
        "--grant 'read:/data/reports/*' --ttl 15m",
    )
    p.add_argument(
        "--grant",
        required=True,
        metavar="ACTIONS:GLOB",
        help="what the token allows, within the agent's ceiling",
    )
    p.add_argument("--ttl", metavar="DURATION", help="lifetime (default: the agent's max TTL)")
    p.add_argument("--caveat", action="append", metavar="TEXT", help="a further caveat")
    p.set_defaults(run=issue)

    p = cmds.add_parser(
        "attenuate",
        parents=[common],
        help="narrow a token (offline)",
        epilog='example: capgate token attenuate "$TOKEN" --resource /data/reports/q3 --ttl 5m',
    )
    p.add_argument("token", help="the token, or - for stdin")
    _add_restrictions(p)
    p.set_defaults(run=attenuate)

    p = cmds.add_parser(
        "delegate",
        parents=[common],
        help="hand a token to a sub-agent",
        epilog="example: capgate --credential-file orchestrator.cred token "
        'delegate "$ROOT" --to researcher --action read',
    )
    p.add_argument("token", help="the token, or - for stdin")
    p.add_argument("--to", required=True, metavar="AGENT", help="the sub-agent to hand it to")
    p.add_argument("--offline", action="store_true", help="sign with --key, no server call")
    p.add_argument("--key", metavar="FILE", help="the holder's Ed25519 private key (--offline)")
    _add_restrictions(p)
    p.set_defaults(run=delegate)

    p = cmds.add_parser(
        "inspect",
        parents=[common],
        help="show caveats, chain and expiry",
        epilog='example: capgate token inspect "$TOKEN" --online',
    )
    p.add_argument("token", help="the token, or - for stdin")
    p.add_argument(
        "--online",
        action="store_true",
        help="ask the server too (signature, revoked hops, agent status)",
    )
    p.set_defaults(run=inspect)

    p = cmds.add_parser(
        "convert",
        parents=[common],
        help="the same token in another format (offline; capgate reads both)",
        description="Write a token as V2 binary (the default everywhere) or as libmacaroons' "
        "V1 packets, for readers that know only V1 (libmacaroons 0.3). Same "
        "signature, same caveats.",
        epilog='example: capgate token convert "$TOKEN" --format v1',
    )
    p.add_argument("token", help="the token, or - for stdin")
    p.add_argument(
        "--format",
        choices=["v1", "v2"],
        required=True,
        help="v1: libmacaroons V1 packets; v2: macaroon V2 binary",
    )
    p.set_defaults(run=convert)

    p = cmds.add_parser(
        "verify",
        parents=[common],
        help="may this presenter do this?",
        epilog="example: capgate --credential-file files-api.cred token verify "
        '"$TOKEN" --action read --resource /data/reports/q3 '
        "--agent reporter",
    )
    p.add_argument("token", help="the token, or - for stdin")
    p.add_argument("--action", required=True, help="what the presenter wants to do")
    p.add_argument("--resource", required=True, help="the path it wants to do it to")
    p.add_argument("--agent", metavar="ID", help="the presenting agent")
    p.add_argument("--ctx", action="append", metavar="KEY=VALUE", help="request context")
    p.add_argument(
        "--discharge",
        action="append",
        metavar="DISCHARGE",
        help="a discharge of the token's approval caveat (capgate approvals "
        "discharge; several may come whitespace-separated)",
    )
    p.set_defaults(run=verify)

    p = cmds.add_parser(
        "revoke",
        parents=[common],
        help="revoke a token or an id",
        epilog='example: capgate token revoke "$TOKEN" --reason "task finished"',
    )
    p.add_argument("target", metavar="TOKEN|ID", help="a token (or -), a token id or a did")
    p.add_argument("--reason", help="why, for the audit trail")
    p.set_defaults(run=revoke)

    p = cmds.add_parser(
        "tree",
        parents=[common],
        help="the delegation tree of a token",
        epilog='example: capgate token tree "$ROOT"',
    )
    p.add_argument("id", metavar="TOKEN|ID", help="a token (or -), a token id or a did")
    p.set_defaults(run=tree)
