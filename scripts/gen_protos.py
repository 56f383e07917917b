"""Regenerate the Python stubs and type stubs in src/audiomemory/v1 from protos/.

Run with `make protos`. `--check` regenerates into a temporary folder and fails
if anything differs from what is committed (CI runs it).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
OUT_ROOT = ROOT / "src"
PACKAGE = Path("audiomemory") / "v1"
INIT = '"""Generated protobuf and gRPC code for the audiomemory.v1 wire contract. Do not edit."""\n'


def generate(out_root: Path) -> list[Path]:
    # protoc finds the mypy plugins on PATH; they live beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    protos = sorted((PROTO_ROOT / PACKAGE).glob("*.proto"))
    if not protos:
        raise SystemExit(f"no .proto files under {PROTO_ROOT / PACKAGE}")
    (out_root / PACKAGE).mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out_root / PACKAGE / "__init__.py").write_text(INIT)
    (out_root / PACKAGE / "py.typed").write_text("")
    return sorted(p for p in (out_root / PACKAGE).iterdir() if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args()
    if not args.check:
        target = OUT_ROOT / PACKAGE
        for old in target.glob("*_pb2*"):
            old.unlink()
        files = generate(OUT_ROOT)
        print(f"generated {len(files)} files in {target.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed = OUT_ROOT / PACKAGE
        names = {p.name for p in fresh}
        stale = [p.name for p in fresh if not (committed / p.name).exists()
                 or not filecmp.cmp(p, committed / p.name, shallow=False)]
        extra = [p.name for p in committed.iterdir() if p.is_file() and p.name not in names]
        if stale or extra:
            print(f"generated code is out of sync with protos/: differs {stale}, not generated {extra}; "
                  "run `make protos`", file=sys.stderr)
            return 1
    print("generated code is in sync with protos/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
