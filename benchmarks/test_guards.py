"""What each guard adds to a request, against a direct Verify measured in the same run.

capgate runs in its own process (SQLite); the guarded services run in this one
(a gRPC server, a Starlette app under uvicorn, an MCP server dispatched in
process) next to an unguarded twin, and requests are made one at a time, so a
rate is one over the latency. A guard's added latency is (guarded - unguarded)
per request; the notes give it in microseconds and as a multiple of one direct
Verify. "Cached" is the guard answering from its 1 s allow cache. Proofs: the
agent's signing is done before the timed rounds; what is timed is the server's
check of the proof and the redemption of its nonce (a durable write: SQLite here,
and PostgreSQL in the last pair).
"""

from __future__ import annotations

import asyncio
from concurrent import futures

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import attribute_context_pb2 as ac
from envoy.service.auth.v3 import external_auth_pb2 as ea
from envoy.service.auth.v3 import external_auth_pb2_grpc as ea_grpc
from mcp import Client as McpClient
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from capgate_client import (
    AsyncClient,
    AsyncGuard,
    CapgateMiddleware,
    Client,
    GrpcGuard,
    Guard,
    Proof,
    Rule,
)
from capgate_client.mcp import ToolGuard

from conftest import NOTES, ratio, record
from harness import AsgiServer, KeyedAgent, ServerProcess

CALLS = 200  # sequential requests per round
ROUNDS = 7
MEDIAN_US: dict[str, float] = {}  # latency per request, median over the rounds
R = "/data/reports/q3"


@pytest.fixture(scope="module")
def capgate(tmp_path_factory):
    p = ServerProcess(
        tmp_path_factory.mktemp("guards") / "data",
        ["--ext-authz", "--spiffe-prefix", "spiffe://bench/agent/"],
    ).start()
    alice = KeyedAgent(p, grants=["read,write:/data/**", "read_file:/files/*"])
    yield p, alice
    alice.close()
    p.stop()


def _added(
    name: str, guarded: str, unguarded: str, verify: str = "direct Verify (no proof)"
) -> None:
    """A note: what the guard adds per request (medians), in µs and in direct Verifies."""
    if not all(k in MEDIAN_US for k in (guarded, unguarded, verify)):
        return
    added = MEDIAN_US[guarded] - MEDIAN_US[unguarded]
    NOTES.append(
        f"{name}: {MEDIAN_US[guarded]:,.0f} us against {MEDIAN_US[unguarded]:,.0f}: "
        f"adds {added:,.0f} us per request = {added / MEDIAN_US[verify]:.2f}x a "
        f"direct Verify ({MEDIAN_US[verify]:,.0f} us)"
    )


def _bench(benchmark, name, fn, setup=None):
    fn(*(setup()[0] if setup else ()))  # warm up channels, caches, connections
    if setup:
        benchmark.pedantic(fn, setup=setup, rounds=ROUNDS)
    else:
        benchmark.pedantic(fn, rounds=ROUNDS)
    record(benchmark, name, CALLS)
    MEDIAN_US[name] = benchmark.stats.stats.median * 1e6 / CALLS


def _proofs(alice, method, target):
    p = alice.presenter()
    return lambda: (([p.proof(method, target) for _ in range(CALLS)],), {})


# -- the baseline --------------------------------------------------------------------------


def test_direct_verify(benchmark, capgate):
    p, alice = capgate
    with Client(p.address, alice.service_credential) as svc:

        def run():
            for _ in range(CALLS):
                assert svc.verify(alice.token, "read", R, presenter="alice").allowed

        _bench(benchmark, "direct Verify (no proof)", run)


def test_direct_verify_with_proof(benchmark, capgate):
    p, alice = capgate
    with Client(p.address, alice.service_credential) as svc:

        def run(proofs):
            for text in proofs:
                assert svc.verify(alice.token, "read", R, proof=Proof(text, "GET", R)).proven

        _bench(benchmark, "direct Verify with proof (SQLite)", run, _proofs(alice, "GET", R))
    _added(
        "a proof of possession, SQLite",
        "direct Verify with proof (SQLite)",
        "direct Verify (no proof)",
    )


# -- gRPC -----------------------------------------------------------------------------------


def _grpc_service(interceptors):
    def read(req, ctx):
        return req

    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=interceptors)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Files", {"Read": grpc.unary_unary_rpc_method_handler(read)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture(scope="module")
