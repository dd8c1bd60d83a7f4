"""The audit ledger against real servers: every kind of tampering in the SQLite file
and in PostgreSQL rows is found, retention keeps it verifiable, an exported
checkpoint catches a rewritten tail, and the live stream resumes without loss or
duplication across a restart."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from capgate_client import AuditCheckpoint
from capgate_server import new_kek_text
from capgate_server.store import canonical, link

from harness import ServerProcess, ServerThread, wait_for


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_server(request, tmp_path) -> Iterator[tuple[ServerThread, Callable[[], Any]]]:
    """A server and a raw connection to its database (what an attacker with write
    access to the store would hold)."""
    if request.param == "sqlite":
        s = ServerThread(tmp_path / "data").start()

        def connect() -> Any:
            return sqlite3.connect(s.settings.data_dir / "capgate.db", isolation_level=None)
    else:
        url = request.getfixturevalue("pg_url")
        kek = tmp_path / "kek"
        kek.write_text(new_kek_text())
        s = ServerThread(tmp_path / "data", store_url=url, kek_file=kek).start()

        def connect() -> Any:
            return psycopg.connect(url, autocommit=True)

    yield s, connect
    s.stop()


def busy(server: ServerThread, n: int = 6, prefix: str = "worker") -> None:
    """Write records of several kinds: agent changes, issues, allows and denies."""
    with server.client() as admin:
        for i in range(n):
            _, cred = admin.create_agent(f"{prefix}-{i}", ["read:/data/**"])
            with server.client(cred) as agent:
                token = agent.issue("read:/data/*").token
                agent.verify(token, "read", "/data/x")
                agent.verify(token, "write", "/data/x")


def sealed(server: ServerThread) -> int:
    with server.client() as admin:
        return admin.audit_checkpoint().pos


def execute(connect: Callable[[], Any], *statements: tuple[str, tuple[Any, ...]]) -> None:
    conn = connect()
    try:
        for sql, params in statements:
            if isinstance(conn, sqlite3.Connection):
                conn.execute(sql, params)
            else:
                conn.execute(sql.replace("?", "%s"), params)
    finally:
        conn.close()


def check(server: ServerThread, **kw: Any) -> Any:
    with server.client() as admin:
        return admin.verify_audit(**kw)


def test_an_untouched_ledger_verifies_and_streams_in_order(ledger_server):
    server, _ = ledger_server
    busy(server)
    head = sealed(server)
    r = check(server)
    assert r.intact and r.records == head and r.head == head and r.checkpoints >= 1
    with server.client() as admin:
        records = list(admin.watch_audit(follow=False))
    assert [e.pos for e in records] == list(range(1, head + 1))
    kinds = {e.kind for e in records}
    assert {"agent.create", "issue", "verify"} <= kinds
    deny = next(e for e in records if e.kind == "verify" and not e.ok)
    assert deny.code == "beyond_ceiling" and deny.action == "write" and deny.replica


def _swap(pos: int) -> list[tuple[str, tuple[Any, ...]]]:
    return [
        ("UPDATE audit SET pos = ? WHERE pos = ?", (-1, pos)),
        ("UPDATE audit SET pos = ? WHERE pos = ?", (pos, pos + 1)),
        ("UPDATE audit SET pos = ? WHERE pos = ?", (pos + 1, -1)),
    ]


TAMPERING = {
    "edit": lambda k: [("UPDATE audit SET reason = ? WHERE pos = ?", ("nothing to see", k))],
    "delete": lambda k: [("DELETE FROM audit WHERE pos = ?", (k,))],
    "reorder": _swap,
    "truncate the tail": lambda k: [("DELETE FROM audit WHERE pos >= ?", (k,))],
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_each_kind_of_tampering_is_found_where_it_happened(ledger_server, how):
    server, connect = ledger_server
    busy(server)
    head = sealed(server)
    k = head // 2
    execute(connect, *TAMPERING[how](k))
    r = check(server)
    assert not r.intact and r.break_pos == k, r


def test_an_inserted_record_with_its_own_digest_is_found_at_the_next_one(ledger_server):
    server, connect = ledger_server
    busy(server)
    head = sealed(server)
    k = head // 2
    conn = connect()
    try:
        sql = (
            "SELECT digest FROM audit WHERE pos = ?"
            if isinstance(conn, sqlite3.Connection)
            else "SELECT digest FROM audit WHERE pos = %s"
        )
        before = bytes(conn.execute(sql, (k - 1,)).fetchone()[0])
    finally:
        conn.close()
    forged = (
        1.0,
        1.0,
        1,
        "admin",
        "revoke",
        "x" * 32,
        True,
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    )
    digest = link(before, canonical(forged))  # the forger computes the digest it can
    execute(
        connect,
        ("UPDATE audit SET pos = pos + 100000 WHERE pos >= ?", (k,)),
        ("UPDATE audit SET pos = pos - 99999 WHERE pos >= ?", (k + 100000,)),
        (
            "INSERT INTO audit (at, last_at, count, principal, kind, subject, ok, code, "
            "reason, chain, action, resource, presenter, detail, caveat, ctx_keys, replica, "
            "pos, digest) VALUES (1.0, 1.0, 1, 'admin', 'revoke', ?, 1, '', '', '', '', '', "
            "'', '', '', '', '', ?, ?)",
            ("x" * 32, k, digest),
        ),
    )
    r = check(server)
    assert not r.intact and r.break_pos == k + 1, r


def test_a_rewritten_tail_is_caught_by_an_exported_checkpoint(ledger_server, tmp_path):
    server, connect = ledger_server
    busy(server)
    with server.client() as admin:
        exported = admin.audit_checkpoint()
    (tmp_path / "head.json").write_text(exported.to_json())
    saved = AuditCheckpoint.from_json((tmp_path / "head.json").read_text())
    # the tail, its signed head and its checkpoints all removed: the store alone agrees
    execute(
        connect,
        ("DELETE FROM audit WHERE pos > ?", (exported.pos - 3,)),
        ("DELETE FROM audit_head", ()),
        ("DELETE FROM audit_checkpoints", ()),
    )
    assert check(server).intact  # within the store, nothing shows
    r = check(server, against=saved)
    assert not r.intact and "gone" in r.reason, r
    assert check(server, against=saved).break_pos == exported.pos - 2


def test_an_altered_exported_checkpoint_reports_no_position_of_its_own(ledger_server):
    """An exported checkpoint whose position was altered is not signed: the report
    says so, and the break it names is not the position the sender wrote in."""
    import dataclasses

    server, _ = ledger_server
    busy(server, 3)
    with server.client() as admin:
        exported = admin.audit_checkpoint()
    for pos in (-1, 2**63 - 1, exported.pos + 1000):
        r = check(server, against=dataclasses.replace(exported, pos=pos))
        assert not r.intact and "not signed" in r.reason
        assert 0 <= r.break_pos <= exported.pos, r


def test_a_forged_checkpoint_does_not_pass(ledger_server):
    server, connect = ledger_server
    busy(server, 3)
    head = sealed(server)
    execute(connect, ("UPDATE audit_head SET digest = ? WHERE id = 1", ("00" * 32,)))
    r = check(server)
    assert not r.intact and r.break_pos == head


def test_retention_leaves_a_signed_cut_and_the_rest_still_verifies(tmp_path):
    from conftest import FakeClock

    clock = FakeClock()
    server = ServerThread(tmp_path / "data", clock=clock, audit_retention=86400).start()
    try:
        busy(server, 3)
        old = sealed(server)
        clock.advance(2 * 86400)
        busy(server, 2, prefix="later")
        head = sealed(server)
        # the retention loop may have cut already; either way the cut is at ``old``
        deleted = server.run(server.app.replica.audit.prune())
        assert deleted in (0, old)
        r = check(server)
        assert r.intact and r.start == old and r.head == head
    finally:
        server.stop()


def test_the_stream_resumes_across_a_restart_without_loss_or_duplication(tmp_path):
    data = tmp_path / "data"
    p = ServerProcess(data).start()
    seen: list[int] = []
    try:
        _busy_process(p, "a")
        with p.client() as admin:
            for e in admin.watch_audit(follow=False):
                seen.append(e.pos)
        cursor = seen[-1]
    finally:
        p.terminate()
    p = ServerProcess(data).start()
    try:
        _busy_process(p, "b")
        with p.client() as admin:
            admin.audit_checkpoint()  # sealed up to now
            seen += [e.pos for e in admin.watch_audit(after_pos=cursor, follow=False)]
            everything = [e.pos for e in admin.watch_audit(follow=False)]
            assert admin.verify_audit().intact
    finally:
        p.stop()
    assert seen == everything == list(range(1, len(everything) + 1))


def _busy_process(p: ServerProcess, prefix: str) -> None:
    with p.client() as admin:
        for i in range(3):
            _, cred = admin.create_agent(f"{prefix}{i}", ["read:/d/**"])
            with p.client(cred) as agent:
                agent.verify(agent.issue("read:/d/*").token, "read", "/d/x")


def test_records_carry_refusals_failed_logins_and_the_request_shape(tmp_path):
    server = ServerThread(tmp_path / "data").start()
    try:
        with server.client() as admin:
            _, cred = admin.create_agent("shaper", ["read:/data/**"])
        with server.client(cred) as agent:
            token = agent.issue("read:/data/*").token
            with pytest.raises(Exception):
                agent.issue("write:/data/*")  # beyond its ceiling: refused and recorded
            agent.verify(token, "read", "/data/x", ctx={"tool": "search", "amount": "3"})
        for _ in range(3):
            with server.client("cg_not-a-credential") as stranger, pytest.raises(Exception):
                stranger.list_agents()
        with server.client() as admin:
            records = list(admin.watch_audit(follow=False))
        refused = [e for e in records if e.kind == "issue.refused"]
        assert refused and refused[0].principal == "shaper" and not refused[0].ok
        failed = [e for e in records if e.kind == "auth.failed"]
        assert len(failed) == 1 and failed[0].count == 3 and failed[0].principal == "unknown"
        allow = next(e for e in records if e.kind == "verify" and e.ok)
        assert allow.ctx_keys == ("amount", "tool") and allow.replica == server.settings.replica_id
    finally:
        server.stop()


def test_a_checkpoint_relabelled_as_a_retention_cut_does_not_pass(tmp_path):
    """Someone with write access to the store marks a kept checkpoint as a retention cut
    and deletes every record before it: a cut is signed as one, so this is found, with
    or without an exported checkpoint."""
    from conftest import FakeClock

    clock = FakeClock()
    server = ServerThread(tmp_path / "data", clock=clock, audit_checkpoint_every=60).start()
    try:
        busy(server, 2)
        with server.client() as admin:
            exported = admin.audit_checkpoint()
        for prefix in ("backdoor", "after"):
            clock.advance(120)  # each seal now keeps its checkpoint
            busy(server, 2, prefix=prefix)
            head = sealed(server)
        db = sqlite3.connect(server.settings.data_dir / "capgate.db", isolation_level=None)
        kept = [
            r[0] for r in db.execute("SELECT pos FROM audit_checkpoints WHERE pos < ?", (head,))
        ]
        x = max(kept)
        db.execute("UPDATE audit_checkpoints SET cut = 1 WHERE pos = ?", (x,))
        db.execute("DELETE FROM audit WHERE pos <= ?", (x,))
        db.close()
        for kw in ({}, {"against": exported}):
            r = check(server, **kw)
            assert not r.intact and r.break_pos == x and "retention cut" in r.reason, r
    finally:
        server.stop()


def test_a_record_written_into_the_store_by_someone_else_is_kept_out(ledger_server):
    """Each record carries the MAC of the server that wrote it: a row inserted straight
    into the store's unsealed tail is never sealed into the ledger, never listed as a
    record, and an ``audit.unvouched`` record (sealed) says what it claimed to be."""
    server, connect = ledger_server
    busy(server, 2)
    execute(
        connect,
        (
            "INSERT INTO audit (at, last_at, count, principal, kind, subject, ok, code, reason, "
            "chain, action, resource, presenter, detail, caveat, ctx_keys, replica) VALUES "
            "(?, ?, 1, 'admin', 'approval.approve', 'forged', 1, '', 'approved by the CFO', '', "
            "'pay', '/payments/9999', 'payer', '', '', '', '')",
            (1.7e9, 1.7e9),
        ),
    )
    with server.client() as admin:
        wait_for(
            lambda: any(e.kind == "audit.unvouched" for e in admin.watch_audit(follow=False)),
            timeout=30,
        )
        sealed_records = list(admin.watch_audit(follow=False))
        listed = admin.audit(limit=1000)
    assert not any(e.subject == "forged" for e in [*sealed_records, *listed])
    (report,) = [e for e in sealed_records if e.kind == "audit.unvouched"]
    detail = json.loads(report.detail)
    assert detail["count"] == 1 and detail["records"][0]["kind"] == "approval.approve"
    assert [e.pos for e in sealed_records] == list(range(1, len(sealed_records) + 1))
    assert check(server).intact
