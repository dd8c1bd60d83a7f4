"""Discharges of approval caveats: minted for one request, bound to one token.

A discharge is a macaroon whose identifier is the approval caveat's id, whose
location is ``capgate:approval``, whose chain starts from the caveat's key
(``approval_key``) and which carries exactly three first-party caveats::

    approval = HEX32        the approval it stands for (redeemed in the store)
    request = HEX64         request_digest() of the one request approved
    expires < INSTANT       when the approval lapses

It is handed out *bound* to the token it discharges, the standard way
(libmacaroons, pymacaroons): its signature is
``HMAC(0³², HMAC(0³², token_sig) || HMAC(0³², discharge_sig))``, so it verifies
only beside that very token, and nobody holding it can add caveats or rebind it.
``check_discharges`` is the verifier's half; the store's atomic redemption of
the approval (its one use) is the server's.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from capgate._agent import Agent
from capgate._approval import APPROVAL_LOCATION, ApprovalCaveat
from capgate._caveats import Request
from capgate._chain import Chain, Decision, DenyCode
from capgate._clock import format_timestamp, parse_timestamp
from capgate._errors import CapgateError
from capgate._raw import DEFAULT_LIMITS, Limits, RawCaveat, RawMacaroon
from capgate._token import Token, chain_signature

__all__ = [
    "MAX_DISCHARGES",
    "DischargeProblem",
    "approval_decision",
    "bind_signature",
    "check_discharges",
    "mint_discharge",
    "request_digest",
    "token_digest",
]

MAX_DISCHARGES = 8  # discharges one request may bring
_ZERO_KEY = bytes(32)
_REQUEST_CONTEXT = b"capgate-approval-request-v1\n"
_TOKEN_CONTEXT = b"capgate-approval-token-v1\n"
_HEX = frozenset("0123456789abcdef")


def _framed(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return struct.pack(">I", len(data)) + data


def request_digest(action: str, resource: str, presenter: str, ctx: Mapping[str, str]) -> str:
    """SHA-256 (hex) of one request: every field length-prefixed, context by key."""
    parts = [
        _REQUEST_CONTEXT,
        _framed(action),
        _framed(resource),
        _framed(presenter),
        struct.pack(">I", len(ctx)),
    ]
    for key in sorted(ctx):
        parts += [_framed(key), _framed(ctx[key])]
    return hashlib.sha256(b"".join(parts)).hexdigest()


def token_digest(signature: bytes) -> str:
    """What the store keeps of the token an approval is for: a digest of its
    signature, never the signature (a bearer secret)."""
    return hashlib.sha256(_TOKEN_CONTEXT + signature).hexdigest()


def bind_signature(token_signature: bytes, discharge_signature: bytes) -> bytes:
    """The standard binding of a discharge to the token it discharges."""
    return hmac.digest(
        _ZERO_KEY,
        hmac.digest(_ZERO_KEY, token_signature, "sha256")
        + hmac.digest(_ZERO_KEY, discharge_signature, "sha256"),
        "sha256",
    )


def mint_discharge(
    key: bytes, cid: bytes, approval_id: str, digest: str, expires: float, token_signature: bytes
) -> Token:
    """A discharge for the caveat ``cid`` (whose key is ``key``), bound to the token."""
    caveats = tuple(
        RawCaveat(text.encode("ascii"))
        for text in (
            f"approval = {approval_id}",
            f"request = {digest}",
            f"expires < {format_timestamp(expires)}",
        )
    )
    sig = chain_signature(key, cid, caveats)
    return Token(
        RawMacaroon(APPROVAL_LOCATION.encode(), cid, caveats, bind_signature(token_signature, sig))
    )


@dataclass(frozen=True, slots=True)
class DischargeProblem:
    """Why the discharges do not discharge: ``code`` is ``approval_required``,
    ``approval_invalid`` or ``approval_expired`` (``DenyCode`` values)."""

    code: str
    reason: str
    caveat: str


@dataclass(frozen=True, slots=True)
class _Reading:
    approval_id: str
    digest: str
    expires: float


def _read(raw: RawMacaroon, key: bytes, token_signature: bytes) -> _Reading | str:
    """The discharge's three caveats once its chain and binding hold, or what is wrong."""
    if raw.location != APPROVAL_LOCATION.encode():
        return f"its location is not {APPROVAL_LOCATION!r}"
    if any(c.vid is not None or c.location is not None for c in raw.caveats):
        return "it carries a third-party caveat"
    expected = bind_signature(token_signature, chain_signature(key, raw.identifier, raw.caveats))
    if not hmac.compare_digest(expected, raw.signature):
        return (
            "its signature does not match: not minted for this caveat, or not bound to this token"
        )
    fields: dict[str, str] = {}
    for c in raw.caveats:
        try:
            name, op, value = c.cid.decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            return "it carries a caveat capgate does not know"
        if (name, op) not in (
            ("approval", "="),
            ("request", "="),
            ("expires", "<"),
        ) or name in fields:
            return f"it carries a caveat capgate does not know ({name!r})"
        fields[name] = value
    if len(fields) != 3:
        return "it lacks the approval, request or expires caveat"
    aid, digest = fields["approval"], fields["request"]
    if len(aid) != 32 or len(digest) != 64 or not set(aid + digest) <= _HEX:
        return "its approval id or request digest is malformed"
    try:
        expires = parse_timestamp(fields["expires"])
    except CapgateError:
        return "its expiry is malformed"
    return _Reading(aid, digest, expires)


