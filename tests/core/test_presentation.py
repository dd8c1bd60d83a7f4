"""How a token is presented: the proof of possession's format (a golden vector another
implementation can check itself against), what it binds, its window, and the headers."""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given
from hypothesis import strategies as st

from capgate import (
    InvalidArgumentError,
    MalformedTokenError,
    PossessionProof,
    Token,
    http_action,
    http_resource,
    presented_token,
    proof_message,
    prove_possession,
    token_header,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
TOKEN = Token.mint(b"k" * 32, b"cg1:key1:00112233445566778899aabbccddeeff:1800000000000").attenuate(
    "agent = alice"
)
AT = 1_800_000_000.123
GOLDEN = (
    "v1.56475aa75463474c.1800000000123.AAAAAAAAAAAAAAAAAAAAAA."
    "usmfzJ29Rs9jLzaOcWonRMdMRGwjexkZpm-I2ThvcDNu8DPhbGY8VQooLkO1Xs7KCEOVDOMlfWK0Pm-tlTDHCg"
)


def test_golden_vector():
    assert TOKEN.signature.hex() == (
        "d77126f09e0c9a05fb3fd7a8c2f0fcdc5f0e4848b5035a98dbcbecaf137ea3bb"
    )
    proof = prove_possession(
        TOKEN,
        KEY,
        "GET",
        "/reports/q3?full=1",
        audience="reports-api",
        clock=lambda: AT,
        nonce="A" * 22,
    )
    assert proof == GOLDEN
    message = proof_message(
        "reports-api",
        "GET",
        "/reports/q3?full=1",
        1_800_000_000_123,
        "A" * 22,
        "56475aa75463474c",
        TOKEN.signature,
    )
    assert message == (
        b"capgate-proof-v1\nreports-api\nGET\n/reports/q3?full=1\n"
        b"1800000000123\n" + b"A" * 22 + b"\n56475aa75463474c\n" + TOKEN.signature
    )
    sig = base64.urlsafe_b64decode(GOLDEN.rsplit(".", 1)[1] + "==")
    KEY.public_key().verify(sig, message)  # plain Ed25519 over those bytes


def test_a_proof_holds_only_for_its_request_token_key_and_window():
    p = PossessionProof.parse(GOLDEN)
    assert (p.key_id, p.at_ms, p.nonce) == ("56475aa75463474c", 1_800_000_000_123, "A" * 22)
    ok = ("reports-api", "GET", "/reports/q3?full=1", TOKEN.signature)
    assert p.check(PUBLIC, *ok, now=AT) is None
    assert p.check(PUBLIC, *ok, now=AT + 30) is None and p.check(PUBLIC, *ok, now=AT - 30) is None
    assert "too old" in p.check(PUBLIC, *ok, now=AT + 30.01)
    assert "future" in p.check(PUBLIC, *ok, now=AT - 30.01)
    assert p.check(PUBLIC, *ok, now=AT + 100, window=120) is None
    other_key = (
        Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    aud, method, target, sig = ok
    for case in (
        (other_key, *ok),
        (PUBLIC, aud, "get", target, sig),
        (PUBLIC, aud, "GET", "/reports/q3", sig),
        (PUBLIC, aud, "GET", target, TOKEN.attenuate("action in read").signature),
        (PUBLIC, "other-api", method, target, sig),  # another service: not for it
        (b"short", *ok),
    ):
        assert "does not verify" in p.check(*case, now=AT)
    assert "control character" in p.check(PUBLIC, aud, "GET", "/x\n", sig, now=AT)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "v1",
        GOLDEN + ".",
        GOLDEN.replace("v1.", "v2."),
        GOLDEN.upper(),
        GOLDEN[:-1],
        GOLDEN + "A",
        GOLDEN[:-1] + "B",  # not the canonical base64 of 64 bytes
        GOLDEN.replace(".AAAA", ".AA=A"),
        GOLDEN.replace("1800000000123", "-1"),
        GOLDEN.replace("1800000000123", "1" * 16),
        "v1." + "a" * 300,
        "\u202e" + GOLDEN,
    ],
)
def test_malformed_proofs_are_clear_errors(text):
    with pytest.raises(InvalidArgumentError):
        PossessionProof.parse(text)


