"""Root keys: generated, sealed under the key-encryption key (KEK), rotated, retired.

Root keys sign every token. The store holds them only sealed (AES-256-GCM under
the KEK, with the key id as associated data), so the database alone reveals
nothing. The KEK comes from a file or the environment; with the embedded store
a KEK file is created next to the database on first start.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from capgate import FailedPreconditionError, InvalidArgumentError
from capgate_server.store import RootKeyRecord

__all__ = ["KeyEncryptionKey", "RootKeys", "load_kek"]

_SEAL_VERSION = b"\x01"


class KeyEncryptionKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise InvalidArgumentError("the key-encryption key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, key_id: str, secret: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return _SEAL_VERSION + nonce + self._aead.encrypt(nonce, secret, key_id.encode())

    def open(self, key_id: str, sealed: bytes) -> bytes:
        if sealed[:1] != _SEAL_VERSION or len(sealed) < 13:
            raise FailedPreconditionError(f"root key {key_id} is not sealed in a known format")
        try:
            return self._aead.decrypt(sealed[1:13], sealed[13:], key_id.encode())
        except InvalidTag:
            raise FailedPreconditionError(
                f"root key {key_id} cannot be unsealed: wrong key-encryption key?"
            ) from None


def _decode_kek(text: str, origin: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise InvalidArgumentError(f"{origin}: the key-encryption key must be base64 of 32 bytes")
    return key


def load_kek(kek_file: Path | None, default_file: Path | None) -> KeyEncryptionKey:
    """From ``--kek-file``, else ``$CAPGATE_KEK``, else ``default_file`` (created if absent)."""
    if kek_file is not None:
        return KeyEncryptionKey(_decode_kek(kek_file.read_text(), str(kek_file)))
    env = os.environ.get("CAPGATE_KEK")
    if env:
        return KeyEncryptionKey(_decode_kek(env, "CAPGATE_KEK"))
    if default_file is None:
        raise InvalidArgumentError(
            "a shared store needs a key-encryption key: pass --kek-file or set CAPGATE_KEK "
            "(the same on every replica; make one with `capgate keys new-kek`)"
        )
    if not default_file.exists():
        default_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(default_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_kek_text() + "\n")
    return KeyEncryptionKey(_decode_kek(default_file.read_text(), str(default_file)))


def new_kek_text() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii")


class RootKeys:
    """The unsealed ring: id → key for every key that may verify; the newest (the
    highest generation the store gave) signs."""

    def __init__(self, kek: KeyEncryptionKey) -> None:
        self._kek = kek
        self.active: dict[str, bytes] = {}
        self.retired: dict[str, float] = {}
        self.signing_id: str | None = None

    def load(self, records: list[RootKeyRecord]) -> bool:
        """Replace the ring from the store's records; True if anything changed."""
        active = {r.id: r for r in records if r.retired_at is None}
        retired = {r.id: float(r.retired_at) for r in records if r.retired_at is not None}
        changed = set(active) != set(self.active) or retired != self.retired
        for kid, rec in active.items():
            if kid not in self.active:
                self.active[kid] = self._kek.open(kid, rec.sealed)
        for kid in [k for k in self.active if k not in active]:
            del self.active[kid]  # retired: tokens under it stop verifying
        self.retired = retired
        # the store's generation, not created_at: a replica whose clock lags still
        # makes the key it adds the signing key
        newest = max(active.values(), key=lambda r: (r.generation, r.id), default=None)
        self.signing_id = newest.id if newest else None
        return changed

    def new_record(self, now: float) -> RootKeyRecord:
        kid = "k" + secrets.token_hex(4)
        return RootKeyRecord(kid, self._kek.seal(kid, secrets.token_bytes(32)), now)

    def signing(self) -> tuple[str, bytes]:
        if self.signing_id is None:
            raise FailedPreconditionError("no active root key: run `capgate keys rotate`")
        return self.signing_id, self.active[self.signing_id]