def check_discharges(
    needed: Sequence[tuple[ApprovalCaveat, bytes]],
    discharges: Sequence[str],
    token_signature: bytes,
    request: Request,
    now: float,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[str, ...] | DischargeProblem:
    """Do ``discharges`` discharge every ``(caveat, key)`` in ``needed`` for this request
    and token, now? The approval ids to redeem, in order and without repeats, or the
    first problem. A discharge for a caveat the request does not meet is ignored."""
    if len(discharges) > MAX_DISCHARGES:
        first = needed[0][0].text if needed else ""
        return DischargeProblem(
            "approval_invalid", f"at most {MAX_DISCHARGES} discharges per request", first
        )
    raws: dict[bytes, list[RawMacaroon]] = {}
    for text in discharges:
        try:
            raw = Token.parse(text, limits=limits).raw
        except CapgateError as e:
            first = needed[0][0].text if needed else ""
            return DischargeProblem("approval_invalid", f"a discharge is malformed: {e}", first)
        raws.setdefault(raw.identifier, []).append(raw)
    digest = request_digest(request.action, request.resource, request.presenter or "", request.ctx)
    ids: list[str] = []
    for caveat, key in needed:
        found = raws.get(caveat.cid)
        if not found:
            who = "an approver" if caveat.approvers == 1 else f"{caveat.approvers} approvers"
            return DischargeProblem(
                "approval_required",
                f"this request needs approval by {who} (approval caveat {caveat.text!r}); "
                "no discharge for it came with the request",
                caveat.text,
            )
        # several for one caveat (an old one kept beside a new one): the first that holds
        results = [_approval_of(raw, key, token_signature, digest, now, caveat) for raw in found]
        good = [r for r in results if isinstance(r, str)]
        if not good:
            problem = results[0]
            assert isinstance(problem, DischargeProblem)
            return problem
        if good[0] not in ids:
            ids.append(good[0])
    return tuple(ids)


def _approval_of(
    raw: RawMacaroon,
    key: bytes,
    token_signature: bytes,
    digest: str,
    now: float,
    caveat: ApprovalCaveat,
) -> str | DischargeProblem:
    """The approval id one discharge stands for, or why it does not discharge ``caveat``."""
    reading = _read(raw, key, token_signature)
    if isinstance(reading, str):
        return DischargeProblem(
            "approval_invalid", f"the discharge is not valid: {reading}", caveat.text
        )
    if not hmac.compare_digest(reading.digest, digest):
        return DischargeProblem(
            "approval_invalid",
            f"approval {reading.approval_id} is for another request "
            "(action, resource, presenter or context differ)",
            caveat.text,
        )
    if now >= reading.expires:
        return DischargeProblem(
            "approval_expired",
            f"approval {reading.approval_id} expired at {format_timestamp(reading.expires)}",
            caveat.text,
        )
    return reading.approval_id


def approval_decision(
    st: Chain,
    request: Request,
    discharges: Sequence[str],
    ruled: bool,
    agents: Mapping[str, Agent],
    now: float,
    limits: Limits = DEFAULT_LIMITS,
) -> Decision | None:
    """The verifier's last step, for a request everything else allows: the deny its
    approvals give, an allow that names the approvals to redeem, or None (no approval
    is needed). ``ruled``: an agent of the chain has standing approval rules, which
    the token must carry a caveat for (one asking at least as many approvers)."""
    tid, chain = st.token_id, st.agents
    needed = []
    keys = st.approval_keys
    for i, a in enumerate(st.approvals):
        if a.needed(request):
            needed.append((a, keys[i]))
    if ruled:
        asked = max([a.approvers for a, _ in needed], default=0)
        for name in reversed(chain):
            for rule in agents[name].approvals:
                if rule.approvers > asked and rule.needed(request):
                    return Decision(
                        False,
                        DenyCode.APPROVAL_REQUIRED,
                        f"agent {name!r} needs approval by {rule.approvers} for this request "
                        f"({rule}), and the token carries no approval caveat asking for it: "
                        "use a token issued or delegated since the rule was set",
                        None,
                        tid,
                        chain,
                    )
    if not needed:
        return None
    result = check_discharges(needed, discharges, st.signature, request, now, limits)
    if isinstance(result, DischargeProblem):
        return Decision(False, DenyCode(result.code), result.reason, result.caveat, tid, chain)
    return Decision(
        True,
        DenyCode.ALLOWED,
        f"allowed with approval {', '.join(result)}",
        None,
        tid,
        chain,
        budgets=st.budgets,
        approvals=result,
    )
