"""The README's walkthrough, run as written against a real server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from harness import ServerProcess

ROOT = Path(__file__).resolve().parent.parent


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_readme_walkthrough_works_as_written(tmp_path):
    blocks = sh_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 8
    data = tmp_path / "server-data"
    p = ServerProcess(data).start()
    try:
        work = tmp_path / "work"
        work.mkdir()
        (work / ".capgate").symlink_to(data)
        (work / ".venv").symlink_to(Path(sys.prefix))
        script = "set -euo pipefail\n" + "\n".join(blocks)
        env = {**os.environ, "CAPGATE_SERVER": p.address}
        env.pop("CAPGATE_CREDENTIAL", None)
        r = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                           text=True, timeout=240)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        out = r.stdout
        # the allows and denies the prose promises
        assert "refused, as it should be" in out
        assert out.count("allowed") >= 6
        for words in ("denied: revoked", "denied: suspended", "denied: ceiling",
                      "denied: epoch"):
            assert words in out, words
        assert "<REVOKED>" in out  # the tree shows the revoked branch
        assert (work / "reporter.cred").stat().st_mode & 0o777 == 0o600
    finally:
        p.stop()
