"""Budgets (``uses <= N``, ``rate <= N/PERIOD``, an agent's rate): exact on one replica,
never over N across replicas sharing a store, shared by every token derived from the
one that carries them, counted on every allow (the decision memo's too)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from capgate import (
    Budget,
    DenyCode,
    Directory,
    InvalidArgumentError,
    Request,
    Token,
    Verifier,
    format_timestamp,
)
from capgate_client import Client
from capgate_server import ResourceLimits
from capgate_server._budgets import Budgets
from capgate_server.store import PostgresStore, SqliteStore

from harness import ServerThread, wait_for

sys.path.insert(0, str(Path(__file__).parent.parent / "core"))
from prop_world import AGENT_IDS, KEY, KID, clock, examples, hop, mint, registry, revocations

R = "/data/reports/q3"


def _store(path: Path) -> SqliteStore:
    s = SqliteStore(path)
    s.migrate()
    return s


def uses(n: int, bid: str | None = None) -> Budget:
    return Budget(bid or secrets.token_hex(16), f"uses <= {n}", n, 0.0)


_LOOP = asyncio.new_event_loop()  # one loop, as in a server: leases may outlive a call


def take_all(counter: Budgets, budgets: list[Budget], times: int) -> list[bool]:
    async def run() -> list[bool]:
        out = []
        for _ in range(times):
            out.append(counter.take_now(budgets) or await counter.take(budgets) is None)
        return out

    return _LOOP.run_until_complete(run())


# -- the counter alone ------------------------------------------------------------------


def test_one_replica_counts_exactly(tmp_path):
    for n in (1, 3, 17, 1000):  # leases of one use, then doubling up to N/16
        counter = Budgets(_store(tmp_path / f"{n}.db"), clock, block=64)
        b = uses(n)
        got = take_all(counter, [b], n + 5)
        assert got == [True] * n + [False] * 5, n
        counter.close()


def test_a_request_counts_against_all_its_budgets_or_none(tmp_path):
    counter = Budgets(_store(tmp_path / "s.db"), clock)
    wide, narrow = uses(5), uses(2)
    assert take_all(counter, [wide, narrow], 4) == [True, True, False, False]
    # the two denied requests spent nothing of the wider budget
    assert take_all(counter, [wide], 4) == [True, True, True, False]
    counter.close()


def test_rates_count_per_window(tmp_path):
    from conftest import FakeClock

    now = FakeClock(1_800_000_000.0)  # a multiple of 60: a window starts here
    counter = Budgets(_store(tmp_path / "s.db"), now)
    b = Budget("r1", "rate <= 3/1m", 3, 60.0)
    assert take_all(counter, [b], 5) == [True, True, True, False, False]
    now.advance(59.5)
    assert take_all(counter, [b], 1) == [False]
    now.advance(1.0)  # the next window
    assert take_all(counter, [b], 4) == [True, True, True, False]
    counter.close()


def test_unspent_uses_go_back_when_idle_and_at_close(tmp_path):
    store = _store(tmp_path / "s.db")
    first = Budgets(store, clock, block=64, idle=0.05)
    b = uses(1600, "shared")  # block cap: 1600/16 = 100 -> 64
    assert all(take_all(first, [b], 10))  # leases 1+2+4+8 = 15 uses, spends 10
    assert store.budget_used("shared") == 15
    time.sleep(0.1)
    first.give_back()
    wait_for(lambda: store.budget_used("shared") == 10)
    assert all(take_all(first, [b], 3))
    first.close()
    assert store.budget_used("shared") == 13  # what was leased and not spent went back


def test_two_replicas_on_one_store_never_allow_more_than_n(tmp_path):
    path = tmp_path / "s.db"
    store = _store(path)
    a = Budgets(store, clock, block=8, idle=0.05)
    b = Budgets(SqliteStore(path), clock, block=8, idle=0.05)
    budget = uses(200, "shared")
    allowed = 0
    for i in range(300):  # alternate, so each holds a lease the other cannot use
        allowed += take_all(a if i % 2 else b, [budget], 1)[0]
    assert 200 - 12 <= allowed <= 200  # short by at most 1.5 blocks: R - 1 = 1
    time.sleep(0.1)
    a.give_back()
    b.give_back()
    wait_for(lambda: store.budget_used("shared") == allowed)
    allowed += sum(take_all(a, [budget], 50))
    assert allowed == 200  # every use, and not one more
    a.close()
    b.close()


def test_a_store_that_cannot_lease_fails_the_use(tmp_path):
    store = _store(tmp_path / "s.db")
    counter = Budgets(store, clock)
    b = uses(10)
    assert take_all(counter, [b], 1) == [True]  # leased 1
    store.close()

    def broken(*args, **kwargs):
        raise RuntimeError("store unreachable")

    store.lease_budgets = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        take_all(counter, [b], 1)


def test_a_verifier_without_counts_refuses_budgets():
    for counts, code in ((False, DenyCode.UNSUPPORTED), (True, DenyCode.ALLOWED)):
        v = Verifier({KID: KEY}, registry(), revocations(), clock=clock, counts_budgets=counts)
        token = mint("a", secrets.token_hex(16)).attenuate("uses <= 3")
        d = v.verify(token.to_text(), Request("read", "/data/x", "a"))
        assert d.code is code, d
        if counts:
            assert [b.caveat for b in d.budgets] == ["uses <= 3"]
        else:
            assert d.caveat == "uses <= 3"


def test_a_budget_lives_as_long_as_the_token_it_was_added_to():
    """A holder who shortens its copy must not shorten the count: the store forgets a
    budget an hour after its ``until``, so an ``until`` taken from a short-lived copy
    would let the budget start again from zero while the real token still lives."""
    v = Verifier({KID: KEY}, registry(), revocations(), clock=clock, counts_budgets=True)
    lives = clock() + 3600
    token = (
        mint("a", secrets.token_hex(16))
        .attenuate(f"expires < {format_timestamp(lives)}")
        .attenuate("uses <= 2")
    )
    short = token.attenuate(f"expires < {format_timestamp(clock() + 5)}")
    untils = {
        v.verify(t.to_text(), Request("read", "/data/x", "a")).budgets[0].until
        for t in (token, short)
    }
    assert untils == {lives}  # both name the expiry of the token the budget was added to


# -- the property: budgets only narrow, and every derived token shares them ---------------


@st.composite
def plans(draw):
    """Tokens derived from one (attenuated with budgets, delegated), then uses of them."""
    tokens = [(None, None, "a")]  # (parent index, budget limit or None, holder)
    for _ in range(draw(st.integers(0, 6))):
        parent = draw(st.integers(0, len(tokens) - 1))
        limit = draw(st.none() | st.integers(1, 6))
        to = draw(st.none() | st.sampled_from(AGENT_IDS))
        tokens.append((parent, limit, to or tokens[parent][2]))
    first = draw(st.none() | st.integers(1, 6))
    used = draw(st.lists(st.integers(0, len(tokens) - 1), max_size=30))
    return first, tokens, used


_PROP_DIR = Path(tempfile.mkdtemp(prefix="capgate-budgets-"))
_PROP_STORE = _store(_PROP_DIR / "s.db")


@examples(60)
@given(plans())
def test_budgets_never_widen_and_derived_tokens_share_them(plan):
    """Each use is allowed exactly when every budget on its token's path has uses left;
    then it counts against all of them. Attenuation only narrows: a child's own budget
    counts separately, its parents' still count."""
    first, shape, used = plan
    agents = Directory(registry(ceilings={a: ("read:/**",) for a in AGENT_IDS}))
    v = Verifier(
        {KID: KEY}, agents, revocations(()), clock=clock, counts_budgets=True, memo_size=64
    )  # the memo, as servers have it: it must not skip a count
    root = mint("a", secrets.token_hex(16))
    if first is not None:
        root = root.attenuate(f"uses <= {first}")
    texts, paths, holders = [], [], []
    for i, (parent, limit, holder) in enumerate(shape):
        if parent is None:
            token, path = root, ([("root", first)] if first is not None else [])
        else:
            token, path = texts[parent], list(paths[parent])
            if holder != holders[parent]:
                token, _ = hop(token, holders[parent], holder, False, i)
            if limit is not None:
                token = token.attenuate(f"uses <= {limit}")
                # keyed by the token it was added to: two tokens derived alike (the same
                # caveats on the same parent) are one token, and share the budget
                path.append((token.to_text(), limit))
        texts.append(token)
        paths.append(path)
        holders.append(holder)
    counter = Budgets(_PROP_STORE, clock, block=4)
    counts: dict[object, int] = {}

    async def run() -> None:
        for i in used:
            d = v.check(texts[i].to_text(), "read", "/data/x", holders[i])
            assert d.allowed, d
            assert len(d.budgets) == len(paths[i])
            spent = None if counter.take_now(d.budgets) else await counter.take(d.budgets)
            expect = all(counts.get(key, 0) < limit for key, limit in paths[i])
            assert (spent is None) == expect, (i, paths[i], counts)
            if expect:
                for key, _ in paths[i]:
                    counts[key] = counts.get(key, 0) + 1
            else:
                assert spent is not None and spent.caveat in [f"uses <= {n}" for _, n in paths[i]]

    _LOOP.run_until_complete(run())
    counter.close()


