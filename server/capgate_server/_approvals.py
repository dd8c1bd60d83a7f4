"""``Approvals``: requests for a person's yes, the votes on them, and their uses.

An agent (or a service acting for it) asks for approval of one concrete request
under a token whose approval caveat that request meets; the request must be one
the token allows in every other way. Approvers and admins vote; nobody votes on
a request they made. Once approved, the agent fetches discharges: minted then,
from the token it shows (the store keeps only a digest of its signature) and
bound to it. Verify's allow then rests on the approval, and ``use`` spends one
of its uses in the store, atomically, so the count holds across the fleet.

Every step is audited with the token's chain, in the transaction that makes it:
``approval.request`` (who asked, for what: the request and its context values,
which the approvers must see), ``approval.approve`` and ``approval.deny`` (who,
why, and what the request came to), ``approval.use`` (who verified it, when).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from capgate import (
    Chain,
    Decision,
    DenyCode,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    Request,
    mint_discharge,
    new_token_id,
    request_digest,
    token_digest,
)
from capgate_server._replica import Replica
from capgate_server.store import (
    ApprovalRecord,
    ApprovalStatus,
    ApprovalVote,
    AuditEvent,
    Principal,
    Redemption,
    Role,
)

__all__ = ["Approvals", "Fetched"]

MAX_USES = 100  # uses one approval may give
_WATCH_POLL = 5.0  # seconds between a watcher's reads when no change is announced
_WATCH_SEEN = 10_000  # ids a watcher remembers having sent
_APPROVERS = (Role.ADMIN, Role.APPROVER)


@dataclass(frozen=True)
class Fetched:
    """An approval request as its reader may see it, and its discharges (if fetched)."""

    record: ApprovalRecord
    status: ApprovalStatus
    discharges: tuple[str, ...] = ()


def _text(value: str, what: str, limit: int = 512) -> str:
    if len(value) > limit or not value.isprintable():
        raise InvalidArgumentError(f"{what} must be printable text of at most {limit} chars")
    return value


def _approval_id(value: str) -> str:
    value = value.strip().lower()
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise InvalidArgumentError("an approval id is 32 hex digits")
    return value


class _Bulletin:
    """Wakes watchers when an approval request is made or decided anywhere."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def post(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()


