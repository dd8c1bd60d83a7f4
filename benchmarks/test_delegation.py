"""Delegated tokens: three hops (server-minted and offline-signed) beside a root token,
cold and warm, and the cost of the cascade checks as chains grow to the maximum depth."""

from __future__ import annotations

import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from capgate import (
    MAX_DEPTH,
    Agent,
    Ceiling,
    Request,
    RevocationSet,
    Token,
    TokenIdentifier,
    Verifier,
    append_server_delegation,
    delegate_offline,
    format_timestamp,
    public_key_id,
)

from conftest import ratio, record

NOW = 1_800_000_000.0
KEY = secrets.token_bytes(32)
AT = int(NOW * 1000) - 1000
N = 6000
NAMES = [f"a{i}" for i in range(MAX_DEPTH + 1)]
PRIVATE = {n: Ed25519PrivateKey.generate() for n in NAMES}


def agents() -> dict[str, Agent]:
    out = {}
    for n in NAMES:
        pub = PRIVATE[n].public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        out[n] = Agent(n, Ceiling.parse(["read,write:/data/**"]), max_depth=MAX_DEPTH).with_changes(
            public_keys={public_key_id(pub): pub}
        )
    return out


def verifier(cache_size: int = 65536) -> Verifier:
    return Verifier(
        {"k1": KEY}, agents(), RevocationSet(), clock=lambda: NOW, cache_size=cache_size
    )


def root(i: int) -> Token:
    t = Token.mint(KEY, TokenIdentifier("k1", f"{i:032x}", AT - 1000).encode())
    for c in (
        "agent = a0",
        "action in read,write",
        "resource /data/**",
        f"expires < {format_timestamp(NOW + 3600 + i)}",
    ):
        t = t.attenuate(c)
    return t


def chain(i: int, hops: int, offline: bool) -> Token:
    t = root(i)
    for h in range(hops):
        if offline:
            t, _ = delegate_offline(t, PRIVATE[NAMES[h]], NAMES[h + 1], AT)
        else:
            t, _ = append_server_delegation(t, KEY, NAMES[h + 1], AT)
        t = t.attenuate(f"resource /data/{'x/' * h}**")  # each hop narrows
    return t


def request(hops: int) -> Request:
    return Request("read", "/data/" + "x/" * max(hops - 1, 0) + "doc", NAMES[hops])


@pytest.fixture(scope="module")
def sets() -> dict[str, list[str]]:
    return {
        "root": [root(i).to_text() for i in range(N)],
        "server": [chain(i, 3, False).to_text() for i in range(N)],
        "offline": [chain(i, 3, True).to_text() for i in range(N)],
    }


@pytest.mark.parametrize("kind, hops", [("root", 0), ("server", 3), ("offline", 3)])
def test_cold(benchmark, sets, kind, hops):
    v = verifier()
    texts = iter(sets[kind])
    req = request(hops)
    assert v.verify(sets[kind][0], req).allowed, v.verify(sets[kind][0], req)

    def cold() -> None:
        assert v.verify(next(texts), req).allowed

    benchmark.pedantic(cold, rounds=20, iterations=N // 25)
    record(benchmark, f"verify cold, {kind} ({hops} hops)")


@pytest.mark.parametrize("kind, hops", [("root", 0), ("server", 3), ("offline", 3)])
def test_warm(benchmark, sets, kind, hops):
    v = verifier()
    text, req = sets[kind][0], request(hops)
    assert v.verify(text, req).allowed
    benchmark.pedantic(lambda: v.verify(text, req), rounds=100, iterations=500)
    record(benchmark, f"verify warm, {kind} ({hops} hops)")
    if kind == "offline":
        ratio(
            "offline-signed vs server-minted, 3 hops, warm",
            "verify warm, offline (3 hops)",
            "verify warm, server (3 hops)",
            0.5,
        )
        ratio(
            "3-hop server-minted vs root token, warm",
            "verify warm, server (3 hops)",
            "verify warm, root (0 hops)",
        )


def test_cold_child_of_a_verified_parent(benchmark, sets):
    """A delegated child whose parent was seen: only the new hop costs HMACs/proofs."""
    v = verifier()
    parents = [chain(N + i, 2, True) for i in range(N // 2)]
    children = []
    for p in parents:
        assert v.verify(p.to_text(), request(2)).allowed
        child, _ = delegate_offline(p, PRIVATE["a2"], "a3", AT)
        children.append(child.attenuate("resource /data/x/x/**").to_text())
    texts = iter(children)
    req = request(3)

    def cold_child() -> None:
        assert v.verify(next(texts), req).allowed

    benchmark.pedantic(cold_child, rounds=20, iterations=N // 2 // 25)
    record(benchmark, "verify cold, offline child of a seen parent (3 hops)")
    ratio(
        "cold offline child (parent seen) vs cold offline chain",
        "verify cold, offline child of a seen parent (3 hops)",
        "verify cold, offline (3 hops)",
    )


@pytest.mark.parametrize("hops", [1, 4, 8, 16, MAX_DEPTH])
def test_cascade_checks_by_depth(benchmark, hops):
    """Warm verify of a chain `hops` deep: the lineage, agent and ceiling checks per hop."""
    v = verifier()
    text, req = chain(10**6 + hops, hops, False).to_text(), request(hops)
    assert v.verify(text, req).allowed
    benchmark.pedantic(lambda: v.verify(text, req), rounds=50, iterations=300)
    record(benchmark, f"verify warm, chain of {hops} hops")
