"""``Replica``: one server's live view of the store, and the verifier over it.

The replica holds in memory what every verification reads — agents, root
keys, revoked ids — and follows the store's change feed to stay current: at
once after its own writes, on a push from the database where the backend has
one, and by a periodic catch-up read so a missed push cannot leave it stale.
If it has not heard from the store for longer than ``stale_after`` it fails
closed: every verification denies with the reason, and health says NOT_SERVING.

Worker processes of one host (``capgate serve --workers N``) share
``Siblings``: a write's ``sync`` publishes its change to the host and waits for
the siblings to apply it, and a worker behind the host's version catches up
before it decides (``behind``, ``catch_up``), or fails closed.

Staleness runs on the monotonic clock; forgetting revocations on ``trusted``
(``TrustedClock``), which reads the store's clock now and then and reports
(``on_clock``) while this replica's clock disagrees with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from capgate import (
    Agent,
    AlreadyExistsError,
    Clock,
    Directory,
    InvalidArgumentError,
    RevocationSet,
    UnavailableError,
    Verifier,
    system_clock,
)
from capgate_server._audit import AuditLog
from capgate_server._budgets import Budgets
from capgate_server._clocks import TrustedClock
from capgate_server._credentials import hash_credential, new_credential
from capgate_server._governance import Governance
from capgate_server._hops import HopLedger
from capgate_server._keyring import KeyEncryptionKey, RootKeys
from capgate_server._ledger import AuditLedger
from capgate_server._limits import ResourceLimits
from capgate_server._nonces import NonceLedger
from capgate_server._siblings import Siblings
from capgate_server.store import (
    AuditEvent,
    Change,
    ChangeKind,
    Principal,
    Role,
    SessionTimeouts,
    Store,
)

__all__ = ["Replica", "Settings"]

log = logging.getLogger("capgate.replica")
_PAGE = 5000  # changes read per query while catching up
_AUTH_LOOKUPS = 2  # unknown credentials looked up in the store at once (the feed's lane)
APPROVAL_KEEP = 7 * 86400.0  # seconds a lapsed approval request is kept for listing
P = ParamSpec("P")
T = TypeVar("T")


_YEAR = 365 * 86400.0
# Every number a server is configured with, and the range it must fall in (NaN and
# the infinities fall in none). Outside them a setting is a typo, and some would
# fail open: a negative prune margin forgets revocations before their tokens
# expire, a NaN staleness bound never calls a replica stale.
_BOUNDS: dict[str, tuple[float, float, str]] = {  # name: least, most, unit
    "max_ttl_cap": (1, 10 * _YEAR, "s"),
    "default_agent_ttl": (1, 10 * _YEAR, "s"),
    "default_max_depth": (0, 16, ""),
    "audit_interval": (0.01, 60, "s"),
    "audit_retention": (0, 100 * _YEAR, "s"),  # 0: records are kept for ever
    "poll_interval": (0.01, 86400, "s"),
    "stale_after": (0.1, 86400, "s"),
    "cache_size": (1, 1 << 30, ""),
    "memo_size": (0, 1 << 30, ""),
    "tree_max_nodes": (1, 10_000_000, ""),
    "store_threads": (1, 64, ""),
    "prune_margin": (0, 10 * _YEAR, "s"),
    "prune_interval": (0.1, 86400, "s"),
    "max_clock_skew": (0.001, 86400, "s"),
    "clock_check_interval": (0.1, 86400, "s"),
    "shutdown_grace": (0, 86400, "s"),
    "audit_checkpoint_every": (0.1, 86400, "s"),
    "budget_block": (1, 1 << 20, ""),
    "budget_idle": (0.01, 86400, "s"),
    "proof_window": (0.1, 86400, "s"),
    "approval_ttl": (1, 10 * _YEAR, "s"),
    "approval_max_ttl": (1, 10 * _YEAR, "s"),
    "approval_wait": (1, 10 * _YEAR, "s"),
    "governance_warmup": (0, 10 * _YEAR, "s"),
}
# the settings `capgate serve` takes as flags, by those names in its errors
_FLAGS = {
    "max_ttl_cap": "--max-ttl",
    "audit_retention": "--audit-retention",
    "poll_interval": "--poll-interval",
    "stale_after": "--stale-after",
    "prune_margin": "--prune-margin",
    "max_clock_skew": "--max-clock-skew",
    "shutdown_grace": "--shutdown-grace",
    "budget_block": "--budget-block",
    "proof_window": "--proof-window",
    "approval_ttl": "--approval-ttl",
    "approval_max_ttl": "--approval-max-ttl",
    "approval_wait": "--approval-wait",
    "governance_warmup": "--governance-warmup",
    "db_timeouts.statement": "--db-statement-timeout",
    "db_timeouts.lock": "--db-lock-timeout",
    "db_timeouts.idle_in_transaction": "--db-idle-timeout",
}


def _number(x: float) -> str:
    return f"{x:,.0f}" if x >= 1000 else f"{x:g}"


@dataclass
class Settings:
    """Server configuration; the CLI fills it from flags. ``check()`` says whether
    every number in it is in range (the server checks before it starts)."""

    data_dir: Path = field(default_factory=lambda: Path(".capgate"))
    listen: str = "127.0.0.1:50051"
    store_url: str | None = None
    kek_file: Path | None = None
    role: str = "full"  # "full" or "verifier"
    max_ttl_cap: int = 30 * 86400  # no token lives longer than this
    default_agent_ttl: int = 3600
    default_max_depth: int = 3
    audit_interval: float = 0.2
    audit_retention: float = 90 * 86400  # seconds verify and change records are kept; 0: always
    poll_interval: float = 1.0
    stale_after: float = 10.0
    cache_size: int = 32768
    memo_size: int = 100_000  # remembered allows; any state change voids them all
    tree_max_nodes: int = 2000  # nodes one GetTokenTree returns (the rest: truncated)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    insecure: bool = False
    store_threads: int = 1
    # a revocation is forgotten only this long after every token it names has expired
    prune_margin: float = 3600.0
    prune_interval: float = 300.0
    max_clock_skew: float = 2.0  # warn while this replica's clock is further from the store's
    clock_check_interval: float = 10.0
    db_timeouts: SessionTimeouts = field(default_factory=SessionTimeouts)
    shutdown_grace: float = 5.0  # SIGTERM: time to finish the calls already accepted
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    metrics_listen: str = ""  # HOST:PORT for Prometheus' /metrics; "" serves none
    console_listen: str = ""  # HOST:PORT for the operator console; "" serves none
    replica_id: str = ""  # names this replica in the records it writes (made at first start)
    audit_checkpoint_every: float = 60.0  # seconds between kept checkpoints of the ledger
    require_proof: bool = False  # every token needs its holder's proof of possession
    budget_block: int = 256  # most uses of one budget a replica leases at once
    budget_idle: float = 5.0  # seconds before a replica gives back uses it has not spent
    proof_window: float = 30.0  # a proof is accepted this long either side of its instant
    approval_ttl: float = 300.0  # an approval lasts this long once granted (approvers may
    approval_max_ttl: float = 3600.0  # choose, up to this)
    approval_wait: float = 3600.0  # a request for approval waits this long for approvers
    # Envoy's ext_authz (envoy.service.auth.v3.Authorization/Check; needs capgate[envoy])
    ext_authz: bool = False
    ext_authz_header: str = "authorization"  # where the token is: "Capgate <token>"
    spiffe_prefix: str = ""  # peer principal PREFIX+AGENT presents as AGENT; "": none does
    governance: bool = True  # usage, deviation alerts and containment (docs/governance.md)
    governance_warmup: float = 86400.0  # seconds an agent's baseline learns before alerting
    reuse_port: bool = False  # a worker: share the address with the host's other workers

    def check(self) -> None:
        """Raise ``InvalidArgumentError`` naming the first number out of its range."""
        timeouts = self.db_timeouts
        values: list[tuple[str, float, tuple[float, float, str]]] = [
            (name, getattr(self, name), bounds) for name, bounds in _BOUNDS.items()
        ]
        values += [  # 0 turns a session timeout off
            (f"db_timeouts.{name}", getattr(timeouts, name), (0, 86400, "s"))
            for name in ("statement", "lock", "idle_in_transaction")
        ]
        for name, value, (least, most, unit) in values:
            if type(value) not in (int, float) or not least <= value <= most:
                raise InvalidArgumentError(
                    f"{_FLAGS.get(name, name)} must be from {_number(least)} to "
                    f"{_number(most)}{unit}, not {value!r}"
                )
        if self.approval_ttl > self.approval_max_ttl:
            raise InvalidArgumentError("--approval-ttl is longer than --approval-max-ttl")


class Replica:
    """Owns the store connection, the live state and the audit log of one server."""

    def __init__(
        self,
        store: Store,
        kek: KeyEncryptionKey,
        settings: Settings,
        clock: Clock = system_clock,
        monotonic: Clock = time.monotonic,
        siblings: Siblings | None = None,
    ) -> None:
        self.store = store
        self.siblings = siblings  # the host's other workers, if any
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.trusted = TrustedClock(clock, monotonic, settings.max_clock_skew)
        self.on_clock: list[Callable[[bool], None]] = []
        self.root_keys = RootKeys(kek)
        self.agents = Directory()
        self.revocations = RevocationSet()
        limits = settings.limits
        ledger = HopLedger(lambda hops: self.call_soon(self.store.record_delegations, hops))
        self.verifier = Verifier(
            self.root_keys.active,
            self.agents,
            self.revocations,
            clock=clock,
            cache_size=settings.cache_size,
            cache_bytes=limits.chain_cache_bytes,
            memo_size=settings.memo_size,
            memo_bytes=limits.memo_bytes,
            prefix_bytes=limits.prefix_bytes,
            caveat_bytes=limits.caveat_cache_bytes,
            on_first_allow=ledger,
            counts_budgets=True,
        )
        self.ledger = AuditLedger(
            store,
            kek,
            clock,
            interval=settings.audit_interval,
            checkpoint_every=settings.audit_checkpoint_every,
        )
        # usage, baselines and containment, fed by the audit tally's flushes
        self.governance = Governance(
            store,
            self.agents,
            clock,
            read=self.read,
            write=self.call,
            bulk=self._on_audit_lane,
            after_change=self.sync,
            warmup=settings.governance_warmup,
            retention=settings.audit_retention if settings.role == "full" else 0.0,
            revoke_for=settings.max_ttl_cap,
        )
        self.audit = AuditLog(
            self._write_audit,
            observe=self.governance.observe if settings.governance else None,
            shadow=self.governance.shadow,
            prune=self.ledger.prune if settings.role == "full" else None,
            on_written=self.ledger.wake,
            clock=clock,
            interval=settings.audit_interval,
            retention=settings.audit_retention,
            tally_bytes=limits.audit_tally_bytes,
            backlog=limits.audit_backlog,
            rows_per_write=limits.audit_rows_per_write,
            denies_per_caller=limits.audit_denies_per_principal,
        )
        self.nonces = NonceLedger(store, self.trusted.now)  # proofs of possession, redeemed once
        # 'uses' and 'rate' caveats and agents' rates, counted fleet-wide in leased blocks
        self.budgets = Budgets(
            store,
            self.trusted.now,
            block=settings.budget_block,
            idle=settings.budget_idle,
            new_per_token=limits.new_budgets_per_token,
        )
        self._principals: dict[str, Principal] = {}
        # Three lanes to the store, each a thread with its own connection, so a slow
        # or blocked write never stops the replica from reading the change feed, and
        # a flood of decision records never delays a revocation.
        self._executor = ThreadPoolExecutor(
            max_workers=settings.store_threads, thread_name_prefix="capgate-store"
        )
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capgate-feed")
        self._auditor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="capgate-audit")
        self._seq = 0
        # a flood of unknown credentials must not queue ahead of the change feed
        self._auth_lookups = asyncio.Semaphore(_AUTH_LOOKUPS)
        self._sync_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.last_contact = monotonic()
        self.fresh_until = self.last_contact + settings.stale_after  # monotonic deadline
        self.on_freshness: list[Callable[[bool], None]] = []
        self.on_approvals: list[Callable[[], None]] = []  # a request was made or decided
        self._fresh = True
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

    # -- running blocking store calls ------------------------------------------------------

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store write (or a read that must follow this replica's own writes)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def read(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a store read on the feed lane: never queued behind a write."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, lambda: fn(*args, **kwargs))

    async def _write_audit(self, events: Sequence[AuditEvent]) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._auditor, self.store.append_audit, events)

    async def _on_audit_lane(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a bulk governance write (usage) on the audit lane: never ahead of a change."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._auditor, lambda: fn(*args, **kwargs))

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> str | None:
        """Migrate, load, make sure a signing key and an admin exist.

        Returns a new admin credential when this start created the first admin.
        """
        await self.call(self.store.migrate)
        await self.check_clock()
        await self._load()
        if self.root_keys.signing_id is None and self.settings.role == "full":
            await self.call(self.store.add_root_key, self.root_keys.new_record(self.clock()))
            await self._sync()
        credential = None
        await self.ledger.start()  # first: every record written from here on is vouched for
        full = self.settings.role == "full"
        if full and await self.call(self.store.get_principal, "admin") is None:
            credential = new_credential()
            principal = Principal("admin", Role.ADMIN, self.clock())
            try:
                await self.call(
                    self.store.create_principal,
                    principal,
                    hash_credential(credential),
                    AuditEvent(self.clock(), "capgate", "principal.create", "admin"),
                )
            except AlreadyExistsError:  # another replica starting at the same moment won
                credential = None
        self.audit.start()
        if self.settings.governance:
            await self.governance.start()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._follow(), name="follow-store"))
        self._tasks.append(loop.create_task(self._watch(), name="freshness"))
        self._tasks.append(loop.create_task(self._prune(), name="prune-revocations"))
        self._tasks.append(loop.create_task(self._watch_clock(), name="clock"))
        self._tasks.append(loop.create_task(self.budgets.run(), name="budgets"))
        if self.siblings is not None:
            self.siblings.start(self._catch_up_to)
        listen = getattr(self.store, "listen", None)
        if listen is not None:  # the backend pushes changes: wake at once
            self._listener = threading.Thread(
                target=listen,
                args=(lambda: loop.call_soon_threadsafe(self.poke), self._stop),
                name="capgate-listen",
                daemon=True,
            )
            self._listener.start()
        return credential

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.audit.close()
        await self.governance.close()
        await self.ledger.close()
        for lane in (self._executor, self._reader, self._auditor):
            lane.shutdown(wait=True)
        self.nonces.close()
        self.budgets.close()
        self.store.close()

    async def _load(self) -> None:
        def load() -> tuple[int, list[Any], list[Agent], list[tuple[str, float]]]:
            seq = self.store.last_change()  # first: later changes are replayed (idempotent)
            return (
                seq,
                self.store.root_keys(),
                self.store.list_agents(),
                self.store.revocations(self.trusted.now() - self.settings.prune_margin),
            )

        seq, keys, agents, revoked = await self.read(load)
        self.root_keys.load(keys)
        self.agents.clear()
        self.agents.update({a.id: a for a in agents})
        self.revocations.update(revoked)
        self.verifier.invalidate()
        self._seq = seq
        self._touch()

    # -- following the change feed -----------------------------------------------------

    def poke(self) -> None:
        """Something changed in the store (a push from the database): sync soon."""
        self._wake.set()

    async def sync(self) -> None:
        """After a write: apply every change since the last one applied, and (with
        sibling workers) have every worker of the host apply it before returning."""
        await self._sync()
        if self.siblings is not None:
            await self.siblings.barrier(self._seq)

    def behind(self) -> bool:
        """Whether another worker of this host acknowledged a change not applied here."""
        siblings = self.siblings
        return siblings is not None and siblings.required() > self._seq

    async def catch_up(self) -> bool:
        """Apply the changes the host's workers have acknowledged, within the siblings'
        bound; False when that failed (the caller fails closed)."""
        assert self.siblings is not None
        try:
            async with asyncio.timeout(self.siblings.bound):
                await self._catch_up_to(self.siblings.required())
        except Exception as e:
            log.warning("cannot apply the changes acknowledged on this host: %s", e or "timed out")
        return not self.behind()

    async def _catch_up_to(self, seq: int) -> int:
        while self._seq < seq:
            before = self._seq
            await self._sync()
            if self._seq == before:  # not visible yet (another connection's commit)
                await asyncio.sleep(0.001)
        return self._seq

    async def _sync(self) -> None:
        """Apply every change since the last one applied (in pages, until caught up);
        only then does the replica count as fresh."""
        async with self._sync_lock:
            while True:
                changes, payload = await self.read(self._fetch, self._seq)
                self._apply(changes, payload)
                if len(changes) < _PAGE:
                    break
            self._touch()

    def _fetch(self, seq: int) -> tuple[list[Change], dict[tuple[ChangeKind, str], Any]]:
        changes = self.store.changes_since(seq, _PAGE)
        payload: dict[tuple[ChangeKind, str], Any] = {}
        for c in changes:
            if c.kind is ChangeKind.AGENT and (c.kind, c.key) not in payload:
                payload[(c.kind, c.key)] = self.store.get_agent(c.key)
            elif c.kind is ChangeKind.ROOT_KEY and (c.kind, "") not in payload:
                payload[(c.kind, "")] = self.store.root_keys()
        return changes, payload

    def _apply(self, changes: list[Change], payload: dict[tuple[ChangeKind, str], Any]) -> None:
        invalidate = approvals = False
        for c in changes:
            if c.kind is ChangeKind.REVOCATION:
                self.revocations.add(
                    c.key,
                    c.value if c.value is not None else self.clock() + self.settings.max_ttl_cap,
                )
            elif c.kind is ChangeKind.AGENT:
                agent = payload.get((c.kind, c.key))
                old = self.agents.get(c.key)
                if agent is None:
                    self.agents.pop(c.key, None)
                else:
                    self.agents[c.key] = agent
                if old is None or agent is None or old.public_keys != agent.public_keys:
                    invalidate = True  # cached offline-delegation checks used the old keys
            elif c.kind is ChangeKind.ROOT_KEY:
                invalidate |= self.root_keys.load(payload[(c.kind, "")])
            elif c.kind is ChangeKind.PRINCIPAL:
                self._principals = {h: p for h, p in self._principals.items() if p.id != c.key}
            elif c.kind is ChangeKind.APPROVAL:
                approvals = True
            self._seq = max(self._seq, c.seq)
        if invalidate:
            self.verifier.invalidate()
        if approvals:
            for callback in self.on_approvals:
                callback()

    async def _follow(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):  # not wait_for: it can swallow a cancel
                async with asyncio.timeout(self.settings.poll_interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._sync()
            except Exception as e:  # the store is down: keep trying, freshness decides
                log.warning("cannot read the store's change feed: %s", e)
            self._check_fresh()

    async def _watch(self) -> None:
        """Report freshness changes even while a store call hangs."""
        while True:
            await asyncio.sleep(0.25)
            self._check_fresh()

    async def _prune(self) -> None:
        while True:
            await asyncio.sleep(self.settings.prune_interval)
            try:
                await self.prune_revocations()
            except Exception as e:  # the store is down: next time
                log.warning("cannot prune revocations: %s", e)

    async def prune_revocations(self) -> int:
        """Forget revocations whose tokens expired ``prune_margin`` ago by the trusted
        clock; the store deletes its rows by the earlier of that and its own clock.
        Returns how many this replica forgot."""
        now = self.trusted.now()
        if self.clock() - now > self.settings.max_clock_skew:
            log.warning(
                "the wall clock is %.1fs ahead of what this replica can vouch for "
                "(monotonic time since start, the store's clock): pruning by the "
                "latter",
                self.clock() - now,
            )
        dropped = self.revocations.prune(now - self.settings.prune_margin)
        if self.settings.role == "full":
            await self.call(self.store.prune_revocations, now, self.settings.prune_margin)
            # approvals that lapsed a while ago (the audit trail keeps their story)
            await self.call(self.store.prune_approvals, now - APPROVAL_KEEP)
        if dropped:
            log.info("forgot %d revocations of expired tokens", dropped)
        return dropped

    # -- clocks -------------------------------------------------------------------------

    async def check_clock(self) -> None:
        """Read the store's clock (a store without one of its own always agrees)."""
        before = self.clock()
        store_now = await self.read(self.store.clock)
        if store_now is not None and self.trusted.store_read(store_now, before, self.clock()):
            for callback in self.on_clock:
                callback(self.trusted.agrees)

    async def _watch_clock(self) -> None:
        while True:
            await asyncio.sleep(self.settings.clock_check_interval)
            with contextlib.suppress(Exception):  # the store is down: freshness reports it
                await self.check_clock()

    # -- freshness ----------------------------------------------------------------------

    def _touch(self) -> None:
        self.last_contact = self.monotonic()
        self.fresh_until = self.last_contact + self.settings.stale_after
        self._check_fresh()

    @property
    def applied_seq(self) -> int:
        """The last change of the store's feed applied here."""
        return self._seq

    def staleness(self) -> float:
        """Seconds since this replica last heard from the store."""
        return self.monotonic() - self.last_contact

    def fresh(self) -> bool:
        return self.staleness() <= self.settings.stale_after

    def _check_fresh(self) -> None:
        fresh = self.fresh()
        if fresh != self._fresh:
            self._fresh = fresh
            if fresh:
                log.warning("back in touch with the store; serving again")
            else:
                log.error("no contact with the store for %.1fs: failing closed", self.staleness())
            for callback in self.on_freshness:
                callback(fresh)

    def require_fresh(self) -> None:
        if not self.fresh():
            raise UnavailableError(
                f"this replica has not heard from the store for {self.staleness():.1f}s "
                f"(bound {self.settings.stale_after}s); failing closed",
                staleness=self.staleness(),
            )

    # -- principals -------------------------------------------------------------------

    async def authenticate(self, credential: str) -> Principal | None:
        digest = hash_credential(credential)
        principal = self._principals.get(digest)
        if principal is None:
            async with self._auth_lookups:
                principal = await self.read(self.store.principal_by_credential, digest)
            if principal is not None:
                if len(self._principals) > 100_000:
                    self._principals.clear()
                self._principals[digest] = principal
        return principal

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Run a store write in the background; failures are logged, not raised."""
        future = self._executor.submit(fn, *args)
        future.add_done_callback(_log_failure)


def _log_failure(future: Any) -> None:
    if future.exception() is not None:
        log.error("background store write failed: %s", future.exception())
