"""``Verification``: Verify for services, with an audit record for every decision.

The decision itself is the core ``Verifier``'s, entirely in memory. This layer
adds who asked (a service speaks for the presenter it authenticated; an agent
only for itself), fails closed when the replica is stale, and writes the audit
record.

It also decides proofs of possession (``capgate.PossessionProof``). With a
proof the presenter is not the caller's word: the proof must verify with a
key the token's holder registered, for the request the service saw, within the
proof window, and its nonce must not have been redeemed anywhere in the fleet.
Where proof is required (``require_proof`` on the server, or on the holder) a
token presented without one is denied ``proof_required``. An agent verifying
for itself has proven who it is with its own credential.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from capgate import (
    Decision,
    DenyCode,
    InvalidArgumentError,
    MalformedTokenError,
    PermissionDeniedError,
    PossessionProof,
    Token,
)
from capgate_server._nonces import NONCE_MARGIN
from capgate_server._replica import Replica
from capgate_server.store import Principal, Role

__all__ = ["Presented", "Verification"]


@dataclass(frozen=True, slots=True)
class Presented:
    """One request that came with a proof: the check, and the request as the service saw it
    (``method``, ``target``) with the ``capgate-proof`` value (``proof``)."""

    token: str
    action: str
    resource: str
    presenter: str
    ctx: Mapping[str, str]
    proof: str
    method: str
    target: str


class Verification:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._require_all = replica.settings.require_proof
        self._window = replica.settings.proof_window

    def presenter_for(self, caller: Principal, presenter: str) -> str:
        if caller.role is Role.AGENT:
            if presenter and presenter != caller.id:
                raise PermissionDeniedError("an agent may verify only on its own behalf")
            return caller.id
        return presenter

    def _stale(self) -> Decision | None:
        replica = self.replica
        if time.monotonic() > replica.fresh_until:
            return Decision(False, DenyCode.UNAVAILABLE,
                            f"replica out of touch with the store for "
                            f"{replica.staleness():.1f}s; failing closed")
        return None

    def verify(self, caller: Principal, token: str, action: str, resource: str,
               presenter: str, ctx: Mapping[str, str]) -> Decision:
        """One decision without a proof; ``presenter`` must already have gone through
        ``presenter_for``."""
        replica = self.replica
        decision = self._stale()
        if decision is None:
            decision = replica.verifier.check(token, action, resource, presenter, ctx)
            if decision.allowed and caller.role is not Role.AGENT and self._needs_proof(decision):
                decision = Decision(
                    False, DenyCode.PROOF_REQUIRED,
                    f"agent {decision.chain[-1]!r} must prove possession of its key "
                    f"(a 'capgate-proof' with the request); the presenter was only asserted",
                    None, decision.token_id, decision.chain)
        replica.audit.decision(caller.id, decision, action, resource, presenter, replica.clock())
        return decision

    def _needs_proof(self, allowed: Decision) -> bool:
        if self._require_all:
            return True
        agent = self.replica.agents.get(allowed.chain[-1])
        return agent is None or agent.require_proof

    async def verify_proven(self, caller: Principal,
                            requests: Sequence[Presented]) -> list[Decision]:
        """Decisions for requests that carry proofs, in order. Every proof that verifies
        has its nonce redeemed, allowed or not: a proof is good for one request."""
        replica = self.replica
        decisions: list[Decision] = []
        presenters: list[str] = []  # as audited: the holder once its proof verified
        claims: list[tuple[int, tuple[str, str, float]]] = []
        for i, p in enumerate(requests):
            decision, claim = self._decide_proven(p)
            decisions.append(decision)
            presenters.append(p.presenter if claim is None else claim[0])
            if claim is not None:
                claims.append((i, claim))
        if claims:
            redeemed = await replica.nonces.redeem([c for _, c in claims])
            for (i, claim), ok in zip(claims, redeemed, strict=True):
                if ok is True:
                    continue
                d = decisions[i]
                if ok is False:
                    decisions[i] = Decision(
                        False, DenyCode.PROOF_REPLAYED,
                        f"proof nonce {claim[1]} was already used: a proof is good for one "
                        "request", None, d.token_id, d.chain)
                else:
                    decisions[i] = Decision(
                        False, DenyCode.UNAVAILABLE,
                        f"cannot redeem the proof's nonce ({ok}); failing closed",
                        None, d.token_id, d.chain)
        now = replica.clock()
        for p, d, presenter in zip(requests, decisions, presenters, strict=True):
            replica.audit.decision(caller.id, d, p.action, p.resource, presenter, now)
        return decisions

    def _decide_proven(self, p: Presented) -> tuple[Decision, tuple[str, str, float] | None]:
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
            return verifier.check(p.token, p.action, p.resource, p.presenter, p.ctx), None
        agent = self.replica.agents.get(holder)
        key = agent.public_keys.get(proof.key_id) if agent is not None else None
        problem = (f"key {proof.key_id} is not registered for agent {holder!r}" if key is None
                   else proof.check(key, p.method, p.target, _signature(chain.text),
                                    self.replica.clock(), self._window))
        if problem is not None:
            return Decision(False, DenyCode.BAD_PROOF, f"bad proof: {problem}", None,
                            chain.token_id, chain.agents), None
        keep_until = proof.at_ms / 1000 + self._window + NONCE_MARGIN
        decision = verifier.check(p.token, p.action, p.resource, holder, p.ctx)
        return decision, (holder, proof.nonce, keep_until)


def _signature(text: str) -> bytes:
    try:
        return Token.parse(text).signature
    except MalformedTokenError:  # pragma: no cover - the verifier has read this token already
        return b""
