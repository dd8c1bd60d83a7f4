"""``Token``: an immutable macaroon, its HMAC chain, and capgate's identifier.

The signature chain is the standard one (libmacaroons, pymacaroons)::

    k   = HMAC(b"macaroons-key-generator", root_key)
    sig = HMAC(k, identifier)
    sig = HMAC(sig, caveat)                                   first-party caveat
    sig = HMAC(sig, HMAC(sig, vid) + HMAC(sig, caveat))       third-party caveat

capgate's identifier is ASCII text ``cg1:KEY_ID:TOKEN_ID:ISSUED_MS``: a format
version, the root-key id, a random 128-bit token id (32 hex digits) and the
issue time in Unix milliseconds.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable, Iterable
from typing import NamedTuple

from capgate._codec import (
    DEFAULT_LIMITS,
    Limits,
    RawCaveat,
    RawMacaroon,
    decode_text,
    pack_v1,
)
from capgate._codec import encode_text as _encode_text
from capgate._codec import pack as _pack
from capgate._codec import unpack as _unpack
from capgate._errors import CaveatSyntaxError, InvalidArgumentError, MalformedTokenError

__all__ = [
    "Token",
    "TokenIdentifier",
    "chain_signature",
    "derive_key",
    "new_token_id",
    "third_party_signature",
]

_KEY_GENERATOR = b"macaroons-key-generator"
_new_tuple = tuple.__new__


def _one_shot_hmac() -> Callable[[bytes, bytes, str], bytes]:
    """OpenSSL's one-shot HMAC without ``hmac.digest``'s wrapper: the chain is the hot path."""
    try:
        from _hashlib import hmac_digest
    except ImportError:  # pragma: no cover - CPython built without OpenSSL
        return hmac.digest
    return hmac_digest


hmac_digest = _one_shot_hmac()
# read as latin-1 text (byte for byte), so any byte outside ASCII fails the match
_ID_RE = re.compile(r"cg1:([A-Za-z0-9_-]{1,32}):([0-9a-f]{32}):([0-9]{1,15})", re.ASCII)


def derive_key(root_key: bytes) -> bytes:
    """The macaroon key derivation every implementation applies to the root key."""
    return hmac.digest(_KEY_GENERATOR, root_key, "sha256")


def chain_signature(derived_key: bytes, identifier: bytes, caveats: Iterable[RawCaveat]) -> bytes:
    """Run the HMAC chain from an already derived key."""
    digest = hmac_digest
    sig = digest(derived_key, identifier, "sha256")
    for c in caveats:
        if c.vid is None:
            sig = digest(sig, c.cid, "sha256")
        else:
            sig = third_party_signature(sig, c.vid, c.cid)
    return sig


def third_party_signature(sig: bytes, vid: bytes, cid: bytes) -> bytes:
    """The chain's next signature over a third-party caveat."""
    digest = hmac_digest
    return digest(sig, digest(sig, vid, "sha256") + digest(sig, cid, "sha256"), "sha256")


def new_token_id() -> str:
    """A random 128-bit id as 32 lowercase hex digits (token ids and delegation ids)."""
    return secrets.token_hex(16)


class TokenIdentifier(NamedTuple):
    """The parts of a capgate macaroon identifier."""

    key_id: str
    token_id: str
    issued_ms: int

    def encode(self) -> bytes:
        return f"cg1:{self.key_id}:{self.token_id}:{self.issued_ms}".encode("ascii")

    @classmethod
    def decode(cls, identifier: bytes) -> TokenIdentifier:
        m = _ID_RE.fullmatch(identifier.decode("latin-1"))
        if m is None:
            raise MalformedTokenError("not a capgate token identifier (want cg1:KEY:ID:MS)")
        kid, tid, ms = m.groups()
        return _new_tuple(cls, (kid, tid, int(ms)))


