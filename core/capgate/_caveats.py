"""The first-party caveat language: grammar, parsing, and each caveat's check.

A caveat is UTF-8 text ``KEY OP VALUE`` with single spaces (``ctx`` adds a
name: ``ctx KEY OP VALUE``). The full grammar is in docs/caveats.md. Parsing
is strict; unknown keys and malformed text raise ``CaveatSyntaxError``, and the
verifier turns that into a deny (fail closed).

Every caveat is a pure condition on the request and the clock, so appending
one can only narrow a token. Holder binding (``agent``), delegation
(``delegate``, ``depth``) and lineage (``did``) are read by the verifier from
the parsed chain rather than checked here; the proofs behind ``delegate``
caveats are made and checked in ``_delegation``.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import ClassVar, NamedTuple

from capgate._cache import BoundedCache
from capgate._clock import format_timestamp, parse_timestamp
from capgate._errors import CaveatSyntaxError, InvalidArgumentError
from capgate._grants import Glob, parse_actions
from capgate._text import CTX_KEY_RE, ID_RE, safe_text_problem

__all__ = [
    "CAVEATS",
    "CAVEAT_CACHE_BYTES",
    "ActionCaveat",
    "AgentCaveat",
    "BudgetCaveat",
    "Caveat",
    "CtxCaveat",
    "DelegateCaveat",
    "DepthCaveat",
    "DidCaveat",
    "ExpiresCaveat",
    "NotBeforeCaveat",
    "Request",
    "ResourceCaveat",
    "cached_caveat_cost",
    "compile_caveat",
    "compile_new_caveat",
    "parse_caveat",
]

_DELEGATE_RE = re.compile(
    r"delegate = ([A-Za-z0-9][A-Za-z0-9._-]{0,63}) did=([0-9a-f]{32}) at=([0-9]{1,15})"
    r" proof=(?:srv:([A-Za-z0-9_-]{43})|ed25519:([0-9a-f]{16}):([A-Za-z0-9_-]{86}))"
)
_DEPTH_LIMIT = re.compile(r"[0-9]{1,2}")  # ASCII digits only: "²".isdigit() is True
_NUMBER = re.compile(r"-?[0-9]{1,18}(?:\.[0-9]{1,18})?")
_HEX128 = re.compile(r"[0-9a-f]{32}")
_MAX_CTX_VALUE = 1024
_COMPARE = {"<=": Decimal.__le__, ">=": Decimal.__ge__, "<": Decimal.__lt__, ">": Decimal.__gt__}
CAVEAT_CACHE_BYTES = 8 << 20  # parse_caveat's cache; a Verifier keeps its own
_CAVEAT_BASE = 400  # a caveat object and its fields (measured; the tests check)
_KEY_BASE = 40  # the cache's key, a bytes object
_PER_VALUE = 100  # one name in a caveat's set of actions or values


class Request(NamedTuple):
    """What is being asked: ``presenter`` does ``action`` on ``resource`` with ``ctx``.

    A NamedTuple rather than a frozen dataclass: one is built per verification.
    """

    action: str
    resource: str
    presenter: str | None = None
    ctx: Mapping[str, str] = MappingProxyType({})


class Caveat:
    """A parsed caveat. ``check`` returns None when it holds, else why it does not."""

    __slots__ = ("size", "text")
    key: ClassVar[str]
    needs_proof: ClassVar[bool] = False
    # How the verifier reads it: CHECK against each request, or part of the chain.
    CHECK, HOLDER, DELEGATE, LINEAGE, DEPTH, BUDGET = range(6)
    role: ClassVar[int] = CHECK

    def __init__(self, text: str) -> None:
        self.text = text
        self.size = _CAVEAT_BASE + 2 * len(text)  # estimated bytes held, for caches

    def check(self, request: Request, now: float) -> str | None:
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.text!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Caveat) and type(other) is type(self) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


class AgentCaveat(Caveat):
    """``agent = ID``: the token is held by agent ID at this point of the chain."""

    __slots__ = ("agent",)
    key = "agent"
    role = Caveat.HOLDER

    def __init__(self, text: str, agent: str) -> None:
        super().__init__(text)
        self.agent = agent


class ActionCaveat(Caveat):
    """``action in a,b``."""

    __slots__ = ("actions",)
    key = "action"

    def __init__(self, text: str, actions: frozenset[str]) -> None:
        super().__init__(text)
        self.actions = actions
        self.size += _PER_VALUE * len(actions)

    def check(self, request: Request, now: float) -> str | None:
        if request.action in self.actions:
            return None
        return f"action {request.action!r} is not one of {','.join(sorted(self.actions))}"


class ResourceCaveat(Caveat):
    """``resource GLOB``."""

    __slots__ = ("glob",)
    key = "resource"

    def __init__(self, text: str, glob: Glob) -> None:
        super().__init__(text)
        self.glob = glob
        self.size += glob.size

    def check(self, request: Request, now: float) -> str | None:
        if self.glob.matches(request.resource):
            return None
        return f"resource {request.resource!r} does not match {self.glob.pattern}"


class ExpiresCaveat(Caveat):
    """``expires < RFC3339``: valid strictly before the instant."""

    __slots__ = ("at",)
    key = "expires"

    def __init__(self, text: str, at: float) -> None:  # one per token: no super() call
        self.text = text
        self.size = _CAVEAT_BASE + 2 * len(text)
        self.at = at

    def check(self, request: Request, now: float) -> str | None:
        if now < self.at:
            return None
        return f"token expired at {format_timestamp(self.at)}"


class NotBeforeCaveat(Caveat):
    """``not-before > RFC3339``: valid strictly after the instant."""

    __slots__ = ("at",)
    key = "not-before"

    def __init__(self, text: str, at: float) -> None:
        super().__init__(text)
        self.at = at

    def check(self, request: Request, now: float) -> str | None:
        if now > self.at:
            return None
        return f"token is not valid before {format_timestamp(self.at)}"


class CtxCaveat(Caveat):
    """``ctx KEY = v`` | ``ctx KEY in v1,v2`` | ``ctx KEY OP n`` with OP one of ``<= >= < >``."""

    __slots__ = ("bound", "name", "op", "values")
    key = "ctx"

    def __init__(
        self, text: str, name: str, op: str, values: frozenset[str], bound: Decimal | None
    ) -> None:
        super().__init__(text)
        self.name = name
        self.op = op
        self.values = values
        self.bound = bound
        self.size += _PER_VALUE * len(values)

    def check(self, request: Request, now: float) -> str | None:
        value = request.ctx.get(self.name)
        if value is None:
            return f"request context has no {self.name!r}"
        if self.bound is None:
            if value in self.values:
                return None
            return f"ctx {self.name}={value!r} is not one of {','.join(sorted(self.values))}"
        if not isinstance(value, str) or _NUMBER.fullmatch(value) is None:
            return f"ctx {self.name}={value!r} is not a number"
        if _COMPARE[self.op](Decimal(value), self.bound):
            return None
        return f"ctx {self.name}={value} is not {self.op} {self.bound}"


class DidCaveat(Caveat):
    """``did = HEX``: a delegation id, an extra lineage entry that can be revoked."""

    __slots__ = ("did",)
    key = "did"
    role = Caveat.LINEAGE

    def __init__(self, text: str, did: str) -> None:
        super().__init__(text)
        self.did = did


class DelegateCaveat(Caveat):
    """``delegate = ID did=… at=… proof=…``: the holder changes to agent ID."""

    __slots__ = ("agent", "at_ms", "did", "key_id", "proof", "unsigned")
    key = "delegate"
    needs_proof: ClassVar[bool] = True
    role = Caveat.DELEGATE

    def __init__(
        self, text: str, agent: str, did: str, at_ms: int, key_id: str | None, proof: bytes
    ) -> None:
        super().__init__(text)
        self.agent = agent
        self.did = did
        self.at_ms = at_ms
        self.key_id = key_id  # None: minted by the server
        self.proof = proof
        self.unsigned = text[: text.index(" proof=")].encode("ascii")

    @property
    def offline(self) -> bool:
        return self.key_id is not None


class DepthCaveat(Caveat):
    """``depth <= n``: at most n further delegations below this point."""

    __slots__ = ("limit",)
    key = "depth"
    role = Caveat.DEPTH

    def __init__(self, text: str, limit: int) -> None:
        super().__init__(text)
        self.limit = limit


class BudgetCaveat(Caveat):
    """``uses <= N`` (N uses in all) or ``rate <= N/PERIOD`` (N per period): a budget
    shared by every token derived from the one it was added to, counted by the server."""

    __slots__ = ("limit", "period")
    key = "budget"
    role = Caveat.BUDGET

    def __init__(self, text: str, limit: int, period: float) -> None:
        super().__init__(text)
        self.limit = limit
        self.period = period  # seconds; 0 for a total number of uses


_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_COUNT = re.compile(r"[0-9]{1,12}")
_PERIOD = re.compile(r"([0-9]{0,6})([smhd])")


def _parse_budget(text: str, parts: list[str]) -> BudgetCaveat:
    if len(parts) != 3 or parts[1] != "<=":
        raise _syntax(
            text,
            f"expected '{parts[0]} <= N'" + ("" if parts[0] == "uses" else " with N like 100/1m"),
        )
    if parts[0] == "uses":
        if _COUNT.fullmatch(parts[2]) is None or int(parts[2]) < 1:
            raise _syntax(text, "uses <= N takes a whole number from 1")
        return BudgetCaveat(text, int(parts[2]), 0.0)
    count, sep, period = parts[2].partition("/")
    m = _PERIOD.fullmatch(period)
    if not sep or _COUNT.fullmatch(count) is None or int(count) < 1 or m is None:
        raise _syntax(text, "rate <= N/PERIOD takes N from 1 and a period like 1s, 10m, 1h, 1d")
    seconds = int(m.group(1) or 1) * _PERIODS[m.group(2)]
    if seconds < 1:
        raise _syntax(text, "a rate's period is at least 1s")
    return BudgetCaveat(text, int(count), float(seconds))


def parse_delegation_caveat(text: str, parts: list[str]) -> Caveat | None:
    """The delegation part of the grammar; None when ``text`` is not one of its caveats."""
    key = parts[0]
    if key == "depth":
        if len(parts) != 3 or parts[1] != "<=" or _DEPTH_LIMIT.fullmatch(parts[2]) is None:
            raise CaveatSyntaxError(
                f"caveat {text!r}: expected 'depth <= N' (N < 100)", caveat=text, kind="malformed"
            )
        return DepthCaveat(text, int(parts[2]))
    if key == "delegate":
        m = _DELEGATE_RE.fullmatch(text)
        if m is None:
            raise CaveatSyntaxError(
                f"caveat {text!r}: expected 'delegate = ID did=HEX at=MS proof=…'",
                caveat=text,
                kind="malformed",
            )
        agent, did, at, srv, key_id, sig = m.groups()
        encoded = srv if srv is not None else sig
        proof = _unb64(encoded)
        if _b64(proof) != encoded:  # one text per proof
            raise CaveatSyntaxError(
                f"caveat {text!r}: proof is not canonical base64url", caveat=text, kind="malformed"
            )
        return DelegateCaveat(text, agent, did, int(at), key_id, proof)
    return None


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _syntax(text: str, why: str, kind: str = "malformed") -> CaveatSyntaxError:
    return CaveatSyntaxError(f"caveat {text!r}: {why}", caveat=text, kind=kind)


def _expect(text: str, parts: list[str], n: int, op: str) -> None:
    if len(parts) != n or parts[n - 2] != op:
        raise _syntax(text, f"expected '{parts[0]} {op} VALUE'")


def _values(text: str, raw: str) -> frozenset[str]:
    vals = raw.split(",")
    for v in vals:
        if not v:
            raise _syntax(text, "empty value in list")
        if len(v) > _MAX_CTX_VALUE:
            raise _syntax(text, f"value over {_MAX_CTX_VALUE} characters")
    return frozenset(vals)


_from_iso = datetime.fromisoformat


def quick_expiry(cid: bytes) -> float | None:
    """``expires < YYYY-MM-DDTHH:MM:SSZ`` (the form capgate writes; nearly every token
    has its own) → the instant, without the full parser; None for any other form or
    an invalid date, which the full parser then reads (or refuses)."""
    if (
        len(cid) != 30
        or cid[14] != 45  # -
        or cid[17] != 45  # -
        or cid[20] != 84  # T
        or cid[23] != 58  # :
        or cid[26] != 58  # :
        or cid.translate(None, b"0123456789") != b"expires < --T::Z"  # digits elsewhere
    ):
        return None
    try:  # whole seconds in UTC: datetime reads it as is
        return _from_iso(cid[10:].decode("ascii")).timestamp()
    except ValueError:
        return None


def _parse(text: str) -> Caveat:
    if not text or text != text.strip(" ") or "  " in text:
        raise _syntax(text, "caveat words are separated by single spaces")
    for word in text.split(" "):
        problem = safe_text_problem(word)
        if problem is not None:
            raise _syntax(text, problem)
    parts = text.split(" ")
    key = parts[0]
    try:
        if key == "agent":
            _expect(text, parts, 3, "=")
            if ID_RE.fullmatch(parts[2]) is None:
                raise _syntax(text, "invalid agent id")
            return AgentCaveat(text, parts[2])
        if key == "action":
            _expect(text, parts, 3, "in")
            return ActionCaveat(text, parse_actions(parts[2]))
        if key == "resource":
            if len(parts) != 2:
                raise _syntax(text, "expected 'resource GLOB'")
            return ResourceCaveat(text, Glob.parse(parts[1]))
        if key == "expires":
            _expect(text, parts, 3, "<")
            return ExpiresCaveat(text, parse_timestamp(parts[2]))
        if key == "not-before":
            _expect(text, parts, 3, ">")
            return NotBeforeCaveat(text, parse_timestamp(parts[2]))
        if key == "did":
            _expect(text, parts, 3, "=")
            if _HEX128.fullmatch(parts[2]) is None:
                raise _syntax(text, "a did is 32 lowercase hex digits")
            return DidCaveat(text, parts[2])
        if key == "ctx":
            return _parse_ctx(text, parts)
        if key in ("uses", "rate"):
            return _parse_budget(text, parts)
    except CaveatSyntaxError:
        raise
    except InvalidArgumentError as e:
        raise _syntax(text, e.message) from None
    cav = parse_delegation_caveat(text, parts)
    if cav is None:
        raise _syntax(text, f"unknown caveat '{key}'", kind="unknown")
    return cav


def _parse_ctx(text: str, parts: list[str]) -> CtxCaveat:
    if len(parts) != 4 or CTX_KEY_RE.fullmatch(parts[1]) is None:
        raise _syntax(text, "expected 'ctx KEY OP VALUE' with KEY like tool or max_amount")
    name, op, raw = parts[1], parts[2], parts[3]
    if op == "=":
        if len(raw) > _MAX_CTX_VALUE:
            raise _syntax(text, f"value over {_MAX_CTX_VALUE} characters")
        return CtxCaveat(text, name, op, frozenset((raw,)), None)
    if op == "in":
        return CtxCaveat(text, name, op, _values(text, raw), None)
    if op in _COMPARE:
        if _NUMBER.fullmatch(raw) is None:
            raise _syntax(text, f"{raw!r} is not a decimal number")
        try:
            return CtxCaveat(text, name, op, frozenset(), Decimal(raw))
        except InvalidOperation:  # pragma: no cover - the regex admits only numbers
            raise _syntax(text, f"{raw!r} is not a decimal number") from None
    raise _syntax(text, f"unknown ctx operator {op!r} (use =, in, <, <=, >, >=)")


def parse_caveat(text: str) -> Caveat:
    """Parse one caveat's text; raises ``CaveatSyntaxError``."""
    if not isinstance(text, str):
        raise CaveatSyntaxError("caveat must be text", type=type(text).__name__)
    try:
        cid = text.encode("utf-8")
    except UnicodeEncodeError:
        raise CaveatSyntaxError("caveat is not valid Unicode text", caveat=repr(text)) from None
    return compile_caveat(cid)


