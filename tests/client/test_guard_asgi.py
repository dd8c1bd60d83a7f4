"""The ASGI middleware in front of a Starlette app served by uvicorn, and the ``protect``
decorator on plain functions (sync and async), all checking through a real capgate
server. The agent's side is ``Presenter`` as httpx's auth."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from capgate import InvalidArgumentError, PermissionDeniedError, UnavailableError
from capgate_client import (
    Access,
    AsyncClient,
    AsyncGuard,
    CapgateMiddleware,
    Client,
    Guard,
    Presentation,
    current_presentation,
    presenting,
)

from harness import AsgiServer, KeyedAgent


@pytest.fixture
def alice(server):
    a = KeyedAgent(server, token_grant="read:/data/reports/**")
    yield a
    a.close()


def make_app(address, credential, cache_ttl=1.0, **options):
    guard = AsyncGuard(AsyncClient(address, credential), cache_ttl=cache_ttl)

    @guard.protect("read", "/data/reports/{name}/summary")
    async def summary(name: str) -> str:
        return f"summary of {name}"

    async def report(request):
        result = request.state.capgate
        extra = {}
        if "summary" in request.query_params:  # a deeper check, on the same presentation
            try:
                extra["summary"] = await summary(request.path_params["name"])
            except PermissionDeniedError as e:
                extra["summary_denied"] = e.context["code"]
        return JSONResponse(
            {
                "name": request.path_params["name"],
                "proven": result.proven,
                "holder": result.chain[-1],
                "presenter": current_presentation().presenter,
                **extra,
            }
        )

    async def health(request):
        return JSONResponse({"ok": True})

    routes = [
        Route("/data/reports/{name}", report, methods=["GET", "POST", "OPTIONS"]),
        Route("/health", health),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(CapgateMiddleware, guard=guard, unguarded=("/health",), **options)],
    )


@pytest.fixture
def web(alice):
    # no cache: these tests change what capgate answers between requests
    s = AsgiServer(make_app(alice.server.address, alice.service_credential, 0)).start()
    yield s
    s.stop()


def test_a_presented_request_passes_and_the_app_sees_the_result(web, alice):
    with httpx.Client(base_url=web.url, auth=alice.presenter()) as http:
        r = http.get("/data/reports/q3")
        assert r.status_code == 200, r.text
        assert r.json() == {"name": "q3", "proven": True, "holder": "alice", "presenter": "alice"}
        # the query is part of what the proof signs; each request gets a fresh proof
        assert http.get("/data/reports/q3", params={"full": "1"}).status_code == 200
        # a protect()ed function deeper in the app checks the same request: its proof is
        # spent, so it names the agent capgate proved
        r = http.get("/data/reports/q3", params={"summary": "1"})
        assert r.json()["summary"] == "summary of q3"
        alice.admin.update_agent("alice", require_proof=True)
        r = http.get("/data/reports/q3", params={"summary": "1"})
        assert r.json()["summary_denied"] == "proof_required"  # one check per request there


def test_denies_answer_403_with_the_code(web, alice):
    with httpx.Client(base_url=web.url, auth=alice.presenter()) as http:
        r = http.post("/data/reports/q3")  # POST writes; the token only reads
        assert r.status_code == 403
        assert r.headers["capgate-deny"] == "caveat_failed"
        assert r.json()["code"] == "caveat_failed" and "action in read" in r.json()["reason"]
        r = http.request("OPTIONS", "/data/reports/q3")  # no action for OPTIONS
        assert (r.status_code, r.headers["capgate-deny"]) == (403, "invalid_request")
    with httpx.Client(base_url=web.url) as http:
        r = http.get("/data/reports/q3")
        assert (r.status_code, r.headers["capgate-deny"]) == (403, "missing_token")
        for value in ("Bearer abc", "Capgate", "Capgate a b", "Capgate \x7f"):
            r = http.get("/data/reports/q3", headers={"authorization": value})
            assert r.status_code == 403 and r.headers["capgate-deny"] in (
                "missing_token",
                "malformed_token",
            ), value
        h = alice.presenter().headers("GET", "/data/reports/q3")
        r = http.get(
            "/data/reports/q3",
            headers=[("authorization", h["authorization"]), ("authorization", h["authorization"])],
        )
        assert (r.status_code, r.headers["capgate-deny"]) == (403, "invalid_request")
        assert http.get("/health").status_code == 200  # unguarded


def test_a_captured_request_cannot_be_replayed_or_redirected(web, alice):
    headers = alice.presenter().headers("GET", "/data/reports/q3")
    with httpx.Client(base_url=web.url) as http:
        assert http.get("/data/reports/q3", headers=headers).status_code == 200
        r = http.get("/data/reports/q3", headers=headers)
        assert (r.status_code, r.headers["capgate-deny"]) == (403, "proof_replayed")
        fresh = alice.presenter().headers("GET", "/data/reports/q3")
        r = http.get("/data/reports/q4", headers=fresh)  # signed for q3
        assert (r.status_code, r.headers["capgate-deny"]) == (403, "bad_proof")


def test_a_stolen_token_is_refused_where_proof_is_required(alice):
    # a service that names the presenter by its own (spoofable) means
    app = make_app(
        alice.server.address, alice.service_credential, cache_ttl=0, presenter=lambda scope: "alice"
    )
    s = AsgiServer(app).start()
    try:
        with httpx.Client(base_url=s.url, auth=alice.presenter(key=False)) as thief:
            assert thief.get("/data/reports/q3").status_code == 200
            alice.admin.update_agent("alice", require_proof=True)
            r = thief.get("/data/reports/q3")
            assert (r.status_code, r.headers["capgate-deny"]) == (403, "proof_required")
        with httpx.Client(base_url=s.url, auth=alice.presenter()) as owner:
            assert owner.get("/data/reports/q3").json()["proven"]
    finally:
        s.stop()


def test_capgate_unreachable_answers_503(alice):
    s = AsgiServer(make_app("127.0.0.1:1", alice.service_credential)).start()
    try:
        with httpx.Client(base_url=s.url, auth=alice.presenter()) as http:
            r = http.get("/data/reports/q3")
            assert (r.status_code, r.headers["capgate-deny"]) == (503, "unavailable")
    finally:
        s.stop()


def test_a_custom_rule_and_a_broken_one(alice):
    def rule(scope):
        if scope["path"].startswith("/data/reports/boom"):
            raise RuntimeError("broken")
        return Access("read", scope["path"] + "/x") if scope["method"] == "GET" else None

    s = AsgiServer(make_app(alice.server.address, alice.service_credential, rule=rule)).start()
    try:
        with httpx.Client(base_url=s.url, auth=alice.presenter()) as http:
            assert http.get("/data/reports/q3").status_code == 200
            assert http.get("/data/reports/boom").headers["capgate-deny"] == "invalid_request"
            assert http.post("/data/reports/q3").headers["capgate-deny"] == "invalid_request"
    finally:
        s.stop()


def test_a_websocket_handshake_is_refused_without_a_token(alice):
    """A WebSocket is checked at its handshake; a deny closes it before accepting (403)."""
    guard = AsyncGuard(AsyncClient(alice.server.address, alice.service_credential))
    reached = []

    async def app(scope, receive, send):
        reached.append(scope["type"])

    sent = []

    async def run():
        mw = CapgateMiddleware(app, guard=guard)
        messages = [{"type": "websocket.connect"}]

        async def receive():
            return messages.pop(0)

        async def send(message):
            sent.append(message)

        scope = {
            "type": "websocket",
            "path": "/data/reports/q3",
            "raw_path": b"/data/reports/q3",
            "query_string": b"",
            "headers": [],
        }
        await mw(scope, receive, send)
        await mw({"type": "lifespan"}, receive, send)  # anything else passes through
        await guard.client.close()

    asyncio.run(run())
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert reached == ["lifespan"]


# -- the decorator ----------------------------------------------------------------------


def test_protect_checks_a_plain_function_from_its_arguments(alice):
    with Client(alice.server.address, alice.service_credential) as client:
        guard = Guard(client, cache_ttl=0)

        @guard.protect("read", "/data/reports/{name}", ctx={"pages": "pages"})
        def read(name: str, pages: int = 1) -> str:
            return f"{name}:{pages}"

        owner = Presentation(alice.token, presenter="alice")
        assert read("q3", presentation=owner) == "q3:1"
        with presenting(owner):  # as a guarded request would
            assert read("q3", 2) == "q3:2"
        with pytest.raises(PermissionDeniedError) as e:
            read("q3")  # no presentation anywhere
        assert e.value.context["code"] == "missing_token"
        with pytest.raises(PermissionDeniedError) as e:
            read("../etc", presentation=owner)
        assert e.value.context["code"] == "invalid_request"
        with pytest.raises(PermissionDeniedError) as e:
            read("q3", presentation=Presentation(alice.token, presenter="mallory"))
        assert e.value.context["code"] == "not_holder"
        with pytest.raises(PermissionDeniedError) as e:
            read("q3", presentation=42)
        assert e.value.context["code"] == "invalid_request"
        # a proof for a plain call: the caller says which request it was made for
        assert (
            read(
                "q3",
                presentation=Presentation.from_headers(
                    alice.presenter().headers("CALL", "read/q3"), "CALL", "read/q3"
                ),
            )
            == "q3:1"
        )

        with pytest.raises(Exception, match="AsyncGuard"):

            @guard.protect("read", "/data/x")
            async def wrong() -> None: ...


def test_protect_on_coroutines_and_failing_closed(alice):
    async def run():
        async with AsyncClient(alice.server.address, alice.service_credential) as client:
            guard = AsyncGuard(client)

            @guard.protect("read", lambda args: f"/data/reports/{args['name']}")
            async def read(name: str, presentation: Presentation | None = None) -> str:
                return f"{name} for {presentation.presenter}"  # it asked for it: it gets it

            owner = Presentation(alice.token, presenter="alice")
            assert await read("q3", presentation=owner) == "q3 for alice"
            with pytest.raises(PermissionDeniedError):
                await read("q3", presentation=Presentation(None))
            with pytest.raises(Exception, match="plain function"):
                guard.protect("read", "/x")(lambda: None)
        async with AsyncClient("127.0.0.1:1", alice.service_credential, timeout=1) as down:

            @AsyncGuard(down).protect("read", "/data/reports/q3")
            async def gone() -> None: ...

            with pytest.raises(UnavailableError) as e:
                await gone(presentation=owner)
            assert e.value.context["code"] == "unavailable"

    asyncio.run(run())


def test_the_cache_is_bounded_and_safe_to_share_between_threads(alice):
    import threading

    clock = [0.0]
    with Client(alice.server.address, alice.service_credential) as client:
        guard = Guard(client, cache_ttl=1.0, cache_size=8, monotonic=lambda: clock[0])
        owner = Presentation(alice.token, presenter="alice")
        errors = []

        def hammer(n):
            try:
                for i in range(40):
                    r = guard.check(owner, Access("read", f"/data/reports/t{n}-{i % 12}"))
                    assert r.allowed
                    clock[0] += 0.05
            except Exception as e:  # pragma: no cover - what the test looks for
                errors.append(e)

        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert len(guard._cache._entries) <= 8
    # a cached allow outlives a revocation by at most cache_ttl: NaN and inf kept one
    # for ever (NaN never compares as expired)
    for bad in (-1, float("nan"), float("inf"), 301):
        with pytest.raises(InvalidArgumentError, match="cache_ttl"):
            Guard(client, cache_ttl=bad)
    for bad_size in (0, 10**9, 2.5):
        with pytest.raises(InvalidArgumentError, match="cache_size"):
            Guard(client, cache_size=bad_size)  # type: ignore[arg-type]


def test_a_spent_budget_answers_429(alice):
    """Each request under a budget is counted (never answered from the cache); a spent
    one answers 429 Too Many Requests, so a client knows to wait, not to give up."""
    from capgate import Token

    limited = Token.parse(alice.token).attenuate("uses <= 2").to_text()
    s = AsgiServer(make_app(alice.server.address, alice.service_credential, 60)).start()
    try:
        with httpx.Client(base_url=s.url, auth=alice.presenter(limited)) as http:
            got = [http.get("/data/reports/q3") for _ in range(3)]
        assert [r.status_code for r in got] == [200, 200, 429]
        assert got[2].headers["capgate-deny"] == "budget_exhausted"
        assert "uses <= 2" in got[2].json()["reason"]
    finally:
        s.stop()


@pytest.mark.parametrize(
    "path, raw",
    [
        ("/public/../admin/users", b"/public/../admin/users"),
        ("/public/../admin/users", b"/public/%2e%2e/admin/users"),
        ("/public/../admin/users", b"/public/..%2fadmin%2fusers"),
        ("/public/..;/admin/users", b"/public/..;/admin/users"),
    ],
)
def test_an_unguarded_prefix_does_not_cover_a_way_out_of_it(path, raw):
    """``/public/`` passes unchecked, but not a path that leaves it once decoded or
    normalised by whatever serves it: that one is checked (and denied as invalid)."""
    m = CapgateMiddleware(None, guard=None, unguarded=("/public/", "/health"))
    assert m._is_unguarded({"path": "/public/logo.png", "raw_path": b"/public/logo.png"})
    assert m._is_unguarded({"path": "/health"})
    assert not m._is_unguarded({"path": path, "raw_path": raw})
