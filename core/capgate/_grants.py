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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache

from capgate._errors import InvalidArgumentError
from capgate._text import ACTION_RE, safe_text_problem

__all__ = ["Ceiling", "Glob", "Grant", "resource_problem"]

_MAX_RESOURCE = 1024
_MAX_SEGMENTS = 64
_MAX_DEEP = 2
# A glob is compiled into a regex only once it is hot and short: compiling costs
# about a microsecond per character (sre's compiler is Python) and tens of bytes
# per character; a never-seen glob in a hostile token must cost neither.
_HOT_USES = 8
_REGEX_MAX = 128
# Estimated bytes a parsed glob holds (measured with tracemalloc; the tests check).
_GLOB_BASE = 600
_PER_SEGMENT = 90
_REGEX_BASE, _REGEX_PER_CHAR = 700, 20
_ASCII_SEGMENT = re.compile(r"[!-~]+")  # printable ASCII without space
# The common case in one regex: ASCII segments without '*', never '.' or '..'.
_ASCII_RESOURCE = re.compile(r"(?:/(?!\.\.?(?:/|$))[!-)+-.0-~]+)+")
# ... and for globs, whose segments may also be '*' or '**'.
_ASCII_GLOB = re.compile(r"(?:/(?:\*\*?(?=/|$)|(?!\.\.?(?:/|$))[!-)+-.0-~]+))+")


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


class Glob:
    """A resource pattern; ``*`` is one segment, ``**`` any number (including none).

    Globs come from tokens, so an attacker chooses them: parsing one costs a
    split and a check per segment, never a regex compilation. A literal path is
    matched by comparing strings, ``PREFIX/**`` by string operations, anything
    else segment by segment; such a glob that turns out to be hot (used
    ``_HOT_USES`` times) and short (at most ``_REGEX_MAX`` characters) is compiled
    once into a regex, which is faster. Caches keep many globs, so one holds no
    other object the garbage collector must trace, and no reference cycle.
    ``match`` is the verifier's hot path, for a resource ``resource_problem``
    accepted; ``matches`` takes any value. Immutable; equal when the patterns are.
    """

    __slots__ = (
        "_below",
        "_blocks",
        "_kind",
        "_prefix",
        "_rx",
        "_uses",
        "pattern",
        "segments",
        "size",
    )

    pattern: str
    segments: tuple[str, ...]
    size: int  # estimated bytes held, for the caches that keep globs

    def __init__(self, pattern: str, segments: tuple[str, ...]) -> None:
        self.pattern = pattern
        self.segments = segments
        self._uses = 0
        self._rx: Callable[[str], object] | None = None
        self._blocks: list[_Block] | None = None  # made at the first segment match
        self.size = _GLOB_BASE + 2 * len(pattern) + _PER_SEGMENT * len(segments)
        self._prefix: str | None = None
        self._below = ""
        stars = pattern.count("*")
        if not stars:
            self._kind = _LITERAL
        elif stars == 2 and pattern.endswith("/**"):
            self._kind = _UNDER
            self._prefix = pattern[:-3] or None  # '/**' never matches the empty string
            self._below = pattern[:-2]
        else:
            self._kind = _SEGMENTS
            if len(pattern) <= _REGEX_MAX:  # charged up front: it may be compiled later
                self.size += _REGEX_BASE + _REGEX_PER_CHAR * len(pattern)

    @classmethod
    def parse(cls, pattern: str) -> Glob:
        return _parse_glob(pattern)

    def match(self, resource: str) -> bool:
        kind = self._kind
        if kind == _LITERAL:
            return resource == self.pattern
        if kind == _UNDER:
            return resource == self._prefix or (
                resource.startswith(self._below) and resource[-1] != "/" and "//" not in resource
            )
        rx = self._rx
        if rx is not None:
            return rx(resource) is not None
        return self._match_segments(resource)

    def matches(self, resource: str) -> bool:
        return isinstance(resource, str) and self.match(resource)

    def within(self, other: Glob) -> bool:
        """True only if every resource this glob matches, ``other`` matches too.

        Sound (never True wrongly); it may say False for exotic ``**`` layouts
        where containment holds, which only refuses a request that could pass.
        """
        return _within(self.segments, other.segments)

    def regex(self) -> str:
        """The same pattern as a regular expression (for a ceiling's combined regex)."""
        parts = []
        for seg in self.segments:
            if seg == "*":
                parts.append("/[^/]+")
            elif seg == "**":
                parts.append("(?:/[^/]+)*")
            else:
                parts.append("/" + re.escape(seg))
        return "".join(parts)

    def _match_segments(self, resource: str) -> bool:
        self._uses += 1
        if self._uses == _HOT_USES and len(self.pattern) <= _REGEX_MAX:
            self._rx = re.compile(self.regex()).fullmatch
        # every segment non-empty (as '[^/]+' would insist), then block by block
        if not resource.startswith("/") or "//" in resource or resource.endswith("/"):
            return False
        segs = tuple(resource[1:].split("/"))
        blocks = self._blocks
        if blocks is None:
            blocks = self._blocks = _split_deep(self.segments)
        head = blocks[0]
        if len(blocks) == 1:
            return len(segs) == head[0] and _at(head, segs, 0)
        tail, n = blocks[-1], len(segs)
        if n < head[0] + tail[0] or not _at(head, segs, 0) or not _at(tail, segs, n - tail[0]):
            return False
        if len(blocks) == 2:
            return True
        # head ** mid ** tail: the leftmost place for mid is as good as any
        mid = blocks[1]
        return any(_at(mid, segs, i) for i in range(head[0], n - tail[0] - mid[0] + 1))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Glob) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash(self.pattern)

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"

    def __str__(self) -> str:
        return self.pattern


_LITERAL, _UNDER, _SEGMENTS = range(3)
# A run of segments between '**'s, as tuples (which the collector stops tracing):
# (length, the literals when there is no '*' else None, ((index, literal), ...)).
_Block = tuple[int, tuple[str, ...] | None, tuple[tuple[int, str], ...]]


def _at(block: _Block, segs: tuple[str, ...], i: int) -> bool:
    """Does ``block`` match ``segs[i:i + n]`` (which the caller made sure exist)?"""
    n, literals, fixed = block
    if literals is not None:
        return segs[i : i + n] == literals
    for j, s in fixed:
        if segs[i + j] != s:
            return False
    return True


def _split_deep(segments: tuple[str, ...]) -> list[_Block]:
    runs: list[list[str]] = [[]]
    for seg in segments:
        if seg == "**":
            runs.append([])
        else:
            runs[-1].append(seg)
    return [
        (len(run), None, tuple((i, s) for i, s in enumerate(run) if s != "*"))
        if "*" in run
        else (len(run), tuple(run), ())
        for run in runs
    ]


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
    if _ASCII_GLOB.fullmatch(pattern) is None:  # else every segment is fine already
        for seg in segs:
            if seg != "*" and seg != "**":
                problem = _segment_problem(seg)
                if problem is not None:
                    raise InvalidArgumentError(f"resource glob {pattern!r} {problem}", glob=pattern)
    return Glob(pattern, segs)


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
                grant=text,
            )
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
        init=False, compare=False, repr=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        patterns: dict[str, list[str]] = {}
        for g in self.grants:
            for a in g.actions:
                patterns.setdefault(a, []).append(g.glob.regex())
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
