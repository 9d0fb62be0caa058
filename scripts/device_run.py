#!/usr/bin/env python3
"""The GPU-machine run of the engine work (issue 3), recorded in docs/hardware.md.

    python scripts/device_run.py --prepare [--carried DIR]     # on the CPU host, before
    python scripts/device_run.py --out DIR [--carried DIR]     # on the device machine

On the device machine (H100, TensorRT-RTX from PyPI, apache-tvm 0.27) it starts a real agent on
loopback and, over gRPC:
  a. compiles ResNet-50 (scripts/make_models.py) for generic-cuda, builds its TensorRT segment with
     the `tensorrt` backend over TensorRT-RTX, builds again (cache hit), lists the cached plan, and
     asks the agent to run it, recording TensorRT-RTX's refusal of compute capability 9.0 as seen;
  b. runs hybrid bundles compiled on the CPU host (carried in --carried): the generic-cuda one
     (sm_80 cubin) must be refused on sm_90 naming both; the one compiled for sm_90 runs its TVM
     remainder on the GPU, segments with onnxruntime, and is compared with onnxruntime on the
     original model; it is benchmarked through the agent;
  c. checks the tensorrt backend's CUDA buffer path (cuda-python: malloc, copies, events) on the GPU.
Every step is recorded in DIR/device_run.json whether it passed or not; the script runs on a CPU
machine too (steps needing a GPU or TensorRT then record why they could not run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from google.protobuf.json_format import MessageToDict  # noqa: E402

from protos import agent_pb2, agent_pb2_grpc  # noqa: E402

RESULTS: Dict[str, Any] = {"steps": {}}


def step(name: str) -> Callable:
    def wrap(fn: Callable) -> Callable:
        def run(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                value = fn(*a, **k)
                RESULTS["steps"][name] = {"ok": True, "seconds": round(time.perf_counter() - t0, 3), "result": value}
                print(json.dumps(value, indent=1, default=str)[:4000], flush=True)
                return value
            except Exception as exc:  # recorded, and the next step still runs
                RESULTS["steps"][name] = {"ok": False, "seconds": round(time.perf_counter() - t0, 3),
                                          "error": f"{type(exc).__name__}: {exc}",
                                          "trace": traceback.format_exc()[-3000:]}
                print(f"!! {name}: {type(exc).__name__}: {exc}", flush=True)
                return None
        return run
    return wrap


class Agent:
    """A real `python -m device_agent` process and a raw gRPC stub to it."""

    def __init__(self, work: Path) -> None:
        log = open(work / "agent.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "device_agent", "--listen", "127.0.0.1:0",
                                      "--store", str(work / "store")], stdout=subprocess.PIPE, stderr=log,
                                     cwd=str(REPO), env=dict(os.environ))
        from device_agent.ready import wait_ready

        self.address = wait_ready(self.proc, 120) or ""
        if not self.address:
            raise RuntimeError(f"agent did not start; see {work / 'agent.log'}")
        opts = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
        self.channel = grpc.insecure_channel(self.address, options=opts)
        self.stub = agent_pb2_grpc.DeviceAgentStub(self.channel)

    def upload(self, path: Path) -> str:
        import hashlib

        digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()

        def msgs() -> Iterator[agent_pb2.UploadRequest]:
            yield agent_pb2.UploadRequest(header=agent_pb2.UploadHeader(digest=digest, size=path.stat().st_size,
                                                                        kind="bundle"))
            with open(path, "rb") as f:
                while True:
                    block = f.read(1 << 20)
                    if not block:
                        return
                    yield agent_pb2.UploadRequest(chunk=block)

        self.stub.Upload(msgs(), timeout=600)
        return digest

    def build(self, digest: str, **options: Any) -> List[Dict[str, Any]]:
        req = agent_pb2.BuildRequest(bundle_digest=digest, options=agent_pb2.BuildOptions(**options))
        return [MessageToDict(e) for e in self.stub.Build(req, timeout=1800)]

    def run(self, req: agent_pb2.RunRequest) -> agent_pb2.RunReply:
        return self.stub.Run(req, timeout=1800)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def rpc_error(exc: grpc.RpcError) -> Dict[str, str]:
    return {"code": exc.code().name, "details": exc.details()}


def tensor(name: str, arr: np.ndarray) -> agent_pb2.Tensor:
    arr = np.ascontiguousarray(arr)
    return agent_pb2.Tensor(name=name, dtype=arr.dtype.name, shape=list(arr.shape), data=arr.tobytes())


def out_array(t: agent_pb2.Tensor) -> np.ndarray:
    return np.frombuffer(t.data, dtype=t.dtype).reshape(list(t.shape))


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got.astype(np.float64) - want)) / max(float(np.max(np.abs(want))), 1e-30))


@step("facts")
def facts() -> Dict[str, Any]:
    out: Dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
    try:
        out["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total",
                                            "--format=csv,noheader"], capture_output=True, text=True,
                                           timeout=30).stdout.strip()
    except OSError as exc:
        out["nvidia_smi"] = f"unavailable: {exc}"
    for mod in ("numpy", "grpc", "google.protobuf", "onnx", "onnxruntime", "tvm", "tensorrt_rtx_bindings",
                "cuda.bindings"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            out[mod] = getattr(m, "__version__", "?")
        except Exception as exc:
            out[mod] = f"not importable: {type(exc).__name__}: {exc}"[:200]
    return out


@step("agent GetInfo")
def get_info(agent: Agent) -> Dict[str, Any]:
    info = agent.stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=60)
    return MessageToDict(info)


@step("compile ResNet-50 for generic-cuda")
def compile_resnet(work: Path) -> Dict[str, Any]:
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_models.py"), str(work / "models"),
                    "--only", "resnet50,transformer"], check=True, timeout=600)
    from host.compiler.api import CompileOptions, compile_model

    t0 = time.perf_counter()
    r = compile_model(work / "models" / "resnet50.onnx", work / "resnet50-generic-cuda",
                      CompileOptions(profile="generic-cuda"))
    return {"seconds": round(time.perf_counter() - t0, 2), "archive": str(r.archive),
            "archive_bytes": r.archive.stat().st_size, "segments": len(r.manifest.segments),
            "remainder": r.manifest.remainder is not None, "target": r.manifest.target.to_dict()}


def summarize_build(events: List[Dict[str, Any]]) -> Dict[str, Any]:
    segs = [e["segment"] for e in events if "segment" in e]
    final = [s for s in segs if s.get("stage") in ("BUILT", "CACHE_HIT", "FAILED")]
    return {"stages": [f"{s['segmentId']}:{s['stage']}" for s in segs],
            "final": [{k: s.get(k) for k in ("segmentId", "stage", "parseS", "buildS", "lookupS", "engineBytes",
                                             "error", "messages", "backend")} for s in final],
            "summary": events[-1].get("summary")}


@step("a. tensorrt (TensorRT-RTX) build of ResNet-50, cold")
def trt_build(agent: Agent, digest: str) -> Dict[str, Any]:
    return summarize_build(agent.build(digest, backend="tensorrt"))


@step("a. tensorrt (TensorRT-RTX) build of ResNet-50, warm cache")
def trt_build_warm(agent: Agent, digest: str) -> Dict[str, Any]:
    return summarize_build(agent.build(digest, backend="tensorrt"))


@step("a. ListEngines")
def list_engines(agent: Agent) -> Dict[str, Any]:
    reply = agent.stub.ListEngines(agent_pb2.ListEnginesRequest(), timeout=60)
    return {"total_bytes": reply.total_bytes, "engines": [
        {"key": e.key[:16], "backend": e.backend, "backend_version": e.backend_version, "size": e.size,
         "device_class": e.device_class, "precision": e.attributes.get("precision")} for e in reply.engines]}


@step("a. run the TensorRT-RTX plan on this GPU (expected refusal on 9.0)")
def trt_run(agent: Agent, digest: str) -> Dict[str, Any]:
    req = agent_pb2.RunRequest(bundle_digest=digest, verify=True, options=agent_pb2.BuildOptions(backend="tensorrt"))
    try:
        reply = agent.run(req)
        return {"ran": True, "max_rel_err": reply.max_rel_err, "latency_ms": reply.latency_ms}
    except grpc.RpcError as exc:
        return {"ran": False, **rpc_error(exc)}


@step("a. tensorrt (TensorRT-RTX) build of ResNet-50 asked for fp16")
def trt_fp16(agent: Agent, digest: str) -> Dict[str, Any]:
    return summarize_build(agent.build(digest, backend="tensorrt", fp16=True))


@step("a. dynamic batch: ResNet-18 (batch 1..8) with optimization profiles, modes 0 and 1")
def trt_dynamic(agent: Agent, work: Path, backend: str) -> Dict[str, Any]:
    import onnx

    sys.path.insert(0, str(REPO / "scripts"))
    import make_models
    from host.compiler.api import CompileOptions, compile_model

    model = work / "resnet18-dyn.onnx"
    if not model.exists():
        onnx.save(make_models.resnet(18, batch="N"), str(model))
    out = work / "resnet18-dyn"
    archive = out / "bundle.tar"
    if not archive.exists():
        archive = compile_model(model, out, CompileOptions(profile="generic-cuda", batch="1:4:8")).archive
    digest = agent.upload(archive)
    steps = {}
    for label, opts in (("mode0 batch4", dict(batch=4, multi_engine_mode=0)),
                        ("mode0 batch8 (larger: rebuilt)", dict(batch=8, multi_engine_mode=0)),
                        ("mode0 batch2 (covered)", dict(batch=2, multi_engine_mode=0)),
                        ("mode1 batch2", dict(batch=2, multi_engine_mode=1))):
        events = agent.build(digest, backend=backend, **opts)
        segs = [e["segment"] for e in events if "segment" in e]
        steps[label] = [f"{s['stage']} {s.get('profile', '')} {s.get('buildS', '')}".strip() for s in segs
                        if s["stage"] in ("BUILT", "CACHE_HIT", "FAILED")] + \
            [s.get("error", "") for s in segs if s["stage"] == "FAILED"]
    try:
        agent.build(digest, backend=backend, batch=16)
        steps["batch16"] = "accepted"
    except grpc.RpcError as exc:
        steps["batch16"] = rpc_error(exc)
    reply = agent.stub.ListEngines(agent_pb2.ListEnginesRequest(), timeout=60)
    steps["engines"] = sorted(f"{e.backend} {e.attributes.get('profiles')}" for e in reply.engines
                              if e.backend == backend and "N" not in e.attributes.get("profiles", "")
                              and e.attributes.get("profiles") != "[]")
    return steps


@step("a. ResNet-50 bundle with the onnxruntime backend (CPU), verify")
def ort_resnet(agent: Agent, digest: str) -> Dict[str, Any]:
    reply = agent.run(agent_pb2.RunRequest(bundle_digest=digest, verify=True,
                                           options=agent_pb2.BuildOptions(backend="onnxruntime")))
    return {"max_rel_err": reply.max_rel_err, "latency_ms": reply.latency_ms, "backend": reply.backend}


@step("b. hybrid generic-cuda (sm_80 cubin) bundle on sm_90 (expected refusal)")
def hybrid_sm80(agent: Agent, archive: Path) -> Dict[str, Any]:
    digest = agent.upload(archive)
    try:
        reply = agent.run(agent_pb2.RunRequest(bundle_digest=digest, verify=True))
        return {"ran": True, "max_rel_err": reply.max_rel_err}
    except grpc.RpcError as exc:
        return {"ran": False, **rpc_error(exc)}


@step("b. hybrid bundle compiled for sm_90: TVM remainder on the GPU, segments on onnxruntime")
def hybrid_sm90(agent: Agent, archive: Path, original: Path) -> Dict[str, Any]:
    import onnxruntime as ort

    from device_agent.archive import read_manifest_from_archive
    from device_agent.fileio import sha256_file

    manifest = read_manifest_from_archive(archive)
    digest = agent.upload(archive)
    build = summarize_build(agent.build(digest, backend="onnxruntime"))
    ort_opts = agent_pb2.BuildOptions(backend="onnxruntime")  # TensorRT-RTX engines cannot run on sm_90
    verify = agent.run(agent_pb2.RunRequest(bundle_digest=digest, verify=True, options=ort_opts))
    rng = np.random.default_rng(7)
    feeds = {t.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in t.shape]).astype(t.dtype)
             for t in manifest.inputs}
    reply = agent.run(agent_pb2.RunRequest(bundle_digest=digest, options=ort_opts,
                                           inputs=[tensor(k, v) for k, v in feeds.items()]))
    sess = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    want = dict(zip(names, sess.run(names, feeds)))
    errs = {t.name: rel_err(out_array(t), want[t.name]) for t in reply.outputs}
    bench = [MessageToDict(e) for e in agent.stub.Benchmark(agent_pb2.BenchmarkRequest(
        bundle_digest=digest, options=ort_opts, warmup=20, iterations=200), timeout=600)]
    result = bench[-1]["result"]
    lat = result["latency"]
    lat.pop("samplesMs", None)
    trt = summarize_build(agent.build(digest, backend="tensorrt"))
    return {"remainder_target": manifest.remainder.target if manifest.remainder else None,
            "source_model_matches_manifest": sha256_file(original) == manifest.source_digest,
            "segments": len(manifest.segments), "build": build, "verify_max_rel_err": verify.max_rel_err,
            "fresh_input_rel_err_vs_onnxruntime": errs, "benchmark_latency": lat,
            "benchmark_backend_timings_ms": result.get("backendTimingsMs", {}),
            "tensorrt_rtx_build_of_its_segments": trt}


@step("c. tensorrt backend's CUDA buffers (cuda-python) round trip on the GPU")
def cuda_buffers() -> Dict[str, Any]:
    from device_agent.engines.tensorrt import _CudaRt

    cuda = _CudaRt()
    src = np.arange(1 << 20, dtype=np.float32)
    dst = np.zeros_like(src)
    ptr, handle = cuda.malloc(src.nbytes)
    e0, e1, e2 = cuda.event(), cuda.event(), cuda.event()
    cuda.record(e0)
    cuda.h2d(ptr, src)
    cuda.record(e1)
    cuda.d2h(dst, ptr)
    cuda.record(e2)
    cuda.sync()
    out = {"kind": cuda.kind, "equal": bool(np.array_equal(src, dst)), "bytes": int(src.nbytes),
           "h2d_ms": cuda.elapsed_ms(e0, e1), "d2h_ms": cuda.elapsed_ms(e1, e2)}
    cuda.free(handle)
    return out


def prepare(carried: Path) -> None:
    """On the CPU host: compile the hybrid transformer bundles the device run takes (NVRTC, no GPU needed).

    generic-cuda names sm_80; a cubin for sm_80 cannot load on the H100 (sm_90), so a second bundle
    is compiled from the same profile with its compute capability set to 9.0 (no profile has it).
    """
    import dataclasses

    import onnx

    from host.compiler import profiles
    from host.compiler.api import CompileOptions, compile_model

    sys.path.insert(0, str(REPO / "scripts"))
    import make_models

    carried.mkdir(parents=True, exist_ok=True)
    work = carried / "work"
    model = work / "transformer.onnx"
    work.mkdir(exist_ok=True)
    onnx.save(make_models.transformer_encoder(), str(model))
    opts = CompileOptions(profile="generic-cuda", exclude_ops=["Softmax"])
    r = compile_model(model, work / "sm80", opts)
    os.replace(r.archive, carried / "transformer-generic-cuda-sm80.tar")
    saved = profiles.PROFILES["generic-cuda"]
    profiles.PROFILES["generic-cuda"] = dataclasses.replace(saved, compute_capability="9.0")
    try:
        r = compile_model(model, work / "sm90", opts)
    finally:
        profiles.PROFILES["generic-cuda"] = saved
    os.replace(r.archive, carried / "transformer-sm90.tar")
    import shutil

    shutil.rmtree(work)
    for p in sorted(carried.iterdir()):
        print(f"{p}: {p.stat().st_size} bytes")


def agent_has(agent: Agent, backend: str) -> bool:
    info = agent.stub.GetInfo(agent_pb2.GetInfoRequest(), timeout=60)
    return any(b.name == backend and b.available for b in info.backends)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prepare", action="store_true", help="on the CPU host: compile the carried bundles")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--carried", type=Path, default=REPO / ".devstage" / "bundles")
    ap.add_argument("--work", type=Path, default=Path("/tmp/device_run"))
    args = ap.parse_args()
    if args.prepare:
        prepare(args.carried)
        return 0
    if args.out is None:
        ap.error("--out is required for the run")
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    facts()
    agent = Agent(args.work)
    try:
        get_info(agent)
        compiled = compile_resnet(args.work)
        if compiled:
            digest = agent.upload(Path(compiled["archive"]))
            trt_build(agent, digest)
            trt_build_warm(agent, digest)
            list_engines(agent)
            trt_run(agent, digest)
            trt_fp16(agent, digest)
            ort_resnet(agent, digest)
        trt_dynamic(agent, args.work, "tensorrt" if agent_has(agent, "tensorrt") else "onnxruntime")
        sm80, sm90 = args.carried / "transformer-generic-cuda-sm80.tar", args.carried / "transformer-sm90.tar"
        hybrid_sm80(agent, sm80)
        hybrid_sm90(agent, sm90, args.work / "models" / "transformer.onnx")
        cuda_buffers()
    finally:
        agent.stop()
        RESULTS["agent_log_tail"] = (args.work / "agent.log").read_text(errors="replace")[-4000:]
        (args.out / "device_run.json").write_text(json.dumps(RESULTS, indent=1, default=str))
    ok = {k: v["ok"] for k, v in RESULTS["steps"].items()}
    print(json.dumps(ok, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
