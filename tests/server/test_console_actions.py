"""The operator console's pages and actions over plain HTTP: delegation trees with revoked,
dead and suspended hops marked, revoke and revoke-all, an operator's actions, each audited
under the operator; the live decisions stream on SQLite and PostgreSQL (backlog, then what
follows, resumed from Last-Event-ID) and an agent's actual use."""

from __future__ import annotations

import json

import httpx

from harness import ServerThread, audit_records, console_http, console_login, console_post


def test_revoking_a_hop_marks_it_and_everything_below_it(console):
    with console.client() as admin:
        _, planner = admin.create_agent("planner", ["read:/data/**"])
        _, worker = admin.create_agent("worker", ["read:/data/**"])
        _, helper = admin.create_agent("helper", ["read:/data/**"])
    with console.client(planner) as p:
        root = p.issue("read:/data/*")
        hop = p.delegate(root.token, "worker")
    with console.client(worker) as w:
        below = w.delegate(hop.token, "helper")
    with console_http(console) as c:
        csrf = console_login(c, console.admin_credential)["csrf"]
        page = c.get("/api/agents/planner").json()
        assert page["use"] == [] and page["ceiling"] == ["read:/data/**"]
        (tree,) = page["tokens"]
        assert tree["id"] == root.token_id and tree["agent"] == "planner"
        (child,) = tree["children"]
        assert child["id"] == hop.delegation_id and child["agent"] == "worker"
        assert child["children"][0]["agent"] == "helper"
        r = console_post(c, "/api/revoke", {"id": hop.delegation_id, "reason": "compromised"}, csrf)
        assert r.status_code == 200 and r.json()["newly_revoked"]
        tree = c.get(f"/api/tree/{root.token_id}").json()
        assert not tree["revoked"]
        child = tree["children"][0]
        assert child["revoked"] and child["children"][0]["dead_above"]
        with console.client() as admin:
            admin.suspend_agent("helper")
        tree = c.get(f"/api/tree/{root.token_id}").json()
        assert tree["children"][0]["children"][0]["suspended"]
        # the worker's page shows the hop it received
        assert c.get("/api/agents/worker").json()["tokens"][0]["id"] == hop.delegation_id
    revokes = [e for e in audit_records(console, "revoke") if e.subject == hop.delegation_id]
    assert [(e.principal, json.loads(e.detail)["reason"]) for e in revokes] == [
        ("admin", "compromised")
    ]
    with console.client() as admin:
        decision = admin.verify(below.token, "read", "/data/x", presenter="helper")
    assert not decision.allowed and decision.code == "revoked"


def test_revoke_all_from_the_console_kills_every_tree_of_the_agent(console):
    with console.client() as admin:
        _, planner = admin.create_agent("planner", ["read:/data/**"])
        admin.create_agent("worker", ["read:/data/**"])
    with console.client(planner) as p:
        root = p.issue("read:/data/*")
        p.delegate(root.token, "worker")
    with console_http(console) as c:
        csrf = console_login(c, console.admin_credential)["csrf"]
        r = console_post(c, "/api/agents/planner/revoke-all", {}, csrf)
        assert r.status_code == 200
        (tree,) = c.get("/api/agents/planner").json()["tokens"]
        assert tree["cut_off"] and tree["children"][0]["dead_above"]
    assert [e.principal for e in audit_records(console, "agent.revoke-all")] == ["admin"]


def test_an_operator_acts_in_the_console_but_decides_no_approval(console):
    with console.client() as admin:
        admin.create_agent("bot", ["read,write:/data/**"])
        ops = admin.create_principal("ops", "operator").credential
    with console_http(console) as c:
        session = console_login(c, ops)
        assert session["role"] == "operator" and session["may"] == ["act", "agents", "decisions"]
        csrf = session["csrf"]
        assert c.get("/api/agents").status_code == 200
        assert c.get("/api/approvals").status_code == 403
        assert console_post(c, "/api/agents/bot/suspend", {}, csrf).json()["status"] == "suspended"
        r = console_post(c, "/api/agents/bot/ceiling", {"grants": ["read:/data/**"]}, csrf)
        assert r.status_code == 200
        r = console_post(c, "/api/agents/bot/ceiling", {"grants": ["read,write:/data/**"]}, csrf)
        assert r.status_code == 403
    kinds = {(e.kind, e.subject) for e in audit_records(console, "agent.update")}
    assert kinds == {("agent.update", "bot")}
    assert [e.principal for e in audit_records(console, "agent.suspend")] == ["ops"]


def _first_event(
    c: httpx.Client, params: dict, headers: dict | None = None, then=lambda: None
) -> dict:
    with c.stream("GET", "/api/decisions/stream", params=params, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        then()
        for line in r.iter_lines():
            if line.startswith("data: "):
                return json.loads(line[6:])
    raise AssertionError("the stream ended")


def _live_deny(server) -> None:
    """A deny made before the page loaded is in its backlog; one made after arrives on
    the stream, which starts where the backlog ends (and resumes from Last-Event-ID)."""
    with server.client() as admin:
        _, cred = admin.create_agent("streamer", ["read,write:/s/**"])
        svc = admin.create_principal("svc", "service").credential
    with server.client(cred) as agent:
        token = agent.issue("read:/s/*")

    def verify(resource: str) -> None:
        with server.client(svc) as s:
            assert s.verify(token.token, "read", resource, presenter="streamer").allowed
            assert not s.verify(token.token, "write", resource, presenter="streamer").allowed

    with console_http(server) as c:
        console_login(c, server.admin_credential)
        params = {"decision": "deny", "agent": "streamer"}
        assert c.get("/api/decisions/stream", params={"code": "Bad"}).status_code == 400
        verify("/s/before")
        page = c.get("/api/decisions", params=params).json()
        (before,) = page["decisions"]
        assert (
            before["allowed"],
            before["code"],
            before["caveat"],
            before["resource"],
            before["chain"],
        ) == (False, "caveat_failed", "action in read", "/s/before", ["streamer"])
        follow = {**params, "after": str(page["follow_from"])}
        after = _first_event(c, follow, then=lambda: verify("/s/after"))
        assert (after["code"], after["resource"]) == ("caveat_failed", "/s/after")
        resumed = _first_event(
            c, {**params, "after": "0"}, headers={"Last-Event-ID": str(page["follow_from"])}
        )
        assert resumed["seq"] == after["seq"]
        use = c.get("/api/agents/streamer").json()["use"]
        assert use == [
            {"action": "read", "resource": "/s/after", "count": 1},
            {"action": "read", "resource": "/s/before", "count": 1},
        ]


def test_a_deny_arrives_on_the_live_stream(console):
    _live_deny(console)


def test_a_deny_arrives_on_the_live_stream_on_postgresql(tmp_path, pg_url):
    from capgate_server import new_kek_text

    kek = tmp_path / "kek"
    kek.write_text(new_kek_text())
    server = ServerThread(
        tmp_path / "data", store_url=pg_url, kek_file=kek, console_listen="127.0.0.1:0"
    ).start()
    try:
        _live_deny(server)
    finally:
        server.stop()
