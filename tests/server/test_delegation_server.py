"""Delegation through the server and the CLI: minting, offline signing, trees, cascades."""

from __future__ import annotations

import json

import pytest

from capgate import FailedPreconditionError, NotFoundError, PermissionDeniedError, Token

from harness import ServerProcess, cli


@pytest.fixture
def fleet(server):
    admin = server.client()
    creds = {}
    for name, grant, depth in (
        ("orch", "read,write:/data/**", 3),
        ("res", "read,write:/data/**", 2),
        ("sum", "read:/data/**", 0),
        ("other", "read:/data/**", 1),
    ):
        _, creds[name] = admin.create_agent(name, [grant], max_depth=depth)
    clients = {n: server.client(c) for n, c in creds.items()}
    svc = server.client(admin.create_principal("svc", "service").credential)
    yield admin, clients, svc
    for c in (admin, svc, *clients.values()):
        c.close()


def ok(svc, token, who, action="read", resource="/data/reports/q3"):
    return svc.verify(token, action, resource, presenter=who)


def test_three_hop_tree_and_cascades(fleet):
    admin, c, svc = fleet
    root = c["orch"].issue("read,write:/data/**")
    to_res = c["orch"].delegate(root.token, "res", ["action in read"])
    assert to_res.token_id == root.token_id and len(to_res.delegation_id) == 32
    to_sum = c["res"].delegate(to_res.token, "sum", ["resource /data/reports/*"])
    sibling = c["orch"].delegate(root.token, "other", ["resource /data/other/**"])
    d = ok(svc, to_sum.token, "sum")
    assert d.allowed and d.chain == ("orch", "res", "sum")
    assert ok(svc, to_sum.token, "sum", action="write").code == "beyond_ceiling"
    assert ok(svc, to_res.token, "res", action="write").caveat == "action in read"
    assert ok(svc, to_sum.token, "res").code == "not_holder"

    tree = admin.tree(root.token_id)
    assert tree.agent == "orch" and {ch.agent for ch in tree.children} == {"res", "other"}
    res_node = next(ch for ch in tree.children if ch.agent == "res")
    assert [g.agent for g in res_node.children] == ["sum"]
    assert res_node.restrictions == ("action in read",)

    # revoke the middle hop: it and its child go dark, the parent and the sibling do not
    admin.revoke(to_res.delegation_id, "branch compromised")
    assert ok(svc, to_res.token, "res").code == "revoked"
    assert ok(svc, to_sum.token, "sum").code == "revoked"
    assert ok(svc, sibling.token, "other", resource="/data/other/x").allowed
    assert ok(svc, root.token, "orch").allowed
    assert (
        admin.tree(root.token_id).children[0].revoked
        or admin.tree(root.token_id).children[1].revoked
    )

    # suspending the orchestrator takes the whole tree down; resuming restores it
    admin.suspend_agent("orch")
    for t, who in ((root.token, "orch"), (sibling.token, "other")):
        assert ok(svc, t, who, resource="/data/other/x").code == "agent_suspended"
    admin.resume_agent("orch")
    assert ok(svc, sibling.token, "other", resource="/data/other/x").allowed


def test_delegation_rules_at_the_server(fleet):
    admin, c, svc = fleet
    root = c["orch"].issue("read:/data/**")
    with pytest.raises(PermissionDeniedError, match="current holder"):
        c["res"].delegate(root.token, "sum")
    with pytest.raises(NotFoundError):
        c["orch"].delegate(root.token, "ghost")
    to_sum = c["orch"].delegate(root.token, "sum")
    with pytest.raises(PermissionDeniedError, match="'sum' allows at most 0"):
        c["sum"].delegate(to_sum.token, "res")  # sum's max depth is 0
    admin.suspend_agent("other")
    with pytest.raises(FailedPreconditionError, match="suspended"):
        c["orch"].delegate(root.token, "other")
    admin.revoke(root.token_id)
    with pytest.raises(PermissionDeniedError, match="revoked"):
        c["orch"].delegate(root.token, "res")


def test_revoke_all_cuts_hops_through_the_agent(fleet):
    admin, c, svc = fleet
    root = c["orch"].issue("read:/data/**")
    to_res = c["orch"].delegate(root.token, "res")
    to_sum = c["res"].delegate(to_res.token, "sum")
    admin.revoke_all("res")
    assert ok(svc, to_sum.token, "sum").code == "agent_tokens_revoked"
    assert ok(svc, root.token, "orch").allowed
    again = c["orch"].delegate(root.token, "res")  # a hop made after the bump works
    assert ok(svc, again.token, "res").allowed


