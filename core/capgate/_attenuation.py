"""Turning plain restrictions (actions, a resource glob, a TTL, context) into caveats."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from capgate._caveats import parse_caveat
from capgate._clock import format_timestamp
from capgate._errors import InvalidArgumentError
from capgate._grants import Glob, parse_actions

__all__ = ["restriction_caveats"]


def restriction_caveats(
    *,
    actions: Iterable[str] | None = None,
    resource: str | None = None,
    ttl: int | None = None,
    ctx: Mapping[str, str] | None = None,
    extra: Iterable[str] = (),
    now: float,
) -> list[str]:
    """Caveat texts for the given restrictions, each checked against the grammar."""
    out: list[str] = []
    if actions is not None:
        names = sorted(parse_actions(",".join(actions)))
        out.append(f"action in {','.join(names)}")
    if resource is not None:
        out.append(f"resource {Glob.parse(resource).pattern}")
    if ttl is not None:
        if ttl <= 0:
            raise InvalidArgumentError("ttl must be positive")
        out.append(f"expires < {format_timestamp(now + ttl)}")
    for key, value in (ctx or {}).items():
        out.append(f"ctx {key} = {value}")
    out.extend(extra)
    for text in out:
        parse_caveat(text)
    return out
