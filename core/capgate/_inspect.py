"""``describe``: what a token says, read offline, without trusting it.

No key is needed and nothing is verified: the result is for people (the CLI's
``token inspect``) and for the server's Inspect, which adds what it knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from capgate._approval import APPROVAL_LOCATION, parse_approval_caveat
from capgate._caveats import Caveat, DelegateCaveat, ExpiresCaveat, compile_caveat
from capgate._errors import CapgateError
from capgate._token import Token, TokenIdentifier

__all__ = ["HopInfo", "TokenDescription", "describe", "hop_expiry"]

_APPROVAL_LOCATION = APPROVAL_LOCATION.encode()


@dataclass(slots=True)
class HopInfo:
    agent: str
    at_ms: int
    did: str | None = None  # None: the agent the token was issued to
    offline: bool = False
    restrictions: list[str] = field(default_factory=list)


@dataclass(slots=True)
class TokenDescription:
    token_id: str | None
    key_id: str | None
    issued_ms: int | None
    expires: float | None
    caveats: tuple[str, ...]  # every caveat's text in order (an approval caveat: its id)
    lineage: list[str]
    hops: list[HopInfo]
    problems: list[str]  # caveats that do not parse, foreign identifier…


def describe(token: Token) -> TokenDescription:
    problems: list[str] = []
    try:
        ident: TokenIdentifier | None = token.capgate_identifier()
    except CapgateError as e:
        ident, problems = None, [e.message]
    lineage = [ident.token_id] if ident else []
    hops: list[HopInfo] = []
    expires: float | None = None
    for raw in token.raw.caveats:
        text = raw.cid.decode("utf-8", "backslashreplace")
        if raw.vid is not None:
            if raw.location != _APPROVAL_LOCATION:
                problems.append(
                    f"third-party caveat {text!r} at {raw.location!r} "
                    "(only capgate's approvals are supported)"
                )
                continue
            try:
                parse_approval_caveat(raw.cid)
            except CapgateError as e:
                problems.append(e.message)
            if hops:  # an approval caveat reads as its id: "approval n=1 … when …"
                hops[-1].restrictions.append(text)
            else:
                problems.append(f"caveat {text!r} comes before the holder is named")
            continue
        try:
            cav: Caveat = compile_caveat(raw.cid)
        except CapgateError as e:
            problems.append(e.message)
            if hops:
                hops[-1].restrictions.append(text)
            continue
        if cav.role == Caveat.HOLDER and not hops:
            hops.append(HopInfo(cav.agent, ident.issued_ms if ident else 0))  # type: ignore[attr-defined]
            continue
        if isinstance(cav, DelegateCaveat):
            hops.append(HopInfo(cav.agent, cav.at_ms, cav.did, cav.offline))
            lineage.append(cav.did)
            continue
        if cav.role == Caveat.LINEAGE:
            lineage.append(cav.did)  # type: ignore[attr-defined]
        if isinstance(cav, ExpiresCaveat) and (expires is None or cav.at < expires):
            expires = cav.at
        if hops:
            hops[-1].restrictions.append(text)
        else:
            problems.append(f"caveat {text!r} comes before the holder is named")
    return TokenDescription(
        ident.token_id if ident else None,
        ident.key_id if ident else None,
        ident.issued_ms if ident else None,
        expires,
        tuple(c.cid.decode("utf-8", "surrogateescape") for c in token.raw.caveats),
        lineage,
        hops,
        problems,
    )


def hop_expiry(description: TokenDescription, k: int) -> float | None:
    """The latest any token carrying hop ``k``'s delegation id can expire (k >= 1).

    A hop's proof binds every caveat before it, so all tokens with its id share
    that prefix: the earliest ``expires`` there bounds them all. None: no bound.
    """
    bound: float | None = None
    for hop in description.hops[:k]:
        for text in hop.restrictions:
            if text.startswith("expires < "):
                try:
                    at = compile_caveat(text.encode("utf-8"))
                except CapgateError:
                    continue
                if isinstance(at, ExpiresCaveat) and (bound is None or at.at < bound):
                    bound = at.at
    return bound
