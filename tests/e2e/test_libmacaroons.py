"""Interoperability with the real libmacaroons (the C library, V1 format only).

capgate issues a token, ``capgate token convert --format v1`` hands it to
libmacaroons, libmacaroons attenuates it, and capgate honours the caveat it
added: the same call is allowed before and denied after, naming the caveat.
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
        lib.macaroon_add_first_party_caveat.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                                        ctypes.c_size_t, err]
        lib.macaroon_serialize_size_hint.restype = ctypes.c_size_t
        lib.macaroon_serialize_size_hint.argtypes = [ctypes.c_void_p]
        lib.macaroon_serialize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                           err]
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
        token = run("token", "issue", "--grant", "read,write:/data/*",
                    credential=str(cred))["token"]
        v1 = run("token", "convert", str(token), "--format", "v1")["token"]
        assert Token.parse(str(v1)) == Token.parse(str(token))
        narrowed = lib.attenuate(str(v1), b"action in read")  # libmacaroons writes V1 back

        def verify(t: str, action: str) -> dict[str, object]:
            return run("token", "verify", t, "--action", action, "--resource", "/data/x",
                       "--agent", "lm", credential=str(svc))

        assert verify(str(v1), "write")["allowed"] is True
        assert verify(narrowed, "read")["allowed"] is True
        denied = verify(narrowed, "write")
        assert denied["allowed"] is False and denied["caveat"] == "action in read"
        back = run("token", "convert", narrowed, "--format", "v2")["token"]
        assert verify(str(back), "write")["caveat"] == "action in read"
    finally:
        p.stop()
