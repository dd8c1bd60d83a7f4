"""The token format: golden vectors, pymacaroons interoperability, strict parsing."""

from __future__ import annotations

import base64

import pymacaroons
import pytest
from pymacaroons import MACAROON_V2, Macaroon
from pymacaroons.serializers import BinarySerializer

from capgate import Limits, MalformedTokenError, Token, TokenIdentifier

KEY = b"this is the key"
WRONG = b"this is not the key"

# libmacaroons test/unit/root_v2_*.vtest, caveat_v2_*.vtest and serialization_* (V2 lines).
ROOT = "AgETaHR0cDovL2V4YW1wbGUub3JnLwIFa2V5aWQAAAYgfN7nklEcW8b1KEhYBd_psk54XijiqZMB-dcRxgnjjvc"
ONE = (
    "AgETaHR0cDovL2V4YW1wbGUub3JnLwIFa2V5aWQAAhRhY2NvdW50ID0gMzczNTkyODU1OQAABiD1SAf23G7fiL8Pc"
    "wazgiVio2JTPb9zObphdl2kvSWdhw"
)
TWO = (
    "AgETaHR0cDovL2V4YW1wbGUub3JnLwIFa2V5aWQAAhRhY2NvdW50ID0gMzczNTkyODU1OQACDHVzZXIgPSBhbGlj"
    "ZQAABiBL6WfNHqDGsmuvakqU7psFsViG2guoXoxCqTyNDhJe_A"
)
UTF8 = "AgETaHR0cDovL2V4YW1wbGUub3JnLwIFa2V5aWQAAghFc2NyaXbDoQAABiA28icxdxYyvr3OoMwDhimCgQMffNNHvjyOENsQuU45WA"
QUOTED = (
    "AgETaHR0cDovL2V4YW1wbGUub3JnLwIFa2V5aWQAAg1xdW90ZWQicXVvdGVkAAAGIHNPXMqqtx_7otlo7EFTAYU4_6p"
    "5djOK1bEZRhiEuCwj"
)
BINARY = "AgETaHR0cDovL2V4YW1wbGUub3JnLwIFa2V5aWQAAgWVHQDGIQAABiBPkB3BYU0h9p6DutSg9yqVkEfzSuU43WQ_bOJkNFcKow"
# pymacaroons tests/functional_tests: a V2 binary token from go-macaroon (standard alphabet),
# with a third-party caveat.
GO_V2 = (
    "AgELbXkgbG9jYXRpb24CDW15IGlkZW50aWZpZXIAAglmcCBjYXZlYXQAAQt0cCBsb2NhdGlvbgIJdHAgY2F2ZWF0"
    "BEgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAACn8yDEet8ud+825gOjM0pZOVE8/HpV6Zqxac+kl0BYToVaY64Vfiw"
    "Hj5rWgBREOkAAAYgSDs4gcmZDlCZy2aV2jFk2qZNpgQXvK+encTAqZaPZjY"
)


@pytest.mark.parametrize(
    "text, caveats, sig",
    [
        (ROOT, (), "7cdee792511c5bc6f528485805dfe9b24e785e28e2a99301f9d711c609e38ef7"),
        (
            ONE,
            ("account = 3735928559",),
            "f54807f6dc6edf88bf0f7306b3822562a362533dbf7339ba61765da4bd259d87",
        ),
        (
            TWO,
            ("account = 3735928559", "user = alice"),
            "4be967cd1ea0c6b26baf6a4a94ee9b05b15886da0ba85e8c42a93c8d0e125efc",
        ),
        (UTF8, ("Escrivá",), "36f2273177163 2bebdcea0cc038629828103 1f7cd347be3c8e10db10b94e3958"),
        (QUOTED, ('quoted"quoted',), None),
    ],
)
def test_libmacaroons_vectors_verify_with_the_key_and_not_without(text, caveats, sig):
    t = Token.parse(text)
    assert t.location == "http://example.org/"
    assert t.identifier == b"keyid"
    assert t.caveats == caveats
    if sig:
        assert t.signature.hex() == sig.replace(" ", "")
    assert t.signature_valid(KEY)
    assert not t.signature_valid(WRONG)


