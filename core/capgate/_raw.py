"""The parts of a macaroon as bytes, and the size bounds every format checks first."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["DEFAULT_LIMITS", "Limits", "RawCaveat", "RawMacaroon"]


class Limits(NamedTuple):
    """Size bounds applied before any work is done on a token."""

    max_text: int = 16384  # characters of base64url text
    max_caveats: int = 64
    max_caveat: int = 2048  # bytes in one caveat identifier
    max_identifier: int = 256
    max_location: int = 256


class RawCaveat(NamedTuple):
    cid: bytes
    vid: bytes | None = None
    location: bytes | None = None


class RawMacaroon(NamedTuple):
    location: bytes | None
    identifier: bytes
    caveats: tuple[RawCaveat, ...]
    signature: bytes


DEFAULT_LIMITS = Limits()
