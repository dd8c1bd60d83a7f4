"""The README's walkthrough, run as written against real servers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from harness import ServerProcess, pg_schema

ROOT = Path(__file__).resolve().parents[2]


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


@pytest.mark.postgres  # the fleet section runs two replicas on PostgreSQL
def test_readme_walkthrough_works_as_written(tmp_path):
    blocks = sh_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 10
    data = tmp_path / "server-data"
    p = ServerProcess(data).start()
    try:
        with pg_schema() as url:
            work = tmp_path / "work"
            work.mkdir()
            (work / ".capgate").symlink_to(data)  # what `make serve` made
            (work / ".venv").symlink_to(Path(sys.prefix))
            script = "set -euo pipefail\n" + "\n".join(blocks)
            env = {**os.environ, "CAPGATE_SERVER": p.address,
                   # the fleet section's tables go to this test's own schema
                   "PGOPTIONS": urllib.parse.unquote(url.split("options=", 1)[1])}
            env.pop("CAPGATE_CREDENTIAL", None)
            r = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                               text=True, timeout=300)
            logs = "".join((work / f).read_text() for f in ("replica-a.log", "replica-b.log")
                           if (work / f).exists())
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + logs[-2000:]
    finally:
        p.stop()
    out = r.stdout
    # the allows and denies the prose promises
    assert "refused, as it should be" in out
    assert out.count("allowed") >= 7
    for words in ("denied: revoked", "denied: suspended", "denied: ceiling", "denied: epoch",
                  "denied at B: revoked at A"):
        assert words in out, words
    assert "<REVOKED>" in out and "<revoked above>" in out
    assert (work / "reporter.cred").stat().st_mode & 0o777 == 0o600