@given(st.text(max_size=300))
def test_no_text_crashes_the_parser(text):
    try:
        p = PossessionProof.parse(text)
    except InvalidArgumentError:
        return
    assert PossessionProof.parse(p.to_text()) == p


def test_a_proof_round_trips_and_whitespace_around_it_is_dropped():
    p = PossessionProof.parse(f"  {GOLDEN}\n")
    assert p.to_text() == GOLDEN
    with pytest.raises(InvalidArgumentError):
        PossessionProof.parse(None)  # type: ignore[arg-type]


def test_proving_refuses_what_could_not_be_checked():
    with pytest.raises(InvalidArgumentError):
        prove_possession(TOKEN, KEY, "GET", "", audience="api")
    with pytest.raises(InvalidArgumentError):
        prove_possession(TOKEN, KEY, "G\rET", "/x", audience="api")
    with pytest.raises(InvalidArgumentError):
        prove_possession(TOKEN, KEY, "GET", "/x", audience="api", nonce="too short")
    with pytest.raises(InvalidArgumentError):
        prove_possession(TOKEN, KEY, "GET", "/x", audience="")
    with pytest.raises(MalformedTokenError):
        prove_possession("not a token", KEY, "GET", "/x", audience="api")
    two = {
        prove_possession(TOKEN, KEY, "GET", "/x", audience="api").split(".")[3] for _ in range(2)
    }
    assert len(two) == 2  # a fresh nonce every time


def test_headers():
    assert token_header(TOKEN) == f"Capgate {TOKEN.to_text()}"
    assert presented_token(token_header(TOKEN)) == TOKEN.to_text()
    assert presented_token("capgate  abc ") == "abc"  # the scheme is case-insensitive
    for value in (None, "", "Capgate", "Capgate ", "Bearer abc", "Capgate a b", "abc"):
        assert presented_token(value) is None, value
    with pytest.raises(MalformedTokenError):
        token_header("a b")


def test_http_methods_give_actions_and_others_none():
    assert [http_action(m) for m in ("GET", "head", "POST", "PUT", "PATCH", "DELETE")] == [
        "read",
        "read",
        "write",
        "write",
        "write",
        "delete",
    ]
    for m in ("OPTIONS", "TRACE", "CONNECT", "", "GET ", None):
        assert http_action(m) is None  # type: ignore[arg-type]


# -- the resource an HTTP path names ------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/data/public/%2e%2e/secret/x",
        "/data/public/%2E%2E/secret/x",
        "/data/public/..%2fsecret%2fx",
        "/data/public/%2e%2e%2fsecret%2fx",
        "/data/public/..%5csecret",
        "/data/public/x%00",
        "/data/public/../secret/x",
        "/data/public/..;/secret/x",
        "/data/public/.;x=1/y",
        "/data/public/./x",
        "/data/public\\..\\secret",
        "/data/%ff",
        "/data/public/%252e%252e/secret",
    ],
)
def test_a_path_a_server_could_read_as_another_is_refused(path):
    with pytest.raises(InvalidArgumentError):
        http_resource(path)


def test_a_path_is_decoded_and_loses_its_query():
    assert http_resource("/data/q%203?full=1#top") == "/data/q 3"
    assert http_resource("/data/r%C3%A9sum%C3%A9") == "/data/résumé"
    assert http_resource("/data/..x/.y") == "/data/..x/.y"  # names that start with dots


_SEGMENT = st.sampled_from(
    [
        "data",
        "x",
        ".",
        "..",
        "%2e",
        "%2E%2e",
        "%2f",
        ";p",
        "..;a",
        "%41",
        "%5c",
        "a%2fb",
        "%c3%a9",
        "%252e",
        "%25",
        "",
    ]
)


@given(st.lists(_SEGMENT, min_size=1, max_size=6))
def test_no_accepted_path_holds_a_dot_segment_once_decoded(segments):
    """Whatever a server does with percent escapes or ';' parameters, a path that is
    accepted names no '.' or '..' segment: the resource checked is the one served."""
    path = "/" + "/".join(segments)
    try:
        resource = http_resource(path)
    except InvalidArgumentError:
        return
    fully = urllib.parse.unquote(urllib.parse.unquote(path))
    for seg in [*resource.split("/"), *fully.split("/")]:
        assert seg.split(";", 1)[0] not in (".", "..")
    assert "\\" not in fully