def grpc_services(capgate):
    p, alice = capgate
    client = Client(p.address, alice.service_credential)
    rules = {"/bench.Files/Read": Rule("read", R)}
    plain = _grpc_service([])
    guarded = _grpc_service(
        [GrpcGuard(Guard(client, cache_ttl=0), rules, presenter=lambda ctx: "alice")]
    )
    cached = _grpc_service(
        [GrpcGuard(Guard(client, cache_ttl=1.0), rules, presenter=lambda ctx: "alice")]
    )
    proven = _grpc_service([GrpcGuard(Guard(client, cache_ttl=0), rules)])
    yield {
        k: v[1]
        for k, v in (("plain", plain), ("guarded", guarded), ("cached", cached), ("proven", proven))
    }
    for server, _ in (plain, guarded, cached, proven):
        server.stop(None)
    client.close()


@pytest.mark.parametrize("kind", ["plain", "guarded", "cached", "proven"])
def test_grpc_guard(benchmark, capgate, grpc_services, kind):
    _, alice = capgate
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_services[kind]}")
    call = channel.unary_unary("/bench.Files/Read")
    header = [("authorization", f"Capgate {alice.token}")]
    name = f"gRPC call, {kind}"
    if kind == "proven":

        def run(proofs):
            for text in proofs:
                call(b"x", metadata=[*header, ("capgate-proof", text)])

        _bench(benchmark, name, run, _proofs(alice, "POST", "/bench.Files/Read"))
    else:

        def run():
            for _ in range(CALLS):
                call(b"x", metadata=header)

        _bench(benchmark, name, run)
    channel.close()
    if kind != "plain":
        _added(f"gRPC guard ({kind})", name, "gRPC call, plain")


# -- ASGI -------------------------------------------------------------------------------


def _app(guard=None):
    async def report(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route(R, report)])
    if guard is not None:
        app.add_middleware(CapgateMiddleware, guard=guard, presenter=lambda scope: "alice")
    return app


@pytest.mark.parametrize("kind", ["plain", "guarded", "cached", "proven"])
def test_asgi_guard(benchmark, capgate, kind):
    p, alice = capgate
    guard = None
    if kind != "plain":
        guard = AsyncGuard(
            AsyncClient(p.address, alice.service_credential),
            cache_ttl=1.0 if kind == "cached" else 0,
        )
    web = AsgiServer(_app(guard)).start()
    header = {"authorization": f"Capgate {alice.token}"}
    name = f"HTTP request (uvicorn), {kind}"
    with httpx.Client(base_url=web.url) as http:
        if kind == "proven":

            def run(proofs):
                for text in proofs:
                    assert http.get(R, headers={**header, "capgate-proof": text}).status_code == 200

            _bench(benchmark, name, run, _proofs(alice, "GET", R))
        else:

            def run():
                for _ in range(CALLS):
                    assert http.get(R, headers=header).status_code == 200

            _bench(benchmark, name, run)
    web.stop()
    if kind != "plain":
        _added(f"ASGI middleware ({kind})", name, "HTTP request (uvicorn), plain")


# -- MCP ------------------------------------------------------------------------------------


def _mcp(p, alice, guarded):
    middleware = []
    if guarded:
        guard = AsyncGuard(AsyncClient(p.address, alice.service_credential), cache_ttl=0)
        middleware = [
            ToolGuard(
                guard, {"read_file": Rule("", "/files/{path}")}, presenter=lambda ctx: "alice"
            )
        ]
    server = MCPServer("bench", middleware=middleware)

    @server.tool()
    def read_file(path: str) -> str:
        return path

    return server


@pytest.mark.parametrize("kind", ["plain", "guarded"])
def test_mcp_guard(benchmark, capgate, kind):
    p, alice = capgate
    token = alice.agent.issue("read_file:/files/*").token if kind == "guarded" else None
    server = _mcp(p, alice, kind == "guarded")
    meta = {"capgate/token": token} if token else None

    async def calls(n):
        async with McpClient(server) as mcp:
            for _ in range(n):
                r = await mcp.call_tool("read_file", {"path": "q3"}, meta=meta)
                assert not r.is_error, r

    def run():
        asyncio.run(calls(CALLS))

    name = f"MCP tool call (in process), {kind}"
    _bench(benchmark, name, run)
    if kind == "guarded":
        _added("MCP tool guard", name, "MCP tool call (in process), plain")

        async def unpresented():
            async with McpClient(server) as mcp:
                return await mcp.call_tool("read_file", {"path": "q3"})

        assert asyncio.run(unpresented()).is_error  # the guard was in the path


