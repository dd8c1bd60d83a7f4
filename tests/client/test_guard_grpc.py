"""The gRPC guards in front of a real gRPC service, checking through a real capgate server:
the sync interceptor (grpc.server) and the asyncio one (grpc.aio.server); method rules,
request-field resources, streams, the deny trailer, proofs, mTLS presenters, the cache's
bound and failing closed."""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent import futures

import grpc
import pytest

from capgate import DENY_HEADER
from capgate_client import (
    AsyncClient,
    AsyncGrpcGuard,
    AsyncGuard,
    Client,
    GrpcGuard,
    Guard,
    Rule,
    current_presentation,
    mtls_presenter,
)

from harness import KeyedAgent, make_pki

SERVICE = "demo.Files"
RULES = {
    f"/{SERVICE}/Read": Rule("read", "/data/reports/{name}"),
    f"/{SERVICE}/List": Rule("read", "/data/reports/{dir}"),
    f"/{SERVICE}/Upload": Rule("write", "/data/reports/inbox"),
    f"/{SERVICE}/Chat": Rule("read", "/data/reports/chat"),
    f"/{SERVICE}/Sized": Rule("read", "/data/reports/{name}", ctx={"size": "size"}),
    # /demo.Files/Delete exists but has no rule
}


def _dumps(obj):
    return json.dumps(obj).encode()


def _loads(data):
    return json.loads(data)


def _who():
    """What the handler sees: the presentation, settled (a proven presenter, by name)."""
    p = current_presentation()
    return {"token_seen": bool(p and p.token), "presenter": p.presenter if p else None}


# -- the service (sync and asyncio twins) ---------------------------------------------


def _sync_handlers():
    def read(req, ctx):
        return {"content": f"report {req['name']}", **_who()}

    def list_(req, ctx):
        for i in range(3):
            yield {"item": f"{req['dir']}/{i}", **_who()}

    def upload(reqs, ctx):
        return {"count": sum(1 for _ in reqs)}

    def chat(reqs, ctx):
        for r in reqs:
            yield {"echo": r, **_who()}

    kw = {"request_deserializer": _loads, "response_serializer": _dumps}
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Read": grpc.unary_unary_rpc_method_handler(read, **kw),
            "Sized": grpc.unary_unary_rpc_method_handler(read, **kw),
            "Delete": grpc.unary_unary_rpc_method_handler(read, **kw),
            "List": grpc.unary_stream_rpc_method_handler(list_, **kw),
            "Upload": grpc.stream_unary_rpc_method_handler(upload, **kw),
            "Chat": grpc.stream_stream_rpc_method_handler(chat, **kw),
        },
    )


def _aio_handlers():
    async def read(req, ctx):
        return {"content": f"report {req['name']}", **_who()}

    async def list_(req, ctx):
        for i in range(3):
            yield {"item": f"{req['dir']}/{i}", **_who()}

    async def upload(reqs, ctx):
        return {"count": len([r async for r in reqs])}

    async def chat(reqs, ctx):
        async for r in reqs:
            yield {"echo": r, **_who()}

    kw = {"request_deserializer": _loads, "response_serializer": _dumps}
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Read": grpc.unary_unary_rpc_method_handler(read, **kw),
            "Sized": grpc.unary_unary_rpc_method_handler(read, **kw),
            "Delete": grpc.unary_unary_rpc_method_handler(read, **kw),
            "List": grpc.unary_stream_rpc_method_handler(list_, **kw),
            "Upload": grpc.stream_unary_rpc_method_handler(upload, **kw),
            "Chat": grpc.stream_stream_rpc_method_handler(chat, **kw),
        },
    )


class SyncService:
    def __init__(self, interceptor, creds=None):
        self.server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[interceptor])
        self.server.add_generic_rpc_handlers((_sync_handlers(),))
        self.port = (
            self.server.add_secure_port("127.0.0.1:0", creds)
            if creds
            else self.server.add_insecure_port("127.0.0.1:0")
        )
        self.server.start()

    def stop(self):
        self.server.stop(None)


