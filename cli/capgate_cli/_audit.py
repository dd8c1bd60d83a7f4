"""``capgate audit …``: read, follow, export and verify the audit trail (admin).

``capgate audit`` shows the newest records first, as a table; ``--follow`` then
streams new ones as they are sealed (resuming where it left off after a
reconnect). ``audit export`` writes JSON lines for a SIEM (schema in
docs/deployment.md); ``audit checkpoint`` saves the ledger's signed head to keep
off the machine; ``audit verify`` walks the ledger and exits 1 at the first break.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from capgate import CapgateError, InvalidArgumentError, UnavailableError, parse_timestamp
from capgate_cli._common import EXIT_DENIED, EXIT_OK, client, duration, emit, opt, safe
from capgate_client import AuditCheckpoint, AuditRecord

_COLUMNS = ("SEQ", "TIME", "PRINCIPAL", "KIND", "OUTCOME", "CODE", "SUBJECT", "REQUEST", "CHAIN")
_WIDTH = 40  # a column of attacker-written text is cut here for the table


def record_obj(e: AuditRecord) -> dict[str, Any]:
    """A record as the export schema has it (docs/deployment.md, "Audit export")."""
    try:
        detail = json.loads(e.detail) if e.detail else {}
    except ValueError:
        detail = {"unparsed": e.detail}
    return {
        "pos": e.pos,
        "seq": e.seq,
        "at": e.at,
        "last_at": e.last_at or e.at,
        "count": e.count,
        "principal": e.principal,
        "kind": e.kind,
        "subject": e.subject,
        "ok": e.ok,
        "code": e.code,
        "reason": e.reason,
        "caveat": e.caveat,
        "chain": list(e.chain),
        "action": e.action,
        "resource": e.resource,
        "presenter": e.presenter,
        "ctx_keys": list(e.ctx_keys),
        "replica": e.replica,
        "detail": detail,
        "digest": e.digest,
    }


def _cell(text: str) -> str:
    text = safe(text)
    return text if len(text) <= _WIDTH else text[: _WIDTH - 1] + "…"


def _row(e: AuditRecord) -> list[str]:
    request = ""
    if e.action or e.resource:
        request = f"{e.action} {e.resource}".strip()
    if e.count > 1:
        request = f"{request} ×{e.count}".strip()
    outcome = "ok" if e.ok else ("DENY" if e.kind == "verify" else "REFUSED")
    return [
        str(e.seq),
        e.at,
        _cell(e.principal),
        _cell(e.kind),
        outcome,
        _cell(e.code),
        _cell(e.subject),
        _cell(request),
        _cell(" > ".join(e.chain)),
    ]


def table(events: list[AuditRecord], header: bool = True) -> str:
    rows = ([list(_COLUMNS)] if header else []) + [_row(e) for e in events]
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    ok = True if args.allowed else (False if args.denied else None)
    return {
        "principal": args.principal or "",
        "agent": args.agent or "",
        "kind": args.kind or "",
        "code": args.code or "",
        "ok": ok,
    }


def list_(args: argparse.Namespace) -> int:
    last = args.last or args.limit or 20
    filters = _filters(args)
    with client(args) as c:
        if args.after:  # the old paging: oldest first after a sequence number
            events = c.audit(
                token_id=args.token_id or "", after_seq=args.after, limit=last, **filters
            )
        else:
            events = c.audit(token_id=args.token_id or "", limit=last, newest_first=True, **filters)
        if not args.follow:
            emit(
                args,
                {"events": [record_obj(e) for e in events]},
                table(events) if events else "(no events)",
            )
            return EXIT_OK
        shown = sorted(events, key=lambda e: e.seq)  # follow: oldest to newest, like tail -f
        _print(args, shown, header=True)
        return _follow(args, c, filters)


def _print(args: argparse.Namespace, events: list[AuditRecord], header: bool = False) -> None:
    for e in events:
        if opt(args, "json"):
            print(json.dumps(record_obj(e), sort_keys=True), flush=True)
    if not opt(args, "json") and (events or header):
        text = table(events, header)
        if text:
            print(text, flush=True)


def _follow(args: argparse.Namespace, c: Any, filters: dict[str, Any]) -> int:
    """Stream new records as they are sealed; reconnect and resume after a cut."""
    head = c.audit_checkpoint().pos if _has_ledger(c) else 0
    after = head
    while True:
        try:
            for e in c.watch_audit(after_pos=after, follow=True, **filters):
                after = e.pos
                _print(args, [e])
        except UnavailableError as e:  # the server went away: come back where we were
            print(f"capgate: {safe(e)}; reconnecting", file=sys.stderr, flush=True)
            time.sleep(1.0)


def _has_ledger(c: Any) -> bool:
    try:
        c.audit_checkpoint()
    except CapgateError:  # nothing sealed yet
        return False
    return True


def _since(text: str | None) -> tuple[int, float]:
    """``--since``: a ledger position (digits), an instant (RFC 3339) or an age (24h)."""
    if not text:
        return 0, 0.0
    if text.isdigit():
        return int(text), 0.0
    try:
        return 0, parse_timestamp(text)
    except CapgateError:
        age = duration(text)
        return 0, time.time() - (age or 0)


def export(args: argparse.Namespace) -> int:
    if args.format != "jsonl":
        raise InvalidArgumentError("--format: jsonl is the one export format")
    after, since = _since(args.since)
    out = args.out.open("w") if args.out else sys.stdout
    n = 0
    try:
        with client(args) as c:
            for e in c.watch_audit(after_pos=after, follow=False, since=since, **_filters(args)):
                out.write(json.dumps(record_obj(e), sort_keys=True) + "\n")
                n += 1
    finally:
        if args.out:
            out.close()
    if args.out:
        print(f"{n} records written to {args.out}", file=sys.stderr)
    return EXIT_OK


def checkpoint(args: argparse.Namespace) -> int:
    with client(args) as c:
        head = c.audit_checkpoint()
    if args.out:
        args.out.write_text(head.to_json() + "\n")
    emit(
        args,
        json.loads(head.to_json()),
        f"ledger head at {head.pos}, digest {head.digest[:16]}…, signed by key {head.key_id}"
        + (f"; saved to {args.out} (keep it off this machine)" if args.out else ""),
    )
    return EXIT_OK


def verify(args: argparse.Namespace) -> int:
    against = None
    if args.against:
        try:
            against = AuditCheckpoint.from_json(Path(args.against).read_text())
        except (ValueError, KeyError, TypeError) as e:
            raise InvalidArgumentError(
                f"{args.against} is not an exported checkpoint ({type(e).__name__})"
            ) from None
    with client(args) as c:
        r = c.verify_audit(since=args.since or 0, against=against)
    obj = {
        "intact": r.intact,
        "break_pos": r.break_pos,
        "reason": r.reason,
        "start": r.start,
        "head": r.head,
        "records": r.records,
        "checkpoints": r.checkpoints,
        "key_id": r.key_id,
    }
    if r.intact:
        text = (
            f"intact: {r.records} records ({r.start + 1}..{r.head}) and {r.checkpoints} "
            f"signed checkpoints, key {r.key_id}"
            + (f"; extends the exported checkpoint at {against.pos}" if against else "")
        )
    else:
        text = f"BROKEN at {r.break_pos}: {r.reason}"
    emit(args, obj, text)
    return EXIT_OK if r.intact else EXIT_DENIED


def _filter_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--principal", help="records made by this principal")
    p.add_argument("--agent", help="records where this agent is in the chain")
    p.add_argument("--kind", help="verify, issue, delegate, revoke, auth.failed, agent.create, …")
    p.add_argument("--code", help="a deny code (or allowed)")
    p.add_argument("--denied", action="store_true", help="only denies and refusals")
    p.add_argument("--allowed", action="store_true", help="only allows and changes made")


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "audit",
        parents=[common],
        help="read, follow and verify the audit trail (admin)",
        epilog="example: capgate audit --agent reporter --denied --last 50",
    )
    _filter_options(p)
    p.add_argument("--token-id", help="records about this token or delegation id")
    p.add_argument("--last", type=int, metavar="N", help="the N newest records (default 20)")
    p.add_argument(
        "--follow",
        action="store_true",
        help="then stream new records as they are sealed (Ctrl-C to stop)",
    )
    p.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="SEQ",
        help="oldest first, from after this sequence number",
    )
    p.add_argument("--limit", type=int, help="the same as --last")
    p.set_defaults(run=list_)
    cmds = p.add_subparsers(dest="audit_command", required=False, metavar="COMMAND")

    v = cmds.add_parser(
        "verify",
        parents=[common],
        help="walk the tamper-evident ledger; exit 1 at the first break",
        epilog="example: capgate audit verify --against head.json",
    )
    v.add_argument(
        "--since",
        type=int,
        default=0,
        metavar="POS",
        help="start at the kept checkpoint at or before this position",
    )
    v.add_argument(
        "--against", metavar="FILE", help="an exported checkpoint the ledger must still extend"
    )
    v.set_defaults(run=verify)

    c = cmds.add_parser(
        "checkpoint",
        parents=[common],
        help="the ledger's signed head, to keep off the machine",
        epilog="example: capgate audit checkpoint --out head-$(date +%F).json",
    )
    c.add_argument("--out", type=Path, metavar="FILE", help="write it to FILE as JSON")
    c.set_defaults(run=checkpoint)

    e = cmds.add_parser(
        "export",
        parents=[common],
        help="JSON lines for a SIEM",
        epilog="example: capgate audit export --since 24h --out audit.jsonl",
    )
    _filter_options(e)
    e.add_argument(
        "--since",
        metavar="POS|TIME|AGE",
        help="after a ledger position, or from an instant (RFC 3339) or an age (24h)",
    )
    e.add_argument("--format", default="jsonl", help="jsonl (one record per line)")
    e.add_argument("--out", type=Path, metavar="FILE", help="write to FILE (default stdout)")
    e.set_defaults(run=export)
