"""What a call may cost before its servicer runs: bodies of refused calls are never
parsed, each method has its message limit, and calls and streams in flight are capped
(per principal, per connection, in all, and the open health watches)."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capgate import ResourceExhaustedError
from capgate_proto.v1 import verifier_pb2
from capgate_server import ResourceLimits

from harness import ServerThread, wait_for
from hostile import batch_of, self_attenuated

GARBAGE = b"\xff\xff\xff\xff" * 64  # not a protobuf message: parsing it fails


@pytest.fixture
def limited(tmp_path):
    servers = []

    def start(**limits):
        s = ServerThread(tmp_path / f"data{len(servers)}", limits=ResourceLimits(**limits))
        servers.append(s.start())
        return s

    yield start
    for s in servers:
        s.stop()


def world(server):
    with server.client() as admin:
        _, cred = admin.create_agent("alice", ["read:/data/**"])
        svc = admin.create_principal("svc", "service").credential
        other = admin.create_principal("other", "service").credential
    with server.client(cred) as alice:
        token = alice.issue("read:/data/**").token
    return svc, other, token


def raw(channel, method):
    return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def code_of(call, *args, **kw):
    try:
        call(*args, **kw)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_refused_calls_are_answered_without_parsing_the_body(server):
    svc, _, _ = world(server)
    with grpc.insecure_channel(server.address) as ch:
        batch = raw(ch, "/capgate.v1.VerifierService/VerifyBatch")
        for md in ((), (("authorization", "Bearer not-a-credential"),)):
            assert code_of(batch, GARBAGE, metadata=md) is grpc.StatusCode.UNAUTHENTICATED
            # a large body too: refused before it is read, let alone parsed
            big = GARBAGE * 12_000
            assert code_of(batch, big, metadata=md) is grpc.StatusCode.UNAUTHENTICATED
        create = raw(ch, "/capgate.v1.AgentService/CreateAgent")
        as_svc = (("authorization", f"Bearer {svc}"),)
        assert code_of(create, GARBAGE, metadata=as_svc) is grpc.StatusCode.PERMISSION_DENIED


def test_each_method_has_its_message_limit(server):
    svc, _, token = world(server)
    with server.client(svc) as c:
        with pytest.raises(ResourceExhaustedError, match="over this server's limit of 65536"):
            c.verify("A" * 100_000, "read", "/data/x", presenter="alice")
        # a batch may be larger: 300 requests of 6 KB each is 1.8 MB
        items = [
            verifier_pb2.VerifyRequest(
                token=token, action="read", presenter="alice", resource="/data/" + "x" * 6000
            )
        ] * 300
        big = verifier_pb2.VerifyBatchRequest(requests=items)
        with grpc.insecure_channel(server.address) as ch:
            md = (("authorization", f"Bearer {svc}"),)
            reply = verifier_pb2.VerifyBatchResponse.FromString(
                raw(ch, "/capgate.v1.VerifierService/VerifyBatch")(
                    big.SerializeToString(), metadata=md
                )
            )
            assert len(reply.responses) == 300
            assert all(r.code == "invalid_request" for r in reply.responses)
            over = verifier_pb2.VerifyBatchRequest(requests=items * 3).SerializeToString()
            assert (
                code_of(raw(ch, "/capgate.v1.VerifierService/VerifyBatch"), over, metadata=md)
                is grpc.StatusCode.RESOURCE_EXHAUSTED
            )
            # each message of a stream is held to the per-message limit
            stream = ch.stream_stream(
                "/capgate.v1.VerifierService/VerifyStream",
                request_serializer=None,
                response_deserializer=None,
            )
            ok = verifier_pb2.VerifyRequest(
                token=token, action="read", resource="/data/x", presenter="alice"
            ).SerializeToString()
            replies = stream(iter([ok, b"\x0a\xa0\x8d\x06" + b"A" * 100_000]), metadata=md)
            assert verifier_pb2.VerifyResponse.FromString(next(replies)).allowed
            with pytest.raises(grpc.RpcError) as e:
                next(replies)
            assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
            # the health service answers anyone, so its messages are small
            check = raw(ch, "/grpc.health.v1.Health/Check")
            request = health_pb2.HealthCheckRequest(service="x" * 2000).SerializeToString()
            assert code_of(check, request) is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert c.verify(token, "read", "/data/x", presenter="alice").allowed


def watch(channel):
    replies = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
    return replies, next(replies)  # open, and answered once


def test_open_health_watches_are_capped(limited):
    s = limited(health_watches=2)
    with grpc.insecure_channel(s.address) as ch:
        first, status = watch(ch)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        second, _ = watch(ch)
        with pytest.raises(grpc.RpcError) as e:
            watch(ch)
        assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "health watches" in e.value.details()
        first.cancel()
        check = health_pb2_grpc.HealthStub(ch).Check
        assert check(health_pb2.HealthCheckRequest()).status == status.status
        for _ in range(50):  # the cancelled watch is let go of soon after
            try:
                third, _ = watch(ch)
                break
            except grpc.RpcError:
                time.sleep(0.05)
        else:
            raise AssertionError("a watch slot was never freed")
        second.cancel()
        third.cancel()


def test_calls_in_flight_are_capped_per_principal(limited):
    s = limited(calls_per_principal=2)
    svc, other, token = world(s)
    md = (("authorization", f"Bearer {svc}"),)
    ok = verifier_pb2.VerifyRequest(
        token=token, action="read", resource="/data/x", presenter="alice"
    )
    with grpc.insecure_channel(s.address) as ch:
        stream = ch.stream_stream(
            "/capgate.v1.VerifierService/VerifyStream",
            request_serializer=verifier_pb2.VerifyRequest.SerializeToString,
            response_deserializer=verifier_pb2.VerifyResponse.FromString,
        )
        held = []
        for _ in range(2):  # two streams kept open: two calls in flight
            q: queue.Queue = queue.Queue()
            q.put(ok)
            replies = stream(iter(q.get, None), metadata=md)
            assert next(replies).allowed
            held.append((q, replies))
        with s.client(svc) as c, pytest.raises(ResourceExhaustedError, match="calls in flight"):
            c.verify(token, "read", "/data/x", presenter="alice")
        with s.client(other) as c:  # another principal is not affected
            assert c.verify(token, "read", "/data/x", presenter="alice").allowed
        q, replies = held.pop()
        q.put(None)  # end one stream
        assert list(replies) == []
        with s.client(svc) as c:
            assert c.verify(token, "read", "/data/x", presenter="alice").allowed
        held[0][0].put(None)


def test_all_calls_in_flight_are_capped(limited):
    s = limited(max_concurrent_rpcs=3, health_watches=10)
    with grpc.insecure_channel(s.address) as ch:
        open_ = [watch(ch)[0] for _ in range(3)]
        check = health_pb2_grpc.HealthStub(ch).Check
        with pytest.raises(grpc.RpcError) as e:
            check(health_pb2.HealthCheckRequest())
        assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        for w in open_:
            w.cancel()


def test_streams_per_connection_are_capped(limited):
    s = limited(streams_per_connection=2, health_watches=10)
    with (
        grpc.insecure_channel(s.address) as ch,
        grpc.insecure_channel(s.address, options=[("grpc.use_local_subchannel_pool", 1)]) as ch2,
    ):
        open_ = [watch(ch)[0] for _ in range(2)]
        request = health_pb2.HealthCheckRequest()
        with pytest.raises(grpc.RpcError) as e:  # a third stream waits for a free one
            health_pb2_grpc.HealthStub(ch).Check(request, timeout=1.0)
        assert e.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        assert health_pb2_grpc.HealthStub(ch2).Check(request, timeout=5.0).status
        for w in open_:
            w.cancel()


def test_verify_batches_in_flight_are_capped(limited):
    s = limited(batches_in_flight=1, new_caveats_per_call=10**9)
    svc, other, token = world(s)
    with s.client(svc) as c:  # a token below alice's, made to be slow to decide
        slow = batch_of(self_attenuated(token, 1024), "alice")
        done = {}
        with grpc.insecure_channel(s.address) as ch:
            call = raw(ch, "/capgate.v1.VerifierService/VerifyBatch")
            md = (("authorization", f"Bearer {svc}"),)
            t = threading.Thread(
                target=lambda: done.setdefault("slow", call(slow.SerializeToString(), metadata=md))
            )
            before = s.app.replica.audit.decisions
            t.start()
            wait_for(lambda: s.app.replica.audit.decisions > before, timeout=60)
            with (
                s.client(other) as o,
                pytest.raises(ResourceExhaustedError, match="batches are in flight"),
            ):
                o.verify_batch([(token, "read", "/data/x", "alice", None)])
            assert c.verify(token, "read", "/data/x", presenter="alice").allowed  # unary: fine
            t.join(60)
        assert len(verifier_pb2.VerifyBatchResponse.FromString(done["slow"]).responses) == 1024
        assert c.verify_batch([(token, "read", "/data/x", "alice", None)])[0].allowed


def test_two_authorization_headers_are_refused_whichever_comes_first(server):
    """With two credentials, a proxy that checks the first and a server that took the
    last (as capgate did) would each see another principal: refused, both ways."""
    svc, _, _ = world(server)
    admin = server.admin_credential
    with grpc.insecure_channel(server.address) as ch:
        list_agents = raw(ch, "/capgate.v1.AgentService/ListAgents")
        for first, second in (("not-a-credential", admin), (admin, "not-a-credential")):
            md = (("authorization", f"Bearer {first}"), ("authorization", f"Bearer {second}"))
            with pytest.raises(grpc.RpcError) as e:
                list_agents(b"", metadata=md, timeout=5)
            assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert "more than one authorization header" in e.value.details()
        assert list_agents(b"", metadata=(("authorization", f"Bearer {admin}"),), timeout=5)
