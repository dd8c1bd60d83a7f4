"""A human in the loop, through a real server: an agent's payment over a limit is denied
as needing approval; once an approver says yes, that very payment is allowed exactly
once; anything else (another amount, resource, presenter or token, a denied, lapsed or
expired approval) is denied; m-of-n distinct approvers; who may do what; standing
rules on agents; every step in the audit trail with its chain."""

from __future__ import annotations

import json
import threading

import pytest

from capgate import (
    ApprovalRule,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    Token,
    UnavailableError,
)
from capgate_server import ResourceLimits

from harness import ServerThread, wait_for

BIG = {"amount": "4200", "invoice": "inv-8"}
SMALL = {"amount": "250", "invoice": "inv-7"}
INVOICE = "/invoices/inv-8"


class World:
    """``payer`` may pay invoices, above 1,000 only with approval (``approvers`` of them);
    ``pay-api`` verifies; ``carol`` and ``dave`` approve."""

    def __init__(self, server: ServerThread, approvers: int = 1) -> None:
        self.server = server
        self.admin = server.client()
        _, cred = self.admin.create_agent(
            "payer",
            ["pay,read:/invoices/**"],
            approvals=[ApprovalRule("ctx amount > 1000", approvers)],
        )
        _, clerk = self.admin.create_agent("clerk", ["pay,read:/invoices/**"])
        self.agent = server.client(cred)
        self.clerk = server.client(clerk)
        self.svc = server.client(self.admin.create_principal("pay-api", "service").credential)
        self.carol = server.client(self.admin.create_principal("carol", "approver").credential)
        self.dave = server.client(self.admin.create_principal("dave", "approver").credential)
        self.token = self.agent.issue("pay,read:/invoices/*", ttl=3600).token

    def pay(
        self, ctx=BIG, discharges=(), token=None, resource=INVOICE, presenter="payer", action="pay"
    ):
        return self.svc.verify(
            token or self.token,
            action,
            resource,
            presenter=presenter,
            ctx=ctx,
            discharges=list(discharges),
        )

    def ask(self, ctx=BIG, token=None, resource=INVOICE, note=""):
        return self.agent.request_approval(token or self.token, "pay", resource, ctx=ctx, note=note)

    def approved(self, ctx=BIG, token=None, **kw):
        a = self.ask(ctx, token)
        self.carol.approve(a.id, "budgeted", **kw)
        return a, self.agent.get_approval(a.id, token=token or self.token).discharges

    def close(self):
        for c in (self.admin, self.agent, self.clerk, self.svc, self.carol, self.dave):
            c.close()


@pytest.fixture
def world(tmp_path, clock):
    s = ServerThread(tmp_path / "data", clock=clock).start()
    w = World(s)
    yield w
    w.close()
    s.stop()


def events(w, kind):
    return [e for e in w.admin.audit(limit=1000) if e.kind == kind]


def test_an_over_limit_payment_is_allowed_once_a_person_approves_it_and_only_once(world):
    w = world
    assert w.pay(SMALL).allowed  # under the limit: no one is asked
    denied = w.pay()
    assert denied.code == "approval_required" and not denied.allowed
    assert denied.caveat.startswith("approval n=1 ") and "ctx amount > 1000" in denied.caveat

    a = w.ask(note="annual licence")
    assert a.status == "pending" and a.approvals_needed == 1 and a.requested_by == "payer"
    assert dict(a.ctx) == BIG and a.chain == ("payer",) and a.note == "annual licence"
    assert [x.id for x in w.carol.list_approvals()] == [a.id]
    assert w.agent.get_approval(a.id, token=w.token).discharges == ()  # not yet
    decided = w.carol.approve(a.id, "budgeted for Q3")
    assert decided.status == "approved" and decided.uses == 1 and decided.expires
    got = w.agent.get_approval(a.id, token=w.token)
    assert got.status == "approved" and len(got.discharges) == 1

    first = w.pay(discharges=got.discharges)
    assert first.allowed and a.id in first.reason
    again = w.pay(discharges=got.discharges)
    assert again.code == "approval_used" and not again.allowed
    assert w.agent.get_approval(a.id).status == "used"
    assert w.pay().code == "approval_required"  # and without it, as before

    # the audit trail: who asked, for what; who approved, why; who used it
    (req,) = events(w, "approval.request")
    assert (req.principal, req.subject, req.chain) == ("payer", a.id, ("payer",))
    detail = json.loads(req.detail)
    assert detail["ctx"] == BIG and detail["token_id"] == a.token_id and detail["needed"] == 1
    (yes,) = events(w, "approval.approve")
    assert (yes.principal, yes.subject, yes.reason) == ("carol", a.id, "budgeted for Q3")
    assert json.loads(yes.detail)["status"] == "approved"
    (use,) = events(w, "approval.use")
    assert (use.principal, use.subject, use.chain) == ("pay-api", a.id, ("payer",))


