"""The audit's proof: every record hashed onto the one before, and signed checkpoints.

The audit records form one chain in their sealed order (``pos`` 1, 2, 3…)::

    digest(pos) = SHA-256("capgate-audit-v1" || digest(pos - 1) || canonical(record))

with ``digest(0)`` all zeros, or the digest a retention cut left behind. A
checkpoint states "the chain's head at ``pos`` is ``digest``" and is signed with
the store's Ed25519 audit key, which only the servers hold (sealed under the KEK).
An edit, a deletion, an insertion or a reordering anywhere before a checkpoint
makes the recomputed chain miss it; the stored digests say where it first broke.
Checkpoints exported off the machine (``capgate audit checkpoint --out``) prove
that the record still extends what was exported, so a truncated tail is caught too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from capgate import ed25519_verify, public_key_id

__all__ = ["GENESIS", "Break", "Checkpoint", "LedgerKey", "canonical", "link", "record_mac", "walk"]

GENESIS = bytes(32)
_CONTEXT = b"capgate-audit-v1"
_CHECKPOINT = b"capgate-audit-checkpoint-v1\n"
_CUT = b"capgate-audit-cut-v1\n"  # a retention cut: what is before it was deleted on purpose
_RECORD = b"capgate-audit-record-v1\n"  # a record vouched for by the server that wrote it
_RECORD_KEY = b"capgate-audit-record-key-v1\n"

Field = str | int | float | bool | None


def canonical(fields: Sequence[Field]) -> bytes:
    """A record's fields as bytes with one reading: each typed and length-prefixed."""
    out = bytearray()
    for value in fields:
        if value is None:
            out += b"n"
        elif isinstance(value, bool):
            out += b"b1" if value else b"b0"
        elif isinstance(value, int):
            out += b"i" + struct.pack(">q", value)
        elif isinstance(value, float):
            out += b"f" + struct.pack(">d", value)
        else:
            data = value.encode("utf-8", "surrogatepass")
            out += b"s" + struct.pack(">I", len(data)) + data
    return bytes(out)


def record_mac(key: bytes, record: bytes) -> bytes:
    """A server's word that it wrote ``record`` (its canonical bytes): only holders of
    the ledger key (the servers) can make one, so a row written into the store by
    anyone else is told apart before it is sealed."""
    return hmac.new(key, _RECORD + record, hashlib.sha256).digest()


def link(previous: bytes, record: bytes) -> bytes:
    """The digest of a record whose predecessor's digest is ``previous``."""
    return hashlib.sha256(_CONTEXT + previous + record).digest()


@dataclass(frozen=True)
class Checkpoint:
    """The chain's head at ``pos``, signed: a fact no one without the audit key can make."""

    pos: int
    digest: str  # hex
    at: float
    key_id: str
    public_key: str  # base64 of the raw Ed25519 key, so an export can be checked alone
    signature: str  # base64
    cut: bool = False  # a retention cut: signed as one, so no other checkpoint passes for it

    def message(self) -> bytes:
        return (_CUT if self.cut else _CHECKPOINT) + f"{self.pos}:{self.digest}:{self.at!r}".encode(
            "ascii"
        )

    def valid(self, trusted: Iterable[str] | None = None) -> bool:
        """Signed by its own key, and that key is one of ``trusted`` key ids (if given)."""
        if trusted is not None and self.key_id not in set(trusted):
            return False
        try:
            raw = base64.b64decode(self.public_key, validate=True)
            if public_key_id(raw) != self.key_id:
                return False
            signature = base64.b64decode(self.signature, validate=True)
        except ValueError:
            return False
        return ed25519_verify(raw, signature, self.message())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        data = json.loads(text)
        return cls(
            int(data["pos"]),
            str(data["digest"]),
            float(data["at"]),
            str(data["key_id"]),
            str(data["public_key"]),
            str(data["signature"]),
            data.get("cut") is True,
        )


class LedgerKey:
    """The Ed25519 key that signs checkpoints (held by the servers, sealed in the store)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = base64.b64encode(raw).decode("ascii")
        self.key_id = public_key_id(raw)

    @classmethod
    def generate(cls) -> LedgerKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> LedgerKey:
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    def record_key(self) -> bytes:
        """The key of ``record_mac``, derived from this one (so every replica has it)."""
        return hashlib.sha256(_RECORD_KEY + self.private_bytes()).digest()

    def private_bytes(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        return self._private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    def sign(self, pos: int, digest: bytes, at: float, cut: bool = False) -> Checkpoint:
        """The head at ``pos``; with ``cut``, a retention cut there (``at``: the instant
        before which records were deleted)."""
        unsigned = Checkpoint(pos, digest.hex(), at, self.key_id, self.public_key, "", cut)
        signature = self._private.sign(unsigned.message())
        return Checkpoint(
            pos,
            digest.hex(),
            at,
            self.key_id,
            self.public_key,
            base64.b64encode(signature).decode("ascii"),
            cut,
        )


@dataclass(frozen=True)
class Break:
    """Where the record stops being the one that was written, and why."""

    pos: int
    reason: str


def walk(
    records: Iterable[tuple[int, bytes, bytes]],
    start_pos: int,
    start: bytes,
    checkpoints: Sequence[Checkpoint],
) -> tuple[Break | None, int, bytes]:
    """Recompute the chain over ``(pos, canonical record, stored digest)`` in order,
    from the digest ``start`` at ``start_pos``; check every checkpoint on the way.

    Returns the first break (or None), the last position read and its digest.
    """
    marks = {c.pos: c for c in checkpoints if c.pos > start_pos}
    pos, digest = start_pos, start
    for got_pos, record, stored in records:
        if got_pos != pos + 1:
            return (
                Break(pos + 1, f"record {pos + 1} is missing (the next is {got_pos})"),
                pos,
                digest,
            )
        pos, digest = got_pos, link(digest, record)
        if stored != digest:
            return (
                Break(
                    pos,
                    f"record {pos} is not the one that was written (its digest "
                    "does not follow from the records before it)",
                ),
                pos,
                digest,
            )
        mark = marks.pop(pos, None)
        if mark is not None and mark.digest != digest.hex():
            return (
                Break(pos, f"the record up to {pos} is not the one checkpoint {pos} signed"),
                pos,
                digest,
            )
    if marks:
        first = min(marks)
        return (
            Break(
                pos + 1, f"records {pos + 1} to {first} are gone: checkpoint {first} covers them"
            ),
            pos,
            digest,
        )
    return None, pos, digest
