"""``capgate bench``: how many checks a live server (or fleet) answers, and how fast.

For sizing a deployment: several client processes (one process cannot saturate a
multi-worker server), unary, batch or stream calls, a share of never-seen tokens,
a live progress line, a table of throughput and per-call p50/p99, ``--json``, and
with ``--clients 1,2,4,8`` a run per client count and, with ``--plot``, a PNG of
throughput and p99 against the load (matplotlib: ``pip install capgate[plot]``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from capgate import InvalidArgumentError
from capgate_cli._common import (
    DEFAULT_SERVER,
    EXIT_OK,
    credential,
    emit,
    opt,
    pairs,
    read_token,
    tls,
)
from capgate_cli._load import Load, Outcome, run_load, usable_cores

_MAX_DURATION = 86_400.0  # a day: a longer run is a mistake, not a measurement
_MAX_CONCURRENCY = 4096  # calls in flight per client process
_COLUMNS = ("mode", "clients", "checks/s", "calls/s", "p50 ms", "p99 ms", "allowed", "errors")


def _client_counts(text: str | None) -> list[int]:
    if not text:
        return [max(1, usable_cores() // 2)]
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise InvalidArgumentError(f"--clients takes counts like 1,2,4: {text!r}") from None
    if not counts or any(not 1 <= c <= 256 for c in counts):
        raise InvalidArgumentError("--clients: each count between 1 and 256")
    return counts


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _row(o: Outcome) -> list[str]:
    s = o.summary()
    ms = _ms
    return [
        s["mode"],
        str(s["clients"]),
        f"{s['checks_per_second']:,}",
        f"{s['calls_per_second']:,}",
        ms(s["p50_ms"]),
        ms(s["p99_ms"]),
        f"{s['allowed']:,}",
        f"{s['errors']:,}",
    ]


def _table(outcomes: list[Outcome]) -> str:
    rows = [list(_COLUMNS), *(_row(o) for o in outcomes)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def _plot(outcomes: list[Outcome], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidArgumentError("--plot needs matplotlib: pip install 'capgate[plot]'") from None
    clients = [o.load.clients for o in outcomes]
    fig, left = plt.subplots(figsize=(7, 4))
    left.plot(clients, [o.checks_per_second for o in outcomes], "o-", color="tab:blue")
    left.set_xlabel("client processes")
    left.set_ylabel("checks per second", color="tab:blue")
    right = left.twinx()
    right.plot(
        clients, [(o.percentile(0.99) or 0) * 1000 for o in outcomes], "s--", color="tab:red"
    )
    right.set_ylabel("p99 per call (ms)", color="tab:red")
    left.set_title(
        f"capgate bench: {outcomes[0].load.mode}, "
        f"{outcomes[0].load.concurrency} in flight per client"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def bench(args: argparse.Namespace) -> int:
    if not 0 < args.duration <= _MAX_DURATION:  # NaN fails this too
        raise InvalidArgumentError(
            f"--duration is seconds, more than 0 and at most {_MAX_DURATION}"
        )
    if not 1 <= args.concurrency <= _MAX_CONCURRENCY or not 1 <= args.batch <= 1024:
        raise InvalidArgumentError(
            f"need 1 <= --concurrency <= {_MAX_CONCURRENCY} and 1 <= --batch <= 1024"
        )
    if not 0 <= args.cold <= 1:
        raise InvalidArgumentError("--cold is a share between 0 and 1")
    mode = args.mode or ("batch" if args.batch > 1 else "unary")
    target = opt(args, "server") or os.environ.get("CAPGATE_SERVER") or DEFAULT_SERVER
    token = read_token(args.token)
    live = sys.stderr.isatty() and not opt(args, "json")
    outcomes = []
    for clients in _client_counts(args.clients):
        load = Load(
            target,
            credential(args),
            token,
            args.action,
            args.resource,
            args.agent or "",
            pairs(args.ctx),
            mode,
            args.batch,
            clients,
            args.concurrency,
            args.duration,
            args.cold,
            tls(args),
        )

        def progress(elapsed: float, checks: int, n: int = clients) -> None:
            if live and elapsed > 0:
                print(
                    f"\r  {n} client(s), {elapsed:5.1f}s: {checks / elapsed:>12,.0f} checks/s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )

        outcomes.append(run_load(load, progress))
        if live:
            print(file=sys.stderr)
    if args.plot is not None:
        _plot(outcomes, args.plot)
    summaries = [o.summary() for o in outcomes]
    obj: dict[str, Any] = {"server": target, **summaries[-1], "runs": summaries}
    emit(args, obj, _table(outcomes) + (f"\nplot: {args.plot}" if args.plot else ""))
    return EXIT_OK


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "bench",
        parents=[common],
        help="load a server with verifications (for sizing)",
        description="Verify one token as fast as the server answers, from several client "
        "processes, and report checks per second and per-call latency.",
        epilog='example: capgate --credential-file svc.cred bench "$TOKEN" --action read '
        "--resource /data/x --agent reporter --mode batch --clients 1,2,4 --plot load.png",
    )
    p.add_argument("token", help="the token to verify, or - for stdin")
    p.add_argument("--action", required=True, help="the action of every check")
    p.add_argument("--resource", required=True, help="the resource of every check")
    p.add_argument("--agent", metavar="ID", help="the presenting agent")
    p.add_argument("--ctx", action="append", metavar="KEY=VALUE", help="request context")
    p.add_argument(
        "--mode",
        choices=["unary", "batch", "stream"],
        help="Verify, VerifyBatch or VerifyStream (default: batch if --batch > 1)",
    )
    p.add_argument(
        "--batch", type=int, default=1, help="checks per VerifyBatch call, or per stream window"
    )
    p.add_argument(
        "--clients",
        metavar="N[,N…]",
        help="client processes; several counts run one after another "
        "(default: half the usable cores)",
    )
    p.add_argument("--concurrency", type=int, default=16, help="calls in flight per client process")
    p.add_argument("--duration", type=float, default=10.0, metavar="S", help="seconds per run")
    p.add_argument(
        "--cold",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of checks with a never-seen token (0-1; cold verification)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        metavar="PNG",
        help="draw throughput and p99 against client count (needs matplotlib)",
    )
    p.set_defaults(run=bench)