@pytest.mark.parametrize(
    "change",
    [
        dict(ctx={**BIG, "amount": "4201"}),
        dict(ctx={"amount": "4200"}),
        dict(ctx={**BIG, "memo": "x"}),
        dict(resource="/invoices/inv-9"),
        dict(action="read"),
    ],
)
def test_the_discharge_is_for_that_request_only(world, change):
    _, ds = world.approved()
    r = world.pay(discharges=ds, **change)
    assert r.code == "approval_invalid" and "another request" in r.reason, r
    assert world.pay(discharges=ds).allowed  # it was not spent on the wrong request


def test_another_presenter_is_denied(world):
    _, ds = world.approved()
    assert world.pay(discharges=ds, presenter="clerk").code == "not_holder"
    with world.server.client() as admin:
        assert (
            admin.verify(
                world.token, "pay", INVOICE, presenter="mallory", ctx=BIG, discharges=list(ds)
            ).code
            == "not_holder"
        )


def test_a_denied_approval_gives_no_discharge(world):
    a = world.ask()
    d = world.carol.deny(a.id, "no such vendor")
    assert d.status == "denied" and d.reason == "no such vendor"
    got = world.agent.get_approval(a.id, token=world.token)
    assert got.status == "denied" and got.discharges == ()
    assert world.pay().code == "approval_required"
    with pytest.raises(FailedPreconditionError, match="denied"):
        world.dave.approve(a.id, "overruled")  # a denial is final
    (no,) = events(world, "approval.deny")
    assert (no.principal, no.reason) == ("carol", "no such vendor")


def test_an_expired_approval_is_denied(world, clock):
    a, ds = world.approved(ttl=60)
    clock.advance(61)
    r = world.pay(discharges=ds)
    assert r.code == "approval_expired" and not r.allowed
    assert world.agent.get_approval(a.id).status == "expired"


def test_a_request_nobody_decides_lapses(world, clock):
    a = world.ask()
    clock.advance(3601)
    assert world.carol.get_approval(a.id).status == "expired"
    with pytest.raises(FailedPreconditionError, match="expired"):
        world.carol.approve(a.id, "too late")
    assert world.carol.list_approvals() == []


def test_a_discharge_cannot_be_moved_to_another_token(world):
    _, ds = world.approved()
    other = world.agent.issue("pay:/invoices/*", ttl=600).token  # the same agent, same rule
    assert world.pay(discharges=ds, token=other).code == "approval_required"
    narrowed = world.agent.attenuate(world.token, ["resource /invoices/inv-8"]).token
    r = world.pay(discharges=ds, token=narrowed)
    assert r.code == "approval_invalid" and "bound to this token" in r.reason
    a = world.ask()
    world.carol.approve(a.id, "ok")
    with pytest.raises(PermissionDeniedError, match="another token"):
        world.agent.get_approval(a.id, token=other)
    assert world.pay(discharges=ds).allowed


