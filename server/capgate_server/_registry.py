"""``Registry``: registering and controlling agents and other principals.

Every change is written (with its audit record) before the call returns, and
applied to this replica's live state at once, so it holds from the very next
verification: suspending an agent, narrowing its ceiling or revoking all its
tokens takes effect on live tokens without touching them.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Sequence
from dataclasses import dataclass

from capgate import (
    MAX_DEPTH,
    Agent,
    AgentStatus,
    ApprovalRule,
    CaveatSyntaxError,
    Ceiling,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    check_id,
    load_public_key,
    parse_caveat,
    public_key_id,
)
from capgate_server._credentials import hash_credential, new_credential
from capgate_server._replica import Replica
from capgate_server.store import AgentPatch, AuditEvent, Principal, Role

__all__ = ["AgentUpdate", "Registry"]


@dataclass(frozen=True)
class AgentUpdate:
    ceiling: Sequence[str] | None = None
    max_ttl: int | None = None
    max_depth: int | None = None
    description: str | None = None
    require_proof: bool | None = None
    rate: str | None = None  # "" removes the limit
    approvals: Sequence[ApprovalRule] | None = None  # replaces the agent's approval rules


_MAX_RULES = 16  # standing approval rules per agent (each adds a caveat to its tokens)


def _rules(rules: Sequence[ApprovalRule]) -> tuple[ApprovalRule, ...]:
    if len(rules) > _MAX_RULES:
        raise InvalidArgumentError(f"an agent has at most {_MAX_RULES} approval rules")
    return tuple(rules)


# names the audit log gives to no principal: the system's own actions, and a login
# that failed before anyone was identified. A principal or agent by one of these
# names would be confused with them in every record and report.
RESERVED_IDS = frozenset({"capgate", "unknown"})


def _not_reserved(identifier: str) -> None:
    if identifier.lower() in RESERVED_IDS:
        raise InvalidArgumentError(
            f"{identifier!r} is reserved: the audit log names "
            + ("the system's own actions" if identifier.lower() == "capgate" else "failed logins")
            + " with it"
        )


class Registry:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica

    # -- validation ------------------------------------------------------------------------

    def _ceiling(self, grants: Sequence[str]) -> Ceiling:
        if not grants:
            raise InvalidArgumentError("an agent needs at least one grant in its ceiling")
        if len(grants) > 256:
            raise InvalidArgumentError("a ceiling holds at most 256 grants")
        return Ceiling.parse(grants)

    @staticmethod
    def _rate(rate: str) -> str:
        """An agent's rate as stored: 'N/PERIOD' (like 100/1m), or '' for none."""
        rate = rate.strip()
        if rate:
            try:
                parse_caveat(f"rate <= {rate}")
            except CaveatSyntaxError:
                raise InvalidArgumentError(
                    f"rate {rate!r}: want N/PERIOD, N from 1 and a period like 1s, 10m, 1h, "
                    "1d (e.g. 100/1m)",
                    rate=rate,
                ) from None
        return rate

    def _ttl(self, ttl: int | None) -> int:
        cap = self.replica.settings.max_ttl_cap
        if ttl is None or ttl == 0:
            return min(self.replica.settings.default_agent_ttl, cap)
        if ttl < 0 or ttl > cap:
            raise InvalidArgumentError(f"max TTL must be between 1s and {cap}s", max_ttl=ttl)
        return ttl

    @staticmethod
    def _depth(depth: int) -> int:
        if not 0 <= depth <= MAX_DEPTH:
            raise InvalidArgumentError(f"max depth must be between 0 and {MAX_DEPTH}")
        return depth

    @staticmethod
    def _text(value: str, what: str, limit: int = 256) -> str:
        if len(value) > limit or not value.isprintable():
            raise InvalidArgumentError(f"{what} must be printable text of at most {limit} chars")
        return value

    def _event(self, caller: Principal, kind: str, subject: str, **detail: object) -> AuditEvent:
        return AuditEvent(self.replica.clock(), caller.id, kind, subject, detail=dict(detail))

    # -- agents --------------------------------------------------------------------------

    async def create_agent(
        self,
        caller: Principal,
        agent_id: str,
        grants: Sequence[str],
        *,
        max_ttl: int | None = None,
        max_depth: int | None = None,
        owner: str = "",
        description: str = "",
        public_key: bytes | None = None,
        require_proof: bool = False,
        approvals: Sequence[ApprovalRule] = (),
        rate: str = "",
    ) -> tuple[Agent, str]:
        _not_reserved(check_id(agent_id, "agent id"))
        keys = {}
        if public_key:
            raw = load_public_key(public_key)
            keys[public_key_id(raw)] = raw
        agent = Agent(
            id=agent_id,
            ceiling=self._ceiling(grants),
            owner=self._text(owner or caller.id, "owner"),
            description=self._text(description, "description", 1024),
            max_ttl=self._ttl(max_ttl),
            max_depth=self._depth(
                self.replica.settings.default_max_depth if max_depth is None else max_depth
            ),
            created_at=self.replica.clock(),
            require_proof=require_proof,
            approvals=_rules(approvals),
            rate=self._rate(rate),
        ).with_changes(public_keys=keys)
        credential = new_credential()
        event = self._event(
            caller,
            "agent.create",
            agent_id,
            ceiling=str(agent.ceiling),
            max_ttl=agent.max_ttl,
            max_depth=agent.max_depth,
            **({"require_proof": True} if require_proof else {}),
            **({"rate": agent.rate} if agent.rate else {}),
            **({"approvals": [str(r) for r in approvals]} if approvals else {}),
        )
        await self.replica.call(
            self.replica.store.create_agent, agent, hash_credential(credential), event
        )
        await self.replica.sync()
        return self.replica.agents.get(agent_id, agent), credential

    def get(self, caller: Principal, agent_id: str) -> Agent:
        if caller.role not in (Role.ADMIN, Role.OPERATOR) and caller.id != agent_id:
            raise PermissionDeniedError("an agent may only read its own record")
        agent = self.replica.agents.get(agent_id)
        if agent is None or agent.status is AgentStatus.DELETED:
            raise NotFoundError(f"agent {agent_id!r} not found", id=agent_id)
        return agent

    def list(self) -> list[Agent]:
        return sorted(
            (a for a in self.replica.agents.values() if a.status is not AgentStatus.DELETED),
            key=lambda a: a.id,
        )

    async def delete(self, caller: Principal, agent_id: str) -> None:
        """Delete an agent: its credential and keys go, and every token it holds or
        that passes through it denies at once and for good (registering the id again
        does not bring them back)."""
        self.get(caller, agent_id)
        cutoff_ms = math.ceil(await self.replica.call(self._cutoff, agent_id) * 1000)
        await self.replica.call(
            self.replica.store.delete_agent,
            agent_id,
            cutoff_ms,
            self._event(caller, "agent.delete", agent_id, before_ms=cutoff_ms),
        )
        await self.replica.sync()

    async def _patch(
        self,
        caller: Principal,
        agent_id: str,
        kind: str,
        detail: dict[str, object],
        patch: AgentPatch,
    ) -> Agent:
        """Write only what changes, so changes made at once on two replicas compose."""
        self.get(caller, agent_id)  # exists, and the caller may see it
        await self.replica.call(
            self.replica.store.patch_agent,
            agent_id,
            patch,
            self._event(caller, kind, agent_id, **detail),
        )
        await self.replica.sync()
        return self.replica.agents[agent_id]

    async def update(self, caller: Principal, agent_id: str, update: AgentUpdate) -> Agent:
        if caller.role is Role.OPERATOR:
            self._only_narrows(caller, agent_id, update)
        patch = AgentPatch(
            ceiling=None if update.ceiling is None else self._ceiling(update.ceiling),
            max_ttl=None if update.max_ttl is None else self._ttl(update.max_ttl),
            max_depth=None if update.max_depth is None else self._depth(update.max_depth),
            description=None
            if update.description is None
            else self._text(update.description, "description", 1024),
            require_proof=update.require_proof,
            approvals=None if update.approvals is None else _rules(update.approvals),
            rate=None if update.rate is None else self._rate(update.rate),
        )
        changed = (
            ("ceiling", patch.ceiling),
            ("max_ttl", patch.max_ttl),
            ("max_depth", patch.max_depth),
            ("description", patch.description),
            ("require_proof", patch.require_proof),
            ("rate", patch.rate),
        )
        detail: dict[str, object] = {k: str(v) for k, v in changed if v is not None}
        if patch.approvals is not None:
            detail["approvals"] = "; ".join(str(r) for r in patch.approvals) or "none"
        if not detail:
            raise InvalidArgumentError("nothing to update")
        return await self._patch(caller, agent_id, "agent.update", detail, patch)

    def _only_narrows(self, caller: Principal, agent_id: str, update: AgentUpdate) -> None:
        """An operator changes a ceiling only to one inside it, and nothing else."""
        others = [
            f
            for f in ("max_ttl", "max_depth", "description", "require_proof", "rate", "approvals")
            if getattr(update, f) is not None
        ]
        if others or update.ceiling is None:
            raise PermissionDeniedError("an operator may only narrow an agent's ceiling")
        current = self.get(caller, agent_id).ceiling
        wider = [str(g) for g in self._ceiling(update.ceiling).grants if not current.covers(g)]
        if wider:
            raise PermissionDeniedError(
                f"an operator may only narrow a ceiling; not inside the current one: "
                f"{', '.join(wider)}",
                agent=agent_id,
            )

    async def set_status(self, caller: Principal, agent_id: str, status: AgentStatus) -> Agent:
        kind = "agent.suspend" if status is AgentStatus.SUSPENDED else "agent.resume"
        return await self._patch(caller, agent_id, kind, {}, AgentPatch(status=status))

    async def revoke_all(self, caller: Principal, agent_id: str) -> Agent:
        """Bump the epoch: every token issued to or delegated through the agent until now denies.

        "Now" is the latest of this replica's clock, the store's and the latest hop into
        the agent the store has recorded, so no replica's slow clock leaves a token
        another one dated "later" alive.
        """
        self.get(caller, agent_id)
        cutoff_ms = math.ceil(await self.replica.call(self._cutoff, agent_id) * 1000)
        return await self._patch(
            caller,
            agent_id,
            "agent.revoke-all",
            {"before_ms": cutoff_ms},
            AgentPatch(revoke_before_ms=cutoff_ms),
        )

    def _cutoff(self, agent_id: str) -> float:
        store = self.replica.store
        return max(self.replica.clock(), store.clock() or 0.0, store.latest_hop_into(agent_id))

    async def add_key(self, caller: Principal, agent_id: str, public_key: bytes) -> Agent:
        raw = load_public_key(public_key)
        kid = public_key_id(raw)
        if kid in self.get(caller, agent_id).public_keys:
            raise FailedPreconditionError(f"key {kid} is already registered for {agent_id!r}")
        return await self._patch(
            caller, agent_id, "agent.key-add", {"key_id": kid}, AgentPatch(add_key=(kid, raw))
        )

    async def remove_key(self, caller: Principal, agent_id: str, key_id: str) -> Agent:
        if key_id not in self.get(caller, agent_id).public_keys:
            raise NotFoundError(f"agent {agent_id!r} has no key {key_id!r}")
        return await self._patch(
            caller, agent_id, "agent.key-remove", {"key_id": key_id}, AgentPatch(remove_key=key_id)
        )

    # -- other principals --------------------------------------------------------------------

    async def create_principal(
        self, caller: Principal, principal_id: str, role: str
    ) -> tuple[Principal, str]:
        _not_reserved(check_id(principal_id, "principal id"))
        if role not in (Role.SERVICE, Role.ADMIN, Role.APPROVER, Role.OPERATOR):
            raise InvalidArgumentError(
                "role must be 'service', 'approver', 'operator' or 'admin' (agents: create-agent)"
            )
        principal = Principal(principal_id, Role(role), self.replica.clock())
        credential = new_credential()
        await self.replica.call(
            self.replica.store.create_principal,
            principal,
            hash_credential(credential),
            self._event(caller, "principal.create", principal_id, role=role),
        )
        return principal, credential

    async def principals(self) -> builtins.list[Principal]:
        return await self.replica.read(self.replica.store.list_principals)

    async def _principal(self, principal_id: str) -> Principal:
        check_id(principal_id, "principal id")
        found = await self.replica.read(self.replica.store.get_principal, principal_id)
        agent = self.replica.agents.get(principal_id)
        if found is None or (agent is not None and agent.status is AgentStatus.DELETED):
            raise NotFoundError(f"principal {principal_id!r} not found", id=principal_id)
        return found

    async def set_disabled(self, caller: Principal, principal_id: str, disabled: bool) -> Principal:
        """Disable (or enable again) any principal's credential; it takes effect at once."""
        target = await self._principal(principal_id)
        if disabled and target.role is Role.ADMIN:
            admins = [
                p
                for p in await self.principals()
                if p.role is Role.ADMIN and not p.disabled and p.id != principal_id
            ]
            if not admins:
                raise FailedPreconditionError(
                    f"{principal_id!r} is the last enabled admin; enable or create another "
                    "first (a lost admin is recovered with `capgate admin recover`)"
                )
        kind = "principal.disable" if disabled else "principal.enable"
        await self.replica.call(
            self.replica.store.set_principal_disabled,
            principal_id,
            disabled,
            self._event(caller, kind, principal_id),
        )
        await self.replica.sync()
        return await self._principal(principal_id)

    async def rotate_credential(
        self, caller: Principal, principal_id: str
    ) -> tuple[Principal, str]:
        """A new credential for the principal; the old one stops working at once."""
        target = await self._principal(principal_id)
        credential = new_credential()
        await self.replica.call(
            self.replica.store.set_credential,
            principal_id,
            hash_credential(credential),
            self._event(caller, "principal.rotate", principal_id),
        )
        await self.replica.sync()
        return target, credential
