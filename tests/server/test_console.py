"""The operator console over plain HTTP: nothing without a session, login by role,
CSRF on every change, sessions that end (idle, disabled credential, logout), bad
input refused with a clear status, and every action audited under the operator."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import urllib.parse

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capgate import InvalidArgumentError
from capgate_server import CapgateServer, Settings
from capgate_server.console import COOKIE, IDLE

from conftest import FakeClock
from harness import CAPGATE, ServerProcess, ServerThread, make_pki, wait_for


@pytest.fixture
def console(tmp_path):
    s = ServerThread(tmp_path / "data", console_listen="127.0.0.1:0").start()
    yield s
    s.stop()


def http(server: ServerThread) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{server.app.console_port}", timeout=10)


def login(c: httpx.Client, credential: str) -> dict:
    r = c.post("/api/login", json={"credential": credential})
    assert r.status_code == 200, r.text
    return r.json()


def post(c: httpx.Client, path: str, body: dict, csrf: str) -> httpx.Response:
    return c.post(path, json=body, headers={"X-CSRF-Token": csrf})


def audit(server: ServerThread, kind: str) -> list:
    with server.client() as admin:
        return admin.audit(kind=kind, limit=1000)


def test_nothing_is_visible_without_a_session(console):
    with console.client() as admin:
        admin.create_agent("hidden-agent", ["read:/secret/**"])
    with http(console) as c:
        shell = c.get("/")
        assert shell.status_code == 200 and "hidden-agent" not in shell.text
        assert "default-src 'none'" in shell.headers["content-security-policy"]
        for path in ("/api/session", "/api/agents", "/api/agents/hidden-agent",
                     "/api/decisions", "/api/decisions/stream", "/api/approvals",
                     "/api/tree/" + "0" * 32):
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
    with http(console) as c:
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
    with http(console) as c:
        session = login(c, approver)
        assert session["may"] == ["approvals"]
        assert c.get("/api/approvals").status_code == 200
        assert c.get("/api/agents").status_code == 403
        assert post(c, "/api/agents/worker/suspend", {}, session["csrf"]).status_code == 403
    failed = audit(console, "auth.failed")
    assert any(e.subject == "console.login" for e in failed)
    assert any(e.principal == "admin" for e in audit(console, "console.login"))


def test_every_change_needs_the_csrf_token_json_and_the_same_origin(console):
    with console.client() as admin:
        admin.create_agent("target", ["read:/t/**"])
    with http(console) as c:
        csrf = login(c, console.admin_credential)["csrf"]
        url = "/api/agents/target/suspend"
        assert c.post(url, json={}).status_code == 403  # no token
        assert post(c, url, {}, "x" * 43).status_code == 403  # a wrong one
        r = c.post(url, content="{}", headers={"X-CSRF-Token": csrf,
                                               "Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 415  # a form, as a cross-site page could send
        r = c.post(url, json={}, headers={"X-CSRF-Token": csrf,
                                          "Origin": "http://evil.example"})
        assert r.status_code == 403
        with console.client() as admin:
            assert admin.get_agent("target").status == "active"
        port = console.app.console_port
        r = c.post(url, json={}, headers={"X-CSRF-Token": csrf,
                                          "Origin": f"http://127.0.0.1:{port}"})
        assert r.status_code == 200 and r.json()["status"] == "suspended"
    with console.client() as admin:
        assert admin.get_agent("target").status == "suspended"
    events = [e for e in audit(console, "agent.suspend") if e.subject == "target"]
    assert [e.principal for e in events] == ["admin"]


def test_a_session_ends_when_idle_at_logout_and_when_its_credential_is_disabled(tmp_path):
    clock = FakeClock()
    server = ServerThread(tmp_path / "data", clock=clock, console_listen="127.0.0.1:0").start()
    try:
        with server.client() as admin:
            ops = admin.create_principal("ops", "admin").credential
        with http(server) as c:
            login(c, server.admin_credential)
            clock.advance(IDLE - 1)
            assert c.get("/api/agents").status_code == 200  # activity restarts the timer
            clock.advance(IDLE - 1)
            assert c.get("/api/agents").status_code == 200
            clock.advance(IDLE + 1)
            assert c.get("/api/agents").status_code == 401
        with http(server) as c:
            csrf = login(c, server.admin_credential)["csrf"]
            assert post(c, "/api/logout", {}, csrf).status_code == 200
            assert c.get("/api/agents").status_code == 401
        with http(server) as c:
            login(c, ops)
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
    with http(console) as c:
        csrf = login(c, console.admin_credential)["csrf"]
        h = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
        assert c.post("/api/revoke", content=b"{not json", headers=h).status_code == 400
        assert c.post("/api/revoke", content=b"[1]", headers=h).status_code == 400
        assert c.post("/api/revoke", content=b'{"id": NaN}', headers=h).status_code == 400
        r = post(c, "/api/revoke", {"id": "not-hex", "reason": "x"}, csrf)
        assert r.status_code == 400 and "32 hex" in r.json()["error"]
        assert post(c, "/api/revoke", {"id": "a" * 32, "reason": ""}, csrf).status_code == 400
        assert post(c, "/api/revoke", {"id": 7, "reason": "x"}, csrf).status_code == 400
        assert c.get("/api/agents/nobody").status_code == 404
        assert c.get("/api/agents/bad%20id").status_code == 400
        assert c.get("/api/tree/zz").status_code == 400
        assert c.get("/api/decisions", params={"decision": "maybe"}).status_code == 400
        assert c.get("/api/decisions", params={"code": "DROP TABLE"}).status_code == 400
        assert c.get("/api/decisions/stream", params={"after": "-1"}).status_code == 400
        assert c.get("/api/nothing-here").status_code == 404
        # the console narrows a ceiling and never widens one
        r = post(c, "/api/agents/narrowed/ceiling", {"grants": ["read:/**"]}, csrf)
        assert r.status_code == 403 and "only narrows" in r.json()["error"]
        r = post(c, "/api/agents/narrowed/ceiling", {"grants": "read:/data/**"}, csrf)
        assert r.status_code == 400
        r = post(c, "/api/agents/narrowed/ceiling", {"grants": ["read:"]}, csrf)
        assert r.status_code == 400
        r = post(c, "/api/agents/narrowed/ceiling", {"grants": ["read:/data/reports/*"]}, csrf)
        assert r.status_code == 200 and r.json()["ceiling"] == ["read:/data/reports/*"]
        big = c.post("/api/revoke", content=b"{" + b" " * 70_000 + b"}", headers=h)
        assert big.status_code == 413
        assert c.get("/", headers={"Host": "evil.example"}).status_code == 421
    for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
                b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                b"GET /\xff HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(raw)
            reply = s.recv(4096)
        assert reply.split(b" ")[1] in (b"400", b"404", b"501"), raw
    with console.client() as admin:
        assert [str(g) for g in admin.get_agent("narrowed").ceiling] == ["read:/data/reports/*"]


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
    with http(console) as c:
        csrf = login(c, console.admin_credential)["csrf"]
        page = c.get("/api/agents/planner").json()
        assert page["use"] == [] and page["ceiling"] == ["read:/data/**"]
        (tree,) = page["tokens"]
        assert tree["id"] == root.token_id and tree["agent"] == "planner"
        (child,) = tree["children"]
        assert child["id"] == hop.delegation_id and child["agent"] == "worker"
        assert child["children"][0]["agent"] == "helper"
        r = post(c, "/api/revoke", {"id": hop.delegation_id, "reason": "compromised"}, csrf)
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
    revokes = [e for e in audit(console, "revoke") if e.subject == hop.delegation_id]
    assert [(e.principal, json.loads(e.detail)["reason"]) for e in revokes] == [
        ("admin", "compromised")]
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
    with http(console) as c:
        csrf = login(c, console.admin_credential)["csrf"]
        r = post(c, "/api/agents/planner/revoke-all", {}, csrf)
        assert r.status_code == 200
        (tree,) = c.get("/api/agents/planner").json()["tokens"]
        assert tree["cut_off"] and tree["children"][0]["dead_above"]
    assert [e.principal for e in audit(console, "agent.revoke-all")] == ["admin"]


def _first_event(c: httpx.Client, params: dict, headers: dict | None = None,
                 then=lambda: None) -> dict:
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

    with http(server) as c:
        login(c, server.admin_credential)
        params = {"decision": "deny", "agent": "streamer"}
        assert c.get("/api/decisions/stream", params={"code": "Bad"}).status_code == 400
        verify("/s/before")
        page = c.get("/api/decisions", params=params).json()
        (before,) = page["decisions"]
        assert (before["allowed"], before["code"], before["caveat"], before["resource"],
                before["chain"]) == (False, "caveat_failed", "action in read", "/s/before",
                                     ["streamer"])
        follow = {**params, "after": str(page["follow_from"])}
        after = _first_event(c, follow, then=lambda: verify("/s/after"))
        assert (after["code"], after["resource"]) == ("caveat_failed", "/s/after")
        resumed = _first_event(c, {**params, "after": "0"},
                               headers={"Last-Event-ID": str(page["follow_from"])})
        assert resumed["seq"] == after["seq"]
        use = c.get("/api/agents/streamer").json()["use"]
        assert use == [{"action": "read", "resource": "/s/after", "count": 1},
                       {"action": "read", "resource": "/s/before", "count": 1}]


def test_a_deny_arrives_on_the_live_stream(console):
    _live_deny(console)


def test_a_deny_arrives_on_the_live_stream_on_postgresql(tmp_path, pg_url):
    from capgate_server import new_kek_text

    kek = tmp_path / "kek"
    kek.write_text(new_kek_text())
    server = ServerThread(tmp_path / "data", store_url=pg_url, kek_file=kek,
                          console_listen="127.0.0.1:0").start()
    try:
        _live_deny(server)
    finally:
        server.stop()


def test_the_console_is_off_by_default_local_unless_tls_and_never_on_a_verifier(tmp_path):
    plain = ServerThread(tmp_path / "plain").start()
    try:
        assert plain.app.console is None and plain.app.console_port == 0
    finally:
        plain.stop()
    app = CapgateServer(Settings(data_dir=tmp_path / "open", listen="127.0.0.1:0",
                                 console_listen="0.0.0.0:0"))
    with pytest.raises(InvalidArgumentError, match="without TLS"):
        asyncio.run(app.start())
    verifier = CapgateServer(Settings(data_dir=tmp_path / "v", listen="127.0.0.1:0",
                                      role="verifier", console_listen="127.0.0.1:0"))
    with pytest.raises(InvalidArgumentError, match="full replica"):
        asyncio.run(verifier.start())


def test_under_tls_the_cookie_is_secure_and_plain_http_gets_nothing(tmp_path):
    pki = make_pki(tmp_path / "pki", "spiffe://example.org/agent/none")
    server = ServerThread(tmp_path / "data", console_listen="0.0.0.0:0",
                          tls_cert=pki["server.crt"], tls_key=pki["server.key"]).start()
    try:
        port = server.app.console_port
        trust = ssl.create_default_context(cafile=str(pki["ca.crt"]))
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=trust, timeout=10) as c:
            r = c.post("/api/login", json={"credential": server.admin_credential})
            assert r.status_code == 200
            assert "; Secure" in r.headers["set-cookie"]
            csrf = r.json()["csrf"]
            r = c.post("/api/logout", json={}, headers={
                "X-CSRF-Token": csrf, "Origin": f"http://127.0.0.1:{port}"})
            assert r.status_code == 403  # the console's origin is https
            assert c.get("/api/session").status_code == 200
        with pytest.raises(httpx.HTTPError), \
                httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as plain:
            plain.get("/api/session")
    finally:
        server.stop()


def test_an_operator_acts_in_the_console_but_decides_no_approval(console):
    with console.client() as admin:
        admin.create_agent("bot", ["read,write:/data/**"])
        ops = admin.create_principal("ops", "operator").credential
    with http(console) as c:
        session = login(c, ops)
        assert session["role"] == "operator" and session["may"] == ["act", "agents", "decisions"]
        csrf = session["csrf"]
        assert c.get("/api/agents").status_code == 200
        assert c.get("/api/approvals").status_code == 403
        assert post(c, "/api/agents/bot/suspend", {}, csrf).json()["status"] == "suspended"
        r = post(c, "/api/agents/bot/ceiling", {"grants": ["read:/data/**"]}, csrf)
        assert r.status_code == 200
        r = post(c, "/api/agents/bot/ceiling", {"grants": ["read,write:/data/**"]}, csrf)
        assert r.status_code == 403
    kinds = {(e.kind, e.subject) for e in audit(console, "agent.update")}
    assert kinds == {("agent.update", "bot")}
    assert [e.principal for e in audit(console, "agent.suspend")] == ["ops"]


_PATHS = ["/api/agents", "/api/agents/bot", "/api/agents/bot/suspend", "/api/agents/bot/resume",
          "/api/agents/bot/ceiling", "/api/revoke", "/api/tree", "/api/approvals",
          "/api/decisions", "/api/login", "/api/session", "/", "/static/console.js"]
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=40), st.lists(st.text(max_size=24), max_size=3),
                    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))
_FUZZ = settings(max_examples=60, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(raw=st.binary(max_size=1024))
def test_any_bytes_on_the_wire_get_a_refusal_or_nothing_never_a_crash(console, raw):
    port = console.app.console_port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw + b"\r\n\r\n")
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    if reply:
        status = int(reply.split(b" ", 2)[1])
        assert status != 500 and (status >= 400 or raw.startswith(b"GET / HTTP/1."))
    with http(console) as c:
        assert c.get("/").status_code == 200  # and the console still serves


@_FUZZ
@given(method=st.sampled_from(["GET", "POST"]), path=st.sampled_from(_PATHS),
       suffix=st.text(max_size=12),
       body=st.dictionaries(st.sampled_from(["id", "reason", "grants", "approve",
                                             "credential"]), _VALUES, max_size=4),
       query=st.dictionaries(st.sampled_from(["agent", "decision", "code", "after"]),
                             st.text(max_size=12), max_size=3))
def test_any_request_of_a_logged_in_operator_gets_an_answer_never_a_crash(
        console, method, path, suffix, body, query):
    with console.client() as admin:
        if not [a for a in admin.list_agents() if a.id == "bot"]:
            admin.create_agent("bot", ["read,write:/data/**"])
    with http(console) as c:
        csrf = login(c, console.admin_credential)["csrf"]
        target = path + urllib.parse.quote(suffix, safe="/")
        r = post(c, target, body, csrf) if method == "POST" else c.get(target, params=query)
        assert r.status_code in (200, 400, 401, 403, 404, 409, 415, 429), (method, target, r.text)
        if r.status_code != 200:
            assert r.json()["error"]


def test_capgate_serve_console_listen_serves_it_and_refuses_an_open_address(tmp_path):
    proc = ServerProcess(tmp_path / "data", ["--console-listen", "127.0.0.1:0"]).start()
    try:
        wait_for(lambda: any("operator console at" in line for line in proc.log))
        line = next(line for line in proc.log if "operator console at" in line)
        url = line.split(" at ", 1)[1].strip()
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/").status_code == 200
            assert login(c, proc.admin_credential)["role"] == "admin"
    finally:
        proc.stop()
    out = subprocess.run([*CAPGATE, "serve", "--data-dir", str(tmp_path / "open"),
                          "--listen", "127.0.0.1:0", "--console-listen", "0.0.0.0:0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "without TLS" in out.stderr


@_FUZZ
@given(token=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=64),
       cookie=st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=122), max_size=64))
def test_no_guessed_csrf_token_or_session_id_changes_anything(console, token, cookie):
    with console.client() as admin:
        if not [a for a in admin.list_agents() if a.id == "kept"]:
            admin.create_agent("kept", ["read:/k/*"])
    with http(console) as c:
        csrf = login(c, console.admin_credential)["csrf"]
        if token != csrf:
            assert post(c, "/api/agents/kept/suspend", {}, token).status_code == 403
    with http(console) as c:
        c.cookies.set(COOKIE, cookie)
        assert post(c, "/api/agents/kept/suspend", {}, token).status_code == 401
    with console.client() as admin:
        assert admin.get_agent("kept").status == "active"


_ENDPOINTS = [  # method, path, what the role needs (CONSOLE_ROLES)
    ("GET", "/api/agents", "agents"), ("GET", "/api/agents/bot", "agents"),
    ("GET", "/api/tree/" + "0" * 32, "agents"), ("GET", "/api/decisions", "decisions"),
    ("GET", "/api/approvals", "approvals"), ("POST", "/api/agents/bot/resume", "act"),
    ("POST", "/api/agents/bot/ceiling", "act"), ("POST", "/api/revoke", "act"),
    ("POST", "/api/approvals/" + "0" * 32, "approvals"),
]


def test_each_role_reaches_exactly_what_the_role_table_says(console):
    from capgate_server.console import CONSOLE_ROLES
    from capgate_server.store import Role

    with console.client() as admin:
        admin.create_agent("bot", ["read:/b/**"])
        creds = {Role.ADMIN: console.admin_credential,
                 Role.OPERATOR: admin.create_principal("op", "operator").credential,
                 Role.APPROVER: admin.create_principal("ap", "approver").credential}
    assert set(creds) == set(CONSOLE_ROLES)
    for role, cred in creds.items():
        with http(console) as c:
            csrf = login(c, cred)["csrf"]
            for method, path, needs in _ENDPOINTS:
                r = post(c, path, {}, csrf) if method == "POST" else c.get(path)
                refused = r.status_code == 403 and "role may not" in r.text
                assert refused == (needs not in CONSOLE_ROLES[role]), (role, path, r.text)