def test_inspect_shows_the_chain_and_its_state(fleet):
    admin, c, svc = fleet
    root = c["orch"].issue("read:/data/**")
    to_res = c["orch"].delegate(root.token, "res", ["resource /data/reports/**"])
    admin.revoke(to_res.delegation_id)
    i = admin.inspect(to_res.token)
    assert [h.agent for h in i.chain] == ["orch", "res"]
    assert i.chain[1].delegation_id == to_res.delegation_id and i.chain[1].revoked
    assert not i.chain[0].revoked and i.chain[1].restrictions == ("resource /data/reports/**",)
    assert i.revoked and i.lineage == (root.token_id, to_res.delegation_id)


def test_audit_names_the_whole_chain(fleet):
    admin, c, svc = fleet
    root = c["orch"].issue("read:/data/**")
    to_res = c["orch"].delegate(root.token, "res")
    to_sum = c["res"].delegate(to_res.token, "sum")
    ok(svc, to_sum.token, "sum")
    delegations = admin.audit(kind="delegate")
    assert [e.chain for e in delegations] == [("orch", "res"), ("orch", "res", "sum")]
    verify = admin.audit(kind="verify")[-1]
    assert verify.chain == ("orch", "res", "sum") and verify.principal == "svc"
    assert admin.audit(agent="res", kind="verify")[-1].subject == root.token_id


def test_offline_delegation_through_the_cli(tmp_path):
    p = ServerProcess(tmp_path / "data").start()
    try:

        def run(*args, cred=None, expect=0):
            r = cli("--json", *args, server=p.address, credential=cred or p.admin_credential)
            assert r.returncode == expect, r.stdout + r.stderr
            return json.loads(r.stdout)

        key = tmp_path / "orch.key"
        gen = run("agent", "key", "generate", "--out", str(key))
        assert (tmp_path / "orch.key").stat().st_mode & 0o777 == 0o600
        orch = run(
            "agent",
            "create",
            "orch",
            "--grant",
            "read,write:/data/**",
            "--public-key",
            gen["public_key"],
        )["credential"]
        run("agent", "create", "res", "--grant", "read:/data/**")
        run("agent", "create", "sum", "--grant", "read:/data/**")
        token = run("token", "issue", "--grant", "read:/data/**", cred=orch)["token"]
        hop = run(
            "token",
            "delegate",
            token,
            "--to",
            "res",
            "--offline",
            "--key",
            str(key),
            "--action",
            "read",
        )
        assert hop["delegation_id"] and Token.parse(hop["token"]).caveats[-2].startswith(
            "delegate = res"
        )
        v = run(
            "token",
            "verify",
            hop["token"],
            "--action",
            "read",
            "--resource",
            "/data/a",
            "--agent",
            "res",
        )
        assert v["allowed"] and v["chain"] == ["orch", "res"]
        tree = run("token", "tree", hop["token_id"])
        assert tree["children"][0]["agent"] == "res"  # recorded when first seen at verify
        # a thief holding the token cannot present it, nor sign a hop with someone else's key
        thief_key = tmp_path / "thief.key"
        run("agent", "key", "generate", "--out", str(thief_key))
        stolen = run(
            "token", "delegate", hop["token"], "--to", "sum", "--offline", "--key", str(thief_key)
        )
        bad = run(
            "token",
            "verify",
            stolen["token"],
            "--action",
            "read",
            "--resource",
            "/data/a",
            "--agent",
            "sum",
            expect=1,
        )
        assert bad["code"] == "bad_delegation"
        # removing orch's key invalidates its offline hops
        run("agent", "key", "remove", "orch", gen["key_id"])
        gone = run(
            "token",
            "verify",
            hop["token"],
            "--action",
            "read",
            "--resource",
            "/data/a",
            "--agent",
            "res",
            expect=1,
        )
        assert gone["code"] == "bad_delegation"
        text = cli(
            "token", "inspect", hop["token"], server=p.address, credential=p.admin_credential
        ).stdout
        assert "delegated (offline-signed) to res" in text
    finally:
        p.stop()
