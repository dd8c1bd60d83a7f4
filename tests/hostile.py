"""Hostile inputs shared by the tests and the benchmarks.

The shape the outside attack used: an agent takes its own valid token and
attenuates it, offline, into many tokens each carrying many distinct ``resource``
caveats, so every token is never-seen and every caveat must be parsed.
"""

from __future__ import annotations

import secrets

from capgate import Token
from capgate_proto.v1 import verifier_pb2

BATCH = 1024


def self_attenuated(root: str, n: int, caveats: int = 10, segments: int = 12) -> list[str]:
    """``n`` tokens below ``root``, each with ``caveats`` distinct resource caveats."""
    base = Token.parse(root)
    out = []
    for _ in range(n):
        t = base
        for _ in range(caveats):
            path = "/".join(secrets.token_hex(4) for _ in range(segments))
            t = t.append_raw(f"resource /data/{path}/**".encode())
        out.append(t.to_text())
    return out


def batch_of(
    tokens: list[str], presenter: str, resource: str = "/data/x"
) -> verifier_pb2.VerifyBatchRequest:
    return verifier_pb2.VerifyBatchRequest(
        requests=[
            verifier_pb2.VerifyRequest(
                token=t, action="read", resource=resource, presenter=presenter
            )
            for t in tokens
        ]
    )
