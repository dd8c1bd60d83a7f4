"""Principal credentials: random, shown once, stored only as a SHA-256 hash.

A credential is ``cg_`` + 43 base64url characters (256 random bits); with that
much entropy a fast hash is the right one (nothing to brute-force).
"""

from __future__ import annotations

import hashlib
import secrets

from capgate import FailedPreconditionError, check_id
from capgate_server._keyring import KeyEncryptionKey
from capgate_server._ledger import vouch
from capgate_server.store import AuditEvent, Principal, Role, Store

__all__ = ["hash_credential", "new_credential", "recover_admin"]

PREFIX = "cg_"


def new_credential() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def hash_credential(credential: str) -> str:
    return hashlib.sha256(credential.encode("utf-8", "surrogateescape")).hexdigest()


def recover_admin(
    store: Store, principal_id: str, now: float, by: str, kek: KeyEncryptionKey | None = None
) -> str:
    """A fresh credential for an admin, written straight to the store (no server needed).

    For an operator who lost every admin credential but can reach the data
    directory (or the database): the admin is created if missing and enabled if
    disabled; its old credential stops working. Returns the new credential; the
    change is audited as made by ``by``: vouched for with the store's ledger key when
    ``kek`` is given, else kept out of the ledger and reported as unvouched when the
    servers seal it.
    """
    check_id(principal_id, "principal id")
    store.migrate()
    if kek is not None:
        vouch(store, kek, now)
    credential = new_credential()
    digest = hash_credential(credential)
    event = AuditEvent(now, by, "principal.recover", principal_id)
    found = store.get_principal(principal_id)
    if found is None:
        store.create_principal(Principal(principal_id, Role.ADMIN, now), digest, event)
        return credential
    if found.role is not Role.ADMIN:
        raise FailedPreconditionError(f"{principal_id!r} is a {found.role}, not an admin")
    store.set_credential(principal_id, digest, event)
    if found.disabled:
        store.set_principal_disabled(
            principal_id, False, AuditEvent(now, by, "principal.enable", principal_id)
        )
    return credential
