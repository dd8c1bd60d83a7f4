"""The verify tally: identical allows and denies fold, the tally and the records are
bounded, failed flushes retry, old records are deleted."""

from __future__ import annotations

import asyncio

from capgate import Decision, DenyCode
from capgate_server import AuditLog


def test_tally_folds_allows_and_denies_and_retries():
    written: list = []
    fail = [True]

    async def write(events):
        if fail[0]:
            fail[0] = False
            raise OSError("store down")
        written.extend(events)

    async def go():
        log = AuditLog(write)
        allow = Decision(True, DenyCode.ALLOWED, "allowed", None, "t" * 32, ("a",))
        for i in range(5):
            log.decision("svc", allow, "read", "/x", "a", 100.0 + i)
        log.decision("svc", allow, "read", "/y", "a", 106.0)
        for _ in range(2):  # two identical denies (two objects) are one record
            log.decision(
                "svc",
                Decision(False, DenyCode.REVOKED, "token t is revoked", None, "t" * 32, ("a",)),
                "read",
                "/x",
                "a",
                107.0,
            )
        await log.flush()  # fails: kept for the next attempt
        assert written == []
        await log.flush()
        return log

    log = asyncio.run(go())
    assert log.decisions == 8
    by = {(e.resource, e.ok): e for e in written}
    folded = by[("/x", True)]
    assert (folded.count, folded.at, folded.last_at) == (5, 100.0, 104.0)
    assert by[("/y", True)].count == 1
    denies = [e for e in written if not e.ok]
    assert len(denies) == 1 and denies[0].reason == "token t is revoked"
    assert denies[0].count == 2
    assert all(e.kind == "verify" and e.chain == ("a",) for e in written)


def deny(resource: str = "/x", code: DenyCode = DenyCode.CAVEAT_FAILED) -> Decision:
    return Decision(
        False, code, f"resource {resource!r} does not match", "resource /y", "t" * 32, ("a",)
    )


def test_the_tally_is_bounded_and_the_overflow_recorded():
    written: list = []

    async def write(events):
        written.extend(events)

    async def go():
        log = AuditLog(write, tally_bytes=64 * 1024, denies_per_caller=10**9)
        for i in range(10_000):  # every deny different: a new key each
            log.decision("svc", deny(f"/r/{i}"), "read", f"/r/{i}", "a", 100.0 + i)
            assert log._tally_bytes <= 65 * 1024  # the budget, and one coarse record
        await log.flush()

    asyncio.run(go())
    detailed = [e for e in written if e.kind == "verify" and not e.detail.get("coarse")]
    coarse = [e for e in written if e.detail.get("coarse")]
    (overflow,) = [e for e in written if e.kind == "audit.overflow"]
    assert 10 < len(detailed) < 200 and len(coarse) == 1
    assert coarse[0].count == overflow.detail["coarse_decisions"] == 10_000 - len(detailed)
    assert coarse[0].principal == "svc" and coarse[0].resource == "" and not coarse[0].ok
    assert sum(e.count for e in detailed + coarse) == 10_000


def test_one_caller_s_distinct_denies_add_a_bounded_number_of_rows():
    written: list = []

    async def write(events):
        written.extend(events)

    async def go():
        log = AuditLog(write)  # 100 distinct denies per caller and interval
        for i in range(5000):  # e.g. one batch of tokens that each fail differently
            log.decision("mallory", deny(f"/r/{i}"), "read", f"/r/{i}", "a", 100.0)
        for i in range(3):
            log.decision("svc", deny(f"/s/{i}"), "read", f"/s/{i}", "a", 100.0)
        await log.flush()

    asyncio.run(go())
    mallory = [e for e in written if e.principal == "mallory"]
    assert len(mallory) == 101 and sum(e.count for e in mallory) == 5000
    assert [e.count for e in mallory if e.detail.get("coarse")] == [4900]
    assert len([e for e in written if e.principal == "svc"]) == 3  # others keep their detail
    (overflow,) = [e for e in written if e.kind == "audit.overflow"]
    assert overflow.detail["coarse_decisions"] == 4900


