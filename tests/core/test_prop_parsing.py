"""Property: parsing arbitrary text and bytes never crashes and never allows."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from capgate import (
    CaveatSyntaxError,
    DenyCode,
    ExpiresCaveat,
    MalformedTokenError,
    Request,
    Token,
    format_timestamp,
)
from capgate._caveats import _parse, quick_expiry
from capgate._codec import decode_text, unpack, unpack_first_party

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


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@st.composite
def v2_like(draw: st.DrawFn) -> bytes:
    """Bytes shaped like the V2 format, with wrong field types, lengths and counts mixed in."""

    def section() -> bytes:
        out = b""
        for kind in draw(st.lists(st.sampled_from((1, 2, 2, 4, 6, 3, 0x80)), max_size=3)):
            value = draw(
                st.binary(max_size=20)
                | st.sampled_from((b"cg1:k1:" + b"a" * 32 + b":1", b"agent = a"))
            )
            size = len(value) + draw(st.sampled_from((0, 0, 0, -1, 1, 200)))
            out += _varint(kind) + _varint(max(size, 0)) + value
        return out + b"\x00"

    parts = [draw(st.sampled_from((b"\x02", b"\x02", b"\x01", b"\x00")))]
    parts.append(section())
    parts += [section() for _ in range(draw(st.integers(0, 3)))]
    parts.append(b"\x00")
    sig = draw(st.binary(min_size=32, max_size=32) | st.binary(max_size=40))
    parts.append(b"\x06" + _varint(len(sig)) + sig)
    data = b"".join(parts)
    if data and draw(st.booleans()):
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + draw(st.binary(max_size=2)) + data[i + 1 :]
    return data


def _check_bytes(data: bytes, reqs: tuple[Request, ...] = ()) -> None:
    """from_bytes/parse agree; what parses re-encodes to the same bytes; nothing is allowed."""
    try:
        t = Token.from_bytes(data)
    except MalformedTokenError:
        t = None
    text = b64(data) if data else ""
    padded = base64.urlsafe_b64encode(data).decode("ascii")
    standard = base64.b64encode(data).decode("ascii")
    for form in (text, padded, standard, text.encode("ascii")):
        parsed = parse_or_none(form)
        assert (parsed is None) == (t is None), form
        if parsed is not None:
            assert parsed == t
    fast = unpack_first_party(data)  # the verifier's quick reading...
    if fast is not None:  # ...reads only what the strict parser reads, and the same
        raw = unpack(data)
        assert all(c.vid is None and c.location is None for c in raw.caveats)
        assert fast == (raw.location, raw.identifier, [c.cid for c in raw.caveats], raw.signature)
    if t is not None:
        assert t.to_bytes() == data  # one encoding per token
        assert Token.parse(t.to_text()) == t
        t.caveats, t.location, t.identifier
    for req in reqs or tuple(Request("read", "/data", p) for p in ("a", "d", None)):
        d = decide(VERIFIER, text, req)
        assert not d.allowed, (data, req)
        if t is None:  # the verifier's own (faster) reading refuses what the parser refuses
            assert d.code is DenyCode.MALFORMED, (data, d)


@examples(300)
@given(st.text(max_size=200))
def test_parse_arbitrary_text(text: str) -> None:
    t = parse_or_none(text)
    parse_or_none(text.encode("utf-8"))
    d = decide(VERIFIER, text, Request("read", "/data", "a"))
    assert not d.allowed
    if t is None:
        assert d.code is DenyCode.MALFORMED, d


@examples(300)
@given(st.binary(max_size=300))
def test_parse_arbitrary_bytes(data: bytes) -> None:
    _check_bytes(data)
    parse_or_none(data)  # raw bytes as if they were text


@examples(400)
@given(v2_like())
def test_parse_v2_shaped_bytes(data: bytes) -> None:
    _check_bytes(data)


@examples(100)
@given(allowed_chains(max_hops=1), st.data())
def test_parse_mutated_tokens(chain: AllowedChain, data: st.DataObject) -> None:
    """Insertions, deletions and replacements in a real token's bytes."""
    token = chain.final.token
    raw = token.to_bytes()
    loc = location_span(token)
    for _ in range(3):
        i = data.draw(st.integers(0, len(raw)))
        j = data.draw(st.integers(i, min(len(raw), i + 3)))
        new = data.draw(st.binary(max_size=3))
        mutated = raw[:i] + new + raw[j:]
        if mutated == raw or (len(new) == j - i and i in loc and j - 1 in loc):
            continue  # unchanged, or only the location (see the location test)
        _check_bytes(mutated, (chain.req,))
    assert unpack_first_party(raw) is not None  # an ordinary token takes the quick reading


@st.composite
def expiry_like(draw: st.DrawFn) -> bytes:
    """``expires < `` and an instant, mostly well formed, with characters changed."""
    y, mo, d = draw(st.integers(0, 9999)), draw(st.integers(0, 13)), draw(st.integers(0, 32))
    h, mi, s = draw(st.integers(0, 25)), draw(st.integers(0, 61)), draw(st.integers(0, 61))
    text = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}Z".encode()
    if draw(st.booleans()):
        i = draw(st.integers(0, len(text) - 1))
        text = (
            text[:i]
            + draw(st.binary(max_size=2) | st.sampled_from((b"W", b"+", b" ")))
            + text[i + 1 :]
        )
    return b"expires < " + text


@examples(400)
@given(expiry_like())
def test_the_quick_expiry_reading_agrees_with_the_parser(cid: bytes) -> None:
    """What is read quickly, the full caveat grammar (``_parse``, which has no quick
    path) reads the same; the rest is left to it."""
    at = quick_expiry(cid)
    try:
        cav = _parse(cid.decode("utf-8"))
    except (UnicodeDecodeError, CaveatSyntaxError):
        assert at is None  # what the parser refuses is never read quickly
        return
    if at is not None:
        assert type(cav) is ExpiresCaveat and cav.at == at
    elif type(cav) is ExpiresCaveat:  # declined: only a form capgate does not write
        assert cid != b"expires < " + format_timestamp(cav.at).encode()


def _decoded(text: str | bytes) -> bytes | str:
    try:
        return decode_text(text)
    except MalformedTokenError as e:
        return e.message


@st.composite
def base64_like(draw: st.DrawFn) -> str:
    """Text near base64: both alphabets, padding in and out of place, stray characters,
    the unused low bits of the last character set or not."""
    data = draw(st.binary(max_size=60))
    text = draw(st.sampled_from((base64.urlsafe_b64encode, base64.b64encode)))(data).decode()
    if draw(st.booleans()):
        text = text.rstrip("=")
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from("-_+/=ABw\n é")) + text[at + 1 :]
    return text


class _Text(str):
    """A str that is not exactly a str: ``decode_text`` reads it on its general path."""


@examples(500)
@given(base64_like() | st.text(alphabet="AQgw-_+/=\né", max_size=12))
def test_quick_and_general_base64_readings_agree(text: str) -> None:
    """Text takes ``decode_text``'s quick path where it can; the general path reads
    the same text alike, or refuses it with the same reason."""
    assert _decoded(text) == _decoded(_Text(text))