# -- through a server ---------------------------------------------------------------------


@pytest.fixture
def world(server):
    admin = server.client()
    _, cred = admin.create_agent("alice", ["read,write:/data/**"])
    _, bob = admin.create_agent("bob", ["read:/data/**"])
    svc = admin.create_principal("svc", "service").credential
    clients = [admin, server.client(cred), server.client(bob), server.client(svc)]
    yield clients
    for c in clients:
        c.close()


def test_a_server_counts_every_allow_the_memo_included(world):
    from capgate import Token

    admin, alice, bob, svc = world
    token = alice.issue("read:/data/**").token
    limited = Token.parse(token).attenuate("uses <= 3").to_text()
    got = [svc.verify(limited, "read", R, presenter="alice") for _ in range(5)]
    assert [d.allowed for d in got] == [True, True, True, False, False]
    assert got[3].code == "budget_exhausted" and got[3].caveat == "uses <= 3"
    assert "3 uses in all" in got[3].reason
    # a delegate of the same token shares its count: nothing left for bob either
    delegated = alice.delegate(limited, "bob").token
    assert svc.verify(delegated, "read", R, presenter="bob").code == "budget_exhausted"
    # the token it came from has no budget: untouched
    assert svc.verify(token, "read", R, presenter="alice").allowed


