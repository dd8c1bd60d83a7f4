"""The macaroon V2 binary format and its base64url text form.

Layout (as in libmacaroons and pymacaroons)::

    0x02
    [LOCATION] IDENTIFIER EOS                  the macaroon's own section
    ( [LOCATION] IDENTIFIER [VID] EOS )*       one section per caveat
    EOS
    SIGNATURE                                  32 bytes

Each field is ``varint type, varint length, bytes``; EOS is the single byte 0.
Field types: LOCATION=1, IDENTIFIER=2, VID=4, SIGNATURE=6. Parsing is strict and
bounded: field order, lengths, counts and the total size are all checked, and
every failure is a ``MalformedTokenError`` naming what was wrong.
"""

from __future__ import annotations

import base64
import binascii

from capgate._errors import MalformedTokenError
from capgate._raw import DEFAULT_LIMITS, Limits, RawCaveat, RawMacaroon
from capgate._v1 import pack_v1, unpack_v1

__all__ = [
    "DEFAULT_LIMITS",
    "Limits",
    "RawCaveat",
    "RawMacaroon",
    "decode_text",
    "encode_text",
    "pack",
    "pack_v1",
    "unpack",
]

_VERSION = 2
_EOS, _LOCATION, _IDENTIFIER, _VID, _SIGNATURE = 0, 1, 2, 4, 6
_SIGNATURE_SIZE = 32
_PAD = ("", "", "==", "=")  # by the text's length mod 4 (1 is never valid)
_STD_VALUE = {
    c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}