class AioService:
    """A grpc.aio server on an event loop of its own thread."""

    def __init__(self, make_interceptor):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def start():
            server = grpc.aio.server(interceptors=[make_interceptor()])
            server.add_generic_rpc_handlers((_aio_handlers(),))
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            return server, port

        self.server, self.port = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.server.stop(None), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


class Caller:
    """A client of demo.Files; ``presenter`` attaches the token and proof to each call."""

    def __init__(self, port, presenter=None, channel=None):
        self.channel = channel or grpc.insecure_channel(f"127.0.0.1:{port}")
        self.presenter = presenter

    def _md(self, method):
        return self.presenter.grpc_metadata(f"/{SERVICE}/{method}") if self.presenter else None

    def unary(self, method, req):
        call = self.channel.unary_unary(
            f"/{SERVICE}/{method}", request_serializer=_dumps, response_deserializer=_loads
        )
        return call(req, metadata=self._md(method), timeout=10)

    def server_stream(self, method, req):
        call = self.channel.unary_stream(
            f"/{SERVICE}/{method}", request_serializer=_dumps, response_deserializer=_loads
        )
        return list(call(req, metadata=self._md(method), timeout=10))

    def client_stream(self, method, reqs):
        call = self.channel.stream_unary(
            f"/{SERVICE}/{method}", request_serializer=_dumps, response_deserializer=_loads
        )
        return call(iter(reqs), metadata=self._md(method), timeout=10)

    def bidi(self, method, reqs):
        call = self.channel.stream_stream(
            f"/{SERVICE}/{method}", request_serializer=_dumps, response_deserializer=_loads
        )
        return list(call(iter(reqs), metadata=self._md(method), timeout=10))

    def close(self):
        self.channel.close()


def denied(fn):
    """The status code and the deny trailer of a refused call."""
    with pytest.raises(grpc.RpcError) as e:
        fn()
    trailer = dict(e.value.trailing_metadata() or ()).get(DENY_HEADER)
    return e.value.code(), trailer, e.value.details()


@pytest.fixture
def alice(server):
    a = KeyedAgent(server)
    yield a
    a.close()


class FakeMonotonic:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def sync_service(alice):
    clock = FakeMonotonic()
    client = Client(alice.server.address, alice.service_credential)
    svc = SyncService(GrpcGuard(Guard(client, monotonic=clock), RULES))
    svc.clock = clock
    yield svc
    svc.stop()
    client.close()


@pytest.fixture
def aio_service(alice):
    svc = AioService(
        lambda: AsyncGrpcGuard(
            AsyncGuard(AsyncClient(alice.server.address, alice.service_credential)), RULES
        )
    )
    yield svc
    svc.stop()


@pytest.fixture(params=["sync", "aio"])
def service(request):
    return request.getfixturevalue(f"{request.param}_service")


def test_every_kind_of_method_passes_with_a_token_and_proof(service, alice):
    c = Caller(service.port, alice.presenter())
    got = c.unary("Read", {"name": "q3"})
    assert got == {"content": "report q3", "token_seen": True, "presenter": "alice"}
    items = c.server_stream("List", {"dir": "2026"})
    assert [i["item"] for i in items] == ["2026/0", "2026/1", "2026/2"]
    assert all(i["token_seen"] for i in items)  # the presentation is current in the stream
    assert c.bidi("Chat", ["a", "b"])[1]["echo"] == "b"
    # Upload writes: the token only reads, so a caveat of the token refuses it
    code, trailer, details = denied(lambda: c.client_stream("Upload", [1, 2]))
    assert code is grpc.StatusCode.PERMISSION_DENIED and trailer == "caveat_failed"
    assert "action in read" in details
    c.close()


