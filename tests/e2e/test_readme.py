"""The README's walkthrough, run as written against real servers, in a copy of the
repository that must end with an empty ``git status``: everything the walkthrough
writes (credentials, keys, replica logs) lands where git ignores it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import PG_URL, ServerProcess

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
from drop_walkthrough_schemas import drop  # noqa: E402


def sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def _copy_of_the_repository(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run([*git, *args], cwd=dest, check=True, capture_output=True)
    return dest


@pytest.mark.postgres  # the fleet section runs two replicas on PostgreSQL
def test_readme_walkthrough_works_as_written(tmp_path):
    repo = _copy_of_the_repository(tmp_path / "repo")
    blocks = sh_blocks((repo / "README.md").read_text())
    assert len(blocks) >= 10
    p = ServerProcess(repo / ".capgate").start()  # what `make serve` made
    try:
        (repo / ".venv").symlink_to(Path(sys.prefix))
        script = "set -euo pipefail\n" + "\n".join(blocks)
        env = {**os.environ, "CAPGATE_SERVER": p.address, "CAPGATE_TEST_PG": PG_URL}
        env.pop("CAPGATE_CREDENTIAL", None)
        r = subprocess.run(
            ["bash", "-c", script], cwd=repo, env=env, capture_output=True, text=True, timeout=300
        )
        work = repo / ".walkthrough"
        logs = "".join(
            (work / f).read_text()
            for f in ("replica-a.log", "replica-b.log")
            if (work / f).exists()
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + logs[-2000:]
    finally:
        p.stop()
        drop(PG_URL)
    out = r.stdout
    # the allows and denies the prose promises
    assert "refused, as it should be" in out
    assert out.count("allowed") >= 7
    for words in (
        "denied: revoked",
        "denied: suspended",
        "denied: ceiling",
        "denied: epoch",
        "denied at B: revoked at A",
        "denied: approval required",
        "denied: approval used",
        "denied: another request",
        "denied by the approver",
        "approval.use",
        "denied: contained",
        "governance.contain",
        "read /wiki/hr/** for the first time",
        "denied by every worker",
    ):
        assert words in out, words
    assert "<REVOKED>" in out and "<revoked above>" in out
    assert (work / "reporter.cred").stat().st_mode & 0o777 == 0o600
    status = subprocess.run(
        ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    assert status == "", f"the walkthrough left files git would see:\n{status}"
