#!/usr/bin/env python3
"""PP-OCRv4 rec (width 10..2304) on an agent: one wide profile against three narrow buckets and fixed-shape bundles.

    .venv/bin/python scripts/bench/dynamic.py [--runs 3] [--iterations 30] [--widths 80,320,1280] [--device own]

Configurations, each compiled once (host compile cache) and built once on the agent:
  wide     one profile 1x3x48x10 : 1x3x48x320 : 1x3x48x2304 (PaddleOCR's)
  buckets  three profiles (`--shape-profiles`): 10..160 (opt 80), 160..640 (opt 320), 640..2304 (opt 1280)
  fixed    one bundle per width, no range (the reference)
At each width, `deploy bench --shape x=1x3x48xW` (the ranged ones) or a plain bench (fixed); each cell is the median
over --runs of each benchmark's p50, in ms, and its ratio to the fixed bundle of that width. The first call after
the shape change is shown apart (median over runs). On onnxruntime CPU every profile runs the same kernels, so the
table shows what the range costs the host-side machinery; the TensorRT figures need a GPU (docs/hardware.md).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _agent import median, start_agent, stop_agent  # noqa: E402

MODEL = "ppocr4-rec"
WIDE = [{"x": [[1, 3, 48, 10], [1, 3, 48, 320], [1, 3, 48, 2304]]}]
BUCKETS = [{"x": [[1, 3, 48, 10], [1, 3, 48, 80], [1, 3, 48, 160]]},
           {"x": [[1, 3, 48, 160], [1, 3, 48, 320], [1, 3, 48, 640]]},
           {"x": [[1, 3, 48, 640], [1, 3, 48, 1280], [1, 3, 48, 2304]]}]


def model_path() -> Path:
    import corpus
    import corpus_models as cm

    return corpus.fetch(cm.by_name([MODEL])[0], corpus.default_cache())


def one(model: Path, device: str, width: int, config: str, iterations: int) -> Dict[str, float]:
    from host import api

    common: Dict[str, Any] = dict(iterations=iterations, warmup=3, profile="x86-cpu")
    if config == "fixed":
        data = api.bench(model, [device], input_shapes={"x": [1, 3, 48, width]}, **common)
        row = data["devices"][0]
        return {"p50": row["p50_ms"], "first": float("nan")}
    profiles = WIDE if config == "wide" else BUCKETS
    data = api.bench(model, [device], shape_profiles=profiles, bench_shape=[f"x=1x3x48x{width}"], **common)
    row = data["devices"][0]["shapes"][0]
    return {"p50": row["p50_ms"], "first": row["first_call_ms"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--widths", default="80,320,1280")
    ap.add_argument("--device", default="own", help="`own` starts an agent from this checkout; else a --device")
    args = ap.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    model = model_path()
    agent = None
    device = args.device
    if device == "own":
        agent, device = start_agent(Path(tempfile.mkdtemp(prefix="dynamic-agent-")) / "store")
    try:
        results: Dict[tuple, List[Dict[str, float]]] = {}
        for _ in range(args.runs):  # configurations interleaved per round, so drift hits them alike
            for w in widths:
                for config in ("fixed", "wide", "buckets"):
                    results.setdefault((w, config), []).append(one(model, device, w, config, args.iterations))
    finally:
        if agent is not None:
            stop_agent(agent)
    print(f"PP-OCRv4 rec on {device}, onnxruntime CPU, median p50 over {args.runs} runs of {args.iterations} "
          "iterations (ms; ratio to the fixed-shape bundle of that width)")
    print("| width | fixed | wide profile | ratio | 3 buckets | ratio | first call wide | first call buckets |")
    print("|---|---|---|---|---|---|---|---|")
    for w in widths:
        fixed = median([r["p50"] for r in results[(w, "fixed")]])
        wide = median([r["p50"] for r in results[(w, "wide")]])
        buckets = median([r["p50"] for r in results[(w, "buckets")]])
        fw = median([r["first"] for r in results[(w, "wide")]])
        fb = median([r["first"] for r in results[(w, "buckets")]])
        print(f"| {w} | {fixed:.2f} | {wide:.2f} | {wide / fixed:.2f} | {buckets:.2f} | {buckets / fixed:.2f} "
              f"| {fw:.2f} | {fb:.2f} |")


if __name__ == "__main__":
    main()
