"""The capgate CLI as an operator uses it, against a real server process."""

from __future__ import annotations

import json
import secrets

import pytest
from pymacaroons import Macaroon
from pymacaroons.serializers import BinarySerializer

from capgate import Token

from harness import ServerProcess, cli


@pytest.fixture(scope="module")
def proc(tmp_path_factory):
    p = ServerProcess(tmp_path_factory.mktemp("cli") / "data").start()
    yield p
    p.stop()


def run(proc, *args, credential=None, stdin=None):
    return cli(
        *args, server=proc.address, credential=credential or proc.admin_credential, stdin=stdin
    )


def jrun(proc, *args, credential=None, stdin=None, expect=0):
    r = run(proc, "--json", *args, credential=credential, stdin=stdin)
    assert r.returncode == expect, r.stderr
    return json.loads(r.stdout)


def new_agent(proc, grant="read,write:/data/**", *extra):
    name = "a-" + secrets.token_hex(3)
    out = jrun(proc, "agent", "create", name, "--grant", grant, *extra)
    assert out["agent"] == name and out["credential"].startswith("cg_")
    return name, out["credential"]


def test_walkthrough_issue_attenuate_verify_revoke(proc):
    name, cred = new_agent(proc, "read,write:/data/**", "--max-ttl", "1h")
    issued = jrun(
        proc, "token", "issue", "--grant", "read:/data/reports/*", "--ttl", "15m", credential=cred
    )
    assert set(issued) == {"token", "token_id", "expires"}
    token = issued["token"]
    narrowed = run(proc, "token", "attenuate", token, "--resource", "/data/reports/q3")
    assert narrowed.returncode == 0
    narrowed = narrowed.stdout.strip()
    ok = jrun(
        proc,
        "token",
        "verify",
        narrowed,
        "--action",
        "read",
        "--resource",
        "/data/reports/q3",
        "--agent",
        name,
    )
    assert ok["allowed"] is True and ok["reason"] == "allowed"
    no = jrun(
        proc,
        "token",
        "verify",
        narrowed,
        "--action",
        "read",
        "--resource",
        "/data/reports/q4",
        "--agent",
        name,
        expect=1,
    )
    assert no["allowed"] is False and "resource /data/reports/q3" in no["reason"]
    human = run(
        proc,
        "token",
        "verify",
        narrowed,
        "--action",
        "write",
        "--resource",
        "/data/reports/q3",
        "--agent",
        name,
    )
    assert human.returncode == 1 and human.stdout.startswith("denied: ")
    revoked = jrun(proc, "token", "revoke", issued["token_id"])
    assert revoked["revoked"] == issued["token_id"] and revoked["newly_revoked"]
    gone = jrun(
        proc,
        "token",
        "verify",
        narrowed,
        "--action",
        "read",
        "--resource",
        "/data/reports/q3",
        "--agent",
        name,
        expect=1,
    )
    assert "revoked" in gone["reason"]


