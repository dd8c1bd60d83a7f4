"""Approvals across a fleet on PostgreSQL: asked at one replica, seen by a watcher at
another, approved there, used at either; however many replicas race to use it, an
approval is spent exactly as often as it was granted."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading

import pytest

from capgate import ApprovalRule, CapgateError
from capgate_client import Client

from harness import ServerProcess, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
BIG = {"amount": "4200"}


@pytest.fixture
def fleet(tmp_path, pg_url):
    from capgate_server import new_kek_text

    kek = tmp_path / "kek"
    kek.write_text(new_kek_text())
    replicas = [
        ServerProcess(
            tmp_path / name, ["--store", pg_url, "--kek-file", str(kek), "--poll-interval", "0.5"]
        ).start()
        for name in ("a", "b")
    ]
    yield replicas, replicas[0].admin_credential
    for p in replicas:
        p.stop()


def test_approve_at_one_replica_use_at_another_once_fleet_wide(fleet):
    (a, b), admin_cred = fleet
    with Client(a.address, admin_cred) as admin:
        _, payer = admin.create_agent(
            "payer", ["pay:/invoices/**"], approvals=[ApprovalRule("ctx amount > 1000")]
        )
        svc = admin.create_principal("pay-api", "service").credential
        carol = admin.create_principal("carol", "approver").credential
    with Client(a.address, payer) as agent_a:
        token = agent_a.issue("pay:/invoices/*", ttl=600).token

    seen: list[str] = []
    watching = Client(a.address, carol)

    def watch() -> None:
        with contextlib.suppress(CapgateError):  # ends when the channel is closed
            for x in watching.watch_approvals():
                seen.append(x.id)

    threading.Thread(target=watch, daemon=True).start()

    with Client(b.address, payer) as agent_b:  # asked at B (once B knows the agent)
        wait_for(lambda: _knows(b, payer), timeout=5)
        asked = agent_b.request_approval(token, "pay", "/invoices/8", ctx=BIG)
    wait_for(lambda: asked.id in seen, timeout=5)  # a watcher at A sees it
    with Client(a.address, carol) as approver:
        assert approver.approve(asked.id, "ok", uses=2).status == "approved"
    watching.close()
    with Client(b.address, payer) as agent_b:
        discharges = agent_b.get_approval(asked.id, token=token).discharges
    assert discharges

    def use(address: str) -> str:
        with Client(address, svc) as s:
            return s.verify(
                token, "pay", "/invoices/8", presenter="payer", ctx=BIG, discharges=list(discharges)
            ).code

    wait_for(lambda: _knows(b, svc), timeout=5)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(use, [a.address, b.address] * 6))
    assert codes.count("allowed") == 2, codes  # the two uses granted, wherever they landed
    assert codes.count("approval_used") == 10, codes
    with Client(a.address, admin_cred) as admin:
        uses = [e for e in admin.audit(limit=1000) if e.kind == "approval.use"]
    assert len(uses) == 2 and {e.subject for e in uses} == {asked.id}


def _knows(p: ServerProcess, credential: str) -> bool:
    from capgate import AuthenticationError

    try:
        with Client(p.address, credential) as c:
            c.list_approvals()
        return True
    except AuthenticationError:
        return False
