"""The libmacaroons V1 format: text packets, read everywhere a token is read.

libmacaroons 0.3 and older pymacaroons defaults write only V1, so capgate reads
it and can write it (``Token.to_text(format="v1")``); it writes V2 by default.
A V1 macaroon is a sequence of packets, each::

    HHHH KEY SP VALUE LF        HHHH: the packet's whole length, 4 lowercase hex digits

in this order: ``location``, ``identifier``, then per caveat ``cid`` (and for a
third-party caveat ``vid`` and ``cl``), then ``signature`` (32 raw bytes).
Parsing is strict and bounded like V2's: lengths, order, counts and sizes are
checked, and every failure is a ``MalformedTokenError`` naming what was wrong.
"""

from __future__ import annotations

from capgate._errors import MalformedTokenError
from capgate._raw import DEFAULT_LIMITS, Limits, RawCaveat, RawMacaroon

__all__ = ["pack_v1", "unpack_v1"]

_HEADER = 4
_MAX_PACKET = 0xFFFF
_HEX = frozenset(b"0123456789abcdef")
_KEYS = frozenset((b"location", b"identifier", b"cid", b"vid", b"cl", b"signature"))


def _packet(key: bytes, value: bytes) -> bytes:
    size = _HEADER + len(key) + 1 + len(value) + 1
    if size > _MAX_PACKET:
        raise MalformedTokenError(f"{key.decode()} is too long for the V1 format")
    return b"%04x%s %s\n" % (size, key, value)


def pack_v1(m: RawMacaroon) -> bytes:
    """Serialize to V1 packets (the bytes; base64url them for text)."""
    out = [_packet(b"location", m.location or b""), _packet(b"identifier", m.identifier)]
    for c in m.caveats:
        out.append(_packet(b"cid", c.cid))
        if c.vid is not None:
            out.append(_packet(b"vid", c.vid))
            out.append(_packet(b"cl", c.location or b""))
    out.append(_packet(b"signature", m.signature))
    return b"".join(out)


def _packets(data: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    pos, end = 0, len(data)
    while pos < end:
        header = data[pos : pos + _HEADER]
        if len(header) < _HEADER or not set(header) <= _HEX:
            raise MalformedTokenError("V1 packet header is not 4 lowercase hex digits", offset=pos)
        size = int(header, 16)
        stop = pos + size
        if size < _HEADER + 2 or stop > end:
            raise MalformedTokenError("V1 packet is truncated", offset=pos, want=size)
        body = data[pos + _HEADER : stop]
        if not body.endswith(b"\n") or b" " not in body:
            raise MalformedTokenError("V1 packet is not 'KEY VALUE\\n'", offset=pos)
        key, _, value = body[:-1].partition(b" ")
        if key not in _KEYS:
            raise MalformedTokenError(f"unknown V1 packet {key[:32]!r}", offset=pos)
        out.append((key, value))
        pos = stop
    return out


def unpack_v1(data: bytes, limits: Limits = DEFAULT_LIMITS) -> RawMacaroon:
    """Parse V1 packets; raises ``MalformedTokenError`` for anything else."""
    packets = _packets(data)
    i = 0

    def take(key: bytes) -> bytes | None:
        nonlocal i
        if i < len(packets) and packets[i][0] == key:
            i += 1
            return packets[i - 1][1]
        return None

    location = take(b"location")
    identifier = take(b"identifier")
    if not identifier:
        raise MalformedTokenError("V1 macaroon has no identifier")
    if len(identifier) > limits.max_identifier:
        raise MalformedTokenError(f"identifier over {limits.max_identifier} bytes")
    if location is not None and len(location) > limits.max_location:
        raise MalformedTokenError(f"location over {limits.max_location} bytes")
    caveats: list[RawCaveat] = []
    while (cid := take(b"cid")) is not None:
        if len(caveats) >= limits.max_caveats:
            raise MalformedTokenError(
                f"token has more than {limits.max_caveats} caveats", limit=limits.max_caveats
            )
        if not cid or len(cid) > limits.max_caveat:
            raise MalformedTokenError(
                f"caveat {len(caveats) + 1} is empty or over {limits.max_caveat} bytes"
            )
        vid = take(b"vid")
        cl = take(b"cl") if vid is not None else None
        if cl is not None and len(cl) > limits.max_location:
            raise MalformedTokenError(f"caveat location over {limits.max_location} bytes")
        caveats.append(RawCaveat(cid, vid, cl or None if vid is not None else None))
    signature = take(b"signature")
    if signature is None or len(signature) != 32:
        raise MalformedTokenError("V1 macaroon: signature missing or not 32 bytes")
    if i != len(packets):
        raise MalformedTokenError(f"V1 macaroon: unexpected packet {packets[i][0]!r}")
    return RawMacaroon(location, identifier, tuple(caveats), signature)