def test_pymacaroons_attenuated_token_through_the_cli(proc):
    name, cred = new_agent(proc)
    token = jrun(proc, "token", "issue", "--grant", "read,write:/data/x/*", credential=cred)[
        "token"
    ]
    m = Macaroon.deserialize(token)
    m.add_first_party_caveat("action in read")
    narrowed = m.serialize(serializer=BinarySerializer())
    r = run(
        proc,
        "token",
        "verify",
        narrowed,
        "--action",
        "read",
        "--resource",
        "/data/x/1",
        "--agent",
        name,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(
        proc,
        "token",
        "verify",
        narrowed,
        "--action",
        "write",
        "--resource",
        "/data/x/1",
        "--agent",
        name,
    )
    assert r.returncode == 1 and "action in read" in r.stdout


def test_token_from_stdin_and_inspect_offline(proc):
    name, cred = new_agent(proc)
    token = jrun(proc, "token", "issue", "--grant", "read:/data/*", credential=cred)["token"]
    info = jrun(proc, "token", "inspect", "-", stdin=token + "\n")
    assert info["chain"][0]["agent"] == name and "action in read" in info["caveats"]
    online = jrun(proc, "token", "inspect", token, "--online")
    assert online["signature_valid"] is True and online["status"] == "valid"
    text = run(proc, "token", "inspect", token).stdout
    assert f"issued to {name}" in text


def test_every_command_speaks_one_json_object(proc):
    name, cred = new_agent(proc)
    outputs = [
        jrun(proc, "agent", "list"),
        jrun(proc, "agent", "show", name),
        jrun(proc, "agent", "update", name, "--grant", "read:/data/**"),
        jrun(proc, "agent", "suspend", name),
        jrun(proc, "agent", "resume", name),
        jrun(proc, "agent", "revoke-all", name),
        jrun(proc, "service", "create", "svc-" + secrets.token_hex(3)),
        jrun(proc, "audit", "--limit", "5"),
    ]
    assert all(isinstance(o, dict) for o in outputs)
    assert outputs[1]["agent"] == name and outputs[2]["ceiling"] == ["read:/data/**"]
    assert outputs[3]["status"] == "suspended" and outputs[5]["epoch"] == 1


@pytest.mark.parametrize(
    "args, words",
    [
        (
            ("token", "verify", "garbage", "--action", "read", "--resource", "/x", "--agent", "a"),
            None,
        ),
        (("token", "attenuate", "garbage!", "--action", "read"), "not base64url"),
        (("token", "revoke", "not-a-token-or-id"), "does not verify"),
        (("agent", "create", "bad id", "--grant", "read:/x"), "invalid agent id"),
        (("agent", "create", "x", "--grant", "read"), "ACTIONS:RESOURCE"),
        (("agent", "show", "nobody-here"), "not found"),
        (("token", "issue", "--grant", "read:/x"), "not open to the admin role"),
        (("token", "attenuate", "-", "--ttl", "soon"), None),
    ],
)
def test_errors_are_one_line_with_exit_2(proc, args, words):
    r = run(proc, *args, stdin="")
    if args[1] == "verify":  # a malformed token is a deny, not an error
        assert r.returncode == 1 and "malformed" in r.stdout
        return
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("capgate: error: ")
    if words:
        assert words in lines[0]
    j = run(proc, "--json", *args, stdin="")
    assert json.loads(j.stdout)["error"]


def test_missing_credential_and_unreachable_server(proc, tmp_path):
    r = cli("agent", "list", server=proc.address, env={"CAPGATE_CREDENTIAL": ""})
    assert r.returncode == 2 and "no credential" in r.stderr
    r = cli("agent", "list", server="127.0.0.1:1", credential="cg_x", env={})
    assert r.returncode == 2 and r.stderr.startswith("capgate: error:")
    cred = tmp_path / "cred"
    cred.write_text(proc.admin_credential + "\n")
    r = cli(
        "agent",
        "list",
        "--credential-file",
        str(cred),
        server=proc.address,
        env={"CAPGATE_CREDENTIAL": ""},
    )
    assert r.returncode == 0, r.stderr


def test_secrets_on_disk_are_private(proc):
    for name in ("admin.credential", "kek.key", "capgate.db"):
        assert (proc.data_dir / name).stat().st_mode & 0o777 == 0o600, name
    assert proc.data_dir.stat().st_mode & 0o777 == 0o700


def test_bench_loads_a_live_server(proc):
    name, cred = new_agent(proc)
    token = jrun(proc, "token", "issue", "--grant", "read:/data/*", credential=cred)["token"]
    svc = jrun(proc, "service", "create", "svc-" + secrets.token_hex(3))["credential"]
    r = jrun(
        proc,
        "bench",
        token,
        "--action",
        "read",
        "--resource",
        "/data/x",
        "--agent",
        name,
        "--duration",
        "0.5",
        "--concurrency",
        "4",
        "--batch",
        "16",
        credential=svc,
    )
    assert r["checks"] > 0 and r["allowed"] == r["checks"] and r["checks_per_second"] > 0
    r = jrun(
        proc,
        "bench",
        token,
        "--action",
        "write",
        "--resource",
        "/data/x",
        "--agent",
        name,
        "--duration",
        "0.3",
        "--concurrency",
        "2",
        credential=svc,
    )
    assert r["checks"] > 0 and r["allowed"] == 0


def test_principals_from_the_cli(proc, tmp_path):
    name = "svc-" + secrets.token_hex(3)
    svc = jrun(proc, "service", "create", name)["credential"]
    listed = {p["id"]: p for p in jrun(proc, "principal", "list")["principals"]}
    assert listed[name]["role"] == "service" and listed[name]["disabled"] is False
    assert jrun(proc, "principal", "disable", name)["disabled"] is True
    r = run(proc, "agent", "list", credential=svc)
    assert r.returncode == 2 and "disabled" in r.stderr
    jrun(proc, "principal", "enable", name)
    out = tmp_path / "rotated.cred"
    rotated = jrun(proc, "principal", "rotate", name, "--credential-out", str(out))
    assert rotated["principal"] == name and out.stat().st_mode & 0o777 == 0o600
    human = run(proc, "principal", "list").stdout
    assert name in human and "enabled" in human


def test_deleting_an_agent_from_the_cli(proc):
    name, cred = new_agent(proc)
    token = jrun(proc, "token", "issue", "--grant", "read:/data/*", credential=cred)["token"]
    assert jrun(proc, "agent", "delete", name)["deleted"] is True
    gone = jrun(
        proc,
        "token",
        "verify",
        token,
        "--action",
        "read",
        "--resource",
        "/data/x",
        "--agent",
        name,
        expect=1,
    )
    assert gone["code"] == "unknown_agent"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--duration", "nan"], "--duration"),
        (["--duration", "inf"], "--duration"),
        (["--duration", "0"], "--duration"),
        (["--concurrency", "100000"], "--concurrency"),
        (["--concurrency", "0"], "--concurrency"),
        (["--batch", "5000"], "--batch"),
        (["--cold", "nan"], "--cold"),
        (["--clients", "0"], "--clients"),
        (["--clients", "2,x"], "--clients"),
    ],
)
def test_bench_refuses_bad_settings_before_loading_anything(proc, args, words):
    r = run(proc, "bench", "TOKEN", "--action", "read", "--resource", "/data/x", *args)
    assert r.returncode == 2 and r.stderr.startswith("capgate: error:") and words in r.stderr


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "soon"])
@pytest.mark.parametrize("command", [["agent", "list"], ["health"]])
def test_a_deadline_no_call_could_meet_is_a_usage_error(proc, value, command):
    r = run(proc, "--timeout", value, *command)
    assert r.returncode == 2 and "--timeout takes seconds" in r.stderr, r.stderr


