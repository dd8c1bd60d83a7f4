"""A capgate server process for the benchmarks, with a no-op verifier beside the real one.

The no-op service takes and returns the same messages as VerifierService, goes
through the same interceptor, on the same server: the ratio real/no-op is what
capgate itself costs. Run: python benchmarks/noop_server.py DATA_DIR
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc

from capgate_proto.v1 import verifier_pb2
from capgate_server import CapgateServer, ResourceLimits, Settings
from capgate_server.store import Role

NOOP = "capgate.bench.NoopVerifier"
_ALLOWED = verifier_pb2.VerifyResponse(allowed=True, code="allowed", reason="allowed")


async def _verify(
    request: verifier_pb2.VerifyRequest, context: object
) -> verifier_pb2.VerifyResponse:
    return _ALLOWED


async def _batch(
    request: verifier_pb2.VerifyBatchRequest, context: object
) -> verifier_pb2.VerifyBatchResponse:
    return verifier_pb2.VerifyBatchResponse(responses=[_ALLOWED for _ in request.requests])


async def _stream(requests: object, context: object) -> object:
    async for _ in requests:  # type: ignore[attr-defined]
        yield _ALLOWED


def noop_handler() -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        NOOP,
        {
            "Verify": grpc.unary_unary_rpc_method_handler(
                _verify,
                request_deserializer=verifier_pb2.VerifyRequest.FromString,
                response_serializer=verifier_pb2.VerifyResponse.SerializeToString,
            ),
            "VerifyBatch": grpc.unary_unary_rpc_method_handler(
                _batch,
                request_deserializer=verifier_pb2.VerifyBatchRequest.FromString,
                response_serializer=verifier_pb2.VerifyBatchResponse.SerializeToString,
            ),
            "VerifyStream": grpc.stream_stream_rpc_method_handler(
                _stream,
                request_deserializer=verifier_pb2.VerifyRequest.FromString,
                response_serializer=verifier_pb2.VerifyResponse.SerializeToString,
            ),
        },
    )


async def main(data_dir: Path, store: str | None) -> None:
    policy = {f"/{NOOP}/{m}": frozenset(Role) for m in ("Verify", "VerifyBatch", "VerifyStream")}
    # the twin of VerifyBatch takes messages as large as the real one
    limits = ResourceLimits(method_messages={f"/{NOOP}/VerifyBatch": ResourceLimits.batch_message})
    app = CapgateServer(
        Settings(data_dir=data_dir, listen="127.0.0.1:0", store_url=store, limits=limits),
        extra_handlers=[noop_handler()],
        extra_policy=policy,
    )
    await app.start()
    print(f"serving on 127.0.0.1:{app.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else None))