def test_m_of_n_distinct_approvers(tmp_path, clock):
    s = ServerThread(tmp_path / "data", clock=clock).start()
    w = World(s, approvers=2)
    try:
        a = w.ask()
        assert a.approvals_needed == 2
        assert w.carol.approve(a.id, "fine by me", ttl=600, uses=2).status == "pending"
        with pytest.raises(FailedPreconditionError, match="already voted"):
            w.carol.approve(a.id, "really fine")
        assert w.agent.get_approval(a.id, token=w.token).discharges == ()
        assert w.pay().code == "approval_required"
        clock.advance(1)
        done = w.admin.approve(a.id, "second pair of eyes", ttl=120, uses=3)  # admins count
        assert done.status == "approved" and done.uses == 2  # the smaller of the two yeses
        assert [v.approver for v in done.votes] == ["carol", "admin"]
        ds = w.agent.get_approval(a.id, token=w.token).discharges
        assert w.pay(discharges=ds).allowed and w.pay(discharges=ds).allowed
        assert w.pay(discharges=ds).code == "approval_used"
        # nobody votes on a request they made (an admin asking for the agent)
        mine = w.admin.request_approval(w.token, "pay", INVOICE, presenter="payer", ctx=BIG)
        with pytest.raises(PermissionDeniedError, match="they made"):
            w.admin.approve(mine.id, "self-serve")
    finally:
        w.close()
        s.stop()


def test_who_may_do_what(world):
    w = world
    a = w.ask()
    for call in (
        lambda: w.carol.verify(w.token, "pay", INVOICE, presenter="payer"),
        lambda: w.carol.inspect(w.token),
        lambda: w.carol.list_agents(),
    ):
        with pytest.raises(PermissionDeniedError):  # an approver approves, nothing else
            call()
    for call in (
        lambda: w.agent.approve(a.id, "me"),
        lambda: w.svc.deny(a.id, "no"),
        lambda: list(w.agent.watch_approvals()),
    ):
        with pytest.raises(PermissionDeniedError):
            call()
    with pytest.raises(PermissionDeniedError, match="only for itself"):
        w.agent.request_approval(w.token, "pay", INVOICE, presenter="clerk", ctx=BIG)
    # a service (a guard acting for the agent) may ask for the presenter it names
    by_svc = w.svc.request_approval(w.token, "pay", INVOICE, presenter="payer", ctx=BIG)
    assert by_svc.requested_by == "pay-api"
    assert {x.id for x in w.svc.list_approvals()} == {by_svc.id}  # its own
    assert {x.id for x in w.agent.list_approvals()} == {a.id}
    assert {x.id for x in w.dave.list_approvals()} == {a.id, by_svc.id}
    with pytest.raises(NotFoundError):  # someone else's request is not there at all
        w.clerk.get_approval(a.id)
    with pytest.raises(PermissionDeniedError):  # approvers get no discharges
        w.carol.get_approval(a.id, token=w.token)
    with pytest.raises(InvalidArgumentError, match="reason"):  # no reason, no decision
        w.carol.deny(a.id, " ")


def test_only_requests_an_approval_can_help_are_taken(world):
    w = world
    with pytest.raises(FailedPreconditionError, match="needs no approval"):
        w.ask(SMALL)
    with pytest.raises(FailedPreconditionError, match=r"beyond_ceiling|caveat_failed"):
        w.ask(resource="/payroll/march")
    with pytest.raises(FailedPreconditionError, match="caveat_failed"):
        w.agent.request_approval(w.token, "read", "/invoices/a/b", ctx=BIG)