# libmacaroons test/unit/root_v1_1, caveat_v1_1 and caveat_v1_4 (the V1 text inside each
# vtest): the same macaroons as ROOT, ONE and TWO above, in the V1 format.
ROOT_V1 = (
    "MDAyMWxvY2F0aW9uIGh0dHA6Ly9leGFtcGxlLm9yZy8KMDAxNWlkZW50aWZpZXIga2V5aWQKMDAyZnNpZ25hdH"
    "VyZSB83ueSURxbxvUoSFgF3-myTnheKOKpkwH51xHGCeOO9wo"
)
ONE_V1 = (
    "MDAyMWxvY2F0aW9uIGh0dHA6Ly9leGFtcGxlLm9yZy8KMDAxNWlkZW50aWZpZXIga2V5aWQKMDAxZGNpZCBhY2"
    "NvdW50ID0gMzczNTkyODU1OQowMDJmc2lnbmF0dXJlIPVIB_bcbt-Ivw9zBrOCJWKjYlM9v3M5umF2XaS9JZ2HCg"
)
TWO_V1 = (
    "MDAyMWxvY2F0aW9uIGh0dHA6Ly9leGFtcGxlLm9yZy8KMDAxNWlkZW50aWZpZXIga2V5aWQKMDAxZGNpZCBhY2"
    "NvdW50ID0gMzczNTkyODU1OQowMDE1Y2lkIHVzZXIgPSBhbGljZQowMDJmc2lnbmF0dXJlIEvpZ80eoMaya69qSp"
    "TumwWxWIbaC6hejEKpPI0OEl78Cg"
)


@pytest.mark.parametrize("v1, v2", [(ROOT_V1, ROOT), (ONE_V1, ONE), (TWO_V1, TWO)])
def test_libmacaroons_v1_vectors_are_the_same_tokens_as_their_v2_twins(v1, v2):
    t = Token.parse(v1)
    assert t == Token.parse(v2) and t.signature_valid(KEY) and not t.signature_valid(WRONG)
    assert t.to_text() == v2  # capgate writes V2 by default
    assert t.to_text("v1") == v1  # and V1 byte for byte as libmacaroons does
    assert Token.parse(t.to_text("v1")) == t


def _v1(*packets: tuple[bytes, bytes], header: str = "{:04x}") -> str:
    data = b"".join(
        header.format(4 + len(k) + 2 + len(v)).encode() + k + b" " + v + b"\n" for k, v in packets
    )
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


SIG = (b"signature", b"s" * 32)


@pytest.mark.parametrize(
    "packets, header, why",
    [
        (((b"identifier", b"id"),), "{:04x}", "signature missing"),
        (((b"location", b"x"), SIG), "{:04x}", "no identifier"),
        (((b"identifier", b"id"), (b"signature", b"short")), "{:04x}", "not 32 bytes"),
        (((b"identifier", b"id"), SIG, (b"cid", b"late")), "{:04x}", "unexpected packet"),
        (((b"identifier", b"id"), (b"cid", b""), SIG), "{:04x}", "empty"),
        (((b"identifier", b"id"), (b"bogus", b"x"), SIG), "{:04x}", "unknown V1 packet"),
        (((b"identifier", b"id"), SIG), "{:04X}", "lowercase hex"),  # 002F
        (((b"identifier", b"id"), SIG), "{:04x}", None),  # the control: this one parses
    ],
)
def test_malformed_v1_tokens_raise_a_clear_error(packets, header, why):
    if why is None:
        assert Token.parse(_v1(*packets, header=header)).identifier == b"id"
        return
    with pytest.raises(MalformedTokenError, match=why):
        Token.parse(_v1(*packets, header=header))


def test_v1_limits_are_the_same_as_v2s():
    caveats = [(b"cid", b"action in read")] * 65
    with pytest.raises(MalformedTokenError, match="more than 64 caveats"):
        Token.parse(_v1((b"identifier", b"id"), *caveats, SIG))
    truncated = base64.urlsafe_b64decode(ONE_V1 + "==")[:-5]
    with pytest.raises(MalformedTokenError, match="truncated"):
        Token.parse(base64.urlsafe_b64encode(truncated).decode())


def test_binary_caveat_vector_keeps_its_bytes():
    t = Token.parse(BINARY)
    assert t.raw.caveats[0].cid == bytes.fromhex("951d00c621")
    assert t.signature_valid(KEY)
    assert t.to_text() == BINARY


def test_padded_and_unpadded_text_give_the_same_token():
    for text in (ROOT, ONE, TWO):
        padded = text + "=" * (-len(text) % 4)
        assert Token.parse(padded) == Token.parse(text)
        assert Token.parse(padded).to_text() == text


def test_go_macaroon_v2_with_third_party_caveat_chain():
    t = Token.parse(GO_V2)
    assert t.caveats == ("fp caveat",)
    assert t.has_third_party_caveats
    assert t.signature_valid(b"my secret key")
    assert not t.signature_valid(KEY)