def test_denies_abort_with_permission_denied_and_the_code(service, alice):
    c = Caller(service.port, alice.presenter())
    code, trailer, _ = denied(lambda: c.unary("Delete", {"name": "q3"}))
    assert (code, trailer) == (grpc.StatusCode.PERMISSION_DENIED, "no_rule")
    # a request field that would walk the resource elsewhere, or is missing or not text
    for bad in (
        {"name": "../secrets"},
        {"name": "a/b"},
        {"name": ""},
        {},
        {"name": ["q3"]},
        {"name": None},
        {"name": True},
    ):
        code, trailer, _ = denied(lambda bad=bad: c.unary("Read", bad))
        assert (code, trailer) == (grpc.StatusCode.PERMISSION_DENIED, "invalid_request"), bad
    # no token at all
    bare = Caller(service.port)
    assert denied(lambda: bare.unary("Read", {"name": "q3"}))[1] == "missing_token"
    # a token of another scheme, or garbage
    for md in (
        (("authorization", "Bearer x"),),
        (("authorization", "Capgate"),),
        (("authorization", "Capgate not-a-token"),),
    ):
        call = bare.channel.unary_unary(
            f"/{SERVICE}/Read", request_serializer=_dumps, response_deserializer=_loads
        )
        code, trailer, _ = denied(lambda md=md, call=call: call({"name": "q3"}, metadata=md))
        assert code is grpc.StatusCode.PERMISSION_DENIED
        assert trailer in ("missing_token", "malformed_token")
    # a token or a proof twice: which one would count? neither
    md = alice.presenter().grpc_metadata(f"/{SERVICE}/Read")
    for twice in ([*md, md[0]], [*md, md[1]]):
        code, trailer, _ = denied(
            lambda twice=twice, call=call: call({"name": "q3"}, metadata=twice)
        )
        assert (code, trailer) == (grpc.StatusCode.PERMISSION_DENIED, "invalid_request")
    c.close()
    bare.close()


def test_a_request_field_feeds_a_ctx_caveat(sync_service, alice):
    small = alice.agent.attenuate(alice.token, ["ctx size <= 100"]).token
    c = Caller(sync_service.port, alice.presenter(small))
    assert c.unary("Sized", {"name": "q3", "size": 50})["content"] == "report q3"
    code, trailer, details = denied(lambda: c.unary("Sized", {"name": "q3", "size": 500}))
    assert trailer == "caveat_failed" and "ctx size <= 100" in details
    assert (
        denied(lambda: c.unary("Sized", {"name": "q3", "size": {"n": 1}}))[1] == "invalid_request"
    )
    c.close()


def test_a_stolen_token_is_refused_where_proof_is_required(sync_service, alice):
    # the thief has the token but not alice's key; the service asserts no one
    thief = Caller(sync_service.port, alice.presenter(key=False))
    assert denied(lambda: thief.unary("Read", {"name": "q3"}))[1] == "no_presenter"
    alice.admin.update_agent("alice", require_proof=True)
    thief_md = [("authorization", f"Capgate {alice.token}")]
    call = thief.channel.unary_unary(
        f"/{SERVICE}/Read", request_serializer=_dumps, response_deserializer=_loads
    )
    assert denied(lambda: call({"name": "q3"}, metadata=thief_md))[1] == "no_presenter"
    # a proof captured from alice's call cannot be used again, nor for another method
    md = alice.presenter().grpc_metadata(f"/{SERVICE}/Read")
    assert call({"name": "q3"}, metadata=md)["content"] == "report q3"
    assert denied(lambda: call({"name": "q3"}, metadata=md))[1] == "proof_replayed"
    other = alice.presenter().grpc_metadata(f"/{SERVICE}/List")
    assert denied(lambda: call({"name": "q3"}, metadata=other))[1] == "bad_proof"
    thief.close()


