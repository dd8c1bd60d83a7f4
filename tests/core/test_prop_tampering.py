"""Property: a tampered token (bit flips, substitutions, truncations) never verifies."""

from __future__ import annotations

import base64
import random

from hypothesis import given
from hypothesis import strategies as st

from capgate import Decision, MalformedTokenError, Request, Token, Verifier

from prop_world import (
    VERIFIER,
    AllowedChain,
    allowed_chains,
    b64,
    decide,
    examples,
    location_span,
    parse_or_none,
)


def assert_rejected(v: Verifier, text: str, req: Request) -> None:
    """Never allowed, for any request: the static half of the verifier refuses it."""
    parse_or_none(text)
    d = decide(v, text, req)
    assert not d.allowed, (text, d)
    assert isinstance(v.analyse(text), Decision), text


@examples(12)
@given(allowed_chains())
def test_single_bit_flips_never_verify(chain: AllowedChain) -> None:
    """Every single-bit flip of the V2 bytes (outside the location) is refused."""
    token, req = chain.final.token, chain.req
    data = token.to_bytes()
    loc = location_span(token)
    for i in range(len(data) * 8):
        if i // 8 in loc:
            continue
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        try:
            Token.from_bytes(bytes(flipped))
        except MalformedTokenError:
            pass
        assert_rejected(VERIFIER, b64(bytes(flipped)), req)


@examples(12)
@given(allowed_chains())
def test_bit_flips_in_location_never_verify(chain: AllowedChain) -> None:
    """The location bytes too: a tampered token is never allowed (DESIGN.md section 7)."""
    token, req = chain.final.token, chain.req
    data = token.to_bytes()
    for pos in location_span(token):
        for bit in range(8):
            flipped = bytearray(data)
            flipped[pos] ^= 1 << bit
            assert not decide(VERIFIER, b64(bytes(flipped)), req).allowed, (pos, bit)


def _only_location_differs(data: bytes, text: str, loc: range) -> bool:
    try:
        other = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        return False
    changed = [i for i, (x, y) in enumerate(zip(data, other, strict=False)) if x != y]
    return len(other) == len(data) and bool(changed) and all(i in loc for i in changed)


B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@examples(10)
@given(allowed_chains(), st.randoms(use_true_random=False))
def test_character_substitutions_never_verify(chain: AllowedChain, rnd: random.Random) -> None:
    """Replacing any character of the text by another base64url character is refused
    (positions that only encode location bytes are left to the location test)."""
    token, req = chain.final.token, chain.req
    text, data = token.to_text(), token.to_bytes()
    loc = location_span(token)
    for i, ch in enumerate(text):
        others = [c for c in B64URL if c != ch]
        # every alternative at the end, where a lax decoder ignores the padding bits
        for other in others if i >= len(text) - 2 else rnd.sample(others, 3):
            changed = text[:i] + other + text[i + 1 :]
            if _only_location_differs(data, changed, loc):
                continue  # left to the location test
            assert_rejected(VERIFIER, changed, req)


@examples(10)
@given(allowed_chains())
def test_truncations_never_verify(chain: AllowedChain) -> None:
    """Every proper prefix of the text and of the bytes is refused, without an exception."""
    token, req = chain.final.token, chain.req
    text, data = token.to_text(), token.to_bytes()
    for n in range(len(text)):
        assert_rejected(VERIFIER, text[:n], req)
    for n in range(len(data)):
        assert_rejected(VERIFIER, b64(data[:n]), req)
        try:
            Token.from_bytes(data[:n])
        except MalformedTokenError:
            pass
