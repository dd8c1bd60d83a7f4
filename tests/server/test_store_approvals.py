"""The store's approvals, one suite for SQLite and PostgreSQL: records round-trip, votes
are counted one at a time (a no denies, the N-th yes approves), a use is spent at most
as often as granted even when many connections race for it, and each vote and use is
audited in its own transaction."""

from __future__ import annotations

import concurrent.futures

import pytest

from capgate import FailedPreconditionError, NotFoundError, ResourceExhaustedError
from capgate_server.store import (
    ApprovalRecord,
    ApprovalStatus,
    ApprovalVote,
    AuditEvent,
    AuditQuery,
    ChangeKind,
    Redemption,
    Store,
)

T0 = 1_800_000_000.0


@pytest.fixture
def store(opener) -> Store:
    return opener()


def record(
    aid: str = "a" * 32, requested_by: str = "payer", needed: int = 1, **kw: object
) -> ApprovalRecord:
    fields: dict[str, object] = dict(
        id=aid,
        token_id="t" * 32,
        token_digest="d" * 64,
        requested_by=requested_by,
        presenter="payer",
        action="pay",
        resource="/invoices/8",
        ctx=(("amount", "4200"), ("invoice", "inv-8")),
        request_digest="r" * 64,
        conditions=("approval n=1 nonce=0123456789abcdef when ctx amount > 1000",),
        needed=needed,
        chain=("finance", "payer"),
        note="licence",
        created_at=T0,
        wait_until=T0 + 3600,
    )
    fields.update(kw)
    return ApprovalRecord(**fields)  # type: ignore[arg-type]


def ev(kind: str, principal: str = "carol", subject: str = "a" * 32) -> AuditEvent:
    return AuditEvent(T0, principal, kind, subject)


def vote(
    who: str = "carol", approve: bool = True, at: float = T0 + 10, ttl: int = 300, uses: int = 1
) -> ApprovalVote:
    return ApprovalVote(who, approve, "because", at, ttl, uses)


def audit(store: Store, kind: str) -> list[AuditEvent]:
    return store.list_audit(AuditQuery(kind=kind, limit=100))


def test_a_request_round_trips_and_is_announced(store):
    before = store.last_change()
    store.create_approval(record(), ev("approval.request", "payer"), 10)
    got = store.get_approval("a" * 32)
    assert got is not None and got.seq > 0
    assert got == record(seq=got.seq)
    assert got.state(T0) is ApprovalStatus.PENDING
    assert got.state(T0 + 3600) is ApprovalStatus.EXPIRED  # nobody decided in time
    assert [c.kind for c in store.changes_since(before)] == [ChangeKind.APPROVAL]
    assert [e.principal for e in audit(store, "approval.request")] == ["payer"]
    assert store.get_approval("b" * 32) is None


def test_pending_requests_per_principal_are_bounded(store):
    for i in range(3):
        store.create_approval(record(f"{i:032x}"), ev("approval.request"), 3)
    with pytest.raises(ResourceExhaustedError):
        store.create_approval(record("f" * 32), ev("approval.request"), 3)
    store.create_approval(record("e" * 32, requested_by="other"), ev("approval.request"), 3)
    # lapsed requests do not count
    store.create_approval(
        record("d" * 32, created_at=T0 + 3600, wait_until=T0 + 7200), ev("approval.request"), 3
    )


def test_a_no_denies_and_the_needed_yes_approves(store):
    store.create_approval(record(needed=2), ev("approval.request"), 10)
    r = store.vote_approval("a" * 32, vote("carol", ttl=600, uses=3), ev("approval.approve"))
    assert r.status is ApprovalStatus.PENDING and r.approvals == 1
    with pytest.raises(FailedPreconditionError, match="already voted"):
        store.vote_approval("a" * 32, vote("carol"), ev("approval.approve"))
    r = store.vote_approval(
        "a" * 32, vote("dave", at=T0 + 20.7, ttl=300, uses=5), ev("approval.approve", "dave")
    )
    assert r.status is ApprovalStatus.APPROVED and (r.uses, r.decided_at) == (3, T0 + 20.7)
    assert r.expires_at == int(T0 + 20.7 + 300)  # whole seconds, the shorter ttl
    assert [v.approver for v in r.votes] == ["carol", "dave"]
    with pytest.raises(FailedPreconditionError, match="approved"):
        store.vote_approval("a" * 32, vote("erin"), ev("approval.approve", "erin"))
    details = [e.detail for e in audit(store, "approval.approve")]
    assert [d["status"] for d in details] == ["pending", "approved"]

    store.create_approval(record("b" * 32, needed=2), ev("approval.request"), 10)
    store.vote_approval("b" * 32, vote("carol"), ev("approval.approve"))
    r = store.vote_approval("b" * 32, vote("dave", approve=False), ev("approval.deny", "dave"))
    assert r.status is ApprovalStatus.DENIED and r.reason == "because"
    with pytest.raises(NotFoundError):
        store.vote_approval("c" * 32, vote(), ev("approval.approve"))


def test_a_lapsed_request_takes_no_votes(store):
    store.create_approval(record(), ev("approval.request"), 10)
    with pytest.raises(FailedPreconditionError, match="expired"):
        store.vote_approval("a" * 32, vote(at=T0 + 3600), ev("approval.approve"))


