"""``Verification``: Verify for services, with an audit record for every decision.

The decision itself is the core ``Verifier``'s, entirely in memory. This layer
adds who asked (a service speaks for the presenter it authenticated; an agent
only for itself), fails closed when the replica is stale, writes the audit
record.

It also decides proofs of possession (``capgate.PossessionProof``). With a
proof the presenter is not the caller's word: the proof must verify with a
key the token's holder registered, for the request the service saw, within the
proof window, and its nonce must not have been redeemed anywhere in the fleet.
Where proof is required (``require_proof`` on the server, or on the holder) a
token presented without one is denied ``proof_required``. An agent verifying
for itself has proven who it is with its own credential.

And it settles approvals: an allow that rests on approvals (the request came with
discharges of the token's approval caveats) stands only once ``Approvals.use``
has spent one use of each in the store; otherwise it becomes the deny that says
why (``approval_used``, ``approval_expired``…).

It also keeps one caller from stalling the others. A batch is decided in time
slices of ``slice_seconds`` with a pause of ``slice_pause`` between them: a bare
yield is not enough, since grpc's poller thread needs the GIL to hand the event
loop other callers' messages, and it gets it while the loop sleeps. So other
callers' verifies, the change feed and the freshness watch run in between; at
most ``batches_per_principal`` batches of one principal are decided at once
(the rest wait their turn), so a principal sending many cannot crowd out the
others. The expensive part of a never-seen token is parsing its caveats: a batch
may bring at most ``new_caveats_per_call`` of them, and a stream that many per
second; beyond that the call ends with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from capgate import (
    Agent,
    Budget,
    Ceiling,
    Decision,
    DenyCode,
    InvalidArgumentError,
    MalformedTokenError,
    PermissionDeniedError,
    PossessionProof,
    Request,
    ResourceExhaustedError,
    Token,
    format_duration,
)
from capgate_server._approvals import Approvals
from capgate_server._budgets import AGENT_RATE_PREFIX, TooManyBudgets, agent_budget
from capgate_server._nonces import NONCE_MARGIN
from capgate_server._replica import Replica
from capgate_server.store import Principal, Role

__all__ = ["NewCaveatBudget", "Presented", "Verification", "VerifyItem", "presented"]

_AGENT_ROLE = Role.AGENT  # read per call: an enum member through its class costs a lookup


def _request(p: Presented, presenter: str) -> Request:
    """The request a presentation makes, for a chain already read (not read again)."""
    return (
        Request(p.action, p.resource, presenter, p.ctx)
        if p.ctx
        else Request(p.action, p.resource, presenter)
    )


Claim = tuple[str, str, float]  # a proof's nonce to redeem: (holder, nonce, keep until)


class VerifyItem(Protocol):
    """One request of a batch or stream, as the wire delivers it."""

    token: str
    action: str
    resource: str
    presenter: str
    ctx: Mapping[str, str]
    proof: Any  # capgate.v1.Proof: text, method, target ("" text: none)
    discharges: Sequence[str]  # of the token's approval caveats


@dataclass(frozen=True, slots=True)
class Presented:
    """One request settled after its decision: it came with a proof (the check, and the
    request as the service saw it, ``method`` and ``target``, with the ``capgate-proof``
    value ``proof``), or with discharges, or both."""

    token: str
    action: str
    resource: str
    presenter: str
    ctx: Mapping[str, str]
    proof: str
    method: str
    target: str
    discharges: tuple[str, ...] = ()


def presented(r: VerifyItem, presenter: str) -> Presented:
    """A wire request that carries a proof or discharges, as this layer takes it."""
    return Presented(
        r.token,
        r.action,
        r.resource,
        presenter,
        r.ctx,
        r.proof.text,
        r.proof.method,
        r.proof.target,
        tuple(r.discharges),
    )


class NewCaveatBudget:
    """Never-seen caveats a stream may bring: ``rate`` per second, at most ``rate`` at once."""

    def __init__(self, rate: int) -> None:
        self._rate = rate
        self._level = float(rate)
        self._at = time.monotonic()

    def spend(self, n: int) -> None:
        now = time.monotonic()
        self._level = min(self._rate, self._level + (now - self._at) * self._rate) - n
        self._at = now
        if self._level < 0:
            raise _too_many_new(self._rate, "per second on one stream")


def _too_many_new(limit: int, where: str) -> ResourceExhaustedError:
    return ResourceExhaustedError(
        f"more than {limit} caveats this server has not seen {where}; send fewer never-seen "
        "tokens at once",
        limit="new_caveats_per_call",
        value=limit,
    )


class _Turn:
    __slots__ = ("semaphore", "users")

    def __init__(self, slots: int) -> None:
        self.semaphore = asyncio.Semaphore(slots)
        self.users = 0


class Verification:
    def __init__(self, replica: Replica, approvals: Approvals | None = None) -> None:
        self.replica = replica
        self.approvals = approvals or Approvals(replica)
        self._limits = replica.settings.limits
        self._turns: dict[str, _Turn] = {}
        self._require_all = replica.settings.require_proof
        self._window = replica.settings.proof_window

    def presenter_for(self, caller: Principal, presenter: str) -> str:
        if caller.role is _AGENT_ROLE:
            if presenter and presenter != caller.id:
                raise PermissionDeniedError("an agent may verify only on its own behalf")
            return caller.id
        return presenter

    def _stale(self) -> Decision | None:
        replica = self.replica
        if time.monotonic() > replica.fresh_until:
            return Decision(
                False,
                DenyCode.UNAVAILABLE,
                f"replica out of touch with the store for "
                f"{replica.staleness():.1f}s; failing closed",
            )
        if replica.siblings is not None and replica.behind():
            return Decision(
                False,
                DenyCode.UNAVAILABLE,
                "this worker cannot apply a change another worker of this host "
                "acknowledged; failing closed",
            )
        return None

    def fresh(self) -> bool:
        """Whether a decision may be made now (fresh, and current with the siblings)."""
        return self._stale() is None

    async def _current(self) -> None:
        """With sibling workers: apply what the host acknowledged before deciding."""
        replica = self.replica
        if replica.siblings is not None and replica.behind():
            await replica.catch_up()

    async def verify(
        self,
        caller: Principal,
        token: str,
        action: str,
        resource: str,
        presenter: str,
        ctx: Mapping[str, str],
    ) -> Decision:
        """One decision without a proof; ``presenter`` must already have gone through
        ``presenter_for``."""
        replica = self.replica
        if replica.siblings is not None and replica.behind():
            await replica.catch_up()
        decision = self._decide_asserted(caller, token, action, resource, presenter, ctx)
        if decision.allowed:
            decision = await self._count(decision)
        replica.audit.decision(
            caller.id,
            decision,
            action,
            resource,
            presenter,
            replica.clock(),
            tuple(sorted(ctx)) if ctx else (),
        )
        return decision

    def _decide_asserted(
        self,
        caller: Principal,
        token: str,
        action: str,
        resource: str,
        presenter: str,
        ctx: Mapping[str, str],
        discharges: Sequence[str] = (),
    ) -> Decision:
        """The decision for a presenter the caller asserts (no proof); not audited. An
        allow that rests on approvals stands only once they are used (``_settle``)."""
        decision = self._stale()
        if decision is None:
            decision = self.replica.verifier.check(
                token, action, resource, presenter, ctx, discharges=discharges
            )
            if decision.allowed and caller.role is not _AGENT_ROLE and self._needs_proof(decision):
                decision = Decision(
                    False,
                    DenyCode.PROOF_REQUIRED,
                    f"agent {decision.chain[-1]!r} must prove possession of its key "
                    f"(a 'capgate-proof' with the request); the presenter was only asserted",
                    None,
                    decision.token_id,
                    decision.chain,
                )
        return decision

    async def _count(self, allowed: Decision) -> Decision:
        """The allow, once counted against every budget it is under (its token's, and
        the rate of each agent in its chain); else the deny of the one that is spent.
        Every allow passes here, the decision memo's too."""
        budgets = allowed.budgets
        agents = self.replica.agents
        for name in allowed.chain:
            a = agents.get(name)
            if a is not None and a.rate:
                budgets += (_agent_budget(a.id, a.rate),)
        counter = self.replica.budgets
        if not budgets:
            return allowed
        if counter.take_now(budgets):
            return _with(allowed, budgets)
        try:
            spent = await counter.take(budgets, allowed.token_id or "")
        except TooManyBudgets as e:
            return Decision(
                False, DenyCode.BUDGET_EXHAUSTED, str(e), None, allowed.token_id, allowed.chain
            )
        except Exception as e:
            return Decision(
                False,
                DenyCode.UNAVAILABLE,
                f"cannot count the token's budget ({e}); failing closed",
                None,
                allowed.token_id,
                allowed.chain,
            )
        if spent is None:
            return _with(allowed, budgets)
        return _spent(spent, allowed, self.replica.trusted.now())

    def _needs_proof(self, allowed: Decision) -> bool:
        if self._require_all:
            return True
        agent = self.replica.agents.get(allowed.chain[-1])
        return agent is None or agent.require_proof

    async def verify_item(
        self, caller: Principal, r: VerifyItem, budget: NewCaveatBudget | None = None
    ) -> Decision:
        """One request of a stream (or a unary call), charged to ``budget``."""
        verifier = self.replica.verifier
        before = verifier.compiled
        presenter = self.presenter_for(caller, r.presenter)
        if r.proof.text or r.discharges:
            d = (await self.verify_proven(caller, [presented(r, presenter)]))[0]
        else:
            d = await self.verify(caller, r.token, r.action, r.resource, presenter, r.ctx)
        if budget is not None and verifier.compiled != before:
            budget.spend(verifier.compiled - before)
        return d

    async def verify_proven(
        self, caller: Principal, requests: Sequence[Presented]
    ) -> list[Decision]:
        """Decisions for requests that carry proofs or discharges, in order. Every proof
        that verifies has its nonce redeemed, allowed or not: a proof is good for one
        request; every allow that rests on approvals spends one of their uses."""
        await self._current()
        decisions: list[Decision] = []
        pending: list[tuple[int, Presented, Claim | None]] = []
        for i, p in enumerate(requests):
            decision, claim = self._decide_settled(caller, p)
            decisions.append(decision)
            pending.append((i, p, claim))
        await self._settle(caller, decisions, pending)
        return decisions

    def _decide_settled(self, caller: Principal, p: Presented) -> tuple[Decision, Claim | None]:
        if p.proof:
            return self._decide_proven(caller, p)
        return self._decide_asserted(
            caller, p.token, p.action, p.resource, p.presenter, p.ctx, p.discharges
        ), None

    async def _settle(
        self,
        caller: Principal,
        decisions: list[Decision],
        pending: Sequence[tuple[int, Presented, Claim | None]],
    ) -> None:
        """Redeem the nonces of the proofs that verified (one group commit), turn the
        decisions of replays into denies, and audit them all."""
        replica = self.replica
        claims = [(i, claim) for i, _, claim in pending if claim is not None]
        if claims:
            redeemed = await replica.nonces.redeem([c for _, c in claims])
            for (i, redeemed_claim), ok in zip(claims, redeemed, strict=True):
                if ok is True:
                    continue
                d = decisions[i]
                if ok is False:
                    decisions[i] = Decision(
                        False,
                        DenyCode.PROOF_REPLAYED,
                        f"proof nonce {redeemed_claim[1]} was already used: a proof is good "
                        "for one request",
                        None,
                        d.token_id,
                        d.chain,
                    )
                else:
                    decisions[i] = Decision(
                        False,
                        DenyCode.UNAVAILABLE,
                        f"cannot redeem the proof's nonce ({ok}); failing closed",
                        None,
                        d.token_id,
                        d.chain,
                    )
        for i, _, _ in pending:  # counted once the proof's nonce was redeemed
            if decisions[i].allowed:
                decisions[i] = await self._count(decisions[i])
        for i, p, claim in pending:  # allows that rest on approvals: spend one use each
            d = decisions[i]  # (after the budgets: an approval's use is the scarcer)
            if d.allowed and d.approvals:
                holder = p.presenter if claim is None else claim[0]
                decisions[i] = await self.approvals.use(
                    caller, d, p.token, Request(p.action, p.resource, holder, p.ctx)
                )
                if not decisions[i].allowed:  # a deny spends nothing: the budgets' use back
                    replica.budgets.refund(d.budgets)
        now = replica.clock()
        for i, p, claim in pending:  # the presenter audited: the holder once its proof held
            replica.audit.decision(
                caller.id,
                decisions[i],
                p.action,
                p.resource,
                p.presenter if claim is None else claim[0],
                now,
                tuple(sorted(p.ctx)) if p.ctx else (),
            )

    def _decide_proven(self, caller: Principal, p: Presented) -> tuple[Decision, Claim | None]:
        """The decision for a request with a proof, and the nonce to redeem if it held."""
        stale = self._stale()
        if stale is not None:
            return stale, None
        verifier = self.replica.verifier
        try:
            proof = PossessionProof.parse(p.proof)
        except InvalidArgumentError as e:
            return Decision(False, DenyCode.BAD_PROOF, f"bad proof: {e.message}"), None
        chain = verifier.analyse(p.token)
        if isinstance(chain, Decision):  # an invalid token denies as such
            return chain, None
        holder = chain.holder
        if p.presenter and p.presenter != holder:  # the service knows someone else: not_holder
            return verifier.decide(chain, _request(p, p.presenter), p.discharges), None
        agent = self.replica.agents.get(holder)
        key = agent.public_keys.get(proof.key_id) if agent is not None else None
        problem = (
            f"key {proof.key_id} is not registered for agent {holder!r}"
            if key is None
            else proof.check(
                key,
                caller.id,
                p.method,
                p.target,
                _signature(chain.text),
                self.replica.clock(),
                self._window,
            )
        )
        if problem is not None:
            return Decision(
                False,
                DenyCode.BAD_PROOF,
                f"bad proof: {problem}",
                None,
                chain.token_id,
                chain.agents,
            ), None
        keep_until = proof.at_ms / 1000 + self._window + NONCE_MARGIN
        decision = verifier.decide(chain, _request(p, holder), p.discharges)
        return decision, (holder, proof.nonce, keep_until)

    def stream_budget(self) -> NewCaveatBudget:
        return NewCaveatBudget(self._limits.new_caveats_per_call)

    async def verify_batch(
        self, caller: Principal, requests: Sequence[VerifyItem]
    ) -> list[Decision]:
        """Every request's decision, in order, decided in time slices."""
        limits = self._limits
        if len(requests) > limits.max_batch:
            raise InvalidArgumentError(f"at most {limits.max_batch} requests in one batch")
        if caller.role is _AGENT_ROLE:  # refuse the whole batch before deciding any of it
            presenters = [self.presenter_for(caller, r.presenter) for r in requests]
        else:
            presenters = [r.presenter for r in requests]
        async with self._turn(caller.id):
            return await self._decide(caller, requests, presenters)

    async def _decide(
        self, caller: Principal, requests: Sequence[VerifyItem], presenters: list[str]
    ) -> list[Decision]:
        limits = self._limits
        verifier, verify, clock = self.replica.verifier, self.verify, time.perf_counter
        budget, slice_seconds = limits.new_caveats_per_call, limits.slice_seconds
        pause = limits.slice_pause
        out: list[Decision] = []
        proven: list[tuple[int, Presented, Claim | None]] = []  # settled at the end
        mark, used = verifier.compiled, 0
        end = clock() + slice_seconds
        for r, presenter in zip(requests, presenters, strict=True):
            if r.proof.text or r.discharges:
                await self._current()
                p = presented(r, presenter)
                d, claim = self._decide_settled(caller, p)
                proven.append((len(out), p, claim))
                out.append(d)
            else:
                out.append(await verify(caller, r.token, r.action, r.resource, presenter, r.ctx))
            if clock() > end:  # this slice is spent: let everyone else run
                used += verifier.compiled - mark
                if used > budget:
                    raise _too_many_new(budget, "in one batch")
                await asyncio.sleep(pause)
                mark, end = verifier.compiled, clock() + slice_seconds
        if proven:
            await self._settle(caller, out, proven)
        return out

    @contextlib.asynccontextmanager
    async def _turn(self, who: str) -> AsyncIterator[None]:
        """At most ``batches_per_principal`` batches of ``who`` decided at once."""
        turn = self._turns.get(who)
        if turn is None:
            turn = self._turns[who] = _Turn(self._limits.batches_per_principal)
        turn.users += 1
        try:
            async with turn.semaphore:
                yield
        finally:
            turn.users -= 1
            if not turn.users:
                del self._turns[who]


