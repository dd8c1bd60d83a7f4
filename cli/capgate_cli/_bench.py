"""``capgate bench``: a load generator for a live server (verifications per second)."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import grpc

from capgate import InvalidArgumentError
from capgate_cli._common import (
    DEFAULT_SERVER,
    EXIT_OK,
    credential,
    emit,
    opt,
    pairs,
    read_token,
    tls,
)
from capgate_proto.v1 import verifier_pb2


async def _run(args: argparse.Namespace, target: str, token: str) -> dict[str, Any]:
    md = (("authorization", f"Bearer {credential(args)}"),)
    creds = tls(args)
    channel = (grpc.aio.secure_channel(target, creds.credentials(), creds.options()) if creds
               else grpc.aio.insecure_channel(target))
    one = verifier_pb2.VerifyRequest(token=token, action=args.action, resource=args.resource,
                                     presenter=args.agent or "", ctx=pairs(args.ctx))
    if args.batch > 1:
        method = channel.unary_unary(
            "/capgate.v1.VerifierService/VerifyBatch",
            request_serializer=verifier_pb2.VerifyBatchRequest.SerializeToString,
            response_deserializer=verifier_pb2.VerifyBatchResponse.FromString)
        request: Any = verifier_pb2.VerifyBatchRequest(requests=[one] * args.batch)
    else:
        method = channel.unary_unary(
            "/capgate.v1.VerifierService/Verify",
            request_serializer=verifier_pb2.VerifyRequest.SerializeToString,
            response_deserializer=verifier_pb2.VerifyResponse.FromString)
        request = one
    calls = allowed = 0
    latencies: list[float] = []
    deadline = time.monotonic() + args.duration

    async def worker() -> None:
        nonlocal calls, allowed
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            reply = await method(request, metadata=md, timeout=30)
            latencies.append(time.monotonic() - t0)
            calls += 1
            if args.batch > 1:
                allowed += sum(r.allowed for r in reply.responses)
            else:
                allowed += reply.allowed

    start = time.monotonic()
    async with channel:
        await asyncio.gather(*[worker() for _ in range(args.concurrency)])
    elapsed = time.monotonic() - start
    latencies.sort()
    checks = calls * max(args.batch, 1)
    return {"server": target, "checks": checks, "allowed": allowed, "calls": calls,
            "seconds": round(elapsed, 3), "checks_per_second": round(checks / elapsed),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 2) if latencies else None,
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 2)
            if latencies else None}


def bench(args: argparse.Namespace) -> int:
    if args.duration <= 0 or args.concurrency < 1 or not 1 <= args.batch <= 1024:
        raise InvalidArgumentError("need --duration > 0, --concurrency >= 1, 1 <= --batch <= 1024")
    target = opt(args, "server") or os.environ.get("CAPGATE_SERVER") or DEFAULT_SERVER
    r = asyncio.run(_run(args, target, read_token(args.token)))
    emit(args, r, f"{r['checks']:,} checks in {r['seconds']} s: {r['checks_per_second']:,}/s "
                  f"({r['allowed']:,} allowed); per call p50 {r['p50_ms']} ms, "
                  f"p99 {r['p99_ms']} ms")
    return EXIT_OK


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("bench", parents=[common], help="load a server with verifications",
                       epilog="example: capgate --credential-file svc.cred bench \"$TOKEN\" "
                              "--action read --resource /data/x --agent reporter --batch 256")
    p.add_argument("token", help="the token to verify, or - for stdin")
    p.add_argument("--action", required=True, help="the action of every check")
    p.add_argument("--resource", required=True, help="the resource of every check")
    p.add_argument("--agent", metavar="ID", help="the presenting agent")
    p.add_argument("--ctx", action="append", metavar="KEY=VALUE", help="request context")
    p.add_argument("--duration", type=float, default=10.0, metavar="S",
                   help="how long to run (seconds)")
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight at once")
    p.add_argument("--batch", type=int, default=1, help="checks per call (VerifyBatch if > 1)")
    p.set_defaults(run=bench)
