"""``KeyRotation``: adding signing keys and retiring old ones, across every replica.

A new key is written sealed; every replica picks it up from the change feed and
signs with the newest key it knows, newest as the store orders keys (a
generation it assigns), never as a replica's clock dates them. Tokens under
older keys keep verifying until their key is retired; then they deny, on every
replica, at its next sync.
"""

from __future__ import annotations

from capgate import FailedPreconditionError, NotFoundError
from capgate_server._replica import Replica
from capgate_server.store import AuditEvent, Principal, RootKeyRecord

__all__ = ["KeyRotation"]


class KeyRotation:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    @property
    def signing_id(self) -> str | None:
        """The root key that signs new tokens (the newest active one)."""
        return self.replica.root_keys.signing_id

    async def keys(self) -> list[RootKeyRecord]:
        await self.replica.sync()
        return await self.replica.call(self.replica.store.root_keys)

    async def rotate(self, caller: Principal) -> RootKeyRecord:
        now = self.replica.clock()
        record = self.replica.root_keys.new_record(now)
        await self.replica.call(
            self.replica.store.add_root_key,
            record,
            AuditEvent(now, caller.id, "key.rotate", record.id),
        )
        await self.replica.sync()
        return record

    async def retire(self, caller: Principal, key_id: str) -> RootKeyRecord:
        records = {r.id: r for r in await self.keys()}
        record = records.get(key_id)
        if record is None or record.retired_at is not None:
            raise NotFoundError(f"no active root key {key_id!r}", id=key_id)
        active = [r for r in records.values() if r.retired_at is None]
        if len(active) == 1:
            raise FailedPreconditionError(
                f"{key_id} is the only active key: rotate first, then retire it"
            )
        now = self.replica.clock()
        await self.replica.call(
            self.replica.store.retire_root_key,
            key_id,
            now,
            AuditEvent(now, caller.id, "key.retire", key_id),
        )
        await self.replica.sync()
        return RootKeyRecord(record.id, record.sealed, record.created_at, now, record.generation)