def test_pymacaroons_signature_vectors():
    key = b"this is our super secret key; only we should know it"
    m = Token.mint(key, b"we used our secret key", "http://mybank/")
    assert m.signature.hex() == "e3d9e02908526c4c0039ae15114115d97fdd68bf2ba379b342aaf0f617d0552f"
    m2 = m.append_raw(b"test = caveat")
    assert m2.signature.hex() == "197bac7a044af33332865b9266e26d493bdd668a660e44d88ce1a998c23dbd67"


def _capgate_token(key: bytes) -> Token:
    ident = TokenIdentifier("k1", "0" * 31 + "1", 1_800_000_000_000).encode()
    return Token.mint(key, ident).attenuate("agent = alice").attenuate("action in read,write")


def test_capgate_token_parses_and_verifies_in_pymacaroons():
    key = b"k" * 32
    t = _capgate_token(key)
    m = Macaroon.deserialize(t.to_text())
    assert m.identifier_bytes == t.identifier
    assert [c.caveat_id_bytes for c in m.caveats] == [c.encode() for c in t.caveats]
    v = pymacaroons.Verifier()
    for c in t.caveats:
        v.satisfy_exact(c)
    assert v.verify(m, key)
    with pytest.raises(Exception):
        v.verify(m, b"x" * 32)


def test_pymacaroons_token_parses_and_verifies_in_capgate():
    key = b"secret root key of thirty-two b!"
    m = Macaroon(
        location="capgate", identifier="cg1:k1:" + "a" * 32 + ":1", key=key, version=MACAROON_V2
    )
    m.add_first_party_caveat("agent = bob")
    m.add_first_party_caveat("action in read")
    text = m.serialize(serializer=BinarySerializer())
    t = Token.parse(text)
    assert t.caveats == ("agent = bob", "action in read")
    assert t.signature_valid(key)
    assert not t.signature_valid(b"other")


def test_attenuation_by_pymacaroons_is_the_same_as_by_capgate():
    key = b"k" * 32
    t = _capgate_token(key)
    m = Macaroon.deserialize(t.to_text())
    m.add_first_party_caveat("action in read")
    ours = t.attenuate("action in read")
    assert Token.parse(m.serialize(serializer=BinarySerializer())) == ours
    assert ours.signature_valid(key)


def test_attenuate_returns_a_new_token_and_leaves_the_old_one():
    t = _capgate_token(b"k" * 32)
    before = t.to_text()
    t2 = t.attenuate("resource /data/**")
    assert t.to_text() == before
    assert t2.caveats == (*t.caveats, "resource /data/**")
    with pytest.raises(AttributeError):
        t._raw = None  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad, why",
    [
        ("", "empty"),
        ("!!!!", "base64"),
        ("AgETaHR0c DovL2V4", "base64"),
        (ROOT[:-1], "canonical"),
        (ROOT[:-2], "truncated"),
        (ROOT[:40], "truncated"),
        (ROOT + "AAAA", "trailing"),
        (ROOT.replace("-", "+"), "mixes"),
        (base64.urlsafe_b64encode(b"\x01abc").decode(), "V2"),
        (base64.urlsafe_b64encode(b"\x02").decode().rstrip("="), "truncated"),
        (ROOT + "==", "padding"),
        (ROOT + "=====", "padding"),
        (ONE + "====", "padding"),
        ("é" * 10, "base64"),
    ],
)
def test_malformed_tokens_raise_a_clear_error(bad, why):
    with pytest.raises(MalformedTokenError, match=why):
        Token.parse(bad)


def test_size_limits_are_enforced_before_work():
    with pytest.raises(MalformedTokenError, match="over the limit"):
        Token.parse("A" * 20000)
    t = _capgate_token(b"k" * 32)
    limits = Limits(max_caveats=2)
    with pytest.raises(MalformedTokenError, match="more than 2 caveats"):
        Token.parse(t.attenuate("action in read").to_text(), limits=limits)
    with pytest.raises(MalformedTokenError, match="over 10"):
        Token.parse(t.to_text(), limits=Limits(max_caveat=10))


def test_non_text_input_is_a_clear_error():
    with pytest.raises(MalformedTokenError):
        Token.parse(12)  # type: ignore[arg-type]
    with pytest.raises(MalformedTokenError):
        Token.parse(b"\xff\xfe")


def test_identifier_round_trip_and_foreign_identifiers():
    ident = TokenIdentifier("kabc", "f" * 32, 123)
    assert TokenIdentifier.decode(ident.encode()) == ident
    with pytest.raises(MalformedTokenError):
        Token.parse(ROOT).capgate_identifier()
