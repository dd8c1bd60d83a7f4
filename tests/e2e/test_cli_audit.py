"""``capgate audit`` as an auditor uses it: the table, verify, checkpoint, export, follow."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time

import pytest

from harness import CAPGATE, ServerProcess, cli


@pytest.fixture(scope="module")
def proc(tmp_path_factory):
    p = ServerProcess(tmp_path_factory.mktemp("audit") / "data").start()
    with p.client() as admin:
        for i in range(3):
            _, cred = admin.create_agent(f"clerk-{i}", ["read:/ledger/**"])
            with p.client(cred) as agent:
                token = agent.issue("read:/ledger/*").token
                agent.verify(token, "read", "/ledger/x")
                agent.verify(token, "write", "/ledger/x")
    yield p
    p.stop()


def run(proc, *args):
    return cli(*args, server=proc.address, credential=proc.admin_credential)


def test_the_table_shows_the_newest_first_under_a_header(proc):
    r = run(proc, "audit", "--last", "5")
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[0].split()[:4] == ["SEQ", "TIME", "PRINCIPAL", "KIND"]
    seqs = [int(line.split()[0]) for line in lines[1:]]
    assert len(seqs) == 5 and seqs == sorted(seqs, reverse=True)
    denied = run(proc, "audit", "--denied", "--kind", "verify").stdout
    assert "DENY" in denied and "write /ledger/x" in denied and " ok " not in denied


def test_verify_checkpoint_and_export(proc, tmp_path):
    r = run(proc, "audit", "verify")
    assert r.returncode == 0 and r.stdout.startswith("intact:"), r.stdout + r.stderr
    head = tmp_path / "head.json"
    assert run(proc, "audit", "checkpoint", "--out", str(head)).returncode == 0
    assert json.loads(head.read_text())["signature"]
    r = run(proc, "audit", "verify", "--against", str(head))
    assert r.returncode == 0 and "extends the exported checkpoint" in r.stdout
    out = tmp_path / "audit.jsonl"
    assert run(proc, "audit", "export", "--since", "0", "--out", str(out)).returncode == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["pos"] for r in rows] == list(range(1, len(rows) + 1))
    assert set(rows[0]) == {
        "pos",
        "seq",
        "at",
        "last_at",
        "count",
        "principal",
        "kind",
        "subject",
        "ok",
        "code",
        "reason",
        "caveat",
        "chain",
        "action",
        "resource",
        "presenter",
        "ctx_keys",
        "replica",
        "detail",
        "digest",
    }
    recent = run(proc, "audit", "export", "--since", "1h", "--kind", "verify").stdout
    assert recent and all(json.loads(line)["kind"] == "verify" for line in recent.splitlines())


def test_follow_streams_a_new_record_as_it_is_sealed(proc):
    env = {
        **os.environ,
        "CAPGATE_SERVER": proc.address,
        "CAPGATE_CREDENTIAL": proc.admin_credential,
    }
    follower = subprocess.Popen(
        [*CAPGATE, "--json", "audit", "--follow", "--last", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert json.loads(follower.stdout.readline())  # the last record, then new ones
        time.sleep(0.3)
        with proc.client() as admin:
            admin.create_agent("newcomer", ["read:/ledger/**"])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            record = json.loads(follower.stdout.readline())
            if record["kind"] == "agent.create" and record["subject"] == "newcomer":
                break
        else:
            pytest.fail("the new record never came")
    finally:
        follower.kill()
        follower.wait(5)


def test_verify_exits_1_and_names_the_break_after_an_edit(tmp_path):
    p = ServerProcess(tmp_path / "data").start()
    try:
        with p.client() as admin:
            for i in range(4):
                admin.create_agent(f"a{i}", ["read:/x/**"])
            admin.audit_checkpoint()
        db = sqlite3.connect(tmp_path / "data" / "capgate.db", isolation_level=None)
        db.execute("UPDATE audit SET principal = 'someone-else' WHERE pos = 3")
        db.close()
        r = cli("audit", "verify", server=p.address, credential=p.admin_credential)
        assert r.returncode == 1 and r.stdout.startswith("BROKEN at 3:"), r.stdout
        j = json.loads(
            cli("--json", "audit", "verify", server=p.address, credential=p.admin_credential).stdout
        )
        assert j["intact"] is False and j["break_pos"] == 3
    finally:
        p.stop()