def cached_caveat_cost(cid: bytes, cav: Caveat) -> int:
    """What a cache keyed by the caveat's bytes pays to keep it (``size``: the caveat's
    text, its object, a glob's segments)."""
    return _KEY_BASE + len(cid) + cav.size


# Parsed caveats by their bytes: caveats repeat across tokens (the holder, the grant),
# so each is parsed once. Bounded in bytes, since a token's caveats are the sender's.
CAVEATS: BoundedCache[bytes, Caveat] = BoundedCache(CAVEAT_CACHE_BYTES, cached_caveat_cost)


def compile_caveat(cid: bytes) -> Caveat:
    """Parse a caveat as it appears in a token (UTF-8 bytes); cached, caveats repeat."""
    cav = CAVEATS.get(cid)
    if cav is None:
        cav = compile_new_caveat(cid)
        CAVEATS.put(cid, cav)
    return cav


def compile_new_caveat(cid: bytes) -> Caveat:
    """Parse a caveat from its bytes, without looking in or filling any cache."""
    at = quick_expiry(cid)
    if at is not None:
        return ExpiresCaveat(cid.decode("ascii"), at)
    try:
        text = cid.decode("utf-8")
    except UnicodeDecodeError:
        raise CaveatSyntaxError("caveat is not UTF-8 text", caveat=repr(cid)) from None
    return _parse(text)
