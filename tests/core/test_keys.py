"""Ed25519 public keys: only keys a signature can bind are registered or trusted.

A point of small order verifies signatures made without any private key (with the
identity point, R = identity and S = 0 verify every message), and the
``cryptography`` library accepts them; capgate refuses them wherever a key enters
(``load_public_key``) and wherever one verifies (``ed25519_verify``)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from capgate import InvalidArgumentError, ed25519_verify, load_public_key, weak_public_key

P = 2**255 - 19
IDENTITY = (1).to_bytes(32, "little")
# the points of order 1, 2, 4 and 8 (their y, and x's sign in the top bit)
ORDER_8 = (
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
)
SMALL = (
    IDENTITY,
    (P - 1).to_bytes(32, "little"),  # order 2
    bytes(32),  # y = 0: order 4
    bytes(31) + b"\x80",  # y = 0, the other x: order 4
    *ORDER_8,
    *(k[:31] + bytes([k[31] | 0x80]) for k in ORDER_8),  # their negations
)
NON_CANONICAL = (
    P.to_bytes(32, "little"),  # y = p, which is 0
    (P + 1).to_bytes(32, "little"),  # y = p + 1, which is 1
    b"\xff" * 32,
    IDENTITY[:31] + b"\x80",  # the identity with x = -0
)


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_the_identity_key_verifies_a_signature_nobody_made_but_not_in_capgate() -> None:
    forged = IDENTITY + bytes(32)  # R = identity, S = 0
    Ed25519PublicKey.from_public_bytes(IDENTITY).verify(forged, b"any message")  # the library
    assert not ed25519_verify(IDENTITY, forged, b"any message")


@pytest.mark.parametrize("raw", SMALL + NON_CANONICAL)
def test_weak_and_non_canonical_keys_are_refused(raw: bytes) -> None:
    assert weak_public_key(raw) is not None
    with pytest.raises(InvalidArgumentError, match="not a usable Ed25519 public key"):
        load_public_key(raw)
    assert not ed25519_verify(raw, bytes(64), b"m")


def test_encodings_of_no_point_are_refused() -> None:
    off = [y.to_bytes(32, "little") for y in range(2, 60)]
    off = [raw for raw in off if weak_public_key(raw) == "not a point of the curve"]
    assert len(off) > 10  # about half of all y have no x
    for raw in off:
        with pytest.raises(InvalidArgumentError):
            load_public_key(raw)


@given(st.binary(min_size=32, max_size=32))
def test_every_generated_key_is_usable(seed: bytes) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    raw = _raw(key)
    assert weak_public_key(raw) is None
    assert load_public_key(raw) == raw
    assert ed25519_verify(raw, key.sign(b"m"), b"m")
    assert not ed25519_verify(raw, key.sign(b"m"), b"n")
