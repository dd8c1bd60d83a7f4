"""``capgate review``, ``capgate alerts``, ``capgate agent usage|policy``: what agents
used against what they may, the deviations raised, and what an alert does."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from capgate import InvalidArgumentError, parse_duration
from capgate_cli._common import EXIT_OK, client, duration, emit
from capgate_client import AccessReview, Alert, UsageInfo

_MONTH = 30 * 86400


def _alert_line(a: Alert) -> str:
    done = "" if a.containment == "alert" else f"  [{a.containment}]"
    return f"#{a.seq} {a.at} {a.agent} {a.kind}: {a.reason}{done}"


def _diff(r: AccessReview) -> str:
    when = f"last used {r.last_used}" if r.last_used else "not used in the window"
    lines = [f"agent {r.agent}: {r.uses} allowed, {r.denies} denied; {when}"]
    if r.idle:
        lines.append(
            "  idle for the whole window: consider `capgate agent suspend "
            f"{r.agent}` or `capgate agent delete {r.agent}`"
        )
    for g in r.grants:
        if not g.proposed:
            lines.append(f"  - {g.grant}    (never used)")
        elif g.proposed == (g.grant,):
            lines.append(f"    {g.grant}    ({g.uses} uses)")
        else:
            lines.append(f"  - {g.grant}    (used: {', '.join(g.used)})")
            lines.extend(f"  + {p}" for p in g.proposed)
    if r.proposed_max_depth != r.max_depth:
        lines.append(
            f"  max depth {r.max_depth} → {r.proposed_max_depth} (deepest delegation "
            f"used: {r.depth_used})"
        )
    if not r.changes and not r.idle:
        lines.append("  the ceiling fits its use: nothing to narrow")
    return "\n".join(lines)


def review(args: argparse.Namespace) -> int:
    since = duration(args.since) or _MONTH
    with client(args) as c:
        reviews = c.review(args.agent or "", since=since)
        applied = None
        if args.apply:
            if not args.agent:
                raise InvalidArgumentError("--apply needs the AGENT to apply its review to")
            r = reviews[0]
            if r.changes and not r.idle:
                info = c.update_agent(
                    r.agent, grants=list(r.proposed), max_depth=r.proposed_max_depth
                )
                applied = {"grants": list(info.ceiling), "max_depth": info.max_depth}
    obj: dict[str, Any] = {"since_seconds": since, "reviews": [asdict(r) for r in reviews]}
    text = "\n".join(_diff(r) for r in reviews) or "no agents"
    if args.apply:
        obj["applied"] = applied
        text += (
            "\napplied: the new ceiling is live on every replica"
            if applied
            else "\nnothing applied"
        )
    emit(args, obj, text)
    return EXIT_OK


def _tree(agent: str, rows: list[UsageInfo]) -> str:
    lines = [agent]
    uses = sorted(
        (r for r in rows if r.kind in ("use", "deny")), key=lambda r: (r.subject, r.action)
    )
    tree: dict[str, Any] = {}
    for r in uses:
        node = tree
        for seg in r.subject.strip("/").split("/"):
            node = node.setdefault(seg, {})
        leaf = node.setdefault("", [])
        leaf.append(
            f"{r.action}{'' if r.kind == 'use' else ' DENIED'} ×{r.count} (last {r.last_seen})"
        )

    def walk(node: dict[str, Any], indent: str) -> None:
        for name in sorted(k for k in node if k):
            child = node[name]
            what = "; ".join(child.get("", []))
            lines.append(f"{indent}/{name}{'  ' + what if what else ''}")
            walk(child, indent + "  ")

    walk(tree, "  ")
    for r in rows:
        if r.kind == "delegate":
            lines.append(f"  delegated to {r.subject} (depth {r.action}) ×{r.count}")
        elif r.kind == "presenter" and r.subject != agent:
            lines.append(f"  its tokens presented by {r.subject} ×{r.count}")
    return "\n".join(lines)


def usage(args: argparse.Namespace) -> int:
    since = duration(args.since) or 0
    with client(args) as c:
        rows = c.usage(args.id, since=since)
    emit(args, {"agent": args.id, "usage": [asdict(r) for r in rows]}, _tree(args.id, rows))
    return EXIT_OK


def alerts(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.follow:
            for a in c.watch_alerts(args.agent or "", after=args.after):  # until interrupted
                emit(args, asdict(a), _alert_line(a))
                sys.stdout.flush()
            return EXIT_OK
        found = c.alerts(args.agent or "", after=args.after, limit=args.limit)
    emit(
        args,
        {"alerts": [asdict(a) for a in found]},
        "\n".join(_alert_line(a) for a in found) or "no alerts",
    )
    return EXIT_OK


def set_mode(args: argparse.Namespace, approvals: Any) -> int:
    """``agent update --mode shadow --grant …`` watches a ceiling; ``--mode enforce``
    makes the watched one (or ``--grant``) the ceiling and ends shadow mode."""
    with client(args) as c:
        current = c.get_policy(args.id)
        others = dict(
            max_ttl=duration(args.max_ttl),
            max_depth=args.max_depth,
            description=args.description,
            require_proof=args.require_proof,
            approvals=approvals,
            rate=None if args.rate is None else "" if args.rate == "none" else args.rate,
        )
        if args.mode == "shadow":
            if not args.grant:
                raise InvalidArgumentError("--mode shadow needs the --grant ceiling to watch")
            if any(v is not None for v in others.values()):
                c.update_agent(args.id, **others)
            p = c.set_policy(
                args.id,
                containment=current.containment,
                sensitivity=current.sensitivity,
                warmup=current.warmup,
                shadow=args.grant,
            )
            emit(
                args,
                asdict(p),
                f"{p.agent}: shadow ceiling {' '.join(p.shadow)} (watched, "
                "not enforced: what it would deny is recorded and alerted "
                "on, and allowed)",
            )
            return EXIT_OK
        grants = args.grant or list(current.shadow) or None
        if grants is None and all(v is None for v in others.values()):
            raise InvalidArgumentError(f"{args.id} is not in shadow mode: give --grant")
        info = c.update_agent(args.id, grants=grants, **others)
        if current.shadow:
            c.set_policy(
                args.id,
                containment=current.containment,
                sensitivity=current.sensitivity,
                warmup=current.warmup,
            )
    emit(
        args,
        {"agent": info.id, "ceiling": list(info.ceiling), "mode": "enforce"},
        f"{info.id}: ceiling {' '.join(info.ceiling)} (enforced)",
    )
    return EXIT_OK


def policy(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.containment is None and args.sensitivity is None and args.warmup is None:
            p = c.get_policy(args.id)
        else:
            current = c.get_policy(args.id)
            warmup = (
                current.warmup
                if args.warmup is None
                else float(parse_duration(args.warmup) if args.warmup != "default" else -1)
            )
            p = c.set_policy(
                args.id,
                containment=args.containment or current.containment,
                sensitivity=args.sensitivity or current.sensitivity,
                warmup=warmup,
                shadow=current.shadow,
            )
    warm = "server default" if p.warmup < 0 else f"{p.warmup:.0f}s"
    shadow = f"; shadow ceiling {' '.join(p.shadow)}" if p.shadow else ""
    emit(
        args,
        asdict(p),
        f"{p.agent}: on deviation {p.containment}; sensitivity "
        f"{p.sensitivity:g}; warm-up {warm}{shadow}",
    )
    return EXIT_OK


def add_agent_parsers(cmds: Any, common: argparse.ArgumentParser) -> None:
    """``agent usage`` and ``agent policy`` (added to ``capgate agent``)."""
    p = cmds.add_parser(
        "usage",
        parents=[common],
        help="what the agent used, as a tree of resources",
        epilog="example: capgate agent usage researcher --since 7d",
    )
    p.add_argument("id", help="the agent")
    p.add_argument("--since", metavar="DURATION", help="only what was seen this recently")
    p.set_defaults(run=usage)

    p = cmds.add_parser(
        "policy",
        parents=[common],
        help="what a deviation alert does to the agent, and how sensitive detection is",
        epilog="example: capgate agent policy researcher --containment suspend",
    )
    p.add_argument("id", help="the agent")
    p.add_argument(
        "--containment",
        choices=["alert", "narrow", "suspend"],
        help="alert (default): tell; narrow: drop the grants that allowed a "
        "first-seen resource; suspend: suspend the agent",
    )
    p.add_argument(
        "--sensitivity",
        type=float,
        help="1 by default; 2 flags deviations half as large, 0.5 twice as large",
    )
    p.add_argument(
        "--warmup",
        metavar="DURATION",
        help="learning time from the agent's creation before alerting "
        "(e.g. 1d, 0s; 'default': the server's)",
    )
    p.set_defaults(run=policy)


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "review",
        parents=[common],
        help="access review: each agent's ceiling beside what it used, a narrower one proposed",
        epilog="example: capgate review researcher --since 30d --apply",
    )
    p.add_argument("agent", nargs="?", help="one agent (default: every agent)")
    p.add_argument("--since", metavar="DURATION", help="the window (default 30d)")
    p.add_argument(
        "--apply",
        action="store_true",
        help="apply the proposed ceiling and depth to AGENT (live, audited)",
    )
    p.set_defaults(run=review)

    p = sub.add_parser(
        "alerts",
        parents=[common],
        help="deviation alerts raised anywhere in the fleet (admin)",
        epilog="example: capgate alerts --follow",
    )
    p.add_argument("--agent", metavar="ID", help="only this agent's")
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="only after this one")
    p.add_argument("--limit", type=int, default=100, help="at most this many")
    p.add_argument(
        "--follow",
        action="store_true",
        help="then print each new alert as it is raised (with --json, one object per line)",
    )
    p.set_defaults(run=alerts)
