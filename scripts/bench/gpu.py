"""Remote benchmarking on a GPU: `deploy bench` through the agent against the same model in-process.

    python scripts/bench/gpu.py --models-dir DIR [--iterations 500] [--runs 3] [--json OUT.json]

Run on a machine with an NVIDIA GPU and onnxruntime-gpu (the device machine; docs/hardware.md has the
commands). For each model: `deploy bench MODEL --device local --json` (the host CLI, which compiles the
model for the GPU the agent reports, uploads it, builds and benchmarks it with the agent's
`onnxruntime-cuda` backend over gRPC on loopback), and in this process the same ONNX file under
onnxruntime's CUDA provider with I/O binding (inputs and outputs on the GPU, as the agent keeps them)
and, where the model exists in torchvision, torch on the GPU. Each figure is the median over `--runs`
runs of `--iterations` timed iterations after a warm-up; the table's ratio is agent p50 / in-process
onnxruntime p50 (floor <= 1.05). "GPU share" is the mean GPU time of a run (CUDA events on the
provider's compute stream) over its mean wall time. For a hybrid bundle (NAME.tar with a TVM part) the
same bundle also runs in this process, through the agent's own engine classes without gRPC
("bundle in-process"): agent p50 over that is what the agent adds; onnxruntime on the whole ONNX file is
what splitting the model costs.

Models come from DIR: `resnet50.onnx` (exported here from torchvision with seeded weights when torch is
installed), and every `NAME.onnx` or `NAME.tar` (a bundle compiled offline with `deploy compile
--compute-capability`) with an optional `NAME.npz` of inputs and `NAME.args` of extra CLI arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def export_resnet50(path: Path) -> Optional[Any]:
    """ResNet-50 from torchvision with seeded weights (no download), exported to ONNX; the torch model back."""
    try:
        import torch
        import torchvision
    except ImportError:
        return None
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    if not path.is_file():
        x = torch.randn(1, 3, 224, 224)
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"], opset_version=17,
                          dynamo=False)
    return model


def deploy_bench(model: Path, inputs: Optional[Path], extra: List[str], iterations: int, warmup: int) -> Dict:
    cmd = [sys.executable, "-m", "host.cli.app", "bench", str(model), "--device", "local", "--json",
           "-n", str(iterations), "--warmup", str(warmup), *extra]
    if inputs is not None and model.suffix == ".onnx":  # a bundle carries its own reference inputs
        cmd += ["--inputs", str(inputs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"deploy bench failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-800:]}")
    data = json.loads(proc.stdout)
    return data["devices"][0]


def feeds_for(model: Path, inputs: Optional[Path]) -> Dict[str, np.ndarray]:
    if inputs is not None:
        with np.load(inputs, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(types[i.type])
            for i in sess.get_inputs()}


def ort_in_process(model: Path, feeds: Dict[str, np.ndarray], iterations: int, warmup: int) -> Dict[str, float]:
    """onnxruntime's CUDA provider with I/O binding, timed per iteration like the agent's loop."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    cuda = ("CUDAExecutionProvider", {"use_tf32": "0",  # as the agent builds fp32: no TF32
                                      "cudnn_conv_algo_search": os.environ.get("DEPLOY_AGENT_CUDNN_CONV_ALGO_SEARCH",
                                                                               "EXHAUSTIVE")})
    sess = ort.InferenceSession(str(model), so, providers=[cuda, "CPUExecutionProvider"])
    if sess.get_providers()[0] != "CUDAExecutionProvider":
        raise RuntimeError("onnxruntime did not open a CUDA session")
    return bound_times(sess, feeds, iterations, warmup)


def bound_times(sess: Any, feeds: Dict[str, np.ndarray], iterations: int, warmup: int) -> Dict[str, float]:
    """p50 / p99 ms of a CUDA session's runs with inputs and outputs bound on the GPU (I/O binding)."""
    import onnxruntime as ort

    binding = sess.io_binding()
    values = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v), "cuda", 0) for v in feeds.values()]
    for name, value in zip(feeds, values):
        binding.bind_ortvalue_input(name, value)
    for out in sess.get_outputs():
        binding.bind_output(out.name, "cuda", 0)
    for _ in range(warmup):
        sess.run_with_iobinding(binding)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        sess.run_with_iobinding(binding)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99))}


