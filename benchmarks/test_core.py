"""Core verification against pymacaroons and a pure-Python HMAC-chain floor, and the
revocation set at a million entries."""

from __future__ import annotations

import base64
import fnmatch
import functools
import gc
import hmac
import itertools
import secrets
import statistics
import time
import tracemalloc
from datetime import datetime

import pymacaroons
import pytest
from pymacaroons import Macaroon

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

from conftest import NOTES, RATES, ratio, record

NOW = 1_800_000_000.0
KEY = secrets.token_bytes(32)
N_COLD = 30_000  # measured on the first half; the second half warms the allocator first


def six_caveat_token(i: int) -> str:
    t = Token.mint(KEY, TokenIdentifier("k1", f"{i:032x}", int(NOW * 1000) - 1000).encode())
    for c in (
        "agent = alice",
        "action in read,write",
        "resource /data/reports/**",
        f"expires < {format_timestamp(NOW + 3600 + i)}",
        "not-before > 2020-01-01T00:00:00Z",
        "ctx tool in search,fetch",
    ):
        t = t.attenuate(c)
    return t.to_text()


@pytest.fixture(scope="module")
def tokens() -> list[str]:
    return [six_caveat_token(i) for i in range(N_COLD)]


def verifier(cache_size: int = 65536) -> Verifier:
    agents = {"alice": Agent("alice", Ceiling.parse(["read,write:/data/**"]))}
    return Verifier({"k1": KEY}, agents, RevocationSet(), clock=lambda: NOW, cache_size=cache_size)


REQ = Request("read", "/data/reports/q3", "alice", {"tool": "search"})


def _instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _pymacaroons_check(request: Request, caveat: str) -> bool:
    """The same caveats, checked the way a pymacaroons user would: one general callback."""
    key, _, rest = caveat.partition(" ")
    if key == "agent":
        return rest == f"= {request.presenter}"
    if key == "action":
        return request.action in rest.removeprefix("in ").split(",")
    if key == "resource":
        return fnmatch.fnmatchcase(request.resource, rest.replace("**", "*"))
    if key == "expires":
        return NOW < _instant(rest.removeprefix("< "))
    if key == "not-before":
        return NOW > _instant(rest.removeprefix("> "))
    if key == "ctx":
        name, op, values = rest.split(" ", 2)
        return op == "in" and request.ctx.get(name) in values.split(",")
    return False


def pymacaroons_verify(text: str) -> bool:
    """Deserialize and verify (signature chain and every caveat) with pymacaroons."""
    m = Macaroon.deserialize(text)
    v = pymacaroons.Verifier()
    v.satisfy_general(functools.partial(_pymacaroons_check, REQ))
    return v.verify(m, KEY)


_DERIVED = hmac.digest(b"macaroons-key-generator", KEY, "sha256")
_CHECKS = (b"agent = ", b"action in ", b"resource ", b"expires < ", b"not-before > ", b"ctx ")


