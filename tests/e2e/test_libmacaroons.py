"""Interoperability with the real libmacaroons (the C library, V1 format only).

capgate issues a token, ``capgate token convert --format v1`` hands it to
libmacaroons, libmacaroons attenuates it, and capgate honours the caveat it
added: the same call is allowed before and denied after, naming the caveat. And
libmacaroons, given the root key, verifies a token with an approval caveat beside
its bound discharge (the third-party caveat, the discharge and the binding are the
standard ones).
"""

from __future__ import annotations

import ctypes
import json

import pytest

from capgate import Token

from harness import ServerProcess, cli, load_libmacaroons

pytestmark = pytest.mark.libmacaroons


class LibMacaroons:
    """The few libmacaroons calls needed: deserialize, add a caveat, serialize."""

    def __init__(self) -> None:
        lib = load_libmacaroons()
        assert lib is not None
        err = ctypes.POINTER(ctypes.c_int)
        lib.macaroon_deserialize.restype = ctypes.c_void_p
        lib.macaroon_deserialize.argtypes = [ctypes.c_char_p, err]
        lib.macaroon_add_first_party_caveat.restype = ctypes.c_void_p
        lib.macaroon_add_first_party_caveat.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            err,
        ]
        lib.macaroon_serialize_size_hint.restype = ctypes.c_size_t
        lib.macaroon_serialize_size_hint.argtypes = [ctypes.c_void_p]
        lib.macaroon_serialize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, err]
        lib.macaroon_destroy.argtypes = [ctypes.c_void_p]
        self.lib = lib

    def attenuate(self, text: str, caveat: bytes) -> str:
        err = ctypes.c_int()
        m = self.lib.macaroon_deserialize(text.encode(), ctypes.byref(err))
        assert m, f"libmacaroons could not read the token (error {err.value})"
        n = self.lib.macaroon_add_first_party_caveat(m, caveat, len(caveat), ctypes.byref(err))
        assert n, f"libmacaroons could not add a caveat (error {err.value})"
        size = self.lib.macaroon_serialize_size_hint(n)
        buf = ctypes.create_string_buffer(size)
        assert self.lib.macaroon_serialize(n, buf, size, ctypes.byref(err)) == 0, err.value
        self.lib.macaroon_destroy(m)
        self.lib.macaroon_destroy(n)
        return buf.value.decode()


def test_libmacaroons_attenuates_a_converted_token_and_capgate_honours_it(tmp_path):
    lib = LibMacaroons()
    p = ServerProcess(tmp_path / "data").start()
    try:
        admin = p.admin_credential

        def run(*args: str, credential: str = admin) -> dict[str, object]:
            r = cli("--json", *args, server=p.address, credential=credential)
            assert r.returncode in (0, 1), r.stderr
            return json.loads(r.stdout)

        cred = run("agent", "create", "lm", "--grant", "read,write:/data/**")["credential"]
        svc = run("service", "create", "files")["credential"]
        token = run("token", "issue", "--grant", "read,write:/data/*", credential=str(cred))[
            "token"
        ]
        v1 = run("token", "convert", str(token), "--format", "v1")["token"]
        assert Token.parse(str(v1)) == Token.parse(str(token))
        narrowed = lib.attenuate(str(v1), b"action in read")  # libmacaroons writes V1 back

        def verify(t: str, action: str) -> dict[str, object]:
            return run(
                "token",
                "verify",
                t,
                "--action",
                action,
                "--resource",
                "/data/x",
                "--agent",
                "lm",
                credential=str(svc),
            )

        assert verify(str(v1), "write")["allowed"] is True
        assert verify(narrowed, "read")["allowed"] is True
        denied = verify(narrowed, "write")
        assert denied["allowed"] is False and denied["caveat"] == "action in read"
        back = run("token", "convert", narrowed, "--format", "v2")["token"]
        assert verify(str(back), "write")["caveat"] == "action in read"
    finally:
        p.stop()


def test_libmacaroons_verifies_an_approval_caveat_and_its_bound_discharge():
    """The approval caveat's verification id, the discharge's chain and its binding are
    the standard ones: libmacaroons, given only the root key, accepts the token with its
    discharge, and refuses the discharge beside a token narrowed further."""
    from capgate import (
        Agent,
        Ceiling,
        Request,
        RevocationSet,
        TokenIdentifier,
        Verifier,
        mint_discharge,
        request_digest,
    )

    lib = LibMacaroons().lib
    key = b"k" * 32
    t = Token.mint(key, TokenIdentifier("k1", "0" * 32, 1_799_999_000_000).encode())
    t = t.attenuate("agent = lm").require_approval("ctx amount > 1000")
    v = Verifier(
        {"k1": key},
        {"lm": Agent("lm", Ceiling.parse(["pay:/**"]))},
        RevocationSet(),
        clock=lambda: 1_800_000_000.0,
    )
    st = v.analyse(t.to_text())
    digest = request_digest("pay", "/invoices/8", "lm", {"amount": "4200"})
    d = mint_discharge(
        st.approval_keys[0], st.approvals[0].cid, "a" * 32, digest, 1_800_000_300.0, st.signature
    )
    assert v.verify(
        t.to_text(), Request("pay", "/invoices/8", "lm", {"amount": "4200"}), [d.to_text()]
    ).allowed

    err = ctypes.c_int()
    check = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)(
        lambda f, pred, size: 0
    )  # every first-party caveat holds: only the crypto is checked
    lib.macaroon_verifier_create.restype = ctypes.c_void_p
    lib.macaroon_verifier_satisfy_general.argtypes = [
        ctypes.c_void_p,
        type(check),
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_int),
    ]
    lib.macaroon_verify.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_void_p),
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.c_int),
    ]
    lib.macaroon_verifier_destroy.argtypes = [ctypes.c_void_p]
    verifier = lib.macaroon_verifier_create()
    assert lib.macaroon_verifier_satisfy_general(verifier, check, None, ctypes.byref(err)) == 0

    def verifies(token: Token) -> bool:
        m = lib.macaroon_deserialize(token.to_text("v1").encode(), ctypes.byref(err))
        dm = lib.macaroon_deserialize(d.to_text("v1").encode(), ctypes.byref(err))
        assert m and dm, err.value
        discharges = (ctypes.c_void_p * 1)(dm)
        ok = lib.macaroon_verify(verifier, m, key, len(key), discharges, 1, ctypes.byref(err))
        lib.macaroon_destroy(m)
        lib.macaroon_destroy(dm)
        return ok == 0

    try:
        assert verifies(t)
        assert not verifies(t.attenuate("resource /invoices/8"))
    finally:
        lib.macaroon_verifier_destroy(verifier)
