"""The rough edges of a newcomer's first hour: each routine mistake gets one clear line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness import CAPGATE, ServerProcess, cli


@pytest.fixture(scope="module")
def proc(tmp_path_factory):
    p = ServerProcess(tmp_path_factory.mktemp("hour") / "data").start()
    yield p
    p.stop()


def run(proc, *args, credential=None):
    return cli(*args, server=proc.address, credential=credential or proc.admin_credential)


def one_error_line(r) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_a_second_server_on_a_taken_port_says_so_in_one_line(proc, tmp_path):
    port = proc.address.rsplit(":", 1)[1]
    r = cli("serve", "--data-dir", str(tmp_path / "two"), "--listen", f"127.0.0.1:{port}")
    assert "cannot listen on" in one_error_line(r) and "in use" in r.stderr


def test_a_server_that_is_not_running_is_named_plainly():
    r = cli("agent", "list", server="127.0.0.1:1", credential="cg_x")
    line = one_error_line(r)
    assert "cannot reach the capgate server at 127.0.0.1:1" in line and "running" in line


def test_a_closed_pipe_is_not_an_error(proc):
    with proc.client() as admin:
        for i in range(300):
            admin.create_agent(f"pipe-{i}", ["read:/data/**"], description="x" * 200)
    r = subprocess.run(
        " ".join([*CAPGATE, "--json", "agent", "list", "|", "head", "-c", "10"]),
        shell=True,
        capture_output=True,
        text=True,
        env={
            "CAPGATE_SERVER": proc.address,
            "CAPGATE_CREDENTIAL": proc.admin_credential,
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": ":".join(sys.path),
        },
    )
    assert r.stdout == '{"agents":' and r.stderr == ""


@pytest.mark.parametrize(
    "args, words",
    [
        (("agent", "create", "t1", "--grant", "read:/x/**", "--max-ttl", "1"), "needs a unit: 1s"),
        (("agent", "create", "t2", "--grant", "read:/a/**,/b/**"), "one grant per pattern"),
        (("token", "issue", "--grant", "read:/x"), "use an agent's credential"),
    ],
)
def test_foot_guns_are_refused_with_the_fix_named(proc, args, words):
    assert words in one_error_line(run(proc, *args))


def test_a_grant_typo_is_warned_of(proc):
    r = run(
        proc,
        "agent",
        "create",
        "typo",
        "--grant",
        "reed:/data/**",
        "--credential-out",
        "/dev/null/x",
    )  # the warning comes before any write
    assert "action 'reed' is in no other agent's ceiling; did you mean 'read'?" in r.stderr


def test_inspect_marks_an_expired_token(proc):
    cred = json.loads(
        run(proc, "--json", "agent", "create", "old", "--grant", "read:/data/**").stdout
    )["credential"]
    token = run(proc, "token", "issue", "--grant", "read:/data/*", credential=cred).stdout.strip()
    past = run(
        proc, "token", "attenuate", token, "--caveat", "expires < 2020-01-01T00:00:00Z"
    ).stdout.strip()
    assert "<EXPIRED>" in run(proc, "token", "inspect", past).stdout
    assert "<EXPIRED>" not in run(proc, "token", "inspect", token).stdout
    assert json.loads(run(proc, "--json", "token", "inspect", past).stdout)["expired"] is True
