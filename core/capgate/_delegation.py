"""Delegation: minting the proofs behind ``delegate`` caveats, checking them, and key files.

The caveat's grammar lives with the rest of the language in ``_caveats``. A
``delegate`` caveat moves the token to another agent::

    delegate = B did=<32 hex> at=<unix ms> proof=srv:<base64url>
    delegate = B did=<32 hex> at=<unix ms> proof=ed25519:<key id>:<base64url>

Its proof covers the token's signature just before the caveat plus the
caveat's own text up to `` proof=``, so it cannot be moved to another token or
another position, and only the current holder (through the server, or with its
registered Ed25519 key) can make one. ``at`` is when the hop was made, which
the agent's epoch (revoke-all) is compared to.

``did`` is the hop's lineage id, and it is not chosen: it is derived from the
signature before the hop and the hop's own words (``delegation_id``), and the
verifier denies a hop whose ``did`` is anything else. So no one can make a hop
whose id names another token or hop, and revoking a token's own hop can never
reach into someone else's tree.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
    load_ssh_public_key,
)

from capgate._caveats import DelegateCaveat
from capgate._errors import InvalidArgumentError
from capgate._text import ID_RE
from capgate._token import Token

__all__ = [
    "MAX_DEPTH",
    "append_server_delegation",
    "delegate_offline",
    "delegation_id",
    "delegation_message",
    "did_valid",
    "ed25519_verify",
    "load_private_key",
    "load_public_key",
    "new_private_key_pem",
    "proof_valid",
    "public_key_id",
    "server_proof",
    "weak_public_key",
]

_PROOF_CONTEXT = b"capgate-delegate-v1\n"
_DID_CONTEXT = b"capgate-did-v1\n"
_SERVER_PROOF_KEY = b"capgate delegation proof v1"
MAX_DEPTH = 16  # agents may allow at most this many delegations below them


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def delegation_message(prefix_sig: bytes, unsigned: bytes) -> bytes:
    """What a delegation proof signs: the chain so far and the hop's own words."""
    return _PROOF_CONTEXT + prefix_sig + unsigned


def server_proof(root_key: bytes, prefix_sig: bytes, unsigned: bytes) -> bytes:
    """The server's proof: an HMAC under a key derived from the token's root key."""
    key = hmac.digest(root_key, _SERVER_PROOF_KEY, "sha256")
    return hmac.digest(key, delegation_message(prefix_sig, unsigned), "sha256")


def delegation_id(prefix_sig: bytes, agent: str, at_ms: int) -> str:
    """The one ``did`` a hop to ``agent`` at ``at_ms`` may carry after ``prefix_sig``.

    An HMAC keyed by the chain's signature so far: unique to this chain and
    position, and no one can aim it at an id of their choosing.
    """
    message = _DID_CONTEXT + f"{agent} at={at_ms}".encode("ascii")
    return hmac.digest(prefix_sig, message, "sha256")[:16].hex()


def did_valid(cav: DelegateCaveat, prefix_sig: bytes) -> bool:
    """True when the caveat's ``did`` is the one its position derives."""
    return hmac.compare_digest(cav.did, delegation_id(prefix_sig, cav.agent, cav.at_ms))


def proof_valid(
    cav: DelegateCaveat, prefix_sig: bytes, root_key: bytes, public_key: bytes | None
) -> bool:
    """Check a delegate caveat's proof against the signature before it (constant time for srv)."""
    if cav.key_id is None:
        expected = server_proof(root_key, prefix_sig, cav.unsigned)
        return hmac.compare_digest(cav.proof, expected)
    if public_key is None:
        return False
    return ed25519_verify(public_key, cav.proof, delegation_message(prefix_sig, cav.unsigned))


# Ed25519's curve (RFC 8032, 5.1): a public key is the encoding of a point
_P = 2**255 - 19
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


