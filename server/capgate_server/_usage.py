"""What an agent was seen doing, folded from the audit tally's flushed records.

A verify record names the token chain (root agent … holder) and the request; it
becomes usage rows (``UsageRow``): the holder's ``use`` or ``deny`` of the
action on the resource, each agent of the chain's ``delegate`` to the next (with
the depth below it), and the ``presenter`` of the holder's token when it was not
the holder. Identical rows of one flush are added up before they reach the
store, so a flush writes one row per distinct thing seen, however many decisions
it counted.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from capgate_server.store import AuditEvent, UsageKind, UsageRow

__all__ = ["Seen", "fold_usage", "prefix_of", "seen_in"]

_PREFIX_SEGMENTS = 2  # a resource's "prefix": its first two directories (/data/reports)
_SUBJECT = 256  # characters of a resource kept in a usage row


@functools.lru_cache(maxsize=65536)  # the detector asks for the same resources over and over
def prefix_of(resource: str) -> str:
    """``/data/reports/2026/x.csv`` → ``/data/reports``; ``/secrets/db`` → ``/secrets``;
    ``/x`` → ``/x``. Deviation detection compares prefixes, not exact resources, so new
    files in a directory the agent works in are not news."""
    segs = resource.strip("/").split("/")
    keep = max(1, min(_PREFIX_SEGMENTS, len(segs) - 1))
    return "/" + "/".join(segs[:keep])


class Seen(NamedTuple):
    """One thing an agent was seen doing in one record, with how often and when."""

    agent: str
    kind: UsageKind
    action: str
    subject: str
    times: int  # decisions it stands for
    at: float
    last_at: float


def seen_in(events: Iterable[AuditEvent]) -> Iterator[Seen]:
    """Every usage fact of the verify records (records without a chain, like a bad
    signature, name no agent and are skipped)."""
    for e in events:
        if e.kind != "verify" or not e.chain or not e.action:
            continue
        last = e.last_at if e.last_at is not None else e.at
        chain = e.chain
        holder = chain[-1]
        kind = UsageKind.USE if e.ok else UsageKind.DENY
        yield Seen(holder, kind, e.action, e.resource[:_SUBJECT], e.count, e.at, last)
        for i in range(len(chain) - 1):
            yield Seen(
                chain[i],
                UsageKind.DELEGATE,
                str(len(chain) - 1 - i),
                chain[i + 1],
                e.count,
                e.at,
                last,
            )
        if e.presenter and e.presenter != holder:  # the usual case, the holder, says nothing
            yield Seen(holder, UsageKind.PRESENTER, "", e.presenter, e.count, e.at, last)


def fold_usage(events: Iterable[AuditEvent]) -> list[UsageRow]:
    """The usage rows of a flush, identical ones added up."""
    rows: dict[tuple[str, UsageKind, str, str], list[float]] = {}
    for s in seen_in(events):
        key = (s.agent, s.kind, s.action, s.subject)
        row = rows.get(key)
        if row is None:
            rows[key] = [s.times, s.at, s.last_at]
        else:
            row[0] += s.times
            row[1] = min(row[1], s.at)
            row[2] = max(row[2], s.last_at)
    return [
        UsageRow(a, k, act, sub, int(c), first, last)
        for (a, k, act, sub), (c, first, last) in rows.items()
    ]
