"""How an agent presents a token to a service, and proves per request that it holds
the key it registered (proof of possession).

An agent presents a token to a service with two headers (the same keys, lower
case, as gRPC metadata)::

    authorization: Capgate <token>
    capgate-proof: v1.<key id>.<at ms>.<nonce>.<signature>

The proof is an Ed25519 signature, by a key the agent registered (``capgate
agent key add``), over the request it travels with and the token it vouches
for (``proof_message``)::

    capgate-proof-v1 \\n AUDIENCE \\n METHOD \\n TARGET \\n AT_MS \\n NONCE \\n KEY_ID \\n
    TOKEN_SIGNATURE

AUDIENCE is the capgate principal id of the service the request is for (the
one whose credential asks capgate to verify it; behind Envoy, Envoy's), so a
service that receives a proof cannot spend it at another. METHOD and TARGET
are the request as it was sent: for HTTP the method and the path with its query
(``GET``, ``/reports/q3?full=1``); for gRPC ``POST`` and the full method name
(what HTTP/2 carries, and what a proxy sees); for an MCP tool call
``tools/call`` and the tool's name. TOKEN_SIGNATURE is the token's
own 32-byte signature, so a proof speaks for one token only.

A proof is good for ``window`` seconds either side of AT_MS and for one use:
the server remembers each NONCE until the proof could no longer be accepted.
Only the shape and the signature are checked here; the clock window, the key
lookup and the nonce belong to whoever verifies (``check``).

Where a service names no action, an HTTP request's method gives one
(``http_action``): GET and HEAD read, POST, PUT and PATCH write, DELETE deletes;
any other method has none (the request is denied).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import urllib.parse
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from capgate._clock import Clock, system_clock
from capgate._delegation import ed25519_verify, public_key_id
from capgate._errors import InvalidArgumentError, MalformedTokenError
from capgate._token import Token

__all__ = [
    "DENY_HEADER",
    "PROOF_HEADER",
    "PROOF_WINDOW",
    "TOKEN_HEADER",
    "TOKEN_SCHEME",
    "PossessionProof",
    "http_action",
    "http_resource",
    "presented_token",
    "proof_message",
    "prove_possession",
    "token_header",
]

TOKEN_HEADER = "authorization"  # noqa: S105 - a header name, not a secret
TOKEN_SCHEME = "Capgate"  # noqa: S105 - the scheme word
PROOF_HEADER = "capgate-proof"
DENY_HEADER = "capgate-deny"  # a guard's or Envoy's deny: the code (gRPC: a trailer)
PROOF_WINDOW = 30.0  # seconds either side of a proof's instant (the server's default)

_HTTP_ACTIONS = {
    "GET": "read",
    "HEAD": "read",
    "POST": "write",
    "PUT": "write",
    "PATCH": "write",
    "DELETE": "delete",
}
_CONTEXT = b"capgate-proof-v1\n"
_MAX_PROOF = 256
_MAX_METHOD = 64
_MAX_AUDIENCE = 128
_MAX_TARGET = 8192
# a '.', '/', '\\', NUL or '%' spelt with a percent sign: servers disagree on what it
# means (and one that decodes twice turns '%252e' into '.')
_ENCODED_SEPARATOR = re.compile(r"%(?:2[eEfF5]|5[cC]|00)")
_PROOF_RE = re.compile(
    r"v1\.([0-9a-f]{16})\.([0-9]{1,15})\.([A-Za-z0-9_-]{16,64})\.([A-Za-z0-9_-]{86})"
)


def _field(value: object, what: str, limit: int) -> bytes:
    """A request field as signed: text without control characters (so the lines of the
    message cannot be confused), bounded."""
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"the proof's {what} must be non-empty text")
    if len(value) > limit:
        raise InvalidArgumentError(f"the proof's {what} is longer than {limit} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InvalidArgumentError(f"the proof's {what} contains a control character")
    return value.encode("utf-8", "surrogatepass")


def proof_message(
    audience: str,
    method: str,
    target: str,
    at_ms: int,
    nonce: str,
    key_id: str,
    token_signature: bytes,
) -> bytes:
    """The bytes a proof signs (raises ``InvalidArgumentError`` for an unusable field)."""
    return b"".join(
        [
            _CONTEXT,
            _field(audience, "audience", _MAX_AUDIENCE),
            b"\n",
            _field(method, "method", _MAX_METHOD),
            b"\n",
            _field(target, "target", _MAX_TARGET),
            b"\n",
            str(at_ms).encode("ascii"),
            b"\n",
            nonce.encode("ascii"),
            b"\n",
            key_id.encode("ascii"),
            b"\n",
            token_signature,
        ]
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class PossessionProof:
    """A parsed ``capgate-proof`` value. ``parse`` checks its shape only."""

    key_id: str
    at_ms: int
    nonce: str
    signature: bytes

    @classmethod
    def parse(cls, text: str) -> PossessionProof:
        """Read a proof; raises ``InvalidArgumentError`` with what is wrong."""
        if not isinstance(text, str):
            raise InvalidArgumentError("a proof must be text")
        text = text.strip()
        if len(text) > _MAX_PROOF:
            raise InvalidArgumentError(f"a proof is at most {_MAX_PROOF} characters")
        m = _PROOF_RE.fullmatch(text)
        if m is None:
            raise InvalidArgumentError(
                "a proof reads v1.<key id: 16 hex>.<unix ms>.<nonce: 16-64 base64url>."
                "<Ed25519 signature: base64url>"
            )
        key_id, at, nonce, sig = m.groups()
        try:
            signature = base64.urlsafe_b64decode(sig + "==")
        except (binascii.Error, ValueError):  # pragma: no cover - the pattern admits only b64
            raise InvalidArgumentError("the proof's signature is not base64url") from None
        if len(signature) != 64 or _b64(signature) != sig:
            raise InvalidArgumentError("the proof's signature is not a canonical 64-byte value")
        return cls(key_id, int(at), nonce, signature)

    def to_text(self) -> str:
        return f"v1.{self.key_id}.{self.at_ms}.{self.nonce}.{_b64(self.signature)}"

    def check(
        self,
        public_key: bytes,
        audience: str,
        method: str,
        target: str,
        token_signature: bytes,
        now: float,
        window: float = PROOF_WINDOW,
    ) -> str | None:
        """Why this proof does not hold for the request to ``audience`` (the service
        principal verifying it), or None when it does (the nonce is the caller's to
        redeem once)."""
        skew = now * 1000 - self.at_ms
        if abs(skew) > window * 1000:
            side = "old" if skew > 0 else "far in the future"
            return (
                f"proof made at {self.at_ms} ms is too {side} "
                f"(accepted within {window:g}s of the server's clock)"
            )
        try:
            message = proof_message(
                audience, method, target, self.at_ms, self.nonce, self.key_id, token_signature
            )
        except InvalidArgumentError as e:
            return e.message
        if not ed25519_verify(public_key, self.signature, message):
            return (
                f"proof does not verify with key {self.key_id} for {method} {target}, "
                f"this token and the service {audience!r} (a proof is for one service)"
            )
        return None


def prove_possession(
    token: Token | str,
    private_key: Ed25519PrivateKey,
    method: str,
    target: str,
    *,
    audience: str,
    clock: Clock = system_clock,
    nonce: str | None = None,
) -> str:
    """The ``capgate-proof`` value for one request to the service ``audience`` (the
    principal id it verifies with): ``method`` and ``target`` as sent (HTTP method and
    path with query; ``POST`` and the gRPC method; ``tools/call`` and the tool). Raises
    ``MalformedTokenError`` for a token that cannot be read."""
    if not isinstance(token, Token):
        token = Token.parse(token)
    if not isinstance(private_key, Ed25519PrivateKey):
        raise InvalidArgumentError("a proof is signed with an Ed25519 private key")
    at_ms = int(clock() * 1000)
    nonce = nonce or _b64(secrets.token_bytes(16))
    key_id = public_key_id(private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    sig = private_key.sign(
        proof_message(audience, method, target, at_ms, nonce, key_id, token.signature)
    )
    proof = PossessionProof(key_id, at_ms, nonce, sig)
    PossessionProof.parse(proof.to_text())  # a nonce the caller chose must fit the grammar
    return proof.to_text()


def token_header(token: Token | str) -> str:
    """The ``authorization`` value that presents ``token``: ``Capgate <token>``."""
    text = token.to_text() if isinstance(token, Token) else token.strip()
    if not text or any(c.isspace() for c in text):
        raise MalformedTokenError("a token is one word of base64url text")
    return f"{TOKEN_SCHEME} {text}"


def presented_token(value: str | None) -> str | None:
    """The token of an ``authorization: Capgate <token>`` value; None for any other value
    (another scheme, none, or more than one word)."""
    if not value:
        return None
    scheme, _, rest = value.strip().partition(" ")
    token = rest.strip()
    if scheme.lower() != TOKEN_SCHEME.lower() or not token or " " in token:
        return None
    return token


def http_action(method: str) -> str | None:
    """The action an HTTP method stands for when a service names none (None: no default)."""
    return _HTTP_ACTIONS.get(method.upper()) if isinstance(method, str) else None


def http_resource(path: str) -> str:
    """The resource an HTTP request names: its path, without the query, percent-decoded.

    Raises ``InvalidArgumentError`` for a path that a server behind the check might
    read as another: an encoded '.', '/', '\\', NUL or '%' (``%2e``, ``%2f``,
    ``%5c``, ``%00``, ``%25``), a backslash, or a '.' or '..' segment (also with ';'
    parameters, which some servers drop). Anything else the resource grammar refuses
    is refused later.
    """
    path = path.split("?", 1)[0].split("#", 1)[0]
    if _ENCODED_SEPARATOR.search(path):
        raise InvalidArgumentError(
            "the path spells '.', '/', '\\', NUL or '%' with a "
            "percent sign (%2e, %2f, %5c, %00, %25): refused rather "
            "than guessed"
        )
    try:
        decoded = urllib.parse.unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise InvalidArgumentError("the path's percent escapes are not UTF-8") from None
    if "\\" in decoded:
        raise InvalidArgumentError("the path contains a backslash")
    if any(seg.split(";", 1)[0] in (".", "..") for seg in decoded.split("/")):
        raise InvalidArgumentError("the path has a '.' or '..' segment")
    return decoded
