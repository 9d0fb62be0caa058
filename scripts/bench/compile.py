"""Compile time of ResNet-50: `compile_model` against plain `tvm.compile` of the same model, same target.

    python scripts/bench/compile.py [--profile x86-cpu] [--runs 3] [--model PATH] [--trt-version V]

`tvm.compile` for a CUDA target leaves the kernels as source (compiled at export), so its figure
excludes NVRTC; compile_model's includes it whenever it writes a CUDA remainder.

Each measurement runs in a fresh subprocess (so imports, caches and peak RSS are its own) and the
table shows the median of --runs runs, the ratio of medians (floor from issue 7: under 1.5), and
each side's peak resident memory.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, resource, sys, time, tempfile
mode, model, profile, trt = sys.argv[1:5]
t0 = time.perf_counter()
if mode == "ours":
    from host.compiler.api import compile_model
    with tempfile.TemporaryDirectory() as d:
        r = compile_model(model, d + "/out", profile=profile, trt_version=trt or None)
        extra = {"segments": len(r.manifest.segments), "remainder": r.manifest.remainder is not None}
        seconds = time.perf_counter() - t0
else:
    import onnx
    from host.compiler import frontend, lower
    from host.compiler.profiles import get_profile
    m, _ = frontend.load_model(model)
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    lower.plain_compile(m, get_profile(profile), shapes)
    extra = {}
    seconds = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": rss, **extra}))
"""


def _measure(mode: str, model: Path, profile: str, trt: str) -> dict:
    res = subprocess.run([sys.executable, "-c", _CHILD, mode, str(model), profile, trt], capture_output=True, text=True,
                         cwd=REPO, env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    if res.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="x86-cpu")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--trt-version", default="", help="partition for this TensorRT version (e.g. 6.0.1)")
    ap.add_argument("--model", type=Path, help="ONNX model (default: ResNet-50 from scripts/make_models.py)")
    a = ap.parse_args()
    model = a.model
    if model is None:
        sys.path.insert(0, str(REPO / "scripts"))
        import make_models

        model = make_models.write_models(Path(tempfile.gettempdir()) / "jetson-deploy-bench-models",
                                         ["resnet50"])["resnet50"]
    rows = {}
    for mode in ("ours", "tvm"):
        runs = [_measure(mode, model, a.profile, a.trt_version) for _ in range(a.runs)]
        rows[mode] = runs
        print(f"{mode}: {[round(r['seconds'], 2) for r in runs]}", file=sys.stderr)
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in rows.items()}
    print(f"{model.name}, profile {a.profile}{', TensorRT ' + a.trt_version if a.trt_version else ''}, "
          f"median of {a.runs} runs, each in a fresh process")
    print(f"| {'step':<44} | median s | min s | max s | peak RSS MB | ratio vs tvm.compile |")
    print(f"|{'-' * 46}|---------:|------:|------:|------------:|---------------------:|")
    names = {"ours": "compile_model (partition + emit + bundle)", "tvm": "from_onnx + tvm.compile (reference)"}
    for k in ("ours", "tvm"):
        secs = [r["seconds"] for r in rows[k]]
        rss = max(r["peak_rss_mb"] for r in rows[k])
        print(f"| {names[k]:<44} | {med[k]:8.2f} | {min(secs):5.2f} | {max(secs):5.2f} | {rss:11.0f} | "
              f"{med[k] / med['tvm']:20.3f} |")
    seg = rows["ours"][0]
    print(f"compile_model: {seg['segments']} TensorRT segment(s), remainder: {seg['remainder']}; "
          f"floor (issue 7): ratio < 1.5 -> {'met' if med['ours'] / med['tvm'] < 1.5 else 'NOT met'}")


if __name__ == "__main__":
    main()