@functools.lru_cache(maxsize=4096)
def _agent_budget(agent_id: str, rate: str) -> Budget:
    budget = agent_budget(Agent(agent_id, Ceiling(), rate=rate))
    assert budget is not None
    return budget


def _with(allowed: Decision, budgets: tuple[Budget, ...]) -> Decision:
    """The allow, naming every budget it was counted against (an agent's rate too)."""
    if budgets is allowed.budgets:
        return allowed
    return dataclasses.replace(allowed, budgets=budgets)


def _spent(b: Budget, allowed: Decision, now: float) -> Decision:
    """The deny for an allow whose budget ``b`` is spent, naming it."""
    if b.id.startswith(AGENT_RATE_PREFIX):
        caveat, what = None, f"{b.caveat} is spent"
    else:
        caveat, what = b.caveat, f"budget {b.caveat!r} is spent"
    if b.period:
        wait = (int(now // b.period) + 1) * b.period - now
        why = f"{what}: {b.limit} per {format_duration(int(b.period))}, a new window in {wait:.0f}s"
    else:
        why = f"{what}: {b.limit} uses in all, every one taken"
    return Decision(False, DenyCode.BUDGET_EXHAUSTED, why, caveat, allowed.token_id, allowed.chain)


def _signature(text: str) -> bytes:
    try:
        return Token.parse(text).signature
    except MalformedTokenError:  # pragma: no cover - the verifier has read this token already
        return b""
