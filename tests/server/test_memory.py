"""A server under hostile traffic stays within its memory budgets (docs/deployment.md).

A real server process with small budgets is sent what grew the old server without
bound: thousands of never-seen tokens with large caveats (chain and caveat caches),
allows for thousands of long distinct resources (the decision memo, the request
checks), denies that all differ (the audit tally) and large unauthenticated bodies.
Its resident memory may grow by its budgets plus a fixed allowance, no more.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import grpc
import pytest

from capgate import Token
from capgate_proto.v1 import verifier_pb2

from harness import ServerProcess
from hostile import batch_of

MIB = 1 << 20
BUDGETS = dict(
    chain_cache_bytes=4 * MIB,
    caveat_cache_bytes=4 * MIB,
    memo_bytes=4 * MIB,
    prefix_bytes=1 * MIB,
    reply_bytes=1 * MIB,
    audit_tally_bytes=2 * MIB,
)
# the request-validity memo (8 MiB, fixed) and the allocator's and grpc's own slack
ALLOWANCE = 8 * MIB + 40 * MIB
SERVE = """
import asyncio, json, sys
from pathlib import Path
from capgate_server import CapgateServer, ResourceLimits, Settings
async def main():
    limits = ResourceLimits(**json.loads(sys.argv[2]))
    app = CapgateServer(Settings(data_dir=Path(sys.argv[1]), listen="127.0.0.1:0",
                                 limits=limits))
    await app.start()
    print(f"serving on 127.0.0.1:{app.port}", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def long_glob_tokens(root: str, n: int) -> list[str]:
    base = Token.parse(root)
    out = []
    for _ in range(n):
        t = base
        for _ in range(3):  # ~4 KiB in all: each chain is cached
            t = t.append_raw(
                ("resource /data/" + "/".join(secrets.token_hex(3) for _ in range(55))).encode()
            )
        out.append(t.to_text())
    return out


@pytest.mark.slow
def test_memory_stays_within_the_budgets_under_hostile_traffic(tmp_path):
    p = ServerProcess(tmp_path / "data")
    p.args = [sys.executable, "-c", SERVE, str(tmp_path / "data"), json.dumps(BUDGETS)]
    p.start()
    try:
        with p.client() as admin:
            _, cred = admin.create_agent("mallory", ["read:/data/**"])
        with p.client(cred) as m:
            root = m.issue("read:/data/**").token
        md = (("authorization", f"Bearer {cred}"),)
        with grpc.insecure_channel(p.address) as ch:
            call = ch.unary_unary(
                "/capgate.v1.VerifierService/VerifyBatch",
                request_serializer=verifier_pb2.VerifyBatchRequest.SerializeToString,
                response_deserializer=verifier_pb2.VerifyBatchResponse.FromString,
            )

            def hostile(rounds: int) -> None:
                for _ in range(rounds):
                    call(batch_of(long_glob_tokens(root, 256), "mallory"), metadata=md)
                    long_ = [f"/data/{secrets.token_hex(8)}/" + "x" * 1000 for _ in range(256)]
                    replies = call(
                        verifier_pb2.VerifyBatchRequest(
                            requests=[
                                verifier_pb2.VerifyRequest(
                                    token=root, action="read", resource=r, presenter="mallory"
                                )
                                for r in long_
                            ]
                        ),
                        metadata=md,
                    )
                    assert all(r.allowed for r in replies.responses)
                    with pytest.raises(grpc.RpcError) as e:  # unauthenticated, 1.9 MiB
                        ch.unary_unary("/capgate.v1.VerifierService/VerifyBatch")(
                            b"\x0a" * (1900 * 1024)
                        )
                    assert e.value.code() is grpc.StatusCode.UNAUTHENTICATED

            hostile(4)  # the runtime's own warm-up
            before = rss(p.proc.pid)
            hostile(60)  # 15,360 never-seen tokens, 15,360 long resources
            grown = rss(p.proc.pid) - before
        assert grown <= sum(BUDGETS.values()) + ALLOWANCE, grown / MIB
    finally:
        p.stop()
