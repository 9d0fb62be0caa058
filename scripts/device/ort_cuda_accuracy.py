"""Why an fp32 model differs between onnxruntime's CUDA and CPU providers, and what the cuDNN settings cost.

    python scripts/device/ort_cuda_accuracy.py MODELS_DIR [--sessions 3] [--iterations 300] [--json OUT]

For each NAME.onnx with NAME.npz in MODELS_DIR (gpu_models.py writes them): the CPU provider at the
default level (what the host's reference is) and with every graph optimisation off (how far the CPU is from
itself), then the CUDA provider (TF32 off, as the agent builds fp32) with each cuDNN convolution algorithm
search (EXHAUSTIVE, onnxruntime's default, which benchmarks algorithms per session; HEURISTIC; DEFAULT) and
with deterministic compute. Each variant: max relative error against the CPU reference (max |diff| / max
|reference|, as the agent's verify), the share of elements off by more than 1e-3 of that scale, and the p50 of
`--iterations` I/O-bound runs in each of `--sessions` fresh sessions (their spread is the session-to-session
noise of a benchmark). Needs onnxruntime-gpu and a GPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))
from gpu import bound_times  # noqa: E402

VARIANTS = {
    "cuda EXHAUSTIVE": {"cudnn_conv_algo_search": "EXHAUSTIVE"},
    "cuda HEURISTIC": {"cudnn_conv_algo_search": "HEURISTIC"},
    "cuda DEFAULT": {"cudnn_conv_algo_search": "DEFAULT"},
    "cuda EXHAUSTIVE deterministic": {"cudnn_conv_algo_search": "EXHAUSTIVE", "_deterministic": "1"},
}


def rel_err(got: List[np.ndarray], want: List[np.ndarray]) -> Dict[str, float]:
    worst, over = 0.0, 0.0
    for g, w in zip(got, want):
        g64, w64 = np.asarray(g, np.float64), np.asarray(w, np.float64)
        scale = float(np.max(np.abs(w64))) or 1.0
        diff = np.abs(g64 - w64)
        worst = max(worst, float(diff.max()) / scale)
        over = max(over, float(np.mean(diff > 1e-3 * scale)))
    return {"max_rel_err": worst, "share_over_1e-3": over}


def session(ort: Any, path: Path, provider: Optional[Dict[str, str]], level: str = "ORT_ENABLE_ALL"):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    if provider is None:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    opts = {k: v for k, v in provider.items() if not k.startswith("_")}
    if provider.get("_deterministic"):
        so.use_deterministic_compute = True
    opts["use_tf32"] = "0"
    sess = ort.InferenceSession(str(path), so, providers=[("CUDAExecutionProvider", opts), "CPUExecutionProvider"])
    if sess.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError("onnxruntime did not open a CUDA session")
    return sess


def p50_bound(sess: Any, feeds: Dict[str, np.ndarray], iterations: int) -> float:
    return bound_times(sess, feeds, iterations, warmup=30)["p50_ms"]


def one_model(ort: Any, path: Path, args: argparse.Namespace) -> Dict[str, Any]:
    with np.load(path.with_suffix(".npz"), allow_pickle=False) as z:
        feeds = {k: z[k] for k in z.files}
    ref = session(ort, path, None).run(None, feeds)
    row: Dict[str, Any] = {"model": path.stem, "variants": {}}
    row["variants"]["cpu, optimisations off"] = rel_err(session(ort, path, None, "ORT_DISABLE_ALL").run(None, feeds),
                                                        ref)
    for name, provider in VARIANTS.items():
        rec: Dict[str, Any] = {"p50_ms": []}
        for k in range(args.sessions):
            try:
                t0 = time.perf_counter()
                sess = session(ort, path, provider)
                rec.setdefault("session_s", round(time.perf_counter() - t0, 2))
                if k == 0:
                    rec.update(rel_err(sess.run(None, feeds), ref))
                rec["p50_ms"].append(round(p50_bound(sess, feeds, args.iterations), 4))
                del sess
            except Exception as exc:  # noqa: BLE001 - a variant's failure is a cell of the table
                rec["error"] = " ".join(str(exc).split())[:300]
                break
        row["variants"][name] = rec
        print(f"{path.stem:14s} {name:32s} {rec}", file=sys.stderr, flush=True)
    return row


def table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| model | variant | max rel err vs CPU | share > 1e-3 | p50 ms per session | median |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        for name, v in r["variants"].items():
            p50s = v.get("p50_ms") or []
            err = v.get("max_rel_err")
            lines.append(f"| {r['model']} | {name} | {'-' if err is None else f'{err:.2e}'} | "
                         f"{v.get('share_over_1e-3', 0):.2e} | {' '.join(f'{p:.3f}' for p in p50s) or v.get('error', '-')}"
                         f" | {f'{statistics.median(p50s):.3f}' if p50s else '-'} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path)
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--only", default="")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import onnxruntime as ort

    only = {n for n in args.only.split(",") if n}
    rows = [one_model(ort, p, args) for p in sorted(args.models.glob("*.onnx"))
            if p.with_suffix(".npz").is_file() and (not only or p.stem in only)]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                         "onnxruntime": ort.__version__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