def bundle_in_process(tar: Path, iterations: int, warmup: int) -> Optional[Dict[str, float]]:
    """The hybrid bundle run here by the agent's engine classes (onnxruntime-cuda segments, TVM part on the
    GPU, tensors resident as in the agent's Benchmark), without the agent process or gRPC; None for a bundle
    without a TVM part."""
    import tempfile

    from device_agent.archive import extract_archive
    from device_agent.bundle import Bundle
    from device_agent.engines.base import BuildSpec
    from device_agent.engines.onnxruntime import OnnxRuntimeCudaBackend
    from device_agent.engines.tvm import TvmModel

    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        bundle = Bundle.open(extract_archive(tar, Path(tmp) / "b"))
        if bundle.manifest.remainder is None:
            return None
        backend, spec = OnnxRuntimeCudaBackend(), BuildSpec()
        backend.conv_algo_search = os.environ.get("DEPLOY_AGENT_CUDNN_CONV_ALGO_SEARCH", "EXHAUSTIVE")
        engines = {s.id: backend.load(backend.build(bundle.segment_path(s.id).read_bytes(), spec).plan, spec)
                   for s in bundle.manifest.segments}
        model = TvmModel(bundle, engines, backend.name)
        feeds, _ = bundle.read_reference()
        model.run(feeds)
        once = model.bench_call(feeds)
        for _ in range(warmup):
            once()
        model.reset_timings()
        times = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            once()
            times.append((time.perf_counter() - t0) * 1e3)
        gpu = model.timings().get("gpu_compute")
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)), "gpu_ms": gpu}


def torch_in_process(model: Any, iterations: int, warmup: int) -> Dict[str, float]:
    import torch

    model = model.cuda().eval()
    x = torch.randn(1, 3, 224, 224, device="cuda")
    times, gpu = [], []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        torch.cuda.synchronize()
        for _ in range(iterations):
            t0 = time.perf_counter()
            start.record()
            model(x)
            end.record()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
            gpu.append(start.elapsed_time(end))
    return {"p50_ms": float(np.percentile(times, 50)), "p99_ms": float(np.percentile(times, 99)),
            "gpu_ms": float(np.mean(gpu))}


def median_of(runs: List[Dict[str, float]], key: str) -> Optional[float]:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def bench_model(name: str, model: Path, args: argparse.Namespace, torch_model: Any = None) -> Dict[str, Any]:
    stem = model.with_suffix("")
    inputs = stem.with_suffix(".npz") if stem.with_suffix(".npz").is_file() else None
    extra = shlex.split(stem.with_suffix(".args").read_text()) if stem.with_suffix(".args").is_file() else []
    row: Dict[str, Any] = {"model": name, "source": model.name, "extra_args": extra}
    onnx_path = model if model.suffix == ".onnx" else (stem.with_suffix(".onnx") if stem.with_suffix(".onnx").is_file()
                                                       else None)
    feeds = None
    if onnx_path is not None:
        try:
            feeds = feeds_for(onnx_path, inputs)
        except Exception as exc:  # noqa: BLE001
            row["ort_error"] = " ".join(str(exc).split())[:600]
    agent_runs: List[Dict[str, Any]] = []
    ort_runs: List[Dict[str, float]] = []
    torch_runs: List[Dict[str, float]] = []
    bundle_runs: List[Dict[str, float]] = []
    # interleaved, so a drift of the GPU's clocks between sessions hits both sides alike
    for _ in range(args.runs):
        if "agent_error" not in row:
            try:
                r = deploy_bench(model, inputs, extra, args.iterations, args.warmup)
                agent_runs.append({"p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "mean_ms": r["mean_ms"],
                                   "gpu_ms": r.get("backend_timings_ms", {}).get("gpu_compute")})
                row["backend"] = r.get("backend")
            except Exception as exc:  # noqa: BLE001 - one model's failure is a row of the table
                row["agent_error"] = " ".join(str(exc).split())[:600]
        if feeds is not None and "ort_error" not in row:
            try:
                ort_runs.append(ort_in_process(onnx_path, feeds, args.iterations, args.warmup))
            except Exception as exc:  # noqa: BLE001
                row["ort_error"] = " ".join(str(exc).split())[:600]
        if torch_model is not None:
            torch_runs.append(torch_in_process(torch_model, args.iterations, args.warmup))
        if model.suffix == ".tar" and "bundle_error" not in row:
            try:
                got = bundle_in_process(model, args.iterations, args.warmup)
                if got is not None:
                    bundle_runs.append(got)
            except Exception as exc:  # noqa: BLE001
                row["bundle_error"] = " ".join(str(exc).split())[:600]
    if agent_runs:
        row["agent"] = {k: median_of(agent_runs, k) for k in ("p50_ms", "p99_ms", "mean_ms", "gpu_ms")}
        row["agent_runs"] = agent_runs
        if row["agent"]["gpu_ms"] and row["agent"]["mean_ms"]:
            row["agent"]["gpu_share"] = row["agent"]["gpu_ms"] / row["agent"]["mean_ms"]
    if ort_runs:
        row["ort"] = {k: median_of(ort_runs, k) for k in ("p50_ms", "p99_ms")}
        row["ort_runs"] = ort_runs
    if torch_runs:
        row["torch"] = {k: median_of(torch_runs, k) for k in ("p50_ms", "p99_ms", "gpu_ms")}
    if bundle_runs:
        row["bundle"] = {k: median_of(bundle_runs, k) for k in ("p50_ms", "p99_ms", "gpu_ms")}
        row["bundle_runs"] = bundle_runs
    if row.get("agent") and row.get("ort"):
        row["ratio_agent_to_ort"] = row["agent"]["p50_ms"] / row["ort"]["p50_ms"]
        # the best run of each side: interference from outside (clocks, other tenants) only ever adds time
        row["ratio_best_agent_to_ort"] = (min(r["p50_ms"] for r in agent_runs) / min(r["p50_ms"] for r in ort_runs))
    if row.get("agent") and row.get("bundle"):
        row["ratio_agent_to_bundle"] = row["agent"]["p50_ms"] / row["bundle"]["p50_ms"]
    return row


