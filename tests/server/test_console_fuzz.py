"""The operator console under arbitrary input (hypothesis): any bytes on the wire and any
request of a logged-in admin get an answer, never a crash; no guessed CSRF token or
session id changes anything."""

from __future__ import annotations

import socket
import urllib.parse

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capgate_server.console import COOKIE

from harness import console_http, console_login, console_post

_PATHS = [
    "/api/agents",
    "/api/agents/bot",
    "/api/agents/bot/suspend",
    "/api/agents/bot/resume",
    "/api/agents/bot/ceiling",
    "/api/revoke",
    "/api/tree",
    "/api/approvals",
    "/api/decisions",
    "/api/login",
    "/api/session",
    "/",
    "/static/console.js",
]


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.lists(st.text(max_size=24), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


_FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


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
    with console_http(console) as c:
        assert c.get("/").status_code == 200  # and the console still serves


@_FUZZ
@given(
    method=st.sampled_from(["GET", "POST"]),
    path=st.sampled_from(_PATHS),
    suffix=st.text(max_size=12),
    body=st.dictionaries(
        st.sampled_from(["id", "reason", "grants", "approve", "credential"]), _VALUES, max_size=4
    ),
    query=st.dictionaries(
        st.sampled_from(["agent", "decision", "code", "after"]), st.text(max_size=12), max_size=3
    ),
)
def test_any_request_of_a_logged_in_operator_gets_an_answer_never_a_crash(
    console, method, path, suffix, body, query
):
    with console.client() as admin:
        if not [a for a in admin.list_agents() if a.id == "bot"]:
            admin.create_agent("bot", ["read,write:/data/**"])
    with console_http(console) as c:
        csrf = console_login(c, console.admin_credential)["csrf"]
        target = path + urllib.parse.quote(suffix, safe="/")
        r = console_post(c, target, body, csrf) if method == "POST" else c.get(target, params=query)
        assert r.status_code in (200, 400, 401, 403, 404, 409, 415, 429), (method, target, r.text)
        if r.status_code != 200:
            assert r.json()["error"]


@_FUZZ
@given(
    token=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=64),
    cookie=st.text(alphabet=st.characters(min_codepoint=48, max_codepoint=122), max_size=64),
)
def test_no_guessed_csrf_token_or_session_id_changes_anything(console, token, cookie):
    with console.client() as admin:
        if not [a for a in admin.list_agents() if a.id == "kept"]:
            admin.create_agent("kept", ["read:/k/*"])
    with console_http(console) as c:
        csrf = console_login(c, console.admin_credential)["csrf"]
        if token != csrf:
            assert console_post(c, "/api/agents/kept/suspend", {}, token).status_code == 403
    with console_http(console) as c:
        c.cookies.set(COOKIE, cookie)
        assert console_post(c, "/api/agents/kept/suspend", {}, token).status_code == 401
    with console.client() as admin:
        assert admin.get_agent("kept").status == "active"
