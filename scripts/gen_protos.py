#!/usr/bin/env python3
"""Regenerate protos/*_pb2*.py(i) from protos/*.proto; `--check` fails when they are stale.

CI runs `--check` so the committed generated code never drifts from the .proto sources.
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos"


def generate(out_root: Path) -> list[Path]:
    from grpc_tools import protoc  # dev dependency only

    protos = sorted(PROTO_DIR.glob("*.proto"))
    args = [
        "protoc",
        f"-I{ROOT}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p.relative_to(ROOT)) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted((out_root / "protos").glob("*_pb2*.py*"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "protos").mkdir()
        fresh = generate(Path(tmp))
        stale = [
            f.name for f in fresh
            if not (PROTO_DIR / f.name).exists() or not filecmp.cmp(f, PROTO_DIR / f.name, shallow=False)
        ]
        if args.check:
            if stale:
                print(f"generated protobuf code is stale: {', '.join(stale)}; run python scripts/gen_protos.py",
                      file=sys.stderr)
                return 1
            print("generated protobuf code is current")
            return 0
        for f in fresh:
            shutil.copy(f, PROTO_DIR / f.name)
            print(f"wrote protos/{f.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
