"""Generate the Python code for proto/ (and check that the committed code is current).

    python tools/gen_proto.py          # regenerate into gateway/api/...
    python tools/gen_proto.py --check  # exit 1 when the committed code differs

The .proto paths mirror the Python package (proto/gateway/api/v1/x.proto -> gateway/api/v1/).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # only needed by developers and CI

    sources = sorted(PROTO.rglob("*.proto"))
    if not sources:
        raise SystemExit("no .proto files under proto/")
    include = Path(protoc.__file__).parent / "_proto"
    # the mypy-protobuf plugins are installed beside this interpreter
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *[str(s) for s in sources],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p for p in out.rglob("*") if p.name.endswith(SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generated = generate(out)
        stale = []
        for path in generated:
            rel = path.relative_to(out)
            target = ROOT / rel
            if opts.check:
                if not target.exists() or not filecmp.cmp(path, target, shallow=False):
                    stale.append(str(rel))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
        committed = {
            p.relative_to(ROOT) for p in (ROOT / "gateway").rglob("*") if p.name.endswith(SUFFIXES)
        }
        extra = committed - {p.relative_to(out) for p in generated}
        if opts.check and (stale or extra):
            for name in stale:
                print(f"out of date: {name}", file=sys.stderr)
            for name in sorted(map(str, extra)):
                print(f"no longer generated: {name}", file=sys.stderr)
            print("run: python tools/gen_proto.py", file=sys.stderr)
            return 1
        if opts.check:
            print(f"generated code is current ({len(generated)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
