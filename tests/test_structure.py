"""The shape of the house: packages meet only through their public faces.

No module imports another package's ``_private`` module, and the layers point
down only: cli → client/server → core/protos. Tests may reach into the
internals of the one module they test; those exceptions are listed here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {
    "capgate": ROOT / "core" / "capgate",
    "capgate_proto": ROOT / "protos" / "capgate_proto",
    "capgate_client": ROOT / "client" / "capgate_client",
    "capgate_server": ROOT / "server" / "capgate_server",
    "capgate_cli": ROOT / "cli" / "capgate_cli",
}
# what each package may import (besides itself)
ALLOWED = {
    "capgate": set(),
    "capgate_proto": set(),
    "capgate_client": {"capgate", "capgate_proto"},
    "capgate_server": {"capgate", "capgate_proto"},
    "capgate_cli": {"capgate", "capgate_proto", "capgate_client", "capgate_server"},
}
# tests of one module's internals (forging raw tokens, patching a module constant)
INTERNAL_TESTS = {
    "tests/core/test_delegation.py": {"capgate._token"},
    "tests/core/test_verifier.py": {"capgate._verifier"},
    # the verifier's quick readers (V2 bytes, expiries) against the strict parsers
    "tests/core/test_prop_parsing.py": {"capgate._caveats", "capgate._codec"},
    "tests/server/test_server.py": {"capgate_server._replica"},
    # the budget counter alone, and the server's decision layer measured without the network
    "tests/server/test_budgets.py": {"capgate_server._budgets"},
    "benchmarks/test_budgets.py": {"capgate_server._verification"},
    "benchmarks/test_governance.py": {"capgate_server._baselines", "capgate_server._usage"},
    # deviation detection and access review as pure functions of usage
    "tests/server/test_baselines.py": {"capgate_server._baselines", "capgate_server._review"},
    # two workers of one host side by side in one process, one cut off from the store
    "tests/server/test_workers.py": {"capgate_server._siblings"},
    # the batch split on the wire format, against protobuf's own reading
    "tests/server/test_verdicts.py": {"capgate_server._verdicts"},
}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def _first_party(name: str) -> str | None:
    top = name.split(".")[0]
    return top if top in PACKAGES else None


def _is_private(name: str) -> bool:
    return any(part.startswith("_") for part in name.split(".")[1:])


def _python_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.py") if "v1" not in p.parts or p.parent.name != "v1"]


def test_packages_import_only_downwards_and_only_public_faces():
    wrong = []
    for package, folder in PACKAGES.items():
        if package == "capgate_proto":
            continue  # generated
        for path in _python_files(folder):
            for name in _imports(path):
                other = _first_party(name)
                if other is None or other == package:
                    continue
                if other not in ALLOWED[package]:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name} (upwards)")
                elif _is_private(name):
                    wrong.append(f"{path.relative_to(ROOT)} imports private {name}")
    assert not wrong, "\n".join(wrong)


def test_tests_and_benchmarks_import_public_names():
    wrong = []
    for folder in (ROOT / "tests", ROOT / "benchmarks"):
        for path in folder.rglob("*.py"):
            rel = str(path.relative_to(ROOT))
            for name in _imports(path):
                if (
                    _first_party(name)
                    and _is_private(name)
                    and name not in INTERNAL_TESTS.get(rel, ())
                ):
                    wrong.append(f"{rel} imports private {name}")
    assert not wrong, "\n".join(wrong)
