"""``Governance``: usage, deviation alerts and containment, fed by the audit tally.

The verify path does nothing new: the ``AuditLog`` hands each flush's records
(every ``audit_interval``, 0.2 s by default) to ``observe``, which only queues
them. A task then, per batch: finds deviations (``Baselines``) and raises each
as an alert, once fleet-wide (the store's unique key), applying the agent's
containment policy when this replica's insert won; and adds the batch's usage
rows to the store (``fold_usage``: one upsert per distinct thing seen).

Containment goes through the same store call as an operator's change (an agent
patch with its audit record, then the change feed carries it to every replica),
attributed to the principal ``capgate`` with the alert that caused it; an
operator undoes it as any change (``agent resume``, ``agent update --grant``).

Shadow mode: an agent's policy may carry a shadow ceiling (``shadow``), shared
with the audit log, which records each allow it would deny as ``verify.shadow``;
each (agent, action, prefix) of those raises one ``shadow-deny`` alert, never
contained. The decision itself is always the enforced ceiling's.
``narrow`` drops the grants that allowed a first-seen resource, and revokes a
token a stranger presented (its whole lineage); where that would leave the
ceiling empty, or the deviation is neither, it suspends.

Each replica learns from the decisions it sees, and every ``refresh`` seconds
from the usage rows the fleet wrote (so a prefix one replica saw is not news to
another), and re-reads the policies. Usage not seen for ``retention`` seconds (the
audit's retention) is forgotten by the full replicas every 10 minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from capgate import (
    Agent,
    AgentStatus,
    Ceiling,
    Clock,
    InvalidArgumentError,
    NotFoundError,
    check_id,
)
from capgate_server._baselines import Baselines, Deviation
from capgate_server._usage import fold_usage, prefix_of
from capgate_server.store import (
    AgentPatch,
    AlertRecord,
    AuditEvent,
    Containment,
    GovernancePolicy,
    Store,
    UsageRow,
)

__all__ = ["Governance"]

log = logging.getLogger("capgate.governance")
_QUEUE = 200_000  # records waiting for the task at most (beyond, the oldest are dropped)
_SYSTEM = "capgate"  # the principal of the system's own actions
_MAX_WARMUP = 365 * 86400.0  # seconds
_ALERTS_PER_AGENT = 20  # alerts one replica raises about one agent per window, at most
_ALERT_WINDOW = 600.0  # seconds (monotonic)
_PRUNE_EVERY = 600.0  # seconds between passes forgetting old usage
_SLICE = 1000  # records the detector takes between two pauses
_SLICE_PAUSE = 0.001  # seconds: long enough for grpc's poller thread to get the GIL
_PRUNE_CHUNK = 5000  # usage rows deleted per transaction

Lane = Callable[..., Awaitable[Any]]


class Governance:
    def __init__(
        self,
        store: Store,
        agents: Mapping[str, Agent],
        clock: Clock,
        *,
        read: Lane,
        write: Lane,
        bulk: Lane,
        after_change: Callable[[], Awaitable[None]],
        warmup: float = 86400.0,
        refresh: float = 5.0,
        retention: float = 0.0,
        baselines: Baselines | None = None,
        revoke_for: float = 30 * 86400.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._agents = agents
        self._clock = clock
        self._read = read
        self._write = write  # alerts, containment, policies: the lane of operators' changes
        self._bulk = bulk  # usage rows: the audit's lane, never ahead of a change
        self._after_change = after_change
        self.warmup = warmup
        self._refresh = refresh
        self._retention = retention  # seconds usage rows are kept since last seen; 0: always
        self.baselines = baselines or Baselines()
        self._queue: list[AuditEvent] = []
        self._wake = asyncio.Event()
        self._alerted = asyncio.Event()  # replaced at each alert: wakes the watchers
        self._policies: dict[str, GovernancePolicy] = {}
        self._policy_changes = 0  # set here: a store read begun before is not applied
        self._unwritten: list[UsageRow] = []  # usage rows a failed write left for the next
        # agent -> shadow ceiling, shared with the audit log (changed in place)
        self.shadow: dict[str, Ceiling] = {}
        self._learnt_until = 0.0  # usage rows read up to this last_at
        self._monotonic = monotonic
        self._revoke_for = revoke_for  # a revocation is kept this long (the longest token)
        self._raised: dict[str, list[float]] = {}  # agent -> [window start, alerts in it]
        self._task: asyncio.Task[None] | None = None
        self._stepping = asyncio.Lock()  # one pass at a time: a pass waits for the one under way
        self.dropped = 0
        self.alerts: dict[str, int] = {}  # raised here, by kind (metrics)
        self.containments: dict[str, int] = {}  # applied here, by containment

    # -- fed by the audit log ---------------------------------------------------------

    def observe(self, events: Sequence[AuditEvent]) -> None:
        """A flush's records (called on the event loop; only queues them)."""
        if not events:
            return
        self._queue.extend(events)
        excess = len(self._queue) - _QUEUE
        if excess > 0:
            del self._queue[:excess]
            self.dropped += excess
        self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._catch_up()
        except Exception as e:  # the store is down: learn as it comes back
            log.warning("cannot read usage and policies yet: %s", e)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="governance")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.step()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + self._refresh
        next_prune = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_refresh - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.step()
                if loop.time() >= next_refresh:
                    next_refresh = loop.time() + self._refresh
                    await self._catch_up()
                if self._retention and loop.time() >= next_prune:
                    next_prune = loop.time() + _PRUNE_EVERY
                    await self.prune()
            except Exception as e:  # the store is down: the next batch tries again
                log.warning("governance pass failed: %s", e)

    async def prune(self) -> int:
        """Forget usage not seen for the retention period (as audit records are)."""
        before, total = self._clock() - self._retention, 0
        while True:
            n: int = await self._bulk(self._store.prune_usage, before, _PRUNE_CHUNK)
            total += n
            if n < _PRUNE_CHUNK:
                return total

    async def _catch_up(self) -> None:
        since = max(0.0, self._learnt_until - 60.0)
        rows: list[UsageRow] = await self._read(self._store.usage, "", since)
        self.baselines.learn(rows)
        if rows:
            self._learnt_until = max(self._learnt_until, max(r.last_at for r in rows))
        changes = self._policy_changes
        policies = await self._read(self._store.policies)
        if changes == self._policy_changes:  # else a newer one was set here meanwhile
            self._use_policies(policies)

    def _use_policies(self, policies: Sequence[GovernancePolicy]) -> None:
        self._policies = {p.agent: p for p in policies}
        shadow = {}
        for p in policies:
            if p.shadow:
                try:
                    shadow[p.agent] = Ceiling.parse(p.shadow)
                except Exception as e:  # stored by an older version: say so, keep going
                    log.error("the shadow ceiling of %s does not parse: %s", p.agent, e)
        for gone in set(self.shadow) - set(shadow):
            del self.shadow[gone]
        self.shadow.update(shadow)

    async def step(self) -> None:
        """Detect in the queued records, raise and contain; then write their usage.
        Returns once every record queued before the call is done with."""
        async with self._stepping:
            await self._step()

    async def _step(self) -> None:
        events, self._queue = self._queue, []
        if not events:
            return
        events.sort(key=lambda e: e.at)
        rows = self._unwritten
        self._unwritten = []
        # in slices, with a pause between them, so a full tally never holds the event
        # loop (and every other caller) for long: ~9 us a record, 1,000 at a time
        for start in range(0, len(events), _SLICE):
            if start:
                await asyncio.sleep(_SLICE_PAUSE)
            chunk = events[start : start + _SLICE]
            for d in [
                *self.baselines.observe(chunk, self.policy, self._warm),
                *self._shadow_denies(chunk),
            ]:
                try:
                    await self._raise(d)
                except Exception as e:
                    log.error("cannot raise the alert %r: %s", d.key, e)
            rows += fold_usage(chunk)
        if rows:
            try:
                await self._bulk(self._store.record_usage, rows)
            except Exception:
                self._unwritten = rows[-_QUEUE:]  # the store is down: the next pass writes them
                raise

    def _shadow_denies(self, events: Sequence[AuditEvent]) -> list[Deviation]:
        """Each (agent, action, prefix) the shadow ceiling would deny: one alert."""
        out: dict[str, Deviation] = {}
        for e in events:
            if e.kind != "verify.shadow" or not e.chain:
                continue
            agent, prefix = e.chain[-1], prefix_of(e.resource)
            key = f"{agent}|shadow-deny|{e.action}|{prefix}"
            if key not in out:
                out[key] = Deviation(
                    agent,
                    "shadow-deny",
                    key,
                    f"{agent} would be denied {e.action} on {prefix}/** by its shadow ceiling "
                    "(allowed: shadow mode)",
                    e.at,
                    e.action,
                    e.resource,
                    {"code": e.code, "presenter": e.presenter, "chain": list(e.chain)},
                )
        return list(out.values())

    # -- policies ---------------------------------------------------------------------

    def policy(self, agent_id: str) -> GovernancePolicy:
        return self._policies.get(agent_id) or GovernancePolicy(agent_id)

    def _warm(self, agent_id: str, at: float, policy: GovernancePolicy) -> bool:
        agent = self._agents.get(agent_id)
        if agent is None or agent.status is not AgentStatus.ACTIVE:
            return False
        warmup = policy.warmup if policy.warmup >= 0 else self.warmup
        return at - agent.created_at >= warmup

    async def set_policy(
        self,
        caller: str,
        agent_id: str,
        containment: str,
        sensitivity: float,
        warmup: float,
        shadow: Sequence[str] = (),
    ) -> GovernancePolicy:
        check_id(agent_id, "agent id")
        agent = self._agents.get(agent_id)
        if agent is None or agent.status is AgentStatus.DELETED:
            raise NotFoundError(f"agent {agent_id!r} not found", id=agent_id)
        try:
            mode = Containment(containment or "alert")
        except ValueError:
            raise InvalidArgumentError(
                "containment must be 'alert', 'narrow' or 'suspend'", containment=containment
            ) from None
        if not 0.01 <= sensitivity <= 100:
            raise InvalidArgumentError("sensitivity must be between 0.01 and 100")
        if not warmup <= _MAX_WARMUP or warmup != warmup:  # NaN: not a number
            raise InvalidArgumentError(
                f"warm-up must be between 0 and {_MAX_WARMUP:.0f} "
                "seconds (negative: the server's default)"
            )
        warmup = max(warmup, -1.0)
        if len(shadow) > 256:
            raise InvalidArgumentError("a shadow ceiling holds at most 256 grants")
        ceiling = Ceiling.parse(shadow) if shadow else None  # a bad grant: a clear error
        policy = GovernancePolicy(
            agent_id,
            mode,
            sensitivity,
            warmup,
            tuple(str(g) for g in ceiling.grants) if ceiling else (),
        )
        await self._write(
            self._store.set_policy,
            policy,
            AuditEvent(
                self._clock(),
                caller,
                "governance.policy",
                agent_id,
                detail={
                    "containment": str(mode),
                    "sensitivity": sensitivity,
                    "warmup": warmup,
                    "shadow": " ".join(policy.shadow),
                },
            ),
        )
        self._policy_changes += 1
        self._use_policies([*(p for p in self._policies.values() if p.agent != agent_id), policy])
        return policy

    # -- alerts and containment ----------------------------------------------------------

    def _room(self, agent_id: str) -> bool:
        """Whether another alert about the agent may be raised now: an agent (or whoever
        presents its tokens) probing thousands of new resources raises a bounded number."""
        now = self._monotonic()
        window = self._raised.get(agent_id)
        if window is None or now - window[0] >= _ALERT_WINDOW:
            if len(self._raised) > 10_000:
                self._raised.clear()
            window = self._raised[agent_id] = [now, 0.0]
        if window[1] >= _ALERTS_PER_AGENT:
            if window[1] == _ALERTS_PER_AGENT:
                log.warning(
                    "more than %d alerts about %s in %.0fs: the rest of the window's "
                    "are not raised (the audit keeps every decision)",
                    _ALERTS_PER_AGENT,
                    agent_id,
                    _ALERT_WINDOW,
                )
            window[1] += 1
            self.alerts["suppressed"] = self.alerts.get("suppressed", 0) + 1
            return False
        window[1] += 1
        return True

    async def _raise(self, d: Deviation) -> None:
        if not self._room(d.agent):
            return
        policy = self.policy(d.agent)
        if d.kind == "shadow-deny":  # what shadow mode is for: watch, never act
            policy = GovernancePolicy(d.agent)
        record = AlertRecord(
            key=d.key[:512],
            agent=d.agent,
            at=d.at,
            kind=d.kind,
            reason=d.reason[:1024],
            detail={**d.detail, "action": d.action, "resource": d.resource},
            containment=str(policy.containment),
        )
        audit = AuditEvent(
            self._clock(),
            _SYSTEM,
            "governance.alert",
            d.agent,
            True,
            d.kind,
            d.reason,
            detail={"containment": str(policy.containment)},
        )
        stored: AlertRecord | None = await self._write(self._store.raise_alert, record, audit)
        if stored is None:  # another replica raised it
            return
        log.warning("alert %d: %s (containment: %s)", stored.seq, stored.reason, stored.containment)
        self.alerts[d.kind] = self.alerts.get(d.kind, 0) + 1
        if policy.containment is not Containment.ALERT:
            await self._contain(stored, d, policy.containment)
        woken, self._alerted = self._alerted, asyncio.Event()
        woken.set()

    async def _contain(self, alert: AlertRecord, d: Deviation, mode: Containment) -> None:
        agent = self._agents.get(d.agent)
        if agent is None or agent.status is not AgentStatus.ACTIVE:
            return
        patch, done = AgentPatch(status=AgentStatus.SUSPENDED), "suspend"
        token_id = str(d.detail.get("token_id", ""))
        if mode is Containment.NARROW and d.kind == "new-presenter" and token_id:
            await self._revoke(alert, d, token_id)
            return
        if mode is Containment.NARROW and d.kind == "new-resource" and d.resource:
            kept = tuple(g for g in agent.ceiling.grants if not g.allows(d.action, d.resource))
            if len(kept) == len(agent.ceiling.grants):
                return  # no grant allowed it: the ceiling already denies it
            if kept:
                patch, done = AgentPatch(ceiling=Ceiling(kept)), "narrow"
        detail: dict[str, object] = {
            "alert": alert.seq,
            "containment": done,
            "reason": alert.reason,
        }
        if patch.ceiling is not None:
            detail["ceiling"] = str(patch.ceiling)
        await self._write(
            self._store.patch_agent,
            d.agent,
            patch,
            AuditEvent(self._clock(), _SYSTEM, "governance.contain", d.agent, detail=detail),
        )
        self.containments[done] = self.containments.get(done, 0) + 1
        log.warning("contained %s (%s) after alert %d", d.agent, done, alert.seq)
        await self._after_change()

    async def _revoke(self, alert: AlertRecord, d: Deviation, token_id: str) -> None:
        """A token presented by a stranger: revoke its lineage (everything derived from
        the token), not the agent."""
        now = self._clock()
        reason = f"governance alert {alert.seq}: {alert.reason}"[:512]
        chain = d.detail.get("chain")
        await self._write(
            self._store.revoke,
            token_id,
            now,
            now + self._revoke_for,
            _SYSTEM,
            reason,
            AuditEvent(
                now,
                _SYSTEM,
                "revoke",
                token_id,
                chain=tuple(str(a) for a in chain) if isinstance(chain, list) else (),
                detail={"reason": reason, "alert": alert.seq},
            ),
        )
        await self._write(
            self._store.append_audit,
            [
                AuditEvent(
                    now,
                    _SYSTEM,
                    "governance.contain",
                    d.agent,
                    detail={
                        "alert": alert.seq,
                        "containment": "revoke",
                        "token_id": token_id,
                        "reason": alert.reason,
                    },
                )
            ],
        )
        self.containments["revoke"] = self.containments.get("revoke", 0) + 1
        log.warning("revoked token %s of %s after alert %d", token_id, d.agent, alert.seq)
        await self._after_change()

    async def list_alerts(
        self, after_seq: int = 0, agent: str = "", limit: int = 100, newest_first: bool = False
    ) -> list[AlertRecord]:
        """Alerts after ``after_seq``, oldest first; or the newest ``limit``, newest first."""
        if not 1 <= limit <= 1000:
            raise InvalidArgumentError("limit must be between 1 and 1000")
        found: list[AlertRecord] = await self._read(
            self._store.alerts, after_seq, agent, limit, newest_first
        )
        return found

    async def watch(
        self, after_seq: int = 0, agent: str = "", poll: float = 0.5
    ) -> AsyncIterator[AlertRecord]:
        """Alerts after ``after_seq`` as they are raised anywhere in the fleet."""
        while True:
            waiting = self._alerted
            for a in await self.list_alerts(after_seq, agent, 100):
                after_seq = a.seq
                yield a
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll):
                    await waiting.wait()

    async def usage(
        self, agent: str = "", since: float = 0.0, limit: int = 100_000
    ) -> list[UsageRow]:
        """Usage rows, the most recently seen first, at most ``limit``."""
        rows: list[UsageRow] = await self._read(self._store.usage, agent, since, limit)
        return rows
