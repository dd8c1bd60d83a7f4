"""Principal credentials: random, shown once, stored only as a SHA-256 hash.

A credential is ``cg_`` + 43 base64url characters (256 random bits); with that
much entropy a fast hash is the right one (nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["hash_credential", "new_credential"]

PREFIX = "cg_"


def new_credential() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_credential(credential: str) -> str:
    return hashlib.sha256(credential.encode("utf-8", "surrogateescape")).hexdigest()
