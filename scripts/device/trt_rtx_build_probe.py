"""Build a small ONNX model with TensorRT-RTX through the agent's TensorRT backend; print progress events and the
timing cache as JSON.

Run on the GPU machine (not run on the development machine, which has no TensorRT):
    python scripts/device/trt_rtx_build_probe.py [--out DIR] [--width 256] [--layers 4]
It builds twice with the same timing cache file: the first build writes it, the second reads it. Needs numpy and
onnx (to write the model) and tensorrt-rtx (`pip install tensorrt-rtx`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def mlp(width: int, layers: int) -> bytes:
    """MatMul/Add/Relu layers of width x width float32 weights, batch 1 (static shapes)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = numpy_helper.from_array((rng.standard_normal((width, width)) / width ** 0.5).astype("float32"), f"w{i}")
        b = numpy_helper.from_array(np.zeros(width, "float32"), f"b{i}")
        inits += [w, b]
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"])]
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="directory for timing.cache (default: a temp dir)")
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    args = ap.parse_args()
    try:
        import tensorrt_rtx_libs  # noqa: F401  (loads the RTX shared libraries before the bindings)
    except ImportError:
        pass
    import tensorrt_rtx_bindings as trt  # noqa: F401  (fail here, plainly, when TensorRT-RTX is missing)

    from device_agent.engines.base import BuildSpec
    from device_agent.engines.tensorrt import TensorRTBackend, import_trt

    out = args.out or Path(tempfile.mkdtemp(prefix="trt-rtx-probe-"))
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "timing.cache"
    model = mlp(args.width, args.layers)
    module, name = import_trt()
    report = {"module": name, "version": getattr(module, "__version__", ""), "model_bytes": len(model),
              "timing_cache_path": str(cache), "builds": []}
    backend = TensorRTBackend()
    for attempt in ("first (writes the cache)", "second (reads the cache)"):
        events: list = []
        lock = threading.Lock()

        def sink(ev: dict) -> None:
            with lock:
                events.append(ev)

        existed = cache.exists()
        result = backend.build(model, BuildSpec(max_workspace_bytes=256 << 20, timing_cache_path=str(cache),
                                                progress=sink))
        report["builds"].append({
            "build": attempt, "cache_existed_before": existed, "parse_s": result.parse_s, "build_s": result.build_s,
            "plan_bytes": len(result.plan), "timing_cache_bytes": os.path.getsize(cache) if cache.exists() else None,
            "progress_events": len(events), "phases": sorted({e["phase"] for e in events}), "events": events[:200],
            "messages": list(result.messages)[-10:]})
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