def test_a_delegate_spends_the_budget_it_was_handed(world):
    from capgate import Token

    admin, alice, bob, svc = world
    limited = Token.parse(alice.issue("read:/data/**").token).attenuate("uses <= 4").to_text()
    to_bob = alice.delegate(limited, "bob").token
    copies = [Token.parse(to_bob).attenuate("action in read").to_text() for _ in range(3)]
    allowed = sum(svc.verify(t, "read", R, presenter="bob").allowed for t in [to_bob, *copies] * 2)
    allowed += svc.verify(limited, "read", R, presenter="alice").allowed
    assert allowed == 4


def test_a_batch_counts_each_request(world):
    from capgate import Token

    admin, alice, bob, svc = world
    limited = Token.parse(alice.issue("read:/data/**").token).attenuate("uses <= 3").to_text()
    got = svc.verify_batch([(limited, "read", R, "alice", None)] * 5)
    assert [d.code for d in got] == ["allowed"] * 3 + ["budget_exhausted"] * 2


def test_an_agent_rate_counts_every_request_it_takes_part_in(world):
    admin, alice, bob, svc = world
    token = alice.issue("read:/data/**").token
    with pytest.raises(InvalidArgumentError, match="N/PERIOD"):
        admin.update_agent("alice", rate="10 per minute")
    assert admin.update_agent("alice", rate="3/1h").rate == "3/1h"
    to_bob = alice.delegate(token, "bob").token
    got = [svc.verify(token, "read", R, presenter="alice") for _ in range(2)]
    got.append(svc.verify(to_bob, "read", R, presenter="bob"))  # alice's authority: counts
    got.append(svc.verify(token, "read", R, presenter="alice"))
    assert [d.allowed for d in got] == [True, True, True, False]
    assert got[-1].code == "budget_exhausted" and got[-1].caveat == ""
    assert "agent alice rate <= 3/1h" in got[-1].reason
    assert svc.verify(to_bob, "read", R, presenter="bob").code == "budget_exhausted"
    # denies spend nothing, and lifting the rate lets the token through again
    assert admin.update_agent("alice", rate="").rate == ""
    assert svc.verify(token, "read", R, presenter="alice").allowed