def test_a_use_is_spent_once_and_only_for_its_token_and_request(store):
    store.create_approval(record(), ev("approval.request"), 10)
    use = ev("approval.use", "pay-api")
    now = T0 + 20
    assert store.redeem_approval("a" * 32, "d" * 64, "r" * 64, now, use) is Redemption.NOT_APPROVED
    store.vote_approval("a" * 32, vote(), ev("approval.approve"))
    assert store.redeem_approval("a" * 32, "x" * 64, "r" * 64, now, use) is Redemption.MISMATCH
    assert store.redeem_approval("a" * 32, "d" * 64, "x" * 64, now, use) is Redemption.MISMATCH
    assert (
        store.redeem_approval("a" * 32, "d" * 64, "r" * 64, T0 + 10 + 300, use)
        is Redemption.EXPIRED
    )
    assert store.redeem_approval("a" * 32, "d" * 64, "r" * 64, now, use) is Redemption.OK
    assert store.redeem_approval("a" * 32, "d" * 64, "r" * 64, now, use) is Redemption.USED
    assert store.redeem_approval("b" * 32, "d" * 64, "r" * 64, now, use) is Redemption.UNKNOWN
    assert len(audit(store, "approval.use")) == 1  # only the use that counted
    assert store.get_approval("a" * 32).state(now) is ApprovalStatus.USED


def test_racing_uses_spend_exactly_what_was_granted(opener):
    first = opener()
    first.create_approval(record(), ev("approval.request"), 10)
    first.vote_approval("a" * 32, vote(uses=3), ev("approval.approve"))
    stores = [opener() for _ in range(8)]  # eight connections, like eight replicas

    def redeem(s: Store) -> Redemption:
        return s.redeem_approval(
            "a" * 32, "d" * 64, "r" * 64, T0 + 20, ev("approval.use", "pay-api")
        )

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(redeem, stores * 3))
    assert results.count(Redemption.OK) == 3
    assert results.count(Redemption.USED) == 21


def test_racing_votes_are_counted_one_at_a_time(opener):
    first = opener()
    first.create_approval(record(needed=8), ev("approval.request"), 10)
    stores = [opener() for _ in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: stores[i].vote_approval(
                    "a" * 32, vote(f"approver{i}"), ev("approval.approve", f"approver{i}")
                ),
                range(8),
            )
        )
    r = first.get_approval("a" * 32)
    assert r.status is ApprovalStatus.APPROVED and r.approvals == 8


def test_lists_filter_by_status_and_requester(store):
    now = T0 + 20
    for aid, who in (("a" * 32, "payer"), ("b" * 32, "payer"), ("c" * 32, "svc")):
        store.create_approval(record(aid, requested_by=who), ev("approval.request"), 10)
    store.vote_approval("b" * 32, vote(), ev("approval.approve"))
    store.vote_approval("c" * 32, vote(approve=False), ev("approval.deny"))

    def ids(**kw: object) -> list[str]:
        return [r.id[0] for r in store.list_approvals(now, **kw)]  # type: ignore[arg-type]

    assert ids(status=ApprovalStatus.PENDING) == ["a"]
    assert ids(status=ApprovalStatus.APPROVED) == ["b"]
    assert ids(status=ApprovalStatus.DENIED) == ["c"]
    assert ids() == ["a", "b", "c"]
    assert ids(requested_by="svc") == ["c"]
    store.redeem_approval("b" * 32, "d" * 64, "r" * 64, now, ev("approval.use"))
    assert ids(status=ApprovalStatus.USED) == ["b"]
    assert [r.id[0] for r in store.list_approvals(T0 + 7200, ApprovalStatus.EXPIRED)] == ["a"]


def test_old_requests_are_pruned_with_their_votes(store):
    store.create_approval(record(), ev("approval.request"), 10)
    store.vote_approval("a" * 32, vote(), ev("approval.approve"))
    assert store.prune_approvals(T0 + 3600) == 0  # approved until T0 + 310, waited to 3600
    assert store.prune_approvals(T0 + 3601) == 1
    assert store.get_approval("a" * 32) is None


def test_uses_of_several_approvals_are_spent_all_or_none(store):
    """A request resting on two approvals, one of them not approved, spends neither."""
    for aid in ("a" * 32, "b" * 32):
        store.create_approval(record(aid), ev("approval.request"), 10)
    store.vote_approval("a" * 32, vote(), ev("approval.approve"))
    now = T0 + 20
    uses = [ev("approval.use", "pay-api"), ev("approval.use", "pay-api")]
    assert store.redeem_approvals(["a" * 32, "b" * 32], "d" * 64, "r" * 64, now, uses) == (
        "b" * 32,
        Redemption.NOT_APPROVED,
    )
    assert store.get_approval("a" * 32).used == 0 and not audit(store, "approval.use")
    store.vote_approval("b" * 32, vote(), ev("approval.approve"))
    assert store.redeem_approvals(["a" * 32, "b" * 32], "d" * 64, "r" * 64, now, uses) == (
        "",
        Redemption.OK,
    )
    assert store.get_approval("a" * 32).used == 1 and len(audit(store, "approval.use")) == 2
