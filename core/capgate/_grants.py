"""Resources, resource globs, grants and ceilings.

A resource is an absolute path of one or more segments: ``/data/reports/q3``.
Segments are non-empty, never ``.`` or ``..``, and hold no ``/``, ``*``,
spaces or control characters. A glob is a resource in which a whole segment
may be ``*`` (exactly one segment) or ``**`` (zero or more segments).

A grant is ``ACTIONS:GLOB`` (``read,write:/data/**``); a ceiling is a set of
grants, and allows a request when any one grant does. Default deny.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache

from capgate._errors import InvalidArgumentError
from capgate._text import ACTION_RE, safe_text_problem

__all__ = ["Ceiling", "Glob", "Grant", "resource_problem"]

_MAX_RESOURCE = 1024
_MAX_SEGMENTS = 64
_MAX_DEEP = 2
_ASCII_SEGMENT = re.compile(r"[!-~]+")  # printable ASCII without space
# The common case in one regex: ASCII segments without '*', never '.' or '..'.
_ASCII_RESOURCE = re.compile(r"(?:/(?!\.\.?(?:/|$))[!-)+-.0-~]+)+")


def _segment_problem(seg: str) -> str | None:
    if not seg:
        return "has an empty segment"
    if seg in (".", ".."):
        return f"has a '{seg}' segment"
    if "*" in seg:
        return "has a '*' inside a segment"
    if _ASCII_SEGMENT.fullmatch(seg) is not None:
        return None
    return safe_text_problem(seg)


def resource_problem(resource: str) -> str | None:
    """Why ``resource`` is not a valid resource path, or None when it is."""
    if not isinstance(resource, str) or not resource.startswith("/"):
        return "must start with '/'"
    if len(resource) > _MAX_RESOURCE:
        return f"is longer than {_MAX_RESOURCE} characters"
    if _ASCII_RESOURCE.fullmatch(resource) is not None and resource.count("/") <= _MAX_SEGMENTS:
        return None
    segs = resource[1:].split("/")
    if len(segs) > _MAX_SEGMENTS:
        return f"has more than {_MAX_SEGMENTS} segments"
    for seg in segs:
        problem = _segment_problem(seg)
        if problem is not None:
            return problem
    return None


@dataclass(frozen=True, slots=True)
class Glob:
    """A resource pattern; ``*`` is one segment, ``**`` any number (including none)."""

    pattern: str
    segments: tuple[str, ...] = field(compare=False, repr=False)
    _regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, pattern: str) -> Glob:
        return _parse_glob(pattern)

    def matches(self, resource: str) -> bool:
        return self._regex.fullmatch(resource) is not None

    def within(self, other: Glob) -> bool:
        """True only if every resource this glob matches, ``other`` matches too.

        Sound (never True wrongly); it may say False for exotic ``**`` layouts
        where containment holds, which only refuses a request that could pass.
        """
        return _within(self.segments, other.segments)

    def __str__(self) -> str:
        return self.pattern


@lru_cache(maxsize=4096)
def _parse_glob(pattern: str) -> Glob:
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise InvalidArgumentError(f"resource glob {pattern!r} must start with '/'")
    if len(pattern) > _MAX_RESOURCE:
        raise InvalidArgumentError(f"resource glob is longer than {_MAX_RESOURCE} characters")
    segs = tuple(pattern[1:].split("/"))
    if len(segs) > _MAX_SEGMENTS:
        raise InvalidArgumentError(f"resource glob has more than {_MAX_SEGMENTS} segments")
    if segs.count("**") > _MAX_DEEP:  # each '**' multiplies the matcher's work
        raise InvalidArgumentError(f"resource glob {pattern!r} has more than {_MAX_DEEP} '**'")
    parts = []
    for seg in segs:
        if seg == "*":
            parts.append("/[^/]+")
        elif seg == "**":
            parts.append("(?:/[^/]+)*")
        else:
            problem = _segment_problem(seg)
            if problem is not None:
                raise InvalidArgumentError(f"resource glob {pattern!r} {problem}", glob=pattern)
            parts.append("/" + re.escape(seg))
    return Glob(pattern, segs, re.compile("".join(parts)))


def _within(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    @cache
    def sub(i: int, j: int) -> bool:  # does a[i:] ⊆ b[j:] ?
        if j == len(b):
            return i == len(a)
        if b[j] == "**":
            return sub(i, j + 1) or (i < len(a) and sub(i + 1, j))
        if i == len(a) or a[i] == "**":
            return False
        if b[j] == "*":
            return sub(i + 1, j + 1)
        return a[i] == b[j] and sub(i + 1, j + 1)

    return sub(0, 0)


def parse_actions(text: str) -> frozenset[str]:
    """``read,write`` → {"read", "write"}; every name must be a valid action."""
    names = text.split(",")
    for name in names:
        if ACTION_RE.fullmatch(name) is None:
            raise InvalidArgumentError(f"invalid action name {name!r}", actions=text)
    return frozenset(names)


@dataclass(frozen=True, slots=True)
class Grant:
    """Actions × one resource glob."""

    actions: frozenset[str]
    glob: Glob

    @classmethod
    def parse(cls, text: str) -> Grant:
        """``read,write:/data/**``."""
        if not isinstance(text, str):
            raise InvalidArgumentError("grant must be text")
        actions, sep, pattern = text.partition(":")
        if not sep:
            raise InvalidArgumentError(f"grant {text!r} is not ACTIONS:RESOURCE", grant=text)
        if ",/" in pattern:  # 'read:/a/**,/b/**': a list where one glob belongs
            raise InvalidArgumentError(
                f"grant {text!r} names several resources; a grant has one resource pattern: "
                f"give one grant per pattern (e.g. {actions}:{pattern.split(',')[0]})",
                grant=text)
        return cls(parse_actions(actions), Glob.parse(pattern))

    def allows(self, action: str, resource: str) -> bool:
        return action in self.actions and self.glob.matches(resource)

    def __str__(self) -> str:
        return f"{','.join(sorted(self.actions))}:{self.glob.pattern}"


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The most an agent may ever hold: a request passes if any grant allows it."""

    grants: tuple[Grant, ...] = ()
    # action -> one regex for every glob granting it: one lookup and one match per check
    _by_action: dict[str, re.Pattern[str]] = field(
        init=False, compare=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        patterns: dict[str, list[str]] = {}
        for g in self.grants:
            for a in g.actions:
                patterns.setdefault(a, []).append(g.glob._regex.pattern)
        for a, ps in patterns.items():
            self._by_action[a] = re.compile("|".join(f"(?:{p})" for p in ps))

    @classmethod
    def parse(cls, texts: Iterable[str]) -> Ceiling:
        return cls(tuple(Grant.parse(t) for t in texts))

    def allows(self, action: str, resource: str) -> bool:
        rx = self._by_action.get(action)
        return rx is not None and rx.fullmatch(resource) is not None

    def covers(self, grant: Grant) -> bool:
        """True when every action of ``grant`` on its whole glob is within one ceiling grant."""
        return all(
            any(a in g.actions and grant.glob.within(g.glob) for g in self.grants)
            for a in grant.actions
        )

    def __str__(self) -> str:
        return " ".join(str(g) for g in self.grants)
