"""One request cannot stall a replica: a hostile batch is decided in slices that let
everything else run, its never-seen caveats are bounded, and one principal's batches
cannot crowd out another's.

The hostile batch is the one the outside attack used: 1,024 self-attenuated tokens
with ten thousand distinct ``resource`` caveats. The event loop's progress is observed
from inside the server (a ticker task), so nothing here depends on timing.
"""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from capgate import ResourceExhaustedError
from capgate_proto.v1 import verifier_pb2
from capgate_server import ResourceLimits

from harness import ServerThread, wait_for
from hostile import BATCH, batch_of, self_attenuated

BATCH_METHOD = "/capgate.v1.VerifierService/VerifyBatch"


def world(server):
    with server.client() as admin:
        _, cred = admin.create_agent("mallory", ["read:/data/**"])
        _, good = admin.create_agent("alice", ["read:/data/**"])
        svc = admin.create_principal("svc", "service").credential
    with server.client(cred) as m, server.client(good) as a:
        return cred, svc, m.issue("read:/data/**").token, a.issue("read:/data/**").token


def send_batch(address, credential, request, out, key):
    with grpc.insecure_channel(address) as ch:
        call = ch.unary_unary(
            BATCH_METHOD,
            request_serializer=verifier_pb2.VerifyBatchRequest.SerializeToString,
            response_deserializer=verifier_pb2.VerifyBatchResponse.FromString,
        )
        try:
            out[key] = call(
                request, metadata=(("authorization", f"Bearer {credential}"),), timeout=120
            )
        except grpc.RpcError as e:
            out[key] = e


def decided(server) -> int:
    return server.app.replica.audit.decisions


class Ticker:
    """A task on the server's event loop, noting how many requests had been decided
    (and whether the replica counted itself fresh) each time it ran."""

    def __init__(self, server):
        self.seen: list[tuple[int, bool]] = []
        self._server = server
        self._stop = False
        replica = server.app.replica

        async def tick():
            while not self._stop:
                self.seen.append((replica.audit.decisions, replica.fresh()))
                await asyncio.sleep(0.001)

        self._task = asyncio.run_coroutine_threadsafe(tick(), server.loop)

    def stop(self):
        self._stop = True
        self._task.result(10)

    def ran_between(self, low, high):
        """How many times the ticker ran while the count of decisions was strictly inside."""
        return sum(1 for n, _ in self.seen if low < n < high)


def test_a_hostile_batch_is_refused_once_its_never_seen_caveats_pass_the_bound(server):
    cred, svc, root, good = world(server)
    tokens = self_attenuated(root, BATCH)  # 10,240 never-seen caveats
    with server.client(cred) as mallory:
        with pytest.raises(ResourceExhaustedError, match="not seen in one batch"):
            mallory.verify_batch([(t, "read", "/data/x", "mallory", None) for t in tokens])
        # an ordinary batch of the same size is decided as ever
        results = mallory.verify_batch(
            [(root, "read", f"/data/{i}", "mallory", None) for i in range(BATCH)]
        )
        assert all(r.allowed for r in results)
    with server.client(svc) as s:
        assert s.verify(good, "read", "/data/x", presenter="alice").allowed


def test_other_callers_run_while_a_hostile_batch_is_decided(tmp_path):
    # a bound high enough that the hostile batches are decided to the end
    s = ServerThread(
        tmp_path / "data",
        stale_after=2.0,
        poll_interval=0.2,
        limits=ResourceLimits(new_caveats_per_call=10**9),
    ).start()
    try:
        cred, svc, root, good = world(s)
        requests = [batch_of(self_attenuated(root, BATCH), "mallory") for _ in range(3)]
        ticker = Ticker(s)
        start = decided(s)
        out: dict = {}
        threads = [
            threading.Thread(target=send_batch, args=(s.address, cred, r, out, i))
            for i, r in enumerate(requests)
        ]
        for t in threads:
            t.start()
        wait_for(lambda: decided(s) > start + 200, timeout=60)
        with s.client(svc) as c:  # another caller, mid-batch, is answered
            assert c.verify(good, "read", "/data/x", presenter="alice").allowed
            assert any(t.is_alive() for t in threads)
        for t in threads:
            t.join(120)
        ticker.stop()
        end = decided(s)
        assert all(len(out[i].responses) == BATCH for i in range(3))
        # the event loop ran all along: between slices, not only between batches
        assert ticker.ran_between(start, end) >= 20
        assert all(fresh for _, fresh in ticker.seen)  # never out of touch with the store
    finally:
        s.stop()


def test_one_principal_cannot_crowd_out_another(tmp_path):
    s = ServerThread(tmp_path / "data", limits=ResourceLimits(new_caveats_per_call=10**9)).start()
    try:
        cred, svc, root, good = world(s)
        flood = [batch_of(self_attenuated(root, 256), "mallory") for _ in range(6)]
        out: dict = {}
        threads = [
            threading.Thread(target=send_batch, args=(s.address, cred, r, out, i))
            for i, r in enumerate(flood)
        ]
        start = decided(s)
        for t in threads:
            t.start()
        wait_for(lambda: decided(s) > start + 100, timeout=60)
        # the service's batch is decided in turn with mallory's, not after all of them
        send_batch(s.address, svc, batch_of([good] * 256, "alice"), out, "svc")
        assert all(r.allowed for r in out["svc"].responses)
        assert sum(t.is_alive() for t in threads) >= 2
        for t in threads:
            t.join(120)
        assert all(len(out[i].responses) == 256 for i in range(6))
    finally:
        s.stop()


def test_a_stream_of_never_seen_tokens_is_cut_off(tmp_path):
    # a stream may bring new_caveats_per_call never-seen caveats per second
    server = ServerThread(tmp_path / "data", limits=ResourceLimits(new_caveats_per_call=500))
    server.start()
    cred, svc, root, good = world(server)
    tokens = self_attenuated(root, 3000)  # 30,000 never-seen caveats, sent as fast as may be
    requests = (
        verifier_pb2.VerifyRequest(token=t, action="read", resource="/data/x", presenter="mallory")
        for t in tokens
    )
    with grpc.insecure_channel(server.address) as ch:
        stream = ch.stream_stream(
            "/capgate.v1.VerifierService/VerifyStream",
            request_serializer=verifier_pb2.VerifyRequest.SerializeToString,
            response_deserializer=verifier_pb2.VerifyResponse.FromString,
        )
        answered = 0
        with pytest.raises(grpc.RpcError) as e:
            for reply in stream(requests, metadata=(("authorization", f"Bearer {cred}"),)):
                assert not reply.allowed
                answered += 1
        assert e.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "per second on one stream" in e.value.details()
        assert answered < 3000
    with server.client(svc) as s:
        assert s.verify(good, "read", "/data/x", presenter="alice").allowed
    server.stop()
