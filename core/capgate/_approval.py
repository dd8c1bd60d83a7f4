"""Approval caveats: a person's yes, asked for by a standard third-party caveat.

An approval caveat is a macaroon third-party caveat (caveat id, verification id,
location), so every macaroon library reads, writes and attenuates a token that
carries one. Its location is ``capgate:approval`` and its caveat id is text::

    approval n=N nonce=HEX16[ when COND[ and COND]...]

It says: a request that meets every ``COND`` (every request, when there is none)
is allowed only with a discharge from capgate's approval service, approved by
``N`` distinct approvers (1-9). The conditions are ``action in NAME[,NAME...]``,
``resource GLOB`` and ``ctx KEY OP VALUE`` (``=``, ``in``, ``<``, ``<=``, ``>``,
``>=``). A condition capgate cannot decide counts as met (fail closed): a context
key the request lacks, or a value that is not a number where one is compared.
A caveat adds a requirement and removes none, so appending one only narrows.

The discharge's key is not carried by the caveat id: it is derived from the
token's signature just before the caveat (``approval_key``), which the server
recomputes from its root key whenever it reads the token. So anyone holding a
token can add an approval caveat offline, and nobody below them can recompute
the key (signatures are one-way). The verification id is the standard one (the
key sealed in an XSalsa20-Poly1305 secretbox under that same signature), so a
library given the root key can check a token and its discharges unaided.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from capgate._caveats import (
    _COMPARE,
    ActionCaveat,
    Caveat,
    CtxCaveat,
    Request,
    ResourceCaveat,
    compile_new_caveat,
)
from capgate._errors import CaveatSyntaxError
from capgate._raw import DEFAULT_LIMITS, Limits

__all__ = [
    "APPROVAL_LOCATION",
    "MAX_APPROVERS",
    "ApprovalCaveat",
    "ApprovalRule",
    "approval_key",
    "parse_approval_caveat",
    "parse_condition",
    "require_approval",
    "seal_key",
]

APPROVAL_LOCATION = "capgate:approval"
MAX_APPROVERS = 9  # distinct approvers one caveat may ask for
_MAX_CONDITIONS = 8
_KEY_CONTEXT = b"capgate-approval-key-v1\n"
_CID_RE = re.compile(r"approval n=([1-9]) nonce=([0-9a-f]{16})(?: when (.+))?", re.S)
_NUMBER = re.compile(r"-?[0-9]{1,18}(?:\.[0-9]{1,18})?")
_ARITY = {"action": 3, "resource": 2, "ctx": 4}
_CAVEAT_BASE = 600  # an approval caveat and its conditions (tests/core/test_bounds.py)


def _syntax(text: str, why: str) -> CaveatSyntaxError:
    return CaveatSyntaxError(f"approval condition {text!r}: {why}", caveat=text, kind="malformed")


def parse_condition(text: str) -> tuple[Caveat, ...]:
    """``COND[ and COND]...`` (or ``""``: every request) → the parsed conditions.

    Each condition is a caveat of the first-party language (``action in``,
    ``resource``, ``ctx``); the words are counted by kind, so a value may be
    ``and``. Raises ``CaveatSyntaxError``.
    """
    if not isinstance(text, str):
        raise CaveatSyntaxError("an approval condition must be text")
    if text == "":
        return ()
    words = text.split(" ")
    out: list[Caveat] = []
    i = 0
    while i < len(words):
        arity = _ARITY.get(words[i])
        if arity is None:
            raise _syntax(
                text, f"a condition starts with action, resource or ctx, not {words[i]!r}"
            )
        part = " ".join(words[i : i + arity])
        i += arity
        if i < len(words):
            if words[i] != "and" or i + 1 == len(words):
                raise _syntax(text, "conditions are joined by ' and '")
            i += 1
        try:
            cav = compile_new_caveat(part.encode("utf-8"))
        except CaveatSyntaxError as e:
            raise _syntax(text, e.message) from None
        if not isinstance(cav, ActionCaveat | ResourceCaveat | CtxCaveat):  # pragma: no cover
            raise _syntax(text, f"{part!r} is not a condition on the request")
        out.append(cav)
        if len(out) > _MAX_CONDITIONS:
            raise _syntax(text, f"at most {_MAX_CONDITIONS} conditions")
    return tuple(out)


def condition_met(cav: Caveat, request: Request) -> bool:
    """Whether the request meets one condition; undecidable counts as met. (Not the
    caveat's ``check``: that words a reason for every miss, and this runs per verify.)"""
    if isinstance(cav, CtxCaveat):
        value = request.ctx.get(cav.name)
        if value is None:
            return True
        if cav.bound is None:
            return value in cav.values
        if _NUMBER.fullmatch(value) is None:
            return True
        return _COMPARE[cav.op](Decimal(value), cav.bound)
    if isinstance(cav, ActionCaveat):
        return request.action in cav.actions
    return cav.check(request, 0.0) is None  # a resource: a glob match, no words on a hit


def _check_approvers(n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_APPROVERS:
        raise CaveatSyntaxError(f"an approval needs 1 to {MAX_APPROVERS} approvers, not {n!r}")
    return n


@dataclass(frozen=True, slots=True)
class ApprovalRule:
    """An agent's standing rule: requests meeting ``condition`` need ``approvers``
    approvals. The server adds a matching approval caveat to every token it issues
    or delegates to the agent, and the verifier denies a token that lacks one."""

    condition: str = ""
    approvers: int = 1
    conditions: tuple[Caveat, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_approvers(self.approvers)
        object.__setattr__(self, "conditions", parse_condition(self.condition))

    def needed(self, request: Request) -> bool:
        for c in self.conditions:
            if not condition_met(c, request):
                return False
        return True

    def __str__(self) -> str:
        when = f" when {self.condition}" if self.condition else ""
        return f"{self.approvers} approver(s){when}"


class ApprovalCaveat:
    """A parsed approval caveat id; ``needed(request)`` says whether it applies."""

    __slots__ = ("approvers", "cid", "condition", "conditions", "nonce", "size", "text")

    def __init__(
        self,
        cid: bytes,
        text: str,
        approvers: int,
        nonce: str,
        condition: str,
        conditions: tuple[Caveat, ...],
    ) -> None:
        self.cid = cid
        self.text = text
        self.approvers = approvers
        self.nonce = nonce
        self.condition = condition
        self.conditions = conditions
        self.size = _CAVEAT_BASE + 2 * len(cid) + sum(c.size for c in conditions)

    def needed(self, request: Request) -> bool:
        for c in self.conditions:
            if not condition_met(c, request):
                return False
        return True

    def __repr__(self) -> str:
        return f"<ApprovalCaveat {self.text!r}>"


def parse_approval_caveat(cid: bytes) -> ApprovalCaveat:
    """Read an approval caveat id; ``CaveatSyntaxError`` for anything else."""
    try:
        text = cid.decode("utf-8")
    except UnicodeDecodeError:
        raise CaveatSyntaxError("approval caveat id is not UTF-8 text") from None
    m = _CID_RE.fullmatch(text)
    if m is None:
        raise CaveatSyntaxError(
            f"not an approval caveat id: {text[:80]!r} (want 'approval "
            "n=N nonce=HEX16[ when CONDITIONS]')",
            caveat=text[:512],
        )
    n, nonce, condition = m.groups()
    try:
        conditions = parse_condition(condition or "")
    except CaveatSyntaxError as e:
        raise CaveatSyntaxError(e.message, caveat=text[:512], kind="malformed") from None
    return ApprovalCaveat(cid, text, int(n), nonce, condition or "", conditions)


def approval_key(prefix_signature: bytes, cid: bytes) -> bytes:
    """The discharge key of the caveat ``cid`` appended where the chain's signature
    was ``prefix_signature``: the key its verification id seals, and the key a
    discharge's own chain starts from (``HMAC(key, cid)``)."""
    return hmac.digest(prefix_signature, _KEY_CONTEXT + cid, "sha256")


def seal_key(prefix_signature: bytes, key: bytes) -> bytes:
    """The standard verification id: ``key`` in a secretbox under the signature."""
    from nacl.secret import SecretBox  # only attenuating needs it

    box = SecretBox(prefix_signature[:32])
    return bytes(box.encrypt(key, secrets.token_bytes(SecretBox.NONCE_SIZE)))


class _Macaroon(Protocol):
    """What appending a third-party caveat needs of a token (``Token`` is one; this
    module does not import it: ``Token.require_approval`` calls in here)."""

    @property
    def signature(self) -> bytes: ...

    def append_third_party(
        self, cid: bytes, vid: bytes, location: str, *, limits: Limits = ...
    ) -> Any: ...


_M = TypeVar("_M", bound=_Macaroon)


def require_approval(
    token: _M, condition: str = "", approvers: int = 1, *, limits: Limits = DEFAULT_LIMITS
) -> _M:
    """``token`` with an approval caveat appended (offline): requests meeting
    ``condition`` need ``approvers`` approvals. ``Token.require_approval`` calls it."""
    _check_approvers(approvers)
    if not isinstance(condition, str):
        raise CaveatSyntaxError("an approval condition must be text")
    parse_condition(condition)  # refuse a malformed one before anything is made
    when = f" when {condition}" if condition else ""
    cid = f"approval n={approvers} nonce={secrets.token_hex(8)}{when}".encode()
    parse_approval_caveat(cid)  # the caveat reads back as written
    key = approval_key(token.signature, cid)
    appended: _M = token.append_third_party(
        cid, seal_key(token.signature, key), APPROVAL_LOCATION, limits=limits
    )
    return appended