class Approvals:
    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self._bulletin = _Bulletin()
        replica.on_approvals.append(self._bulletin.post)

    # -- asking --------------------------------------------------------------------------

    def _chain(self, token: str) -> Chain:
        st = self.replica.verifier.analyse(token)
        if isinstance(st, Decision):
            if st.code is DenyCode.MALFORMED:
                raise InvalidArgumentError(st.reason)
            raise PermissionDeniedError(f"token does not verify: {st.reason}", code=str(st.code))
        return st

    async def request(
        self,
        caller: Principal,
        token: str,
        action: str,
        resource: str,
        presenter: str,
        ctx: Mapping[str, str],
        note: str,
    ) -> ApprovalRecord:
        """Ask for approval of one request under ``token``; the request must be one the
        token allows but for its approval caveats."""
        replica = self.replica
        replica.require_fresh()
        if caller.role is Role.AGENT:
            if presenter and presenter != caller.id:
                raise PermissionDeniedError("an agent may ask for approval only for itself")
            presenter = caller.id
        _text(note, "note")
        st = self._chain(token)
        request = Request(action, resource, presenter, dict(ctx))
        decision = replica.verifier.decide(st, request)
        if decision.allowed:
            raise FailedPreconditionError(
                "this request needs no approval: the token allows it as it is"
            )
        met = [a for a in st.approvals if a.needed(request)]
        # an agent's rule the token has no caveat for: no approval of this token can help
        if decision.code is not DenyCode.APPROVAL_REQUIRED or decision.caveat is None or not met:
            raise FailedPreconditionError(
                f"no approval can help: the request is denied ({decision.code}): {decision.reason}",
                code=str(decision.code),
            )
        now = replica.clock()
        needed = max(a.approvers for a in met)
        items = tuple(sorted(request.ctx.items()))
        record = ApprovalRecord(
            id=new_token_id(),
            token_id=st.token_id,
            token_digest=token_digest(st.signature),
            requested_by=caller.id,
            presenter=presenter,
            action=action,
            resource=resource,
            ctx=items,
            request_digest=request_digest(action, resource, presenter, request.ctx),
            conditions=tuple(a.text for a in met),
            needed=needed,
            chain=st.agents,
            note=note,
            created_at=now,
            wait_until=now + replica.settings.approval_wait,
        )
        event = AuditEvent(
            now,
            caller.id,
            "approval.request",
            record.id,
            chain=st.agents,
            action=action,
            resource=resource,
            presenter=presenter,
            ctx_keys=tuple(k for k, _ in items),
            detail={
                "token_id": st.token_id,
                "ctx": dict(items),
                "needed": needed,
                "conditions": list(record.conditions),
                **({"note": note} if note else {}),
            },
        )
        await replica.call(
            replica.store.create_approval,
            record,
            event,
            replica.settings.limits.approvals_pending_per_principal,
        )
        await replica.sync()
        return record

    # -- reading ---------------------------------------------------------------------------

    async def _record(self, caller: Principal, approval_id: str) -> ApprovalRecord:
        """The record, for those who may see it; anyone else hears "not found" alike."""
        aid = _approval_id(approval_id)
        record = await self.replica.read(self.replica.store.get_approval, aid)
        if record is None or (
            caller.role not in _APPROVERS
            and caller.id not in (record.requested_by, record.presenter)
        ):
            raise NotFoundError(f"no approval request {aid} is known to you", id=aid)
        return record

    async def get(self, caller: Principal, approval_id: str, token: str = "") -> Fetched:
        """A request and its votes; with the token it is for, once approved, its
        discharges (for the requester, the presenting agent or an admin)."""
        record = await self._record(caller, approval_id)
        status = record.state(self.replica.clock())
        if not token:
            return Fetched(record, status)
        if caller.role is Role.APPROVER or (
            caller.role is not Role.ADMIN
            and caller.id not in (record.requested_by, record.presenter)
        ):
            raise PermissionDeniedError("discharges go to who asked, or to the agent")
        st = self._chain(token)
        if token_digest(st.signature) != record.token_digest:
            raise PermissionDeniedError(f"approval {record.id} is for another token")
        if status is not ApprovalStatus.APPROVED or record.expires_at is None:
            return Fetched(record, status)
        discharges = tuple(
            mint_discharge(
                key, caveat.cid, record.id, record.request_digest, record.expires_at, st.signature
            ).to_text()
            for caveat, key in zip(st.approvals, st.approval_keys, strict=True)
            if caveat.text in record.conditions
        )
        return Fetched(record, status, discharges)

    async def list(self, caller: Principal, status: str, limit: int) -> list[Fetched]:
        """Approvers and admins see every request; anyone else, those they made."""
        if not 0 <= limit <= 1000:
            raise InvalidArgumentError("limit must be between 0 and 1000")
        wanted = _status(status or "pending")
        mine = "" if caller.role in _APPROVERS else caller.id
        now = self.replica.clock()
        records = await self.replica.read(
            self.replica.store.list_approvals, now, wanted, limit or 100, mine
        )
        return [Fetched(r, r.state(now)) for r in records]

    async def watch(self, caller: Principal) -> AsyncIterator[Fetched]:
        """The pending requests, then each new one, whichever replica it was made at."""
        sent: set[str] = set()
        while True:
            now = self.replica.clock()
            pending = await self.replica.read(
                self.replica.store.list_approvals, now, ApprovalStatus.PENDING, 1000, ""
            )
            for r in pending:
                if r.id not in sent:
                    if len(sent) >= _WATCH_SEEN:
                        sent.clear()
                    sent.add(r.id)
                    yield Fetched(r, ApprovalStatus.PENDING)
            await self._bulletin.wait(_WATCH_POLL)

    # -- deciding ---------------------------------------------------------------------------

    async def decide(
        self,
        caller: Principal,
        approval_id: str,
        approve: bool,
        reason: str,
        ttl: int = 0,
        uses: int = 0,
    ) -> Fetched:
        """One approver's vote (an admin's counts as one)."""
        replica = self.replica
        replica.require_fresh()
        if caller.role not in _APPROVERS:  # pragma: no cover - the interceptor refuses first
            raise PermissionDeniedError("only approvers and admins decide approvals")
        if not reason.strip():
            raise InvalidArgumentError("give a reason: it goes into the audit trail")
        _text(reason, "reason")
        settings = replica.settings
        ttl = ttl or int(settings.approval_ttl)
        if not 1 <= ttl <= settings.approval_max_ttl:
            raise InvalidArgumentError(f"an approval lasts 1 to {int(settings.approval_max_ttl)}s")
        uses = uses or 1
        if not 1 <= uses <= MAX_USES:
            raise InvalidArgumentError(f"an approval gives 1 to {MAX_USES} uses")
        record = await self._record(caller, approval_id)
        if caller.id in (record.requested_by, record.presenter):
            raise PermissionDeniedError("nobody approves or denies a request they made")
        now = replica.clock()
        vote = ApprovalVote(
            caller.id, approve, reason, now, ttl if approve else 0, uses if approve else 0
        )
        kind = "approval.approve" if approve else "approval.deny"
        event = AuditEvent(
            now,
            caller.id,
            kind,
            record.id,
            reason=reason,
            chain=record.chain,
            action=record.action,
            resource=record.resource,
            presenter=record.presenter,
            detail={
                "token_id": record.token_id,
                "requested_by": record.requested_by,
                **({"ttl": ttl, "uses": uses} if approve else {}),
            },
        )
        updated = await replica.call(replica.store.vote_approval, record.id, vote, event)
        await replica.sync()
        return Fetched(updated, updated.state(now))

    # -- using ----------------------------------------------------------------------------

    async def use(
        self, caller: Principal, decision: Decision, token: str, request: Request
    ) -> Decision:
        """Spend one use of each approval an allow rests on; the allow stands only if
        every one was spent, else the deny says why. A store that cannot answer
        fails it closed."""
        replica = self.replica
        st = replica.verifier.analyse(token)
        if isinstance(st, Decision):  # pragma: no cover - it was just verified
            return st
        tokens = token_digest(st.signature)
        digest = request_digest(
            request.action, request.resource, request.presenter or "", request.ctx
        )
        now = replica.clock()
        events = [
            AuditEvent(
                now,
                caller.id,
                "approval.use",
                aid,
                chain=decision.chain,
                action=request.action,
                resource=request.resource,
                presenter=request.presenter or "",
                ctx_keys=tuple(sorted(request.ctx)),
                detail={"token_id": decision.token_id or ""},
            )
            for aid in decision.approvals
        ]
        try:  # all or none: a use is never spent on a request that is then denied
            aid, result = await replica.call(
                replica.store.redeem_approvals, decision.approvals, tokens, digest, now, events
            )
        except Exception as e:  # the store is down: no use can be counted
            return Decision(
                False,
                DenyCode.UNAVAILABLE,
                f"cannot redeem the approvals ({e}); failing closed",
                None,
                decision.token_id,
                decision.chain,
            )
        if result is not Redemption.OK:
            code, why = _REDEMPTION[result]
            return Decision(
                False, code, f"approval {aid} {why}", None, decision.token_id, decision.chain
            )
        return decision


_REDEMPTION = {
    Redemption.USED: (DenyCode.APPROVAL_USED, "was already used: its uses are spent"),
    Redemption.EXPIRED: (DenyCode.APPROVAL_EXPIRED, "has expired"),
    Redemption.NOT_APPROVED: (DenyCode.APPROVAL_INVALID, "is not approved (denied, or pending)"),
    Redemption.MISMATCH: (DenyCode.APPROVAL_INVALID, "is for another token or request"),
    Redemption.UNKNOWN: (DenyCode.APPROVAL_INVALID, "is unknown to this server"),
}


def _status(text: str) -> ApprovalStatus | None:
    if text == "all":
        return None
    try:
        return ApprovalStatus(text)
    except ValueError:
        raise InvalidArgumentError(
            f"unknown status {text!r} (pending, approved, denied, expired, used or all)"
        ) from None
