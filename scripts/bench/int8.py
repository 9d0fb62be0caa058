#!/usr/bin/env python3
"""FP32 against INT8 (explicit Q/DQ) on a local agent (onnxruntime CPU): p50 latency, engine size, accuracy.

    .venv/bin/python scripts/bench/int8.py [--runs 3] [--iterations 20] [--calibration-samples 8]

Models: scripts/make_models.py's ResNet-50 (seeded random weights) and the corpus's nudenet-320n (YOLOv8n
with its published weights) from ~/.cache/deploy/corpus (scripts/bench/corpus_models.py fetches it).
Calibration and validation samples are synthetic (N(0,1) for ResNet-50, uniform pixels for the detector):
no image data set is available here, so the accuracy figures say how far INT8 moves the outputs on those
inputs, not task accuracy. Each model is compiled for x86-cpu (TensorRT 10.3 op table) in FP32 and with
`--int8`, pushed to one agent, and benchmarked `--runs` times; the table shows the median of the runs' p50s
and the ratio INT8 / FP32 (below 1: INT8 is faster / smaller).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from _agent import median, start_agent, stop_agent  # noqa: E402

CORPUS = Path(os.environ.get("DEPLOY_CORPUS", Path.home() / ".cache" / "deploy" / "corpus")) / "models"


def _models(tmp: Path, n_cal: int, n_val: int) -> list[tuple[str, Path, Path, Path, dict]]:
    import make_models
    from corpus_models import by_name, input_specs, make_inputs

    out = []
    rn = make_models.write_models(tmp / "models", only=["resnet50"])["resnet50"]
    make = lambda seed: {"input": np.random.default_rng(seed).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    out.append(("resnet50", Path(rn), *_write_sets(tmp / "resnet50", make, n_cal, n_val), {}))
    entry = by_name(["nudenet-320n"])[0]
    det = CORPUS / f"{entry.package}-{entry.version}" / entry.file_name
    if det.is_file():
        specs = input_specs(det, entry)
        shapes = {str(sp["name"]): list(sp["shape"]) for sp in specs}
        out.append((entry.name, det, *_write_sets(tmp / entry.name, lambda seed: make_inputs(specs, entry, seed),
                                                  n_cal, n_val), shapes))
    else:
        print(f"skipped nudenet-320n: {det} is missing (run scripts/bench/corpus_models.py)", file=sys.stderr)
    return out


def _write_sets(folder: Path, make, n_cal: int, n_val: int) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, seeds in (("cal", range(1, 1 + n_cal)), ("val", range(1000, 1000 + n_val))):
        samples = [make(s) for s in seeds]
        arrays = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
        np.savez(folder / f"{name}.npz", **arrays)
        paths.append(folder / f"{name}.npz")
    return paths[0], paths[1]


def _push(address: str, model: Path, int8, runs: int, iterations: int, shapes: dict) -> dict:
    from host import api

    p50s, last = [], None
    for _ in range(runs):
        last = api.push(model, address, bench=True, iterations=iterations, warmup=3, int8=int8,
                        input_shapes=shapes)
        p50s.append(last["bench"]["p50_ms"])
    last["p50_median_ms"] = median(p50s)
    last["engine_bytes"] = sum(s["engine_bytes"] for s in last["build"]["segments"])
    return last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--calibration-samples", type=int, default=8)
    ap.add_argument("--validation-samples", type=int, default=4)
    ap.add_argument("--calibrator", default="minmax")
    args = ap.parse_args()
    from host.compiler.quantize import Int8Options

    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp_s:
        tmp = Path(tmp_s)
        os.environ["XDG_CACHE_HOME"] = str(tmp / "xdg")  # a cold host compile cache, nothing left behind
        models = _models(tmp, args.calibration_samples, args.validation_samples)
        proc, address = start_agent(tmp / "store")
        rows = []
        try:
            for name, path, cal, val, shapes in models:
                fp32 = _push(address, path, None, args.runs, args.iterations, shapes)
                q = _push(address, path, Int8Options(cal, calibrator=args.calibrator, validation=val),
                          args.runs, args.iterations, shapes)
                rows.append((name, fp32, q))
        finally:
            stop_agent(proc)
    print(f"\nINT8 (Q/DQ, {args.calibrator}, {args.calibration_samples} calibration / {args.validation_samples} "
          f"validation samples) vs FP32 on a local agent (onnxruntime CPU), median of {args.runs} runs' p50 "
          f"({args.iterations} iterations each)\n")
    print("| model | FP32 p50 ms | INT8 p50 ms | latency ratio | FP32 engine MiB | INT8 engine MiB | size ratio "
          "| max rel err | min cosine | top-1 agreement | verify (INT8 ref) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, a, b in rows:
        acc = b["accuracy"]
        top1 = [o["top1_agreement"] for o in acc["outputs"] if o["top1_agreement"] is not None]
        print(f"| {name} | {a['p50_median_ms']:.2f} | {b['p50_median_ms']:.2f} | "
              f"{b['p50_median_ms'] / a['p50_median_ms']:.2f} | {a['engine_bytes'] / 2**20:.1f} | "
              f"{b['engine_bytes'] / 2**20:.1f} | {b['engine_bytes'] / a['engine_bytes']:.2f} | "
              f"{acc['max_rel_err']:.3g} | {acc['min_cosine']:.4f} | "
              f"{(f'{min(top1):.0%}' if top1 else '-')} | {b['verify']['max_rel_err']:.2g} |")


if __name__ == "__main__":
    main()
