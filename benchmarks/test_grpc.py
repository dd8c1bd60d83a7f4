"""gRPC throughput: Verify, VerifyBatch and VerifyStream against a no-op twin on one server.

The server runs in its own process (as in production) with the benchmark's
no-op VerifierService twin beside the real one; the load comes from an asyncio
client in this process. Both share this machine's cores, as they would on a
small box; the ratio real/no-op is what capgate's own work costs.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

import grpc
import pytest

from capgate import Token
from capgate_client import Client
from capgate_proto.v1 import verifier_pb2

from conftest import NOTES, RATES, ratio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import ServerProcess

CONCURRENCY = 64
UNARY_CALLS = 3000
BATCH_SIZE = 256
BATCH_CALLS = 60
STREAMS = 8
STREAM_MESSAGES = 4000  # per round, over STREAMS streams
PAIRS = 9
NOOP = "/capgate.bench.NoopVerifier"


@pytest.fixture(scope="module")
def bench_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("grpc-bench") / "data"
    p = ServerProcess(data)
    p.args = [sys.executable, str(Path(__file__).parent / "noop_server.py"), str(data)]
    p.start()
    admin = p.client()
    _, cred = admin.create_agent("bench", ["read:/data/**"], max_ttl=86400)
    svc = admin.create_principal("bench-svc", "service").credential
    with Client(p.address, cred) as agent:
        root = Token.parse(agent.issue("read:/data/**").token)
    # a working set of distinct tokens, as many services would present
    tokens = [root.attenuate(f"resource /data/r{i}/**").to_text() for i in range(1000)]
    requests = [
        verifier_pb2.VerifyRequest(
            token=t, action="read", resource=f"/data/r{i}/x", presenter="bench"
        )
        for i, t in enumerate(tokens)
    ]
    yield p, svc, requests
    admin.close()
    p.stop()


async def _unary(
    address: str, credential: str, method: str, requests: list, calls: int, out: type
) -> None:
    md = (("authorization", f"Bearer {credential}"),)
    async with grpc.aio.insecure_channel(address) as ch:
        call = ch.unary_unary(
            method,
            request_serializer=type(requests[0]).SerializeToString,
            response_deserializer=out.FromString,
        )
        counter = iter(range(calls))

        async def worker() -> None:
            for i in counter:
                reply = await call(requests[i % len(requests)], metadata=md)
                assert getattr(reply, "allowed", True)

        await asyncio.gather(*[worker() for _ in range(CONCURRENCY)])


def _run_unary(p, svc, requests, method):
    asyncio.run(_unary(p.address, svc, method, requests, UNARY_CALLS, verifier_pb2.VerifyResponse))


def _batches(requests):
    return [
        verifier_pb2.VerifyBatchRequest(
            requests=[requests[(b * BATCH_SIZE + i) % len(requests)] for i in range(BATCH_SIZE)]
        )
        for b in range(8)
    ]


def _run_batch(p, svc, batches, method):
    asyncio.run(
        _unary(p.address, svc, method, batches, BATCH_CALLS, verifier_pb2.VerifyBatchResponse)
    )


async def _streams(address: str, credential: str, method: str, requests: list, total: int) -> None:
    md = (("authorization", f"Bearer {credential}"),)
    async with grpc.aio.insecure_channel(address) as ch:
        call = ch.stream_stream(
            method,
            request_serializer=verifier_pb2.VerifyRequest.SerializeToString,
            response_deserializer=verifier_pb2.VerifyResponse.FromString,
        )
        per = total // STREAMS

        async def one(k: int) -> None:
            replies = call(
                iter([requests[(k * per + i) % len(requests)] for i in range(per)]), metadata=md
            )
            n = 0
            async for reply in replies:
                assert reply.allowed
                n += 1
            assert n == per

        await asyncio.gather(*[one(k) for k in range(STREAMS)])


def _run_stream(p, svc, requests, method):
    asyncio.run(_streams(p.address, svc, method, requests, STREAM_MESSAGES))


def _paired(benchmark, label, noop, real, ops, target):
    """The no-op twin and the real method in alternating rounds: each pair meets the
    machine in the same moment, so its drifts (a shared host's are large) cancel in
    the pair's ratio; the figure is the median pair's. Both sides' rates are the
    medians of their rounds."""
    noop(), real()  # warm up the channel and the server
    noop_s: list[float] = []
    real_s: list[float] = []

    def pair() -> None:
        t0 = time.perf_counter()
        noop()
        t1 = time.perf_counter()
        real()
        noop_s.append(t1 - t0)
        real_s.append(time.perf_counter() - t1)

    benchmark.pedantic(pair, rounds=PAIRS, iterations=1)
    ratios = sorted(n / r for n, r in zip(noop_s, real_s, strict=True))
    median = ratios[len(ratios) // 2]
    base, name = f"grpc no-op {label}", f"grpc {label}"
    RATES[base] = ops / statistics.median(noop_s)
    RATES[name] = RATES[base] * median  # the median pair's ratio, as a rate
    ratio(f"gRPC {label} vs no-op (paired rounds)", name, base, target)
    NOTES.append(
        f"{label} vs its no-op twin, {PAIRS} paired rounds: {median:.2f}x "
        f"(pairs {ratios[0]:.2f}-{ratios[-1]:.2f})"
    )


def test_verify_unary_paired_with_the_noop(benchmark, bench_server):
    p, svc, requests = bench_server
    _paired(
        benchmark,
        "Verify unary (64 concurrent)",
        lambda: _run_unary(p, svc, requests, f"{NOOP}/Verify"),
        lambda: _run_unary(p, svc, requests, "/capgate.v1.VerifierService/Verify"),
        UNARY_CALLS,
        0.85,
    )


def test_verify_batch_paired_with_the_noop(benchmark, bench_server):
    p, svc, requests = bench_server
    batches = _batches(requests)
    _paired(
        benchmark,
        "VerifyBatch checks (256/call)",
        lambda: _run_batch(p, svc, batches, f"{NOOP}/VerifyBatch"),
        lambda: _run_batch(p, svc, batches, "/capgate.v1.VerifierService/VerifyBatch"),
        BATCH_CALLS * BATCH_SIZE,
        0.60,
    )


def test_verify_stream_paired_with_the_noop(benchmark, bench_server):
    p, svc, requests = bench_server
    _paired(
        benchmark,
        "VerifyStream checks (8 streams)",
        lambda: _run_stream(p, svc, requests, f"{NOOP}/VerifyStream"),
        lambda: _run_stream(p, svc, requests, "/capgate.v1.VerifierService/VerifyStream"),
        STREAM_MESSAGES,
        0.60,
    )
