"""What governance costs the verify path: VerifyBatch and unary Verify throughput with
usage recording and deviation detection on, against the same server with it off
(``--no-governance``), in the same run.

Each server runs in its own process; the working set is 1,000 distinct tokens on
1,000 distinct resources, so every audit flush hands the detector up to a thousand
records and the store a thousand usage upserts: the detector's worst ordinary case.
Target: on/off >= 0.8.
"""

from __future__ import annotations

import asyncio

import pytest

from capgate import Token
from capgate_client import Client
from capgate_proto.v1 import verifier_pb2

from conftest import ratio, record
from harness import ServerProcess

CONCURRENCY = 32
UNARY_CALLS = 2000
BATCH_SIZE = 256
BATCH_CALLS = 40


def _server(data, extra):
    p = ServerProcess(data, extra).start()
    admin = p.client()
    _, cred = admin.create_agent("bench", ["read:/data/**"], max_ttl=86400)
    svc = admin.create_principal("bench-svc", "service").credential
    with Client(p.address, cred) as agent:
        root = Token.parse(agent.issue("read:/data/**").token)
    tokens = [root.attenuate(f"resource /data/r{i}/**").to_text() for i in range(1000)]
    requests = [
        verifier_pb2.VerifyRequest(
            token=t, action="read", resource=f"/data/r{i}/x", presenter="bench"
        )
        for i, t in enumerate(tokens)
    ]
    admin.close()
    return p, svc, requests


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    on = _server(tmp_path_factory.mktemp("gov-on") / "data", [])
    off = _server(tmp_path_factory.mktemp("gov-off") / "data", ["--no-governance"])
    yield {"on": on, "off": off}
    for p, _, _ in (on, off):
        p.stop()


async def _calls(address, credential, method, requests, calls, out):
    import grpc

    md = (("authorization", f"Bearer {credential}"),)
    async with grpc.aio.insecure_channel(address) as ch:
        call = ch.unary_unary(
            method,
            request_serializer=type(requests[0]).SerializeToString,
            response_deserializer=out.FromString,
        )
        counter = iter(range(calls))

        async def worker():
            for i in counter:
                await call(requests[i % len(requests)], metadata=md)

        await asyncio.gather(*[worker() for _ in range(CONCURRENCY)])


def _batch(server):
    p, svc, requests = server
    batches = [
        verifier_pb2.VerifyBatchRequest(
            requests=[requests[(b * BATCH_SIZE + i) % len(requests)] for i in range(BATCH_SIZE)]
        )
        for b in range(4)
    ]
    asyncio.run(
        _calls(
            p.address,
            svc,
            "/capgate.v1.VerifierService/VerifyBatch",
            batches,
            BATCH_CALLS,
            verifier_pb2.VerifyBatchResponse,
        )
    )


def _unary(server):
    p, svc, requests = server
    asyncio.run(
        _calls(
            p.address,
            svc,
            "/capgate.v1.VerifierService/Verify",
            requests,
            UNARY_CALLS,
            verifier_pb2.VerifyResponse,
        )
    )


@pytest.mark.parametrize("mode", ["off", "on"])
def test_verify_batch_governance(benchmark, servers, mode):
    _batch(servers[mode])  # warm up
    benchmark.pedantic(_batch, args=(servers[mode],), rounds=6)
    record(benchmark, f"VerifyBatch checks, governance {mode}", BATCH_CALLS * BATCH_SIZE)
    if mode == "on":
        ratio(
            "VerifyBatch with governance on vs off",
            "VerifyBatch checks, governance on",
            "VerifyBatch checks, governance off",
            0.8,
        )


@pytest.mark.parametrize("mode", ["off", "on"])
def test_verify_unary_governance(benchmark, servers, mode):
    _unary(servers[mode])
    benchmark.pedantic(_unary, args=(servers[mode],), rounds=4)
    record(benchmark, f"Verify unary, governance {mode}", UNARY_CALLS)
    if mode == "on":
        ratio(
            "Verify unary with governance on vs off",
            "Verify unary, governance on",
            "Verify unary, governance off",
            0.8,
        )


def test_detector_pass_per_record(benchmark):
    """The detector's own work per flushed record (novelty, pace, usage folding), so the
    on/off ratio above can be read against a number that does not swing with load."""
    from capgate_server._baselines import Baselines
    from capgate_server._usage import fold_usage
    from capgate_server.store import AuditEvent, GovernancePolicy

    records = [
        AuditEvent(
            1_800_000_000.0 + i / 1000,
            "svc",
            "verify",
            "t",
            True,
            "allowed",
            chain=("orch", "bench"),
            action="read",
            resource=f"/data/r{i}/x",
            presenter="bench",
            count=3,
        )
        for i in range(1000)
    ]
    policy = GovernancePolicy("bench")
    baselines = Baselines()

    def one_flush() -> None:
        baselines.observe(records, lambda a: policy, lambda a, at, p: True)
        fold_usage(records)

    one_flush()
    benchmark.pedantic(one_flush, rounds=20, iterations=1)
    rate = record(benchmark, "detector: flushed records per second", len(records))
    from conftest import NOTES

    NOTES.append(
        f"detector: {1e6 / rate:.1f} us per flushed record; a flush of 1,000 "
        f"distinct records every 0.2 s costs {1000 / rate / 0.2:.1%} of a core"
    )
