"""The operator console's front door over plain HTTP: nothing without a session, login by
role, cookie attributes, CSRF and same-origin on every change, sessions that end (idle,
logout, a disabled credential), bad input refused with a clear status, each role reaching
exactly its pages, local unless TLS, and ``capgate serve --console-listen``."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess

import httpx
import pytest

from capgate import InvalidArgumentError
from capgate_server import CapgateServer, Settings
from capgate_server.console import COOKIE, IDLE

from conftest import FakeClock
from harness import (
    CAPGATE,
    ServerProcess,
    ServerThread,
    audit_records,
    console_http,
    console_login,
    console_post,
    make_pki,
    wait_for,
)


def test_nothing_is_visible_without_a_session(console):
    with console.client() as admin:
        admin.create_agent("hidden-agent", ["read:/secret/**"])
    with console_http(console) as c:
        shell = c.get("/")
        assert shell.status_code == 200 and "hidden-agent" not in shell.text
        assert "default-src 'none'" in shell.headers["content-security-policy"]
        for path in (
            "/api/session",
            "/api/agents",
            "/api/agents/hidden-agent",
            "/api/decisions",
            "/api/decisions/stream",
            "/api/approvals",
            "/api/tree/" + "0" * 32,
        ):
            r = c.get(path)
            assert r.status_code == 401, path
            assert "hidden-agent" not in r.text
        r = c.post("/api/agents/hidden-agent/suspend", json={})
        assert r.status_code == 401
        c.cookies.set(COOKIE, "forged-session-id")
        assert c.get("/api/agents").status_code == 401


def test_login_by_role_and_the_cookie_it_sets(console):
    with console.client() as admin:
        _, agent_cred = admin.create_agent("worker", ["read:/w/**"])
        svc = admin.create_principal("svc", "service").credential
        approver = admin.create_principal("alice", "approver").credential
    with console_http(console) as c:
        r = c.post("/api/login", json={"credential": "cg_" + "A" * 43})
        assert r.status_code == 401
        for cred in (agent_cred, svc):
            r = c.post("/api/login", json={"credential": cred})
            assert r.status_code == 403 and "no console" in r.json()["error"]
        r = c.post("/api/login", json={"credential": console.admin_credential})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(COOKIE + "=")
        for attr in ("HttpOnly", "SameSite=Strict", "Path=/"):
            assert attr in cookie
        assert "Secure" not in cookie  # plain HTTP on loopback
        body = r.json()
        assert body["role"] == "admin" and body["csrf"] and "act" in body["may"]
        assert c.get("/api/agents").status_code == 200
    with console_http(console) as c:
        session = console_login(c, approver)
        assert session["may"] == ["approvals"]
        assert c.get("/api/approvals").status_code == 200
        assert c.get("/api/agents").status_code == 403
        assert console_post(c, "/api/agents/worker/suspend", {}, session["csrf"]).status_code == 403
    failed = audit_records(console, "auth.failed")
    assert any(e.subject == "console.login" for e in failed)
    assert any(e.principal == "admin" for e in audit_records(console, "console.login"))


def test_every_change_needs_the_csrf_token_json_and_the_same_origin(console):
    with console.client() as admin:
        admin.create_agent("target", ["read:/t/**"])
    with console_http(console) as c:
        csrf = console_login(c, console.admin_credential)["csrf"]
        url = "/api/agents/target/suspend"
        assert c.post(url, json={}).status_code == 403  # no token
        assert console_post(c, url, {}, "x" * 43).status_code == 403  # a wrong one
        r = c.post(
            url,
            content="{}",
            headers={"X-CSRF-Token": csrf, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 415  # a form, as a cross-site page could send
        r = c.post(url, json={}, headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
        assert r.status_code == 403
        with console.client() as admin:
            assert admin.get_agent("target").status == "active"
        port = console.app.console_port
        r = c.post(
            url, json={}, headers={"X-CSRF-Token": csrf, "Origin": f"http://127.0.0.1:{port}"}
        )
        assert r.status_code == 200 and r.json()["status"] == "suspended"
    with console.client() as admin:
        assert admin.get_agent("target").status == "suspended"
    events = [e for e in audit_records(console, "agent.suspend") if e.subject == "target"]
    assert [e.principal for e in events] == ["admin"]


def test_a_session_ends_when_idle_at_logout_and_when_its_credential_is_disabled(tmp_path):
    clock = FakeClock()
    server = ServerThread(tmp_path / "data", clock=clock, console_listen="127.0.0.1:0").start()
    try:
        with server.client() as admin:
            ops = admin.create_principal("ops", "admin").credential
        with console_http(server) as c:
            console_login(c, server.admin_credential)
            clock.advance(IDLE - 1)
            assert c.get("/api/agents").status_code == 200  # activity restarts the timer
            clock.advance(IDLE - 1)
            assert c.get("/api/agents").status_code == 200
            clock.advance(IDLE + 1)
            assert c.get("/api/agents").status_code == 401
        with console_http(server) as c:
            csrf = console_login(c, server.admin_credential)["csrf"]
            assert console_post(c, "/api/logout", {}, csrf).status_code == 200
            assert c.get("/api/agents").status_code == 401
        with console_http(server) as c:
            console_login(c, ops)
            assert c.get("/api/agents").status_code == 200
            with server.client() as admin:
                admin.disable_principal("ops")
            assert c.get("/api/agents").status_code == 401
    finally:
        server.stop()


def test_bad_input_gets_a_clear_refusal(console):
    with console.client() as admin:
        admin.create_agent("narrowed", ["read,write:/data/**"])
    port = console.app.console_port
    with console_http(console) as c:
        csrf = console_login(c, console.admin_credential)["csrf"]
        h = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
        assert c.post("/api/revoke", content=b"{not json", headers=h).status_code == 400
        assert c.post("/api/revoke", content=b"[1]", headers=h).status_code == 400
        assert c.post("/api/revoke", content=b'{"id": NaN}', headers=h).status_code == 400
        r = console_post(c, "/api/revoke", {"id": "not-hex", "reason": "x"}, csrf)
        assert r.status_code == 400 and "32 hex" in r.json()["error"]
        assert (
            console_post(c, "/api/revoke", {"id": "a" * 32, "reason": ""}, csrf).status_code == 400
        )
        assert console_post(c, "/api/revoke", {"id": 7, "reason": "x"}, csrf).status_code == 400
        assert c.get("/api/agents/nobody").status_code == 404
        assert c.get("/api/agents/bad%20id").status_code == 400
        assert c.get("/api/tree/zz").status_code == 400
        assert c.get("/api/decisions", params={"decision": "maybe"}).status_code == 400
        assert c.get("/api/decisions", params={"code": "DROP TABLE"}).status_code == 400
        assert c.get("/api/decisions/stream", params={"after": "-1"}).status_code == 400
        assert c.get("/api/nothing-here").status_code == 404
        # the console narrows a ceiling and never widens one
        r = console_post(c, "/api/agents/narrowed/ceiling", {"grants": ["read:/**"]}, csrf)
        assert r.status_code == 403 and "only narrows" in r.json()["error"]
        r = console_post(c, "/api/agents/narrowed/ceiling", {"grants": "read:/data/**"}, csrf)
        assert r.status_code == 400
        r = console_post(c, "/api/agents/narrowed/ceiling", {"grants": ["read:"]}, csrf)
        assert r.status_code == 400
        r = console_post(
            c, "/api/agents/narrowed/ceiling", {"grants": ["read:/data/reports/*"]}, csrf
        )
        assert r.status_code == 200 and r.json()["ceiling"] == ["read:/data/reports/*"]
        big = c.post("/api/revoke", content=b"{" + b" " * 70_000 + b"}", headers=h)
        assert big.status_code == 413
        assert c.get("/", headers={"Host": "evil.example"}).status_code == 421
    for raw in (
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /\xff HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(raw)
            reply = s.recv(4096)
        assert reply.split(b" ")[1] in (b"400", b"404", b"501"), raw
    with console.client() as admin:
        assert [str(g) for g in admin.get_agent("narrowed").ceiling] == ["read:/data/reports/*"]


_ENDPOINTS = [  # method, path, what the role needs (CONSOLE_ROLES)
    ("GET", "/api/agents", "agents"),
    ("GET", "/api/agents/bot", "agents"),
    ("GET", "/api/tree/" + "0" * 32, "agents"),
    ("GET", "/api/decisions", "decisions"),
    ("GET", "/api/approvals", "approvals"),
    ("POST", "/api/agents/bot/resume", "act"),
    ("POST", "/api/agents/bot/ceiling", "act"),
    ("POST", "/api/revoke", "act"),
    ("POST", "/api/approvals/" + "0" * 32, "approvals"),
]


def test_each_role_reaches_exactly_what_the_role_table_says(console):
    from capgate_server.console import CONSOLE_ROLES
    from capgate_server.store import Role

    with console.client() as admin:
        admin.create_agent("bot", ["read:/b/**"])
        creds = {
            Role.ADMIN: console.admin_credential,
            Role.OPERATOR: admin.create_principal("op", "operator").credential,
            Role.APPROVER: admin.create_principal("ap", "approver").credential,
        }
    assert set(creds) == set(CONSOLE_ROLES)
    for role, cred in creds.items():
        with console_http(console) as c:
            csrf = console_login(c, cred)["csrf"]
            for method, path, needs in _ENDPOINTS:
                r = console_post(c, path, {}, csrf) if method == "POST" else c.get(path)
                refused = r.status_code == 403 and "role may not" in r.text
                assert refused == (needs not in CONSOLE_ROLES[role]), (role, path, r.text)


def test_the_console_is_off_by_default_local_unless_tls_and_never_on_a_verifier(tmp_path):
    plain = ServerThread(tmp_path / "plain").start()
    try:
        assert plain.app.console is None and plain.app.console_port == 0
    finally:
        plain.stop()
    app = CapgateServer(
        Settings(data_dir=tmp_path / "open", listen="127.0.0.1:0", console_listen="0.0.0.0:0")
    )
    with pytest.raises(InvalidArgumentError, match="without TLS"):
        asyncio.run(app.start())
    verifier = CapgateServer(
        Settings(
            data_dir=tmp_path / "v",
            listen="127.0.0.1:0",
            role="verifier",
            console_listen="127.0.0.1:0",
        )
    )
    with pytest.raises(InvalidArgumentError, match="full replica"):
        asyncio.run(verifier.start())


def test_under_tls_the_cookie_is_secure_and_plain_http_gets_nothing(tmp_path):
    pki = make_pki(tmp_path / "pki", "spiffe://example.org/agent/none")
    server = ServerThread(
        tmp_path / "data",
        console_listen="0.0.0.0:0",
        tls_cert=pki["server.crt"],
        tls_key=pki["server.key"],
    ).start()
    try:
        port = server.app.console_port
        trust = ssl.create_default_context(cafile=str(pki["ca.crt"]))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=10) as c:
            r = c.post("/api/login", json={"credential": server.admin_credential})
            assert r.status_code == 200
            assert "; Secure" in r.headers["set-cookie"]
            csrf = r.json()["csrf"]
            r = c.post(
                "/api/logout",
                json={},
                headers={"X-CSRF-Token": csrf, "Origin": f"http://127.0.0.1:{port}"},
            )
            assert r.status_code == 403  # the console's origin is https
            assert c.get("/api/session").status_code == 200
        with (
            pytest.raises(httpx.HTTPError),
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as plain,
        ):
            plain.get("/api/session")
    finally:
        server.stop()


def test_capgate_serve_console_listen_serves_it_and_refuses_an_open_address(tmp_path):
    proc = ServerProcess(tmp_path / "data", ["--console-listen", "127.0.0.1:0"]).start()
    try:
        wait_for(lambda: any("operator console at" in line for line in proc.log))
        line = next(line for line in proc.log if "operator console at" in line)
        url = line.split(" at ", 1)[1].strip()
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/").status_code == 200
            assert console_login(c, proc.admin_credential)["role"] == "admin"
    finally:
        proc.stop()
    out = subprocess.run(
        [
            *CAPGATE,
            "serve",
            "--data-dir",
            str(tmp_path / "open"),
            "--listen",
            "127.0.0.1:0",
            "--console-listen",
            "0.0.0.0:0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "without TLS" in out.stderr


def test_governance_alerts_show_on_the_agents_list_and_the_agent_s_page(console):
    """An alert raised about an agent (anywhere in the fleet: it is read from the store)
    is counted on the agents list and told on the agent's page, newest first."""
    from capgate_server.store import AlertRecord, AuditEvent

    with console.client() as admin:
        admin.create_agent("researcher", ["read:/data/**"])
        admin.create_agent("quiet", ["read:/data/**"])
    store, now = console.app.replica.store, console.app.replica.clock()
    for i, reason in enumerate(
        [
            "researcher read /secrets/** for the first time",
            "researcher: 37 denied calls in 10 s, 30× its usual",
        ]
    ):
        store.raise_alert(
            AlertRecord(
                f"k{i}",
                "researcher",
                now + i,
                "new-resource",
                reason,
                containment="suspend" if i else "alert",
            ),
            AuditEvent(now + i, "capgate", "governance.alert", "researcher"),
        )
    with console_http(console) as c:
        console_login(c, console.admin_credential)
        agents = {a["id"]: a for a in c.get("/api/agents").json()["agents"]}
        assert [r["reason"] for r in agents["researcher"]["alerts"]] == [
            "researcher: 37 denied calls in 10 s, 30× its usual",
            "researcher read /secrets/** for the first time",
        ]
        assert agents["quiet"]["alerts"] == []
        page = c.get("/api/agents/researcher").json()
        assert [(r["kind"], r["containment"]) for r in page["alerts"]] == [
            ("new-resource", "suspend"),
            ("new-resource", "alert"),
        ]