def test_admin_recover_writes_a_new_credential_locally(tmp_path):
    data = tmp_path / "data"
    p = ServerProcess(data).start()
    try:
        old = p.admin_credential
        r = cli("admin", "recover", "--data-dir", str(data))
        assert r.returncode == 0, r.stderr
        new = (data / "admin.credential").read_text().strip()
        assert new != old and (data / "admin.credential").stat().st_mode & 0o777 == 0o600
        r = cli("principal", "list", server=p.address, credential=new)
        assert r.returncode == 0, r.stderr
        r = cli("principal", "list", server=p.address, credential=old)
        assert r.returncode == 2
    finally:
        p.stop()


def test_attacker_text_never_reaches_the_terminal_raw(proc):
    """A caveat (or anything else an attacker writes) with terminal escapes is shown
    escaped by every human output: inspect, the error line, audit."""
    name, cred = new_agent(proc)
    token = jrun(proc, "token", "issue", "--grant", "read:/data/*", credential=cred)["token"]
    evil = Token.parse(token).append_raw(b"x \x1b[2J\x1b]0;pwned\x07 \xe2\x80\xae").to_text()
    for args in (
        ("token", "inspect", evil),
        ("token", "inspect", evil, "--online"),
        ("token", "verify", evil, "--action", "read", "--resource", "/data/x", "--agent", name),
        ("audit", "--limit", "50"),
    ):
        r = run(proc, *args)
        assert "\x1b" not in r.stdout + r.stderr and "\x07" not in r.stdout + r.stderr
        assert "\u202e" not in r.stdout + r.stderr
    shown = run(proc, "token", "inspect", evil).stdout
    assert "\\x1b[2J" in shown


def test_bench_from_several_processes_streams_cold_tokens_and_plots(proc, tmp_path):
    name, cred = new_agent(proc)
    token = jrun(proc, "token", "issue", "--grant", "read:/data/*", credential=cred)["token"]
    svc = jrun(proc, "service", "create", "svc-" + secrets.token_hex(3))["credential"]
    png = tmp_path / "load.png"
    r = jrun(
        proc,
        "bench",
        token,
        "--action",
        "read",
        "--resource",
        "/data/x",
        "--agent",
        name,
        "--mode",
        "stream",
        "--batch",
        "8",
        "--clients",
        "1,2",
        "--concurrency",
        "2",
        "--duration",
        "0.5",
        "--cold",
        "0.5",
        "--plot",
        str(png),
        credential=svc,
    )
    assert [run["clients"] for run in r["runs"]] == [1, 2]
    assert all(
        run["checks"] > 0
        and run["allowed"] == run["checks"]
        and run["errors"] == 0
        and run["p99_ms"] >= run["p50_ms"] > 0
        for run in r["runs"]
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    human = run(
        proc,
        "bench",
        token,
        "--action",
        "read",
        "--resource",
        "/data/x",
        "--agent",
        name,
        "--duration",
        "0.3",
        "--clients",
        "1",
        credential=svc,
    ).stdout
    assert human.splitlines()[0].split() == [
        "mode",
        "clients",
        "checks/s",
        "calls/s",
        "p50",
        "ms",
        "p99",
        "ms",
        "allowed",
        "errors",
    ]


def test_serve_takes_limits_and_audit_retention(tmp_path):
    for bad, words in (
        (["--limit", "nope=1"], "--limit takes NAME=VALUE"),
        (["--limit", "calls_per_principal=-3"], "must be positive"),
        (["--audit-retention", "soon"], "not a duration"),
    ):
        r = cli("serve", "--data-dir", str(tmp_path / "x"), "--listen", "127.0.0.1:0", *bad)
        assert r.returncode == 2 and words in r.stderr, r.stderr
    p = ServerProcess(
        tmp_path / "data",
        [
            "--limit",
            "max_message=2048",
            "--limit",
            "calls_per_principal=8",
            "--audit-retention",
            "7d",
        ],
    )
    p.start()
    try:
        r = cli(
            "--json",
            "token",
            "verify",
            "A" * 4000,
            "--action",
            "read",
            "--resource",
            "/x",
            server=p.address,
            credential=p.admin_credential,
        )
        assert r.returncode == 2 and "ResourceExhaustedError" in r.stdout  # over 2 KiB
    finally:
        p.stop()
