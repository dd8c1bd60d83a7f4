"""Containment across a fleet on PostgreSQL: an agent deviates at one replica and is
contained at every replica, once; the alert is raised once fleet-wide, though both
replicas saw the deviation. The delay from the first deviating decision until both
replicas deny is measured and printed (``benchmarks/scenario_figures.py`` reports it),
never asserted against a clock."""

from __future__ import annotations

import pytest

from harness import ServerProcess
from scenario import contain_across

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def fleet(tmp_path, pg_url):
    from capgate_server import new_kek_text

    kek = tmp_path / "kek"
    kek.write_text(new_kek_text())
    replicas = [
        ServerProcess(
            tmp_path / name, ["--store", pg_url, "--kek-file", str(kek), "--poll-interval", "0.5"]
        ).start()
        for name in ("a", "b")
    ]
    yield replicas, replicas[0].admin_credential
    for p in replicas:
        p.stop()


def test_a_deviation_at_one_replica_is_contained_at_every_replica_once(fleet):
    (a, b), admin_cred = fleet
    figures = contain_across(a.address, b.address, admin_cred)
    print("fleet containment:", figures)
    assert figures["contained_a_ms"] >= 0 and figures["contained_b_ms"] >= 0
    assert figures["status_a"] and figures["status_b"]
    assert figures["alerts"] == 1
