"""What an approval caveat adds to a verify, against the same 6-caveat token without one,
in the same run: cold (never seen), warm for a request the caveat does not apply to,
and warm with the discharge it needs (the store's redemption, one UPDATE per use,
is the server's and not measured here)."""

from __future__ import annotations

import secrets

import pytest

from capgate import (
    Agent,
    Ceiling,
    Request,
    RevocationSet,
    Token,
    TokenIdentifier,
    Verifier,
    format_timestamp,
    mint_discharge,
    request_digest,
)

from conftest import record

NOW = 1_800_000_000.0
KEY = secrets.token_bytes(32)
N_COLD = 12_000
SMALL = Request("pay", "/invoices/q3", "alice", {"amount": "250"})
BIG = Request("pay", "/invoices/q3", "alice", {"amount": "4200"})


def token(i: int, approval: bool) -> str:
    t = Token.mint(KEY, TokenIdentifier("k1", f"{i:032x}", int(NOW * 1000) - 1000).encode())
    for c in (
        "agent = alice",
        "action in pay,read",
        "resource /invoices/**",
        f"expires < {format_timestamp(NOW + 3600 + i)}",
        "not-before > 2020-01-01T00:00:00Z",
        "ctx amount <= 100000",
    ):
        t = t.attenuate(c)
    if approval:
        t = t.require_approval("ctx amount > 1000")
    return t.to_text()


def verifier(cache_size: int = 65536) -> Verifier:
    agents = {"alice": Agent("alice", Ceiling.parse(["pay,read:/invoices/**"]))}
    return Verifier({"k1": KEY}, agents, RevocationSet(), clock=lambda: NOW, cache_size=cache_size)


@pytest.fixture(scope="module")
def tokens() -> dict[bool, list[str]]:
    return {flag: [token(i, flag) for i in range(N_COLD)] for flag in (False, True)}


@pytest.mark.parametrize("approval", [False, True], ids=["plain", "approval"])
def test_verify_cold(benchmark, tokens, approval):
    half = N_COLD // 2
    warmup = verifier(cache_size=half)  # the same work first, so the heap is grown
    for text in tokens[approval][half:]:
        assert warmup.verify(text, SMALL).allowed
    del warmup
    v = verifier(cache_size=half)
    it = iter(tokens[approval][:half])
    benchmark.pedantic(lambda: v.verify(next(it), SMALL), rounds=25, iterations=200)
    record(benchmark, f"verify cold, 6 caveats{' + approval caveat' if approval else ''}")


@pytest.mark.parametrize("approval", [False, True], ids=["plain", "approval"])
def test_verify_warm_not_needed(benchmark, tokens, approval):
    v = verifier()
    text = tokens[approval][0]
    assert v.verify(text, SMALL).allowed
    benchmark.pedantic(lambda: v.verify(text, SMALL), rounds=200, iterations=500)
    record(benchmark, f"verify warm, 6 caveats{' + approval (not met)' if approval else ''}")


def test_verify_warm_with_discharge(benchmark, tokens):
    v = verifier()
    text = tokens[True][0]
    st = v.analyse(text)
    assert not isinstance(st, type(None))
    digest = request_digest(BIG.action, BIG.resource, "alice", BIG.ctx)
    ds = [
        mint_discharge(
            st.approval_keys[0], st.approvals[0].cid, "ab" * 16, digest, NOW + 300, st.signature
        ).to_text()
    ]
    assert v.verify(text, BIG, ds).allowed
    benchmark.pedantic(lambda: v.verify(text, BIG, ds), rounds=200, iterations=200)
    record(benchmark, "verify warm, approval met, with its discharge")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from harness import ServerThread

    s = ServerThread(tmp_path_factory.mktemp("approvals") / "data").start()
    yield s
    s.stop()


@pytest.mark.parametrize("approval", [False, True], ids=["plain", "discharge"])
def test_verify_rpc(benchmark, server, approval):
    """A unary Verify on the embedded store: with a discharge, one use is spent (an
    UPDATE and its audit row, committed) on every call."""
    from capgate import ApprovalRule

    admin = server.client()
    name = f"payer-{approval:d}"
    _, cred = admin.create_agent(
        name, ["pay:/invoices/**"], approvals=[ApprovalRule("ctx amount > 1000")]
    )
    svc = server.client(admin.create_principal(f"svc-{name}", "service").credential)
    carol = server.client(admin.create_principal(f"carol-{name}", "approver").credential)
    agent = server.client(cred)
    token = agent.issue("pay:/invoices/*", ttl=3600).token
    ctx = {"amount": "4200" if approval else "250"}
    discharges: list[str] = []

    def setup() -> None:  # a fresh approval of 100 uses whenever the last is spent
        if approval:
            a = agent.request_approval(token, "pay", "/invoices/q3", ctx=ctx)
            carol.approve(a.id, "bench", uses=100, ttl=3600)
            discharges[:] = agent.get_approval(a.id, token=token).discharges

    def call() -> None:
        for _ in range(100):
            assert svc.verify(
                token, "pay", "/invoices/q3", presenter=name, ctx=ctx, discharges=discharges
            ).allowed

    benchmark.pedantic(call, setup=setup, rounds=8, iterations=1)
    record(
        benchmark,
        f"Verify RPC (SQLite), {'with discharge' if approval else 'plain'}",
        ops_per_round=100,
    )
    for c in (admin, svc, carol, agent):
        c.close()