def hmac_chain_floor(text: str) -> bool:
    """The least any verifier of these tokens must do, in pure Python: base64, the V2
    packets, the HMAC chain over the identifier and every caveat (the root key's
    derivation cached), a constant-time compare, one byte comparison per caveat."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    i, n = 1, len(raw)  # raw[0] is the version (2)
    fields: list[tuple[int, bytes]] = []
    while i < n:
        kind = raw[i]
        i += 1
        if kind == 0:  # end of a section
            fields.append((0, b""))
            continue
        length = raw[i]
        i += 1
        if length & 0x80:
            length = (length & 0x7F) | (raw[i] << 7)
            i += 1
        fields.append((kind, raw[i : i + length]))
        i += length
    sig = b""
    caveats = []
    for kind, data in fields:
        if kind == 2:
            caveats.append(data)
        elif kind == 6:
            sig = data
    identifier, caveats = caveats[0], caveats[1:]
    chain = hmac.digest(_DERIVED, identifier, "sha256")
    for c in caveats:
        chain = hmac.digest(chain, c, "sha256")
    ok = hmac.compare_digest(chain, sig)
    return ok and all(c.startswith(p) for c, p in zip(caveats, _CHECKS, strict=True))


def test_hmac_chain_floor(benchmark, tokens):
    assert all(hmac_chain_floor(t) for t in tokens[:100])
    assert not hmac_chain_floor(
        Token.parse(tokens[0]).attenuate("agent = bob").to_text()[:-4] + "AAAA"
    )
    it = iter(tokens[: N_COLD // 2])  # each token once, like the cold verify below
    benchmark.pedantic(lambda: hmac_chain_floor(next(it)), rounds=45, iterations=300)
    record(benchmark, "pure-Python HMAC-chain floor (6 caveats)")


def test_pymacaroons_deserialize_and_verify(benchmark, tokens):
    it = iter(tokens[: N_COLD // 2])  # each token once, like the floor and the cold verify
    assert pymacaroons_verify(tokens[0])
    benchmark.pedantic(lambda: pymacaroons_verify(next(it)), rounds=40, iterations=50)
    record(benchmark, "pymacaroons verify (6 caveats)")


def test_capgate_verify_cold(benchmark, tokens):
    half = N_COLD // 2
    warmup = verifier(cache_size=half)  # same work on other tokens, so the heap is grown
    for text in tokens[half:]:
        assert warmup.verify(text, REQ).allowed
    del warmup
    v = verifier(cache_size=half)
    it = iter(tokens[:half])

    def cold() -> None:
        d = v.verify(next(it), REQ)
        assert d.allowed

    benchmark.pedantic(cold, rounds=45, iterations=300)  # every token seen for the first time
    record(benchmark, "capgate verify cold (6 caveats)")


def test_capgate_verify_cold_paired_with_the_floor(benchmark):
    """Cold verify against the floor and against pymacaroons, in alternating slices of
    never-seen tokens: a slice through the floor, the next through a verifier, the
    next through pymacaroons, and so on. All meet the machine in the same moment, so
    its drifts (a shared host's are large) cancel in each round's ratios; the
    figures are the median round's."""
    fresh = [six_caveat_token(N_COLD + i) for i in range(3 * 24 * 250)]
    v = verifier(cache_size=len(fresh))
    floor_us: list[float] = []
    cold_us: list[float] = []
    pym_us: list[float] = []
    rounds = iter(range(24))

    def one_round() -> None:
        k = next(rounds) * 750
        a, b, c = fresh[k : k + 250], fresh[k + 250 : k + 500], fresh[k + 500 : k + 750]
        t0 = time.perf_counter()
        for text in a:
            hmac_chain_floor(text)
        t1 = time.perf_counter()
        for text in b:
            v.verify(text, REQ)
        t2 = time.perf_counter()
        for text in c:
            pymacaroons_verify(text)
        t3 = time.perf_counter()
        floor_us.append((t1 - t0) / 250 * 1e6)
        cold_us.append((t2 - t1) / 250 * 1e6)
        pym_us.append((t3 - t2) / 250 * 1e6)

    assert all(v.verify(t, REQ).allowed for t in fresh[-3:])
    assert all(pymacaroons_verify(t) for t in fresh[-3:])
    benchmark.pedantic(one_round, rounds=24, iterations=1)
    ratios = sorted(c / f for c, f in zip(cold_us, floor_us, strict=True))
    median = ratios[len(ratios) // 2]
    faster = sorted(p / c for p, c in zip(pym_us, cold_us, strict=True))
    # as rates, so the summary reads like the others: 1/1.5 = 0.67 is "within 1.5x"
    RATES["floor, paired slices"] = 1e6 / statistics.median(floor_us)
    RATES["capgate verify cold, paired slices"] = RATES["floor, paired slices"] / median
    RATES["pymacaroons verify, paired slices"] = (
        RATES["capgate verify cold, paired slices"] / faster[len(faster) // 2]
    )
    ratio(
        "core verify cold vs the HMAC-chain floor (rate; paired slices)",
        "capgate verify cold, paired slices",
        "floor, paired slices",
        1 / 1.5,
    )
    ratio(
        "core verify cold vs pymacaroons (paired slices)",
        "capgate verify cold, paired slices",
        "pymacaroons verify, paired slices",
        4.0,
    )
    NOTES.append(
        f"cold verify vs the floor, paired slices: {median:.2f}x the time "
        f"(pairs {ratios[0]:.2f}-{ratios[-1]:.2f}; floor {statistics.median(floor_us):.1f} us, "
        f"cold {statistics.median(cold_us):.1f} us, pymacaroons "
        f"{statistics.median(pym_us):.1f} us: {faster[len(faster) // 2]:.2f}x faster)"
    )


def test_capgate_verify_warm(benchmark, tokens):
    v = verifier()
    text = tokens[0]
    assert v.verify(text, REQ).allowed
    benchmark.pedantic(lambda: v.verify(text, REQ), rounds=200, iterations=500)
    record(benchmark, "capgate verify warm (6 caveats)")
    ratio(
        "core verify warm vs pymacaroons",
        "capgate verify warm (6 caveats)",
        "pymacaroons verify (6 caveats)",
        20.0,
    )


def test_revocation_set_at_one_million(benchmark):
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    rs = RevocationSet()
    ids = [secrets.token_hex(16) for _ in range(1_000_000)]
    for i, x in enumerate(ids):
        rs.add(x, NOW + (i % 720) * 3600)
    del ids
    gc.collect()
    per_entry = (tracemalloc.get_traced_memory()[0] - before) / len(rs)
    tracemalloc.stop()
    probes = [int(secrets.token_hex(16), 16) for _ in range(1000)]
    present = list(itertools.islice(iter(rs._ids), 1000))
    keys = [k for pair in zip(probes, present, strict=True) for k in pair]

    def lookups() -> int:
        hits = 0
        for k in keys:
            if k in rs:
                hits += 1
        return hits

    assert lookups() == 1000
    benchmark.pedantic(lookups, rounds=50, iterations=5)
    rate = record(benchmark, "revocation lookup (1M revoked)", ops_per_round=len(keys))
    benchmark.extra_info["bytes_per_entry"] = round(per_entry, 1)
    NOTES.append(
        f"revocation set: {len(rs):,} entries, {per_entry:.0f} bytes each, {rate:,.0f} lookups/s"
    )