def test_standing_rules_follow_the_agent(world):
    w = world
    old = w.clerk.issue("pay:/invoices/*", ttl=600).token
    assert w.svc.verify(old, "pay", INVOICE, presenter="clerk", ctx=BIG).allowed
    w.admin.update_agent("clerk", approvals=[ApprovalRule("ctx amount > 100")])
    r = w.svc.verify(old, "pay", INVOICE, presenter="clerk", ctx=BIG)
    assert r.code == "approval_required" and r.caveat == ""  # no caveat: a new token is needed
    with pytest.raises(FailedPreconditionError, match="no approval can help"):
        w.clerk.request_approval(old, "pay", INVOICE, ctx=BIG)
    assert w.svc.verify(old, "pay", INVOICE, presenter="clerk", ctx={"amount": "50"}).allowed
    new = w.clerk.issue("pay:/invoices/*", ttl=600).token
    assert w.svc.verify(new, "pay", INVOICE, presenter="clerk", ctx=BIG).caveat
    # a delegation into a ruled agent gets its rule too
    to_clerk = w.agent.delegate(w.token, "clerk", ["resource /invoices/inv-8"]).token
    assert (
        w.svc.verify(to_clerk, "pay", INVOICE, presenter="clerk", ctx={"amount": "500"}).code
        == "approval_required"
    )
    w.admin.update_agent("clerk", approvals=[])
    assert w.svc.verify(old, "pay", INVOICE, presenter="clerk", ctx=BIG).allowed
    assert [r.condition for r in w.admin.get_agent("payer").approvals] == ["ctx amount > 1000"]


def test_batches_and_streams_spend_one_use_each(world):
    _, ds = world.approved()
    item = (world.token, "pay", INVOICE, "payer", BIG, None, ds)
    results = world.svc.verify_batch([item, item, (world.token, "pay", INVOICE, "payer", SMALL)])
    assert [r.code for r in results] == ["allowed", "approval_used", "allowed"]
    _, ds = world.approved()
    streamed = list(
        world.svc.verify_stream(iter([(world.token, "pay", INVOICE, "payer", BIG, None, ds)] * 2))
    )
    assert [r.code for r in streamed] == ["allowed", "approval_used"]


def test_watchers_see_each_new_request(world):
    first = world.ask()
    seen: list[str] = []
    stream = world.carol.watch_approvals()

    def watch():
        for a in stream:
            seen.append(a.id)
            if len(seen) == 2:
                return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    wait_for(lambda: seen == [first.id])
    second = world.ask({**BIG, "invoice": "inv-9"})
    wait_for(lambda: seen == [first.id, second.id], timeout=5)
    t.join(5)


def test_requests_waiting_per_principal_are_bounded(tmp_path):
    s = ServerThread(
        tmp_path / "d", limits=ResourceLimits(approvals_pending_per_principal=2)
    ).start()
    w = World(s)
    try:
        w.ask({**BIG, "invoice": "1"})
        w.ask({**BIG, "invoice": "2"})
        with pytest.raises(ResourceExhaustedError, match="already has 2"):
            w.ask({**BIG, "invoice": "3"})
    finally:
        w.close()
        s.stop()


def test_a_store_that_cannot_count_the_use_fails_closed(world):
    _, ds = world.approved()
    replica = world.server.app.replica
    original = replica.store.redeem_approvals

    def down(*args, **kwargs):
        raise UnavailableError("database is down")

    replica.store.redeem_approvals = down
    try:
        r = world.pay(discharges=ds)
        assert r.code == "unavailable" and "database is down" in r.reason
    finally:
        replica.store.redeem_approvals = original
    assert world.pay(discharges=ds).allowed  # nothing was spent


def test_a_denied_use_spends_no_budget(world):
    """Replaying a spent discharge is denied, and a deny spends nothing: the token's
    ``uses <= 3`` still has its two other uses for the requests people approve."""
    token = Token.parse(world.token).attenuate("uses <= 3").to_text()
    _, ds = world.approved(token=token)
    got = [world.pay(token=token, discharges=ds).code for _ in range(3)]
    assert got == ["allowed", "approval_used", "approval_used"]
    for _ in range(2):
        _, ds = world.approved(token=token)
        assert world.pay(token=token, discharges=ds).allowed
    _, ds = world.approved(token=token)
    assert world.pay(token=token, discharges=ds).code == "budget_exhausted"
