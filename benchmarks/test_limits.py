"""The bounds under attack: what a hostile never-seen token costs, what a hostile batch
does to other callers' latency, and the deny flood a replica sustains while SERVING.

- core: cold verify of a never-seen token with eleven large, unique ``resource``
  globs (the shape of the outside attack), against an ordinary never-seen token;
- a hostile VerifyBatch (1,024 self-attenuated tokens, 10,240 distinct resource
  caveats) sent back to back by one agent, beside a service's steady unary Verify
  traffic: the service's p50/p99 latency before and during;
- services flooding a revoked token in batches of 256: the denies per second, the
  replica's health throughout, a revocation and a valid verify during the flood.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from capgate import (
    Agent,
    Ceiling,
    Request,
    RevocationSet,
    Token,
    TokenIdentifier,
    Verifier,
    format_timestamp,
)
from capgate_client import Client
from capgate_proto.v1 import verifier_pb2

from conftest import NOTES, RATES, ratio, record

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from harness import ServerProcess
from hostile import BATCH, batch_of, self_attenuated

NOW = 1_800_000_000.0
KEY = secrets.token_bytes(32)
N_COLD = 8000
PHASE = 4.0  # seconds of latency samples before, and again during, the hostile batches
VERIFY = "/capgate.v1.VerifierService/Verify"
BATCH_METHOD = "/capgate.v1.VerifierService/VerifyBatch"


# -- core: never-seen tokens -------------------------------------------------------------


def _token(i: int, caveats: list[str]) -> str:
    t = Token.mint(KEY, TokenIdentifier("k1", f"{i:032x}", int(NOW * 1000) - 1000).encode())
    for c in ["agent = alice", f"expires < {format_timestamp(NOW + 3600 + i)}", *caveats]:
        t = t.append_raw(c.encode())
    return t.to_text()


def ordinary(i: int) -> str:
    return _token(
        i,
        ["action in read,write", "resource /data/reports/**", "not-before > 2020-01-01T00:00:00Z"],
    )


def hostile(i: int) -> str:
    """Eleven unique ~400-character resource globs: a 6 KiB never-seen token."""
    globs = [
        f"resource /data/{'/'.join(secrets.token_hex(4) if k % 3 else '*' for k in range(45))}"
        for _ in range(11)
    ]
    return _token(i, globs)


def _verifier() -> Verifier:
    agents = {"alice": Agent("alice", Ceiling.parse(["read,write:/data/**"]))}
    return Verifier({"k1": KEY}, agents, RevocationSet(), clock=lambda: NOW)


def _cold(benchmark, make, name: str) -> None:
    texts = [make(i) for i in range(N_COLD)]
    warm = _verifier()  # the same work on other tokens first, so the heap is grown
    for t in texts[N_COLD // 2 :]:
        warm.verify(t, Request("read", "/data/reports/q3", "alice"))
    del warm
    v, it = _verifier(), iter(texts[: N_COLD // 2])
    req = Request("read", "/data/reports/q3", "alice")
    benchmark.pedantic(lambda: v.verify(next(it), req), rounds=30, iterations=100)
    record(benchmark, name)


def test_cold_ordinary_never_seen(benchmark):
    _cold(benchmark, ordinary, "verify cold, ordinary never-seen token (5 caveats)")


def test_cold_hostile_never_seen(benchmark):
    _cold(benchmark, hostile, "verify cold, hostile never-seen token (11 large globs)")
    ratio(
        "hostile never-seen token vs ordinary (cost ratio; lower is better)",
        "verify cold, ordinary never-seen token (5 caveats)",
        "verify cold, hostile never-seen token (11 large globs)",
    )


# -- a hostile batch beside normal traffic -------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    p = ServerProcess(tmp_path_factory.mktemp("limits") / "data").start()
    with p.client() as admin:
        _, mallory = admin.create_agent("mallory", ["read:/data/**"], max_ttl=86400)
        _, alice = admin.create_agent("alice", ["read:/data/**"], max_ttl=86400)
        svc = admin.create_principal("svc", "service").credential
    with Client(p.address, mallory) as m, Client(p.address, alice) as a:
        roots = m.issue("read:/data/**").token, a.issue("read:/data/**").token
    yield p, mallory, svc, roots
    p.stop()


async def _latencies(
    address: str, svc: str, token: str, seconds: float, concurrency: int = 4
) -> list[float]:
    md = (("authorization", f"Bearer {svc}"),)
    request = verifier_pb2.VerifyRequest(
        token=token, action="read", resource="/data/x", presenter="alice"
    )
    out: list[float] = []
    async with grpc.aio.insecure_channel(address) as ch:
        call = ch.unary_unary(
            VERIFY,
            request_serializer=verifier_pb2.VerifyRequest.SerializeToString,
            response_deserializer=verifier_pb2.VerifyResponse.FromString,
        )
        end = time.monotonic() + seconds

        async def worker() -> None:
            while time.monotonic() < end:
                t0 = time.perf_counter()
                assert (await call(request, metadata=md)).allowed
                out.append(time.perf_counter() - t0)
                await asyncio.sleep(0.002)  # a steady, modest rate

        await asyncio.gather(*[worker() for _ in range(concurrency)])
    return out


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))] * 1000


def test_hostile_batch_beside_normal_traffic(benchmark, live):
    p, mallory, svc, (bad_root, good) = live
    batches = [batch_of(self_attenuated(bad_root, BATCH), "mallory") for _ in range(4)]
    size = len(batches[0].SerializeToString())
    outcome = {"refused": 0, "decided": 0, "other": 0}
    stop = threading.Event()

    def attack() -> None:
        md = (("authorization", f"Bearer {mallory}"),)
        with grpc.insecure_channel(p.address) as ch:
            call = ch.unary_unary(
                BATCH_METHOD,
                request_serializer=verifier_pb2.VerifyBatchRequest.SerializeToString,
                response_deserializer=verifier_pb2.VerifyBatchResponse.FromString,
            )
            for b in itertools.cycle(batches):
                if stop.is_set():
                    return
                try:
                    call(b, metadata=md, timeout=120)
                    outcome["decided"] += 1
                except grpc.RpcError as e:
                    key = "refused" if e.code() is grpc.StatusCode.RESOURCE_EXHAUSTED else "other"
                    outcome[key] += 1

    def measure() -> tuple[list[float], list[float]]:
        asyncio.run(_latencies(p.address, svc, good, 1.0))  # warm the channel and the caches
        before = asyncio.run(_latencies(p.address, svc, good, PHASE))
        attacker = threading.Thread(target=attack)
        attacker.start()
        during = asyncio.run(_latencies(p.address, svc, good, PHASE))
        stop.set()
        attacker.join(120)
        return before, during

    before, during = benchmark.pedantic(measure, rounds=1, iterations=1)
    stats = {
        f"{name}_{q}": round(_pct(s, v), 2)
        for name, s in (("before", before), ("during", during))
        for q, v in (("p50_ms", 0.5), ("p99_ms", 0.99))
    }
    benchmark.extra_info.update(stats, **outcome)
    NOTES.append(
        f"hostile batch ({BATCH} tokens, {BATCH * 10:,} new caveats, {size / 2**20:.1f} MiB) "
        f"beside 4 clients of unary Verify: p50 {stats['before_p50_ms']} -> "
        f"{stats['during_p50_ms']} ms, p99 {stats['before_p99_ms']} -> "
        f"{stats['during_p99_ms']} ms, max {max(during) * 1000:.1f} ms "
        f"({len(before)}/{len(during)} samples; hostile batches refused {outcome['refused']}, "
        f"decided {outcome['decided']}, other {outcome['other']})"
    )


# -- a deny flood -----------------------------------------------------------------------------


def test_deny_flood(benchmark, live):
    p, _, svc, (_, good) = live
    with Client(p.address, p.admin_credential) as admin:
        _, cred = admin.create_agent("flooded", ["read:/data/**"], max_ttl=86400)
        with Client(p.address, cred) as agent:
            revoked = agent.issue("read:/data/**")
            later = [agent.issue("read:/data/**") for _ in range(50)]
        admin.revoke(revoked.token_id)
    request = batch_of([revoked.token] * 256, "flooded")
    stop = threading.Event()
    denied = [0]
    health: list[int] = []
    revokes: list[float] = []

    async def flood(seconds: float, concurrency: int = 8) -> None:
        md = (("authorization", f"Bearer {svc}"),)
        async with grpc.aio.insecure_channel(p.address) as ch:
            call = ch.unary_unary(
                BATCH_METHOD,
                request_serializer=verifier_pb2.VerifyBatchRequest.SerializeToString,
                response_deserializer=verifier_pb2.VerifyBatchResponse.FromString,
            )
            end = time.monotonic() + seconds

            async def worker() -> None:
                while time.monotonic() < end:
                    reply = await call(request, metadata=md)
                    denied[0] += len(reply.responses)

            await asyncio.gather(*[worker() for _ in range(concurrency)])

    def meanwhile() -> None:
        with (
            grpc.insecure_channel(p.address) as ch,
            Client(p.address, p.admin_credential) as adm,
            Client(p.address, svc) as service,
        ):
            check = health_pb2_grpc.HealthStub(ch).Check
            for t in itertools.cycle(later):
                if stop.is_set():
                    return
                health.append(check(health_pb2.HealthCheckRequest(), timeout=10).status)
                t0 = time.perf_counter()
                adm.revoke(t.token_id)
                revokes.append(time.perf_counter() - t0)
                assert service.verify(good, "read", "/data/x", presenter="alice").allowed
                assert not service.verify(t.token, "read", "/data/x", presenter="flooded").allowed
                time.sleep(0.1)

    def measure() -> float:
        side = threading.Thread(target=meanwhile)
        side.start()
        t0 = time.perf_counter()
        asyncio.run(flood(PHASE * 2))
        elapsed = time.perf_counter() - t0
        stop.set()
        side.join(60)
        return denied[0] / elapsed

    rate = benchmark.pedantic(measure, rounds=1, iterations=1)
    RATES["deny flood: denies per second while SERVING"] = rate
    serving = sum(1 for h in health if h == health_pb2.HealthCheckResponse.SERVING)
    assert serving == len(health) > 0
    benchmark.extra_info.update(denies_per_second=round(rate), health_checks=len(health))
    NOTES.append(
        f"deny flood (8 clients, batches of 256, revoked token): {rate:,.0f} denies/s, "
        f"SERVING in {serving}/{len(health)} health checks, revocations meanwhile "
        f"median {statistics.median(revokes) * 1000:.1f} ms, max {max(revokes) * 1000:.1f} ms"
    )