@functools.lru_cache(maxsize=4096)
def weak_public_key(raw: bytes) -> str | None:
    """Why 32 bytes are no Ed25519 public key a signature can bind, or None.

    A point of small order (the identity, and the seven others of order 2, 4 or 8)
    verifies signatures made without any private key: with the identity, R = [r]B
    and S = r verify for every message. Such keys, encodings of no point, and
    non-canonical encodings are refused (as libsodium does)."""
    if len(raw) != 32:
        return "not 32 bytes"
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    if y >= _P:
        return "not a canonical encoding"
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x2 = u * pow(v, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        return "not a point of the curve"
    if x == 0 and sign:
        return "not a canonical encoding"
    if x & 1 != sign:
        x = _P - x
    for _ in range(3):  # [8]P: the identity exactly when P's order divides 8
        t = _D * x * x * y * y % _P
        x, y = (
            2 * x * y * pow(1 + t, _P - 2, _P) % _P,
            (y * y + x * x) * pow(1 - t, _P - 2, _P) % _P,
        )
    if (x, y) == (0, 1):
        return "a point of small order (it verifies signatures made without a private key)"
    return None


def ed25519_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s over ``message``; never for a weak key."""
    if weak_public_key(bytes(public_key)) is not None:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def public_key_id(public_key: bytes) -> str:
    """16 hex digits naming an Ed25519 public key (raw 32 bytes)."""
    return hashlib.sha256(public_key).hexdigest()[:16]


def _checked_agent(agent: str) -> str:
    if not isinstance(agent, str) or ID_RE.fullmatch(agent) is None:
        raise InvalidArgumentError(f"invalid agent id {agent!r}")
    return agent


def unsigned_delegation(agent: str, at_ms: int, did: str) -> str:
    return f"delegate = {_checked_agent(agent)} did={did} at={at_ms}"


def append_server_delegation(
    token: Token, root_key: bytes, agent: str, at_ms: int
) -> tuple[Token, str]:
    """Append a server-minted ``delegate`` caveat; returns the token and the new did."""
    did = delegation_id(token.signature, _checked_agent(agent), at_ms)
    unsigned = unsigned_delegation(agent, at_ms, did)
    proof = server_proof(root_key, token.signature, unsigned.encode("ascii"))
    return token.append_raw(f"{unsigned} proof=srv:{_b64(proof)}".encode("ascii")), did


def delegate_offline(
    token: Token, private_key: Ed25519PrivateKey, agent: str, at_ms: int
) -> tuple[Token, str]:
    """Append a ``delegate`` caveat signed with the current holder's Ed25519 key.

    Returns the token and the new delegation id. The holder's public key must be
    registered with the server (``capgate agent key add``) for it to verify.
    """
    did = delegation_id(token.signature, _checked_agent(agent), at_ms)
    unsigned = unsigned_delegation(agent, at_ms, did)
    sig = private_key.sign(delegation_message(token.signature, unsigned.encode("ascii")))
    kid = public_key_id(private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    return token.append_raw(f"{unsigned} proof=ed25519:{kid}:{_b64(sig)}".encode("ascii")), did


def load_public_key(data: bytes | str) -> bytes:
    """An Ed25519 public key from PEM, OpenSSH, raw 32 bytes or base64 of them → raw bytes."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    key = None
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            key = load_pem_public_key(raw)
        elif raw.lstrip().startswith(b"ssh-ed25519"):
            key = load_ssh_public_key(raw.strip())
        elif len(raw) == 32:
            return _strong(bytes(raw))
        else:
            decoded = base64.b64decode(raw.strip(), altchars=b"-_", validate=False)
            if len(decoded) == 32:
                return _strong(decoded)
    except (ValueError, binascii.Error, TypeError):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidArgumentError("not an Ed25519 public key (PEM, OpenSSH or raw 32 bytes)")
    return _strong(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def _strong(raw: bytes) -> bytes:
    weak = weak_public_key(raw)
    if weak is not None:
        raise InvalidArgumentError(f"not a usable Ed25519 public key: {weak}")
    return raw


def load_private_key(data: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8) or OpenSSH format."""
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_ssh_private_key,
    )

    key: object = None
    try:
        if data.lstrip().startswith(b"-----BEGIN OPENSSH"):
            key = load_ssh_private_key(data, None)
        else:
            key = load_pem_private_key(data, None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidArgumentError("not an unencrypted Ed25519 private key (PEM or OpenSSH)")
    return key


def new_private_key_pem() -> tuple[bytes, bytes]:
    """A fresh Ed25519 key pair: (private PKCS#8 PEM, public raw bytes)."""
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    return pem, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