def test_a_deny_for_a_huge_request_is_kept_short():
    written: list = []

    async def write(events):
        written.extend(events)

    async def go():
        log = AuditLog(write)
        for _ in range(3):
            log.decision("svc", deny(), "read", "/" + "x" * 1_000_000, "p" * 10_000, 100.0)
        assert log._tally_bytes < 10_000
        await log.flush()

    asyncio.run(go())
    (e,) = written
    assert e.count == 3 and len(e.resource) == 1024 and len(e.presenter) == 64
    assert e.detail == {"truncated": {"resource": 1_000_001, "presenter": 10_000}}


def test_records_are_written_in_short_transactions():
    sizes: list[int] = []

    async def write(events):
        sizes.append(len(events))

    async def go():
        log = AuditLog(write, rows_per_write=500, denies_per_caller=10**9)
        for i in range(1200):
            log.decision("svc", deny(f"/r/{i}"), "read", f"/r/{i}", "a", 100.0)
        await log.flush()

    asyncio.run(go())
    assert sizes == [500, 500, 200]


def test_the_backlog_is_bounded_while_the_store_refuses():
    written: list = []
    down = [True]

    async def write(events):
        if down[0]:
            raise OSError("store down")
        written.extend(events)

    async def go():
        log = AuditLog(write, backlog=2000, denies_per_caller=10**9)
        for round_ in range(10):
            for i in range(1000):
                log.decision("svc", deny(f"/r/{i}"), "read", f"/r/{round_}/{i}", "a", 100.0)
            await log.flush()
            assert len(log._backlog) <= 2000
        down[0] = False
        await log.flush()

    asyncio.run(go())
    (overflow,) = [e for e in written if e.kind == "audit.overflow"]
    assert overflow.detail["dropped_records"] == 8000
    assert len(written) == 2001


def test_retention_deletes_what_is_older(tmp_path):
    from capgate_server.store import AuditEvent, AuditQuery, LedgerKey, SqliteStore

    store = SqliteStore(tmp_path / "a.db")
    store.migrate()
    store.append_audit([AuditEvent(1000.0 + i, "svc", "verify") for i in range(12_000)])
    now = [1000.0 + 11_000 + 86400]
    sign = LedgerKey.generate().sign
    while store.seal_audit(sign, now[0], keep=False):
        pass

    async def prune(before, limit):
        return store.prune_audit(before, sign, limit)

    async def go():
        log = AuditLog(lambda events: None, prune=prune, clock=lambda: now[0], retention=86400)
        return await log.prune()  # everything last seen before now - 1 day

    assert asyncio.run(go()) == 11_000
    left = store.list_audit(AuditQuery(limit=1000))
    assert len(left) == 1000 and left[0].at == 1000.0 + 11_000
    store.close()


def test_a_flush_returns_only_once_the_flush_under_way_has_written():
    """The background flush may be writing when someone asks for a flush (a test, a
    shutdown): the asked-for flush waits for it, so every decision seen before the call
    is in the store when it returns."""
    written: list[int] = []
    gate = asyncio.Event()

    async def write(events):
        await gate.wait()
        written.extend(e.count for e in events)

    async def scenario():
        log = AuditLog(write)
        deny = Decision(False, DenyCode.REVOKED, "revoked", None, "t1", ("a",))
        for _ in range(5):
            log.decision("svc", deny, "read", "/x", "a", 1.0)
        under_way = asyncio.create_task(log.flush())  # drains, then blocks in its write
        await asyncio.sleep(0)
        asked = asyncio.create_task(log.flush())
        await asyncio.sleep(0.05)
        assert not asked.done()  # still waiting for the write under way
        gate.set()
        await asked
        assert sum(written) == 5
        await under_way

    asyncio.run(scenario())