class Token:
    """An immutable macaroon. ``attenuate`` returns a new token; the old one is unchanged."""

    __slots__ = ("_raw", "_text")

    _raw: RawMacaroon
    _text: str | None

    def __init__(self, raw: RawMacaroon, text: str | None = None) -> None:
        object.__setattr__(self, "_raw", raw)
        object.__setattr__(self, "_text", text)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Token is immutable")

    # -- construction -------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str | bytes, *, limits: Limits = DEFAULT_LIMITS) -> Token:
        """Parse base64url text (padded or not) of V2 binary, or of libmacaroons' V1."""
        data = decode_text(text, limits)
        raw = _unpack(data, limits)
        if data[:1] != b"\x02":  # V1 in: the token's own text is still V2
            return cls(raw)
        canonical = isinstance(text, str) and not any(c in text for c in "=+/")
        return cls(raw, text if canonical else _encode_text(data))  # type: ignore[arg-type]

    @classmethod
    def from_bytes(cls, data: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Token:
        """Parse V2 binary bytes (or V1 packets)."""
        if not isinstance(data, bytes):
            raise MalformedTokenError("token bytes must be bytes", type=type(data).__name__)
        if len(data) > limits.max_text * 3 // 4:
            raise MalformedTokenError("token is over the size limit", size=len(data))
        return cls(_unpack(data, limits))

    @classmethod
    def mint(cls, root_key: bytes, identifier: bytes, location: str = "capgate") -> Token:
        """A new root token (no caveats) signed with ``root_key``."""
        sig = chain_signature(derive_key(root_key), identifier, ())
        return cls(RawMacaroon(location.encode("utf-8"), identifier, (), sig))

    # -- reading ---------------------------------------------------------------------

    @property
    def location(self) -> str:
        loc = self._raw.location
        return "" if loc is None else loc.decode("utf-8", "replace")

    @property
    def identifier(self) -> bytes:
        return self._raw.identifier

    @property
    def caveats(self) -> tuple[str, ...]:
        """First-party caveat conditions, in order (undecodable bytes escaped)."""
        return tuple(
            c.cid.decode("utf-8", "surrogateescape") for c in self._raw.caveats if c.vid is None
        )

    @property
    def raw(self) -> RawMacaroon:
        return self._raw

    @property
    def signature(self) -> bytes:
        return self._raw.signature

    @property
    def has_third_party_caveats(self) -> bool:
        return any(c.vid is not None for c in self._raw.caveats)

    @property
    def third_party_caveats(self) -> tuple[tuple[str, str], ...]:
        """``(location, caveat id)`` of each third-party caveat, in order (text escaped
        like ``caveats``); capgate's own are approval caveats (``require_approval``)."""
        return tuple(
            (
                (c.location or b"").decode("utf-8", "replace"),
                c.cid.decode("utf-8", "surrogateescape"),
            )
            for c in self._raw.caveats
            if c.vid is not None
        )

    def capgate_identifier(self) -> TokenIdentifier:
        """The decoded capgate identifier; ``MalformedTokenError`` for foreign tokens."""
        return TokenIdentifier.decode(self._raw.identifier)

    # -- deriving ----------------------------------------------------------------------

    def attenuate(self, caveat: str, *, limits: Limits = DEFAULT_LIMITS) -> Token:
        """A new token with one more first-party caveat; it can only allow less."""
        from capgate._caveats import parse_caveat  # the grammar module imports Token types

        if not isinstance(caveat, str):
            raise CaveatSyntaxError("caveat must be text", type=type(caveat).__name__)
        cav = parse_caveat(caveat)
        if cav.needs_proof:
            raise CaveatSyntaxError(
                f"'{cav.key}' caveats carry a proof; use delegate() to add one", caveat=caveat
            )
        return self.append_raw(caveat.encode("utf-8"), limits=limits)

    def require_approval(
        self, condition: str = "", approvers: int = 1, *, limits: Limits = DEFAULT_LIMITS
    ) -> Token:
        """A new token whose requests meeting ``condition`` (``ctx amount > 1000``,
        ``action in pay and resource /prod/**``; ``""``: every request) are allowed only
        with a discharge approved by ``approvers`` distinct approvers. Offline; it can
        only allow less (docs/caveats.md, "Approval caveats")."""
        from capgate._approval import require_approval

        return require_approval(self, condition, approvers, limits=limits)

    def append_third_party(
        self, cid: bytes, vid: bytes, location: str, *, limits: Limits = DEFAULT_LIMITS
    ) -> Token:
        """Append a standard third-party caveat (caveat id, verification id, location)."""
        loc = location.encode("utf-8")
        if len(cid) > limits.max_caveat or len(vid) > limits.max_caveat:
            raise CaveatSyntaxError(f"caveat is over {limits.max_caveat} bytes")
        if not cid or len(loc) > limits.max_location:
            raise CaveatSyntaxError("caveat id is empty, or its location is too long")
        if len(self._raw.caveats) >= limits.max_caveats:
            raise CaveatSyntaxError(f"token already has {limits.max_caveats} caveats")
        raw = self._raw
        sig = third_party_signature(raw.signature, vid, cid)
        return Token(
            RawMacaroon(raw.location, raw.identifier, (*raw.caveats, RawCaveat(cid, vid, loc)), sig)
        )

    def append_raw(self, cid: bytes, *, limits: Limits = DEFAULT_LIMITS) -> Token:
        """Append a first-party caveat without grammar checks (for proofs and interop)."""
        if len(cid) > limits.max_caveat:
            raise CaveatSyntaxError(f"caveat is {len(cid)} bytes, over {limits.max_caveat}")
        if len(self._raw.caveats) >= limits.max_caveats:
            raise CaveatSyntaxError(f"token already has {limits.max_caveats} caveats")
        raw = self._raw
        sig = hmac.digest(raw.signature, cid, "sha256")
        return Token(RawMacaroon(raw.location, raw.identifier, (*raw.caveats, RawCaveat(cid)), sig))

    # -- serializing and checking ------------------------------------------------------

    def to_bytes(self, format: str = "v2") -> bytes:
        """The V2 binary form, or with ``format="v1"`` libmacaroons' V1 packets."""
        if format == "v1":
            return pack_v1(self._raw)
        if format != "v2":
            raise InvalidArgumentError(f"unknown token format {format!r} (v2 or v1)")
        return _pack(self._raw)

    def to_text(self, format: str = "v2") -> str:
        """Unpadded base64url of the V2 binary form (``format="v1"``: of V1 packets, for
        libmacaroons 0.3 and other readers of the older format). Same signature either way."""
        if format != "v2":
            return _encode_text(self.to_bytes(format))
        if self._text is None:
            object.__setattr__(self, "_text", _encode_text(self.to_bytes()))
        assert self._text is not None
        return self._text

    def signature_valid(self, root_key: bytes) -> bool:
        """True when the HMAC chain from ``root_key`` yields this token's signature."""
        raw = self._raw
        expected = chain_signature(derive_key(root_key), raw.identifier, raw.caveats)
        return hmac.compare_digest(expected, raw.signature)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Token) and self._raw == other._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"<Token {self._raw.identifier!r} caveats={len(self._raw.caveats)}>"
