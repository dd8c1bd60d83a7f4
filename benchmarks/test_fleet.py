"""A fleet on PostgreSQL: revocation propagation under load, two replicas against one,
and issuing on PostgreSQL against SQLite."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time

import grpc
import pytest

from capgate import Token
from capgate_client import Client
from capgate_proto.v1 import token_pb2, verifier_pb2

from conftest import NOTES, RATES, ratio, record
from harness import ServerProcess

SAMPLES = 40


@pytest.fixture
def kek(tmp_path):
    from capgate_server import new_kek_text

    path = tmp_path / "kek"
    path.write_text(new_kek_text())
    return path


def start(tmp_path, name, store=None, kek=None):
    extra = ["--store", store, "--kek-file", str(kek)] if store else []
    return ServerProcess(tmp_path / name, extra).start()


def world(p, n_tokens=256):
    with Client(p.address, p.admin_credential) as admin:
        _, cred = admin.create_agent("bench", ["read:/data/**"], max_ttl=86400)
        svc = admin.create_principal("svc", "service").credential
    with Client(p.address, cred) as agent:
        root = Token.parse(agent.issue("read:/data/**").token)
    tokens = [root.attenuate(f"resource /data/r{i}/**").to_text() for i in range(n_tokens)]
    return cred, svc, tokens


def batch_of(tokens):
    return verifier_pb2.VerifyBatchRequest(
        requests=[
            verifier_pb2.VerifyRequest(
                token=t, action="read", resource=f"/data/r{i}/x", presenter="bench"
            )
            for i, t in enumerate(tokens)
        ]
    )


async def _load(addresses, svc, batch, calls, concurrency=16):
    md = (("authorization", f"Bearer {svc}"),)
    channels = [grpc.aio.insecure_channel(a) for a in addresses]
    stubs = [
        ch.unary_unary(
            "/capgate.v1.VerifierService/VerifyBatch",
            request_serializer=verifier_pb2.VerifyBatchRequest.SerializeToString,
            response_deserializer=verifier_pb2.VerifyBatchResponse.FromString,
        )
        for ch in channels
    ]
    counter = iter(range(calls))

    async def worker(k):
        for i in counter:
            await stubs[(i + k) % len(stubs)](batch, metadata=md)

    await asyncio.gather(*[worker(k) for k in range(concurrency)])
    for ch in channels:
        await ch.close()


def test_revocation_propagation_under_load(benchmark, tmp_path, pg_url, kek):
    a = start(tmp_path, "a", pg_url, kek)
    b = start(tmp_path, "b", pg_url, kek)
    try:
        cred, svc, tokens = world(a)
        batch = batch_of(tokens)
        stop = threading.Event()

        def steady_load():
            while not stop.is_set():
                asyncio.run(_load([b.address], svc, batch, 20, concurrency=4))

        loader = threading.Thread(target=steady_load, daemon=True)
        loader.start()
        latencies = []

        def measure():
            with (
                Client(a.address, cred) as agent,
                Client(a.address, a.admin_credential) as adm,
                Client(b.address, svc) as at_b,
            ):
                for _ in range(SAMPLES):
                    token = agent.issue("read:/data/**").token
                    while not at_b.verify(token, "read", "/data/x", presenter="bench").allowed:
                        time.sleep(0.005)  # B learns of the new token first
                    t0 = time.monotonic()
                    adm.revoke(token)
                    while at_b.verify(token, "read", "/data/x", presenter="bench").allowed:
                        pass
                    latencies.append(time.monotonic() - t0)

        benchmark.pedantic(measure, rounds=1, iterations=1)
        stop.set()
        loader.join(30)
        latencies.sort()
        median = statistics.median(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        benchmark.extra_info.update(median_ms=round(median * 1000, 2), p99_ms=round(p99 * 1000, 2))
        NOTES.append(
            f"revocation propagation A->B under load: median {median * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms "
            f"({SAMPLES} samples)"
        )
    finally:
        a.stop()
        b.stop()


def test_two_replicas_against_one(benchmark, tmp_path, pg_url, kek):
    a = start(tmp_path, "a", pg_url, kek)
    b = start(tmp_path, "b", pg_url, kek)
    try:
        _, svc, tokens = world(a)
        batch = batch_of(tokens)
        time.sleep(1.0)  # let B learn the agent
        calls = 120
        asyncio.run(_load([a.address, b.address], svc, batch, 20))  # warm both
        benchmark.pedantic(lambda: asyncio.run(_load([a.address], svc, batch, calls)), rounds=3)
        record(benchmark, "fleet: VerifyBatch checks, one replica", calls * 256)
        t0 = time.perf_counter()
        for _ in range(3):
            asyncio.run(_load([a.address, b.address], svc, batch, calls))
        RATES["fleet: VerifyBatch checks, two replicas"] = (
            3 * calls * 256 / (time.perf_counter() - t0)
        )
        ratio(
            "two replicas vs one (VerifyBatch, this 2-core machine)",
            "fleet: VerifyBatch checks, two replicas",
            "fleet: VerifyBatch checks, one replica",
        )
    finally:
        a.stop()
        b.stop()


async def _issue(address, cred, calls, concurrency=32):
    md = (("authorization", f"Bearer {cred}"),)
    async with grpc.aio.insecure_channel(address) as ch:
        issue = ch.unary_unary(
            "/capgate.v1.TokenService/IssueToken",
            request_serializer=token_pb2.IssueTokenRequest.SerializeToString,
            response_deserializer=token_pb2.TokenResponse.FromString,
        )
        req = token_pb2.IssueTokenRequest(
            grant={"actions": ["read"], "resource": "/data/*"}, ttl_seconds=600
        )
        counter = iter(range(calls))

        async def worker():
            for _ in counter:
                await issue(req, metadata=md)

        await asyncio.gather(*[worker() for _ in range(concurrency)])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_issue_throughput(benchmark, tmp_path, pg_url, kek, backend):
    p = start(
        tmp_path,
        backend,
        pg_url if backend == "postgres" else None,
        kek if backend == "postgres" else None,
    )
    try:
        cred, _, _ = world(p, n_tokens=1)
        calls = 400
        asyncio.run(_issue(p.address, cred, 50))
        benchmark.pedantic(lambda: asyncio.run(_issue(p.address, cred, calls)), rounds=3)
        record(benchmark, f"IssueToken on {backend} (32 concurrent)", calls)
        if backend == "postgres":
            ratio(
                "IssueToken PostgreSQL vs SQLite",
                "IssueToken on postgres (32 concurrent)",
                "IssueToken on sqlite (32 concurrent)",
            )
    finally:
        p.stop()