def test_the_presenter_interceptor_presents_every_call(sync_service, alice):
    channel = grpc.intercept_channel(
        grpc.insecure_channel(f"127.0.0.1:{sync_service.port}"),
        alice.presenter().grpc_interceptor(),
    )
    c = Caller(sync_service.port, channel=channel)
    for _ in range(3):  # a fresh proof each time
        assert c.unary("Read", {"name": "q3"})["presenter"] == "alice"
    assert len(c.server_stream("List", {"dir": "d"})) == 3
    c.close()


def test_the_aio_presenter_interceptors_present_every_call(aio_service, alice):
    async def run():
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{aio_service.port}", interceptors=alice.presenter().grpc_aio_interceptors()
        )
        read = channel.unary_unary(
            f"/{SERVICE}/Read", request_serializer=_dumps, response_deserializer=_loads
        )
        listing = channel.unary_stream(
            f"/{SERVICE}/List", request_serializer=_dumps, response_deserializer=_loads
        )
        first = await read({"name": "q3"})
        second = await read({"name": "q3"})
        items = [i async for i in listing({"dir": "d"})]
        await channel.close()
        return first, second, items

    first, second, items = asyncio.run(run())
    assert first["presenter"] == "alice" and second["presenter"] == "alice" and len(items) == 3


def test_cached_allows_outlive_a_revocation_by_at_most_the_ttl(alice):
    clock = FakeMonotonic()
    client = Client(alice.server.address, alice.service_credential)
    # no proof: the service names the presenter itself (say, from its own authentication)
    guard = Guard(client, cache_ttl=1.0, monotonic=clock)
    svc = SyncService(GrpcGuard(guard, RULES, presenter=lambda ctx: "alice"))
    c = Caller(svc.port, alice.presenter(key=False))
    assert c.unary("Read", {"name": "q3"})["content"]
    alice.admin.revoke(alice.token)
    clock.now += 0.5
    assert c.unary("Read", {"name": "q3"})["content"]  # from the cache, inside the bound
    assert denied(lambda: c.unary("Read", {"name": "q4"}))[1] == "revoked"  # not cached
    clock.now += 0.6
    assert denied(lambda: c.unary("Read", {"name": "q3"}))[1] == "revoked"
    svc.stop()
    client.close()
    c.close()


def test_requests_with_proofs_are_never_answered_from_the_cache(alice):
    clock = FakeMonotonic()
    client = Client(alice.server.address, alice.service_credential)
    svc = SyncService(GrpcGuard(Guard(client, cache_ttl=60, monotonic=clock), RULES))
    c = Caller(svc.port, alice.presenter())
    assert c.unary("Read", {"name": "q3"})["presenter"] == "alice"
    alice.admin.revoke(alice.token)
    assert denied(lambda: c.unary("Read", {"name": "q3"}))[1] == "revoked"
    svc.stop()
    client.close()
    c.close()


def test_capgate_unreachable_fails_closed_with_unavailable(alice):
    client = Client("127.0.0.1:1", alice.service_credential, timeout=1)
    svc = SyncService(GrpcGuard(Guard(client), RULES))
    c = Caller(svc.port, alice.presenter())
    code, trailer, _ = denied(lambda: c.unary("Read", {"name": "q3"}))
    assert (code, trailer) == (grpc.StatusCode.UNAVAILABLE, "unavailable")
    svc.stop()
    client.close()
    c.close()


def test_rules_from_a_callable_and_unguarded_methods(alice):
    client = Client(alice.server.address, alice.service_credential)

    def rules(method):
        if method.endswith("/Read"):
            return Rule("read", lambda req: f"/data/reports/{req['name']}")
        if method.endswith("/List"):
            raise RuntimeError("a broken rule function")
        return None

    svc = SyncService(GrpcGuard(Guard(client), rules, unguarded=(f"/{SERVICE}/Delete",)))
    c = Caller(svc.port, alice.presenter())
    assert c.unary("Read", {"name": "q3"})["content"] == "report q3"
    assert Caller(svc.port).unary("Delete", {"name": "x"})["token_seen"] is False  # unchecked
    code, trailer, _ = denied(lambda: c.server_stream("List", {"dir": "d"}))
    assert (code, trailer) == (grpc.StatusCode.PERMISSION_DENIED, "invalid_request")
    assert denied(lambda: c.unary("Sized", {"name": "q3"}))[1] == "no_rule"
    svc.stop()
    client.close()
    c.close()


