"""The load behind ``capgate bench``: client processes that verify as fast as a server lets them.

One Python process cannot saturate a server with several workers, so the load runs
in ``clients`` processes, each an asyncio loop with ``concurrency`` calls in flight.
Each call is Verify (unary), VerifyBatch or a stream of VerifyStream messages; a
share of the checks (``cold``) carry a token the server has never seen (the given
token attenuated with a fresh ``did`` caveat: same rights, a cold verification).
A process reports its counts and per-call latencies when its time is up; the
parent merges them and follows the counts live.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from capgate import Token
from capgate_proto.v1 import verifier_pb2

__all__ = ["Load", "Outcome", "run_load"]

_SAMPLE = 20_000  # latencies kept per process (uniform reservoir beyond it)


@dataclass(frozen=True)
class Load:
    """What to send: the check, the mode, how much, from how many processes."""

    target: str
    credential: str
    token: str
    action: str
    resource: str
    presenter: str = ""
    ctx: dict[str, str] = field(default_factory=dict)
    mode: str = "unary"  # unary | batch | stream
    batch: int = 256
    clients: int = 1
    concurrency: int = 16
    duration: float = 10.0
    cold: float = 0.0  # share of checks with a never-seen token
    tls: Any = None  # capgate_client.TLS


@dataclass
class Outcome:
    """Merged counts of every client process."""

    load: Load
    seconds: float = 0.0
    calls: int = 0
    checks: int = 0
    allowed: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds per call (a sample)

    @property
    def checks_per_second(self) -> float:
        return self.checks / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))]

    def summary(self) -> dict[str, Any]:
        p50, p99 = self.percentile(0.50), self.percentile(0.99)
        return {
            "mode": self.load.mode,
            "clients": self.load.clients,
            "concurrency": self.load.concurrency,
            "cold": self.load.cold,
            "seconds": round(self.seconds, 3),
            "calls": self.calls,
            "checks": self.checks,
            "allowed": self.allowed,
            "errors": self.errors,
            "calls_per_second": round(self.calls / self.seconds) if self.seconds else 0,
            "checks_per_second": round(self.checks_per_second),
            "p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
        }


def _requests(load: Load) -> Callable[[int], list[verifier_pb2.VerifyRequest]]:
    """``make(n)``: n checks, each cold with probability ``load.cold``."""
    base = Token.parse(load.token)
    warm = verifier_pb2.VerifyRequest(
        token=load.token,
        action=load.action,
        resource=load.resource,
        presenter=load.presenter,
        ctx=load.ctx,
    )

    def make(n: int) -> list[verifier_pb2.VerifyRequest]:
        out = []
        for _ in range(n):
            if load.cold and random.random() < load.cold:
                cold = base.attenuate(f"did = {secrets.token_hex(16)}").to_text()
                out.append(
                    verifier_pb2.VerifyRequest(
                        token=cold,
                        action=load.action,
                        resource=load.resource,
                        presenter=load.presenter,
                        ctx=load.ctx,
                    )
                )
            else:
                out.append(warm)
        return out

    return make


async def _client(load: Load, progress: Any) -> dict[str, Any]:
    md = (("authorization", f"Bearer {load.credential}"),)
    channel = (
        grpc.aio.secure_channel(load.target, load.tls.credentials(), load.tls.options())
        if load.tls
        else grpc.aio.insecure_channel(load.target)
    )
    make = _requests(load)
    counts = {"calls": 0, "checks": 0, "allowed": 0, "errors": 0}
    latencies: list[float] = []
    seen = 0

    def note(seconds: float, checks: int, allowed: int) -> None:
        nonlocal seen
        counts["calls"] += 1
        counts["checks"] += checks
        counts["allowed"] += allowed
        seen += 1
        if len(latencies) < _SAMPLE:
            latencies.append(seconds)
        elif (i := random.randrange(seen)) < _SAMPLE:
            latencies[i] = seconds
        with progress.get_lock():
            progress.value += checks

    deadline = time.monotonic() + load.duration
    stub_one = channel.unary_unary(
        "/capgate.v1.VerifierService/Verify",
        request_serializer=verifier_pb2.VerifyRequest.SerializeToString,
        response_deserializer=verifier_pb2.VerifyResponse.FromString,
    )
    stub_batch = channel.unary_unary(
        "/capgate.v1.VerifierService/VerifyBatch",
        request_serializer=verifier_pb2.VerifyBatchRequest.SerializeToString,
        response_deserializer=verifier_pb2.VerifyBatchResponse.FromString,
    )
    stub_stream = channel.stream_stream(
        "/capgate.v1.VerifierService/VerifyStream",
        request_serializer=verifier_pb2.VerifyRequest.SerializeToString,
        response_deserializer=verifier_pb2.VerifyResponse.FromString,
    )

    async def unary() -> None:
        while time.monotonic() < deadline:
            request = make(1)[0]
            t0 = time.perf_counter()
            try:
                reply = await stub_one(request, metadata=md, timeout=30)
            except grpc.RpcError:
                counts["errors"] += 1
                continue
            note(time.perf_counter() - t0, 1, int(reply.allowed))

    async def batch() -> None:
        while time.monotonic() < deadline:
            request = verifier_pb2.VerifyBatchRequest(requests=make(load.batch))
            t0 = time.perf_counter()
            try:
                reply = await stub_batch(request, metadata=md, timeout=30)
            except grpc.RpcError:
                counts["errors"] += 1
                continue
            note(
                time.perf_counter() - t0,
                len(reply.responses),
                sum(r.allowed for r in reply.responses),
            )

    async def stream() -> None:
        call = stub_stream(metadata=md)
        try:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                for r in make(load.batch):  # a window of messages in flight, then answers
                    await call.write(r)
                allowed = 0
                for _ in range(load.batch):
                    reply: Any = await call.read()
                    allowed += reply.allowed
                note(time.perf_counter() - t0, load.batch, allowed)
            await call.done_writing()
        except grpc.RpcError:
            counts["errors"] += 1

    work = {"unary": unary, "batch": batch, "stream": stream}[load.mode]
    start = time.monotonic()
    async with channel:
        await asyncio.gather(*[work() for _ in range(load.concurrency)])
    return {**counts, "seconds": time.monotonic() - start, "latencies": latencies}


def _process(load: Load, progress: Any, results: Any) -> None:
    results.put(asyncio.run(_client(load, progress)))


def run_load(load: Load, on_progress: Callable[[float, int], None] | None = None) -> Outcome:
    """Run ``load`` from ``load.clients`` processes; ``on_progress(elapsed, checks)`` is
    told about twice a second. Returns the merged outcome."""
    if load.clients == 1 and on_progress is None:  # no processes to spare: run it here
        return _merge(load, [asyncio.run(_client(load, multiprocessing.Value("q", 0)))])
    ctx = multiprocessing.get_context("spawn")  # no grpc state forked into children
    progress = ctx.Value("q", 0)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_process, args=(load, progress, results), daemon=True)
        for _ in range(load.clients)
    ]
    start = time.monotonic()
    for p in procs:
        p.start()
    got: list[dict[str, Any]] = []
    while len(got) < len(procs):
        try:
            got.append(results.get(timeout=0.5))
        except queue.Empty:  # nothing yet; a dead child is caught below
            if all(not p.is_alive() for p in procs) and results.empty():
                break
        if on_progress is not None:
            on_progress(time.monotonic() - start, int(progress.value))
    for p in procs:
        p.join(5)
    return _merge(load, got)


def _merge(load: Load, parts: Sequence[dict[str, Any]]) -> Outcome:
    out = Outcome(load)
    for part in parts:
        for key in ("calls", "checks", "allowed", "errors"):
            setattr(out, key, getattr(out, key) + part[key])
        out.seconds = max(out.seconds, part["seconds"])
        out.latencies.extend(part["latencies"])
    return out


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