def test_rate_and_budget_through_the_cli(server, tmp_path):
    from harness import cli

    admin = server.admin_credential
    out = cli(
        "agent",
        "create",
        "carol",
        "--grant",
        "read:/data/**",
        "--rate",
        "5/1m",
        server=server.address,
        credential=admin,
    )
    assert out.returncode == 0, out.stderr
    shown = cli("agent", "show", "carol", server=server.address, credential=admin)
    assert "rate:" in shown.stdout and "5/1m" in shown.stdout
    bad = cli(
        "agent", "update", "carol", "--rate", "5/week", server=server.address, credential=admin
    )
    assert bad.returncode == 2 and "N/PERIOD" in bad.stderr
    lifted = cli(
        "agent",
        "update",
        "carol",
        "--rate",
        "none",
        "--json",
        server=server.address,
        credential=admin,
    )
    assert lifted.returncode == 0 and '"rate": ""' in lifted.stdout


# -- a fleet: two replicas on PostgreSQL ----------------------------------------------------


def test_two_pg_replicas_hold_a_budget_within_the_bound(tmp_path, pg_url):
    from capgate import Token
    from capgate_server import new_kek_text

    kek = tmp_path / "kek"
    kek.write_text(new_kek_text())
    block = 4
    a = ServerThread(
        tmp_path / "a", store_url=pg_url, kek_file=kek, budget_block=block, budget_idle=0.5
    ).start()
    b = ServerThread(
        tmp_path / "b", store_url=pg_url, kek_file=kek, budget_block=block, budget_idle=0.5
    ).start()
    try:
        admin = Client(a.address, a.admin_credential)
        _, cred = admin.create_agent("alice", ["read:/data/**"])
        svc = admin.create_principal("svc", "service").credential
        with Client(a.address, cred) as alice:
            token = alice.issue("read:/data/**").token
        n = 120
        limited = Token.parse(token).attenuate(f"uses <= {n}").to_text()
        wait_for(lambda: Client(b.address, svc).verify(token, "read", R, presenter="alice").allowed)
        allowed = 0
        lock = threading.Lock()

        def hammer(address: str) -> None:
            nonlocal allowed
            with Client(address, svc) as c:
                for _ in range(100):
                    if c.verify(limited, "read", R, presenter="alice").allowed:
                        with lock:
                            allowed += 1

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(hammer, [a.address, b.address] * 2))
        # 400 requests on a budget of 120: never more; at most one block short
        assert n - (block + block // 2) <= allowed <= n  # the stated bound, R = 2
        time.sleep(1.5)  # the idle leases go back to the store
        with Client(a.address, svc) as c:
            allowed += sum(
                c.verify(limited, "read", R, presenter="alice").allowed for _ in range(2 * block)
            )
        assert allowed == n
        admin.close()
    finally:
        a.stop()
        b.stop()


def test_pg_leases_are_atomic_under_contention(pg_url):
    """Many replicas' leases at once: the store hands out exactly N, never more."""
    stores = [PostgresStore(pg_url) for _ in range(4)]
    stores[0].migrate()
    from capgate_server.store import BudgetLease

    def lease(store: PostgresStore) -> int:
        got = 0
        for _ in range(30):
            got += store.lease_budgets([BudgetLease("hot", 0, 100, 3, 1e12)])[0]
        return got

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        total = sum(pool.map(lease, stores))
    assert total == 100 and stores[0].budget_used("hot") == 100
    stores[1].return_budgets([("hot", 0, 7)])
    assert stores[2].budget_used("hot") == 93
    for s in stores:
        s.close()


def test_requests_with_proofs_are_counted_once_their_proof_holds(server):
    from capgate import Token, prove_possession
    from capgate_client import Proof

    from harness import KeyedAgent

    w = KeyedAgent(server, token_grant="read:/data/reports/*")
    try:
        limited = Token.parse(w.token).attenuate("uses <= 2").to_text()

        def proven(proof_token: str = limited):
            return Proof(
                prove_possession(proof_token, w.key, "GET", R, audience=w.service_id), "GET", R
            )

        bad = Proof(
            prove_possession(limited, w.key, "GET", "/elsewhere", audience=w.service_id), "GET", R
        )
        assert w.svc.verify(limited, "read", R, proof=bad).code == "bad_proof"  # spends nothing
        got = [w.svc.verify(limited, "read", R, proof=proven()).code for _ in range(3)]
        assert got == ["allowed", "allowed", "budget_exhausted"]
    finally:
        w.close()


def test_a_guard_never_reuses_a_counted_allow(world):
    """A guard caches allows for a second; one counted against a budget is good for one
    request, so it is never cached (nor is anything under a rate-limited agent)."""
    from capgate import Token
    from capgate_client import Access, Guard, Presentation

    admin, alice, bob, svc = world
    token = alice.issue("read:/data/**").token
    limited = Token.parse(token).attenuate("uses <= 2").to_text()
    guard = Guard(svc, cache_ttl=60)
    got = [
        guard.check(Presentation(limited, presenter="alice"), Access("read", R)) for _ in range(3)
    ]
    assert [r.code for r in got] == ["allowed", "allowed", "budget_exhausted"]
    assert got[0].counted and got[1].counted
    plain = guard.check(Presentation(token, presenter="alice"), Access("read", R))
    assert plain.allowed and not plain.counted  # cached: an unbudgeted allow may be reused
    admin.update_agent("alice", rate="1/1h")
    guard = Guard(svc, cache_ttl=60)
    got = [guard.check(Presentation(token, presenter="alice"), Access("read", R)) for _ in range(2)]
    assert [r.code for r in got] == ["allowed", "budget_exhausted"] and got[0].counted


def test_one_token_cannot_fill_the_store_with_budgets(tmp_path):
    """Every new budget is a row in the store, and a holder makes new ones by attenuating
    at will: the tokens of one token id start at most ``new_budgets_per_token`` a minute;
    beyond, the request is denied, and the budgets already started keep counting."""
    s = ServerThread(tmp_path / "d", limits=ResourceLimits(new_budgets_per_token=20)).start()
    try:
        with s.client() as admin:
            _, cred = admin.create_agent("mallory", ["read:/data/**"])
        with s.client(cred) as m:
            base = Token.parse(m.issue("read:/data/**").token)
            items = [
                (base.attenuate(f"uses <= {i + 1}").to_text(), "read", "/data/x", "", None)
                for i in range(30)
            ]
            got = [r.code for r in m.verify_batch(items)]
            assert got == ["allowed"] * 20 + ["budget_exhausted"] * 10
            assert "started more than 20 budgets" in m.verify(items[25][0], "read", R).reason
            assert m.verify(items[3][0], "read", "/data/x").allowed  # 4 uses: one left
            other = Token.parse(m.issue("read:/data/**").token).attenuate("uses <= 5")
            assert m.verify(other.to_text(), "read", "/data/x").allowed  # another token id
        db = sqlite3.connect(s.settings.data_dir / "capgate.db")
        assert db.execute("SELECT COUNT(*) FROM budgets").fetchone()[0] == 21  # 20 + other
        db.close()
    finally:
        s.stop()