def test_a_streaming_request_cannot_take_its_resource_from_the_request(alice):
    client = Client(alice.server.address, alice.service_credential)
    rules = {f"/{SERVICE}/Upload": Rule("read", "/data/reports/{name}")}
    svc = SyncService(GrpcGuard(Guard(client), rules))
    c = Caller(svc.port, alice.presenter())
    assert denied(lambda: c.client_stream("Upload", [{"name": "q3"}]))[1] == "invalid_request"
    svc.stop()
    client.close()
    c.close()


def test_an_mtls_presenter_names_the_agent_from_its_certificate(alice, tmp_path):
    pki = make_pki(tmp_path / "pki", "spiffe://example.org/agent/alice")
    creds = grpc.ssl_server_credentials(
        [(pki["server.key"].read_bytes(), pki["server.crt"].read_bytes())],
        root_certificates=pki["ca.crt"].read_bytes(),
        require_client_auth=True,
    )
    client = Client(alice.server.address, alice.service_credential)
    svc = SyncService(
        GrpcGuard(
            Guard(client, cache_ttl=0),
            RULES,
            presenter=mtls_presenter("spiffe://example.org/agent/"),
        ),
        creds=creds,
    )
    channel = grpc.secure_channel(
        f"127.0.0.1:{svc.port}",
        grpc.ssl_channel_credentials(
            pki["ca.crt"].read_bytes(),
            pki["client.key"].read_bytes(),
            pki["client.crt"].read_bytes(),
        ),
    )
    c = Caller(svc.port, alice.presenter(key=False), channel=channel)
    assert c.unary("Read", {"name": "q3"})["content"] == "report q3"  # presenter by mTLS
    # mTLS is the service's word; where proof is required it is not enough
    alice.admin.update_agent("alice", require_proof=True)
    assert denied(lambda: c.unary("Read", {"name": "q3"}))[1] == "proof_required"
    c.presenter = alice.presenter()
    assert c.unary("Read", {"name": "q3"})["presenter"] == "alice"
    svc.stop()
    client.close()
    c.close()
    with pytest.raises(ValueError):
        mtls_presenter("")


def test_a_spent_budget_aborts_with_resource_exhausted(sync_service, alice):
    from capgate import Token

    limited = Token.parse(alice.token).attenuate("uses <= 1").to_text()
    c = Caller(sync_service.port, alice.presenter(limited))
    assert c.unary("Read", {"name": "q3"})["content"] == "report q3"
    code, trailer, details = denied(lambda: c.unary("Read", {"name": "q3"}))
    assert (code, trailer) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "budget_exhausted")
    assert "uses <= 1" in details
    c.close()


def test_a_protobuf_field_that_is_not_set_is_left_out_of_the_context():
    """A request message that does not set a field gives no context value for it, as a
    mapping without the key does (so a ctx caveat on it denies): a sub-message or an
    optional field that is not present, or a proto3 scalar at its default, which the
    wire cannot tell from one never sent."""
    from google.protobuf import duration_pb2, struct_pb2

    rule = Rule("read", "/data/x", ctx={"limit": "seconds"})
    assert rule.access(duration_pb2.Duration()).ctx == rule.access({}).ctx == {}
    assert rule.access(duration_pb2.Duration(seconds=7)).ctx == {"limit": "7"}
    nested = Rule("read", "/data/x", ctx={"n": "number_value"})
    assert nested.access(struct_pb2.Value()).ctx == {}  # a oneof member not chosen
    assert nested.access(struct_pb2.Value(number_value=0)).ctx == {"n": "0.0"}
