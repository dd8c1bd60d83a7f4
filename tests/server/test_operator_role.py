"""The operator role over gRPC: it reads agents, trees and the audit, suspends, resumes,
revokes and narrows ceilings, and nothing more (no agent or principal created, no
ceiling widened, no other field changed, no key touched, no approval decided)."""

from __future__ import annotations

import pytest

from capgate import PermissionDeniedError

from harness import ServerThread


@pytest.fixture
def fleet(tmp_path):
    server = ServerThread(tmp_path / "data").start()
    admin = server.client()
    _, cred = admin.create_agent("bot", ["read,write:/data/**"])
    ops = admin.create_principal("ops", "operator")
    assert ops.role == "operator"
    with server.client(cred) as bot:
        token = bot.issue("read:/data/*")
    yield server, admin, server.client(ops.credential), token
    admin.close()
    server.stop()


def test_an_operator_runs_the_fleet(fleet):
    server, admin, ops, token = fleet
    assert [a.id for a in ops.list_agents()] == ["bot"]
    assert ops.get_agent("bot").status == "active"
    assert ops.suspend_agent("bot").status == "suspended"
    assert ops.resume_agent("bot").status == "active"
    narrowed = ops.update_agent("bot", grants=["read:/data/**"])
    assert list(narrowed.ceiling) == ["read:/data/**"]
    assert ops.tree(token.token_id).id == token.token_id
    assert ops.revoke(token.token_id, "rotating").newly_revoked
    kinds = {(e.kind, e.principal) for e in ops.audit(principal="ops", limit=100)}
    assert {("agent.suspend", "ops"), ("agent.update", "ops"), ("revoke", "ops")} <= kinds


def test_an_operator_never_widens_creates_or_deletes(fleet):
    server, admin, ops, token = fleet
    for call in (
        lambda: ops.update_agent("bot", grants=["read,write,delete:/data/**"]),
        lambda: ops.update_agent("bot", grants=["read:/**"]),
        lambda: ops.update_agent("bot", max_ttl=7200),
        lambda: ops.create_agent("new", ["read:/x/*"]),
        lambda: ops.delete_agent("bot"),
        lambda: ops.create_principal("eve", "admin"),
        lambda: ops.list_principals(),
        lambda: ops.rotate_key(),
        lambda: ops.verify(token.token, "read", "/data/x", presenter="bot"),
    ):
        with pytest.raises(PermissionDeniedError):
            call()
    assert [str(g) for g in admin.get_agent("bot").ceiling] == ["read,write:/data/**"]
    assert admin.get_agent("bot").max_ttl == 3600