# -- Envoy ext_authz ------------------------------------------------------------------------


def test_envoy_check(benchmark, capgate):
    p, alice = capgate
    channel = grpc.insecure_channel(p.address)
    stub = ea_grpc.AuthorizationStub(channel)
    md = (("authorization", f"Bearer {alice.service_credential}"),)
    request = ea.CheckRequest(
        attributes=ac.AttributeContext(
            source=ac.AttributeContext.Peer(principal="spiffe://bench/agent/alice"),
            request=ac.AttributeContext.Request(
                http=ac.AttributeContext.HttpRequest(
                    method="GET", path=R, headers={"authorization": f"Capgate {alice.token}"}
                )
            ),
        )
    )

    def run():
        for _ in range(CALLS):
            assert stub.Check(request, metadata=md).status.code == 0

    name = "Envoy Check (mTLS principal)"
    _bench(benchmark, name, run)
    channel.close()
    verify = "direct Verify (no proof)"
    if verify in MEDIAN_US:
        NOTES.append(
            f"Envoy Check: {MEDIAN_US[name]:,.0f} us, "
            f"{MEDIAN_US[name] / MEDIAN_US[verify]:.2f}x a direct Verify "
            f"({MEDIAN_US[verify]:,.0f} us)"
        )


# -- proofs on PostgreSQL -------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_capgate(tmp_path_factory):
    from capgate_server import new_kek_text

    from harness import pg_schema

    folder = tmp_path_factory.mktemp("guards-pg")
    kek = folder / "kek"
    kek.write_text(new_kek_text())
    with pg_schema() as url:
        p = ServerProcess(folder / "data", ["--store", url, "--kek-file", str(kek)]).start()
        alice = KeyedAgent(p)
        yield p, alice
        alice.close()
        p.stop()


@pytest.mark.parametrize("kind", ["no proof", "with proof"])
def test_verify_on_postgresql(benchmark, pg_capgate, kind):
    p, alice = pg_capgate
    name = f"direct Verify {kind} (PostgreSQL)"
    with Client(p.address, alice.service_credential) as svc:
        if kind == "no proof":

            def run():
                for _ in range(CALLS):
                    assert svc.verify(alice.token, "read", R, presenter="alice").allowed

            _bench(benchmark, name, run)
            return

        def proven(proofs):
            for text in proofs:
                assert svc.verify(alice.token, "read", R, proof=Proof(text, "GET", R)).proven

        _bench(benchmark, name, proven, _proofs(alice, "GET", R))
    _added(
        "a proof of possession, PostgreSQL (one at a time: no group commit)",
        name,
        "direct Verify no proof (PostgreSQL)",
        "direct Verify no proof (PostgreSQL)",
    )


IN_FLIGHT = 32
LOAD_CALLS = 1500


@pytest.mark.parametrize("kind", ["no proof", "with proof"])
def test_verify_throughput_on_postgresql(benchmark, pg_capgate, kind):
    """Under load, redemptions that arrive together share one commit."""
    p, alice = pg_capgate
    presenter = alice.presenter()

    def proofs():
        if kind == "no proof":
            return ([None] * LOAD_CALLS,), {}
        return ([presenter.proof("GET", R) for _ in range(LOAD_CALLS)],), {}

    async def load(texts):
        async with AsyncClient(p.address, alice.service_credential) as svc:
            work = iter(texts)

            async def worker():
                for text in work:
                    if text is None:
                        r = await svc.verify(alice.token, "read", R, presenter="alice")
                    else:
                        r = await svc.verify(alice.token, "read", R, proof=Proof(text, "GET", R))
                    assert r.allowed

            await asyncio.gather(*[worker() for _ in range(IN_FLIGHT)])

    def run(texts):
        asyncio.run(load(texts))

    run(*proofs()[0])
    benchmark.pedantic(run, setup=proofs, rounds=3)
    name = f"Verify {kind}, {IN_FLIGHT} in flight (PostgreSQL)"
    record(benchmark, name, LOAD_CALLS)
    if kind == "with proof":
        ratio(
            f"Verify with proof vs without, {IN_FLIGHT} in flight, PostgreSQL",
            f"Verify with proof, {IN_FLIGHT} in flight (PostgreSQL)",
            f"Verify no proof, {IN_FLIGHT} in flight (PostgreSQL)",
        )
