"""Access review: an agent's ceiling beside what it used, and a narrower ceiling.

Each allowed request in the window (the ``use`` usage rows) is credited to the
first grant of the ceiling that allows it. Then per grant:

* never used → dropped;
* actions never used → left out;
* used only under a few prefixes of its pattern → replaced by one grant per
  prefix, with the actions used there, on the deepest directory holding all of
  that prefix's uses
  (``/data/**`` used only under ``/data/reports/2026`` → ``/data/reports/2026/**``),
  provided the result lies within the original pattern (a proposal never widens).

An agent with no allowed request in the window is idle (its ceiling is left for a
person to decide: suspend or delete). Delegations: the deepest chain seen below
the agent; a ``max_depth`` above it is proposed down to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from capgate import Agent, Glob, Grant
from capgate_server._usage import prefix_of
from capgate_server.store import UsageKind, UsageRow

__all__ = ["AgentReview", "GrantUse", "review"]

_MAX_SPLIT = 4  # a grant is split into at most this many narrower ones


@dataclass(frozen=True, slots=True)
class GrantUse:
    grant: str
    uses: int  # allowed requests credited to it in the window
    last_used: float  # 0: never in the window
    used: tuple[str, ...]  # what it was used for: "read /data/reports/**"
    proposed: tuple[str, ...]  # what replaces it (empty: dropped; itself: kept)


@dataclass(frozen=True, slots=True)
class AgentReview:
    agent: str
    ceiling: tuple[str, ...]
    grants: tuple[GrantUse, ...]
    proposed: tuple[str, ...]  # the narrower ceiling (the current one when idle)
    uses: int
    denies: int
    last_used: float
    idle: bool
    max_depth: int
    depth_used: int
    proposed_max_depth: int

    @property
    def changes(self) -> bool:
        return (
            not self.idle and tuple(self.proposed) != tuple(self.ceiling)
        ) or self.proposed_max_depth != self.max_depth


def _dirs(resource: str) -> list[str]:
    return resource.strip("/").split("/")[:-1]


def _common(resources: list[str]) -> str:
    """The deepest directory holding every resource, as ``/a/b`` ("" for the root)."""
    common = _dirs(resources[0])
    for r in resources[1:]:
        d = _dirs(r)
        n = 0
        while n < min(len(common), len(d)) and common[n] == d[n]:
            n += 1
        common = common[:n]
    return "/" + "/".join(common) if common else ""


def _narrow(grant: Grant, rows: list[UsageRow]) -> tuple[str, ...]:
    if not rows:
        return ()
    actions = ",".join(sorted({r.action for r in rows}))
    groups: dict[str, list[UsageRow]] = {}
    for r in rows:
        groups.setdefault(prefix_of(r.subject), []).append(r)
    same = (f"{actions}:{grant.glob.pattern}",)
    if len(groups) > _MAX_SPLIT:
        return same
    out: list[str] = []
    for group in groups.values():
        resources = [r.subject for r in group]
        acts = ",".join(sorted({r.action for r in group}))
        distinct = sorted(set(resources))
        base = _common(distinct)
        pattern = distinct[0] if len(distinct) == 1 and not base else f"{base}/**"
        if not base and len(distinct) > 1:
            return same
        try:
            glob = Glob.parse(pattern)
        except Exception:
            return same
        if not glob.within(grant.glob) or not all(glob.matches(r) for r in distinct):
            return same
        out.append(f"{acts}:{pattern}")
    if any(Glob.parse(p.split(":", 1)[1]).pattern == grant.glob.pattern for p in out):
        return same
    return tuple(sorted(out))


def review(agent: Agent, rows: Iterable[UsageRow]) -> AgentReview:
    """The review of ``agent`` over the usage rows of the window (its own)."""
    grants = agent.ceiling.grants
    credited: list[list[UsageRow]] = [[] for _ in grants]
    uses = denies = depth = 0
    last = 0.0
    for r in rows:
        if r.agent != agent.id:
            continue
        if r.kind is UsageKind.USE:
            uses += r.count
            last = max(last, r.last_at)
            for i, g in enumerate(grants):
                if g.allows(r.action, r.subject):
                    credited[i].append(r)
                    break
        elif r.kind is UsageKind.DENY:
            denies += r.count
        elif r.kind is UsageKind.DELEGATE and r.action.isdigit():
            depth = max(depth, int(r.action))
    out: list[GrantUse] = []
    proposed: list[str] = []
    for g, used in zip(grants, credited, strict=True):
        narrowed = _narrow(g, used)
        summary: dict[tuple[str, str], int] = {}
        for r in used:
            key = (r.action, prefix_of(r.subject) + "/**")
            summary[key] = summary.get(key, 0) + r.count
        out.append(
            GrantUse(
                str(g),
                sum(r.count for r in used),
                max((r.last_at for r in used), default=0.0),
                tuple(f"{a} {p} ({n}×)" for (a, p), n in sorted(summary.items())),
                narrowed,
            )
        )
        proposed.extend(p for p in narrowed if p not in proposed)
    idle = uses == 0
    ceiling = tuple(str(g) for g in grants)
    return AgentReview(
        agent.id,
        ceiling,
        tuple(out),
        ceiling if idle else tuple(proposed),
        uses,
        denies,
        last,
        idle,
        agent.max_depth,
        depth,
        min(agent.max_depth, depth),
    )