def fmt(v: Optional[float], digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| model | backend | agent p50 ms | agent p99 ms | GPU share | ort p50 ms | ort p99 ms | agent/ort p50 |"
             " best-run agent/ort | bundle in-process p50 ms | agent/bundle p50 | torch p50 ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, o, t, b = r.get("agent") or {}, r.get("ort") or {}, r.get("torch") or {}, r.get("bundle") or {}
        share = a.get("gpu_share")
        lines.append(f"| {r['model']} | {r.get('backend', '-')} | {fmt(a.get('p50_ms'))} | {fmt(a.get('p99_ms'))} | "
                     f"{'-' if share is None else f'{share:.0%}'} | {fmt(o.get('p50_ms'))} | {fmt(o.get('p99_ms'))} | "
                     f"{fmt(r.get('ratio_agent_to_ort'), 3)} | {fmt(r.get('ratio_best_agent_to_ort'), 3)} | {fmt(b.get('p50_ms'))} | "
                     f"{fmt(r.get('ratio_agent_to_bundle'), 3)} | {fmt(t.get('p50_ms'))} |")
    for r in rows:
        for key in ("agent_error", "ort_error", "bundle_error"):
            if r.get(key):
                lines.append(f"\n{r['model']}: {key.replace('_', ' ')}: {r[key]}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", type=Path, required=True)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    models: Dict[str, Path] = {}
    torch_model = export_resnet50(args.models_dir / "resnet50.onnx")
    for p in sorted(args.models_dir.iterdir()):
        if p.suffix in (".onnx", ".tar") and p.stem not in models:
            models[p.stem] = p
    bundles = {p.stem: p for p in args.models_dir.glob("*.tar")}
    models.update(bundles)  # an offline-compiled bundle wins over its ONNX file (which stays the reference)
    only = {n for n in args.only.split(",") if n}
    rows = []
    for name, path in models.items():
        if only and name not in only:
            continue
        print(f"== {name} ({path.name})", file=sys.stderr, flush=True)
        rows.append(bench_model(name, path, args, torch_model if name == "resnet50" else None))
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                         "iterations": args.iterations, "runs": args.runs, "rows": rows,
                                         "env": {k: os.environ.get(k, "") for k in ("PYTHONPATH",)}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
