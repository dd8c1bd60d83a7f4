"""Regenerate the gRPC stubs in protos/capgate_proto/v1 from the .proto files beside them.

    python tools/gen_protos.py           write the stubs
    python tools/gen_protos.py --check   exit 1 if the committed stubs are stale

The proto package is ``capgate.v1`` (the wire names: ``/capgate.v1.VerifierService/Verify``),
but the files live at ``capgate_proto/v1/*.proto``: protoc names Python modules after
the file path, so stubs generated anywhere are ``capgate_proto.v1.*`` and never shadow
``capgate``, the gRPC-free core package. Nothing is rewritten after protoc.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "protos"
OUT = SRC / "capgate_proto" / "v1"


def generate(out: Path) -> dict[str, bytes]:
    protos = sorted(str(p.relative_to(SRC)) for p in OUT.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{SRC}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--pyi_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    files = {}
    for path in sorted((out / "capgate_proto" / "v1").iterdir()):
        files[path.name] = path.read_bytes()
    files["__init__.py"] = b'"""Generated gRPC stubs for capgate.v1 (tools/gen_protos.py)."""\n'
    return files


def main() -> int:
    check = "--check" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        files = generate(Path(tmp))
    if check:
        present = {
            p.name: p.read_bytes() for p in OUT.glob("*") if p.is_file() and p.suffix != ".proto"
        }
        if present != files:
            differ = {n for n in files if present.get(n) != files[n]}
            stale = sorted(set(present) ^ set(files) | differ)
            print(f"gRPC stubs are stale ({', '.join(stale)}): run `make protos`", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*"):
        if old.is_file() and old.suffix != ".proto" and old.name not in files:
            old.unlink()
    for name, data in files.items():
        (OUT / name).write_bytes(data)
    print(f"wrote {len(files)} files to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
