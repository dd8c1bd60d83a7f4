"""``VerifierWire``: VerifierService served from the request bytes, with warm verdicts memoised.

Services present the same few requests over and over. For those, building a
protobuf message per request and a reply message per verdict costs more than the
decision (the decision itself is a memo hit in the verifier). So the service's
three methods take their requests as bytes: a batch is split on the wire format
(field 1, length-delimited, nothing else; any other shape is parsed as usual),
and each request's bytes are looked up in ``VerdictMemo``. A hit answers with the
reply bytes made the first time; a miss is parsed and decided by ``Verification``
as before, and its reply serialised once.

What may be remembered is narrow, because a hit decides nothing:

- only an **allow**, for a caller that is not an agent (an agent's presenter is
  itself, whatever the request says), with no context, proof or discharges in the
  request;
- never one that was **counted** (``Decision.budgets``: a ``uses`` or ``rate``
  caveat, or the rate of any agent in the chain) or rests on **approvals**: every
  use of those must reach the store's counts;
- valid only while the verifier's ``state`` is the one it was decided at (any
  revocation, agent change — suspension, epoch, ceiling, rate, keys — or root key
  change moves it: the same rule as the verifier's own memo), from the moment it
  was decided until the token's earliest expiry, and only while the replica is
  fresh and current with its sibling workers (else every request takes the full
  path, which fails closed).

Every verdict, hit or not, is audited (``AuditLog.decision``), as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from capgate import CapgateError, Decision, InvalidArgumentError
from capgate_proto.v1 import verifier_pb2
from capgate_server._admission import CALLER
from capgate_server._rpc import rpc
from capgate_server._status import abort
from capgate_server._verification import NewCaveatBudget, Verification
from capgate_server.store import Principal, Role

__all__ = ["VerdictMemo", "VerifierWire", "split_requests"]

SERVICE = "capgate.v1.VerifierService"
Answer = Callable[[Any, Decision], verifier_pb2.VerifyResponse]
_AGENT_ROLE = Role.AGENT  # read per call: an enum member through its class costs a lookup
_ENTRY_BYTES = 400  # an entry's own objects beside its key and reply bytes


@dataclass(frozen=True, slots=True)
class _Verdict:
    state: int  # the verifier's state it was decided at
    since: float  # valid from (wall clock, when it was decided) ...
    until: float  # ... until the token's earliest expiry
    reply: bytes  # the VerifyResponse
    part: bytes  # the same, framed as one response of a VerifyBatchResponse
    decision: Decision  # for the audit record
    action: str
    resource: str
    presenter: str


class VerdictMemo:
    """Request bytes -> a remembered allow; two generations, bounded in entries and bytes."""

    def __init__(self, entries: int, max_bytes: int) -> None:
        self.young: dict[bytes, _Verdict] = {}  # read directly on the hot path
        self._old: dict[bytes, _Verdict] = {}
        self._half = (max(1, entries // 2), max(1, max_bytes // 2))
        self._bytes = 0

    def get(self, key: bytes) -> _Verdict | None:
        hit = self.young.get(key)
        if hit is None and self._old:
            hit = self._old.pop(key, None)
            if hit is not None:
                self.put(key, hit)
        return hit

    def put(self, key: bytes, verdict: _Verdict) -> None:
        self.young[key] = verdict
        self._bytes += len(key) + 2 * len(verdict.reply) + _ENTRY_BYTES
        entries, nbytes = self._half
        if len(self.young) > entries or self._bytes > nbytes:
            self._old, self.young, self._bytes = self.young, {}, 0

    def __len__(self) -> int:
        return len(self.young) + len(self._old)


def split_requests(data: bytes) -> list[bytes] | None:
    """The VerifyRequest messages of a VerifyBatchRequest, as bytes; None when the
    message holds anything but field 1 (it is then parsed as protobuf)."""
    out: list[bytes] = []
    append = out.append
    i, n = 0, len(data)
    try:
        while i < n:
            if data[i] != 0x0A:
                return None
            b = data[i + 1]
            if b < 0x80:  # a request under 128 bytes
                i += 2
                end = i + b
            elif (c := data[i + 2]) < 0x80:  # under 16 KiB (a larger one: parsed as protobuf)
                i += 3
                end = i + ((b & 0x7F) | (c << 7))
            else:
                return None
            if end > n:
                return None
            append(data[i:end])
            i = end
    except IndexError:  # cut short
        return None
    return out


def _frame(reply: bytes) -> bytes:
    """``reply`` as one ``responses`` entry (field 1, length-delimited)."""
    n, head = len(reply), bytearray(b"\x0a")
    while n >= 0x80:
        head.append((n & 0x7F) | 0x80)
        n >>= 7
    head.append(n)
    return bytes(head) + reply


def _parse(message: Any, data: bytes) -> Any:
    try:
        return message.FromString(data)
    except DecodeError:
        raise InvalidArgumentError(f"not a valid {message.DESCRIPTOR.name}") from None


class VerifierWire:
    """The VerifierService methods over bytes, for ``handler()``; ``answer`` builds a
    decision's reply message (``VerifyReplies``)."""

    def __init__(
        self, verification: Verification, answer: Answer, *, entries: int, max_bytes: int
    ) -> None:
        self.verification = verification
        self.replica = verification.replica
        self._answer = answer  # a decision's reply message (proofs marked)
        self.memo = VerdictMemo(entries, max_bytes)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Verify": grpc.unary_unary_rpc_method_handler(self.Verify),
                "VerifyBatch": grpc.unary_unary_rpc_method_handler(self.VerifyBatch),
                "VerifyStream": grpc.stream_stream_rpc_method_handler(self.VerifyStream),
            },
        )

    # -- when the memo may answer -----------------------------------------------------

    async def _warm(self, caller: Principal) -> bool:
        """Whether remembered verdicts may answer now: a caller that is not an agent,
        on a replica that is current with its siblings and fresh."""
        if caller.role is _AGENT_ROLE:
            return False
        replica = self.replica
        if replica.siblings is not None and replica.behind():
            await replica.catch_up()
        return self.verification.fresh()

    def _hit(self, data: bytes, state: int, now: float) -> _Verdict | None:
        v = self.memo.get(data)
        if v is not None and v.state == state and v.since <= now < v.until:
            return v
        return None

    def _remember(
        self, data: bytes, r: Any, d: Decision, reply: bytes, state: int, since: float
    ) -> None:
        if not d.allowed or d.budgets or d.approvals or r.proof.text or r.discharges or r.ctx:
            return
        agents = self.replica.agents
        for name in d.chain:  # an agent's rate is counted on every allow
            a = agents.get(name)
            if a is None or a.rate:
                return
        chain = self.replica.verifier.cached_chain(r.token)
        if chain is None or since >= chain.not_after:  # seen once (or just expired)
            return
        self.memo.put(
            data,
            _Verdict(
                state,
                since,
                chain.not_after,
                reply,
                _frame(reply),
                d,
                r.action,
                r.resource,
                r.presenter,
            ),
        )

    def _audit(self, caller: Principal, v: _Verdict, now: float) -> None:
        self.replica.audit.decision(
            caller.id, v.decision, v.action, v.resource, v.presenter, now, ()
        )

    # -- the methods --------------------------------------------------------------------

    async def _one(
        self, caller: Principal, data: bytes, budget: NewCaveatBudget | None = None
    ) -> bytes:
        replica = self.replica
        warm = await self._warm(caller)
        if warm:
            now = replica.clock()
            v = self._hit(data, replica.verifier.state, now)
            if v is not None:
                self._audit(caller, v, now)
                return v.reply
        r = _parse(verifier_pb2.VerifyRequest, data)
        state = replica.verifier.state
        d = await self.verification.verify_item(caller, r, budget)
        reply = self._answer(r, d).SerializeToString()
        if warm and replica.verifier.state == state:
            self._remember(data, r, d, reply, state, replica.clock())
        return reply

    @rpc
    async def Verify(self, data: bytes, context: Any) -> bytes:
        return await self._one(CALLER.get(), data)

    @rpc
    async def VerifyBatch(self, data: bytes, context: Any) -> bytes:
        caller, replica = CALLER.get(), self.replica
        items = split_requests(data) if await self._warm(caller) else None
        if items is None:  # an agent, a stale replica, or an unusual encoding
            batch = _parse(verifier_pb2.VerifyBatchRequest, data)
            decisions = await self.verification.verify_batch(caller, batch.requests)
            answer = self._answer
            return verifier_pb2.VerifyBatchResponse(
                responses=[answer(r, d) for r, d in zip(batch.requests, decisions, strict=True)]
            ).SerializeToString()
        if len(items) > replica.settings.limits.max_batch:
            raise InvalidArgumentError(
                f"at most {replica.settings.limits.max_batch} requests in one batch"
            )
        parts: list[bytes] = []
        misses: list[int] = []
        now, state = replica.clock(), replica.verifier.state
        young, recall, tally = self.memo.young, self.memo.get, replica.audit.decision
        cid = caller.id
        for data_i in items:  # the hot loop: a dict lookup, two comparisons, the tally
            v = young.get(data_i) or recall(data_i)
            if v is not None and v.state == state and v.since <= now < v.until:
                parts.append(v.part)
                tally(cid, v.decision, v.action, v.resource, v.presenter, now, ())
            else:
                misses.append(len(parts))
                parts.append(b"")
        if misses:
            requests = [_parse(verifier_pb2.VerifyRequest, items[i]) for i in misses]
            state = replica.verifier.state
            decisions = await self.verification.verify_batch(caller, requests)
            same, since = replica.verifier.state == state, replica.clock()
            for i, r, d in zip(misses, requests, decisions, strict=True):
                reply = self._answer(r, d).SerializeToString()
                parts[i] = _frame(reply)
                if same:
                    self._remember(items[i], r, d, reply, state, since)
        return b"".join(parts)

    async def VerifyStream(self, request_iterator: Any, context: Any) -> AsyncIterator[bytes]:
        caller = CALLER.get()
        budget = self.verification.stream_budget()
        try:
            async for data in request_iterator:
                yield await self._one(caller, data, budget)
        except CapgateError as e:
            await abort(context, e)
