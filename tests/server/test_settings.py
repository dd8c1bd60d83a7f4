"""Every number a server is configured with is checked before it starts: NaN, the
infinities and values out of range are refused, by the CLI with a usage error and
before anything is written, and by the Python API with ``InvalidArgumentError``."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path

import pytest

from capgate import InvalidArgumentError
from capgate_server import CapgateServer, Settings, serve_workers
from capgate_server.store import SessionTimeouts

from harness import cli

NUMERIC = [
    f.name
    for f in dataclasses.fields(Settings)
    if type(f.default) in (int, float)  # bool settings are not numbers
]


def test_the_defaults_are_in_range() -> None:
    Settings().check()
    assert len(NUMERIC) >= 20  # every numeric setting is covered below


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, -1, 1e15])
def test_every_numeric_setting_refuses_nan_infinities_and_out_of_range(name, bad) -> None:
    with pytest.raises(InvalidArgumentError) as e:
        Settings(**{name: bad}).check()
    assert "must be from" in e.value.message


@pytest.mark.parametrize("name", ["statement", "lock", "idle_in_transaction"])
def test_session_timeouts_are_checked_too(name) -> None:
    with pytest.raises(InvalidArgumentError):
        Settings(db_timeouts=SessionTimeouts(**{name: math.nan})).check()
    Settings(db_timeouts=SessionTimeouts(**{name: 0})).check()  # 0 turns one off


def test_a_server_and_a_worker_pool_refuse_to_start_on_bad_settings(tmp_path: Path) -> None:
    bad = Settings(data_dir=tmp_path / "d", listen="127.0.0.1:0", prune_margin=-1.0)
    with pytest.raises(InvalidArgumentError, match="prune-margin"):
        CapgateServer(bad)
    bad = Settings(data_dir=tmp_path / "d", listen="127.0.0.1:0", stale_after=math.nan)
    with pytest.raises(InvalidArgumentError, match="stale-after"):
        asyncio.run(serve_workers(bad, 2))
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--stale-after", "nan"),  # would never call the replica stale: fail open
        ("--prune-margin", "-60"),  # would forget revocations before their tokens expire
        ("--proof-window", "inf"),
        ("--poll-interval", "0"),
        ("--max-clock-skew", "-1"),
        ("--shutdown-grace", "nan"),
        ("--db-statement-timeout", "inf"),
        ("--budget-block", "0"),
        ("--approval-wait", "0s"),
    ],
)
def test_serve_refuses_a_bad_number_before_writing_anything(tmp_path, flag, value) -> None:
    data = tmp_path / "d"
    r = cli("serve", "--data-dir", str(data), "--listen", "127.0.0.1:0", flag, value)
    assert r.returncode == 2 and r.stderr.startswith("capgate: error:"), r.stderr
    assert flag in r.stderr or "--approval" in r.stderr
    assert not data.exists()