def decode_text(text: str | bytes, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """base64url (padded or not; the standard alphabet too) → bytes, canonical only."""
    # The common form first: unpadded text without '+' or '/' (base64url, as capgate,
    # pymacaroons and libmacaroons write it). The same checks as below, fewer steps.
    if type(text) is str and 0 < len(text) <= limits.max_text and text[-1] != "=":
        tail = len(text) % 4
        if tail != 1 and "+" not in text and "/" not in text:
            body = text.replace("-", "+").replace("_", "/")
            try:
                data = binascii.a2b_base64(body + _PAD[tail], strict_mode=True)
            except (binascii.Error, ValueError):
                raise MalformedTokenError("token is not base64url text") from None
            if tail and _STD_VALUE[body[-1]] & (0x0F if tail == 2 else 0x03):
                raise MalformedTokenError("token is not canonical base64")
            return data
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedTokenError("token is not ASCII base64url text") from None
    if not isinstance(text, str):
        raise MalformedTokenError("token must be text", type=type(text).__name__)
    if len(text) > limits.max_text:
        raise MalformedTokenError(
            f"token is {len(text)} characters, over the limit of {limits.max_text}",
            size=len(text),
            limit=limits.max_text,
        )
    if not text:
        raise MalformedTokenError("token is empty")
    url = "-" in text or "_" in text
    if url and ("+" in text or "/" in text):
        raise MalformedTokenError("token mixes the base64url and base64 alphabets")
    body = text.rstrip("=")
    padding = len(text) - len(body)
    if padding and padding != -len(body) % 4:
        raise MalformedTokenError("token has wrong base64 padding")
    tail = len(body) % 4
    if tail == 1:
        raise MalformedTokenError("token has a truncated base64 group")
    if url:
        body = body.replace("-", "+").replace("_", "/")
    try:  # strict: only alphabet characters, so nothing is silently skipped
        data = binascii.a2b_base64(body + "=" * (-len(body) % 4), strict_mode=True)
    except (binascii.Error, ValueError):
        raise MalformedTokenError("token is not base64url text") from None
    # One text per token: the unused low bits of the last character must be zero,
    # so no two texts in one alphabet decode to the same bytes.
    if tail and _STD_VALUE[body[-1]] & (0x0F if tail == 2 else 0x03):
        raise MalformedTokenError("token is not canonical base64")
    return data


def encode_text(data: bytes) -> str:
    """bytes → unpadded base64url, the form pymacaroons and libmacaroons emit."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_new_tuple = tuple.__new__


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(kind: int, value: bytes) -> bytes:
    return _encode_varint(kind) + _encode_varint(len(value)) + value


def pack(m: RawMacaroon) -> bytes:
    """Serialize to V2 binary."""
    parts = [bytes([_VERSION])]
    if m.location is not None:
        parts.append(_field(_LOCATION, m.location))
    parts.append(_field(_IDENTIFIER, m.identifier))
    parts.append(b"\x00")
    for c in m.caveats:
        if c.location is not None:
            parts.append(_field(_LOCATION, c.location))
        parts.append(_field(_IDENTIFIER, c.cid))
        if c.vid is not None:
            parts.append(_field(_VID, c.vid))
        parts.append(b"\x00")
    parts.append(b"\x00")
    parts.append(_field(_SIGNATURE, m.signature))
    return b"".join(parts)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a multi-byte varint at ``pos`` (single bytes are decoded inline by callers)."""
    n = shift = 0
    start = pos
    while True:
        if pos >= len(data):
            raise MalformedTokenError("token is truncated", offset=pos)
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0 and shift:  # one encoding per number, so one text per token
                raise MalformedTokenError("non-minimal varint", offset=start)
            return n, pos
        shift += 7
        if shift > 28:  # no field of a bounded token is this long
            raise MalformedTokenError("varint too long", offset=start)


def _section(
    data: bytes, pos: int, vid_ok: bool, what: str
) -> tuple[int, bytes | None, bytes, bytes | None]:
    """``[LOCATION] IDENTIFIER [VID] EOS`` from ``pos``; field types strictly increase."""
    location = identifier = vid = None
    last = 0
    end = len(data)
    while True:
        if pos >= end:
            raise MalformedTokenError("token is truncated", offset=pos)
        kind = data[pos]
        pos += 1
        if kind == _EOS:
            break
        if kind >= 0x80 or kind <= last:
            raise MalformedTokenError(f"{what}: unexpected field type {kind}", offset=pos - 1)
        last = kind
        if pos >= end:
            raise MalformedTokenError("token is truncated", offset=pos)
        size = data[pos]
        if size < 0x80:
            pos += 1
        else:
            size, pos = _varint(data, pos)
        stop = pos + size
        if stop > end:
            raise MalformedTokenError("token is truncated", offset=pos, want=size)
        value = data[pos:stop]
        pos = stop
        if kind == _IDENTIFIER:
            identifier = value
        elif kind == _LOCATION:
            location = value
        elif kind == _VID and vid_ok:
            vid = value
        else:
            raise MalformedTokenError(f"{what}: unexpected field type {kind}", offset=pos)
    if identifier is None:
        raise MalformedTokenError(f"{what}: identifier missing", offset=pos)
    return pos, location, identifier, vid


def unpack(data: bytes, limits: Limits = DEFAULT_LIMITS) -> RawMacaroon:
    """Parse V2 binary, or libmacaroons' V1 packets; ``MalformedTokenError`` for anything else."""
    if not data:
        raise MalformedTokenError("token is empty")
    if data[0] != _VERSION:
        if data[:4].isalnum():  # V1 starts with a packet's four hex digits
            return unpack_v1(data, limits)
        raise MalformedTokenError(
            f"unsupported macaroon format (first byte {data[0]:#04x}; "
            "V2 binary or V1 packets are accepted)"
        )
    pos, location, identifier, _ = _section(data, 1, False, "macaroon")
    if not identifier:
        raise MalformedTokenError("macaroon identifier is empty")
    if len(identifier) > limits.max_identifier:
        raise MalformedTokenError(f"identifier over {limits.max_identifier} bytes")
    if location is not None and len(location) > limits.max_location:
        raise MalformedTokenError(f"location over {limits.max_location} bytes")
    caveats: list[RawCaveat] = []
    end = len(data)
    max_caveats, max_caveat = limits.max_caveats, limits.max_caveat
    while True:
        if pos >= end:
            raise MalformedTokenError("token is truncated", offset=pos)
        if data[pos] == _EOS:
            pos += 1
            break
        if len(caveats) >= max_caveats:
            raise MalformedTokenError(
                f"token has more than {max_caveats} caveats", limit=max_caveats
            )
        # Fast path, the usual first-party caveat: IDENTIFIER (short) then EOS.
        if data[pos] == _IDENTIFIER and pos + 1 < end and data[pos + 1] < 0x80:
            stop = pos + 2 + data[pos + 1]
            if stop < end and data[stop] == _EOS:
                cid = data[pos + 2 : stop]
                if cid and len(cid) <= max_caveat:
                    caveats.append(_new_tuple(RawCaveat, (cid, None, None)))
                    pos = stop + 1
                    continue
        pos, loc, cid, vid = _section(data, pos, True, f"caveat {len(caveats) + 1}")
        if len(cid) > max_caveat:
            raise MalformedTokenError(
                f"caveat {len(caveats) + 1} is {len(cid)} bytes, over {max_caveat}"
            )
        if loc is not None and len(loc) > limits.max_location:
            raise MalformedTokenError(f"caveat location over {limits.max_location} bytes")
        caveats.append(RawCaveat(cid, vid, loc))
    if data[pos : pos + 2] != b"\x06\x20":
        raise MalformedTokenError("signature missing or not 32 bytes", offset=pos)
    if end - pos != 34:
        if end - pos < 34:
            raise MalformedTokenError("token is truncated", offset=pos)
        raise MalformedTokenError("trailing bytes after the signature", offset=pos + 34)
    return RawMacaroon(location, identifier, tuple(caveats), data[pos + 2 :])


def unpack_first_party(
    data: bytes, limits: Limits = DEFAULT_LIMITS
) -> tuple[bytes | None, bytes, list[bytes], bytes] | None:
    """The verifier's fast path: (location, identifier, caveat ids, signature) of a
    well-formed token whose caveats are all first-party without locations; None for
    anything else (then ``unpack`` gives the precise error, or the caller refuses
    third-party caveats). Reading past the end is an IndexError, which means None.
    """
    end = len(data)
    if end < 37 or data[0] != _VERSION:
        return None
    # a length below this is one byte and within the limit: the common case
    small = min(0x80, limits.max_caveat + 1)
    try:
        pos = 1
        location = None
        if data[1] == _LOCATION:
            size = data[2]
            if size >= 0x80 or size > limits.max_location:
                return None
            pos = 3 + size
            location = data[3:pos]
        if data[pos] != _IDENTIFIER:
            return None
        size = data[pos + 1]
        if size >= 0x80 or not 0 < size <= limits.max_identifier:
            return None
        start = pos + 2
        pos = start + size
        identifier = data[start:pos]
        if data[pos] != _EOS:
            return None
        pos += 1
        cids: list[bytes] = []
        append = cids.append
        while data[pos] == _IDENTIFIER:
            size = data[pos + 1]
            if size < small:
                start = pos + 2
            elif size < 0x80:
                return None
            else:
                size, start = _varint(data, pos + 1)
                if size > limits.max_caveat:
                    return None
            pos = start + size
            if data[pos] != _EOS:
                return None
            append(data[start:pos])
            pos += 1
    except (IndexError, MalformedTokenError):
        return None
    if (
        end - pos != 35
        or data[pos] != _EOS
        or data[pos + 1] != 0x06
        or data[pos + 2] != 0x20
        or len(cids) > limits.max_caveats
    ):
        return None
    return location, identifier, cids, data[pos + 3 :]
