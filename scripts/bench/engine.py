#!/usr/bin/env python3
"""The agent's Benchmark of ResNet-50 against onnxruntime called in-process, and build time cold vs warm.

    .venv/bin/python scripts/bench/engine.py [--runs 5] [--iterations 40] [--warmup 5]

Same model (scripts/make_models.py's ResNet-50, compiled to a bundle for x86-cpu: one segment),
same input (the bundle's reference input), same thread settings (onnxruntime's defaults on both
sides), same timing loop (device_agent.bench.run_loop). Agent and in-process runs alternate, one
run each per round; each run reports its median latency, the table shows the median over runs.
Floor (issue 3): agent / in-process ratio of medians under 1.05.
Build: the cache is pruned before each cold build; the warm build follows it (a cache hit).
Talks to the agent with the generated gRPC stub only, so it also runs on the device machine.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _agent import median, start_agent, stop_agent  # noqa: E402


class Stub:
    """The few agent calls this benchmark makes, over a plain channel (grpc + protos only)."""

    def __init__(self, address: str) -> None:
        import grpc

        from protos import agent_pb2_grpc

        self.channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20),
                                                               ("grpc.max_send_message_length", 64 << 20)])
        self.stub = agent_pb2_grpc.DeviceAgentStub(self.channel)

    def upload(self, path: Path) -> str:
        import hashlib

        from protos import agent_pb2

        digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()

        def msgs():
            yield agent_pb2.UploadRequest(header=agent_pb2.UploadHeader(digest=digest, size=path.stat().st_size))
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    yield agent_pb2.UploadRequest(chunk=block)

        self.stub.Upload(msgs(), timeout=600)
        return digest

    def build(self, digest: str, options) -> list:
        from protos import agent_pb2

        return list(self.stub.Build(agent_pb2.BuildRequest(bundle_digest=digest, options=options), timeout=1800))

    def prune(self, request):
        return self.stub.Prune(request, timeout=60)

    def benchmark(self, request) -> list:
        return list(self.stub.Benchmark(request, timeout=1800))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--model", default="resnet50", help="a model of scripts/make_models.py")
    args = ap.parse_args()

    import onnxruntime as ort

    import make_models
    from device_agent.bench import run_loop
    from device_agent.bundle import Bundle
    from host.compiler.api import CompileOptions, compile_model
    from protos import agent_pb2

    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        tmp_path = Path(tmp)
        models = make_models.write_models(tmp_path, [args.model])
        model_path = Path(models[args.model])
        result = compile_model(model_path, tmp_path / "out", CompileOptions(profile="x86-cpu"))
        bundle = Bundle.open(result.bundle_dir)
        feeds, _ = bundle.read_reference()
        print(f"model {args.model}: {model_path.stat().st_size / 1e6:.1f} MB, {len(result.manifest.segments)} "
              f"segment(s), remainder: {result.manifest.remainder is not None}; onnxruntime {ort.__version__}")

        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        proc, address = start_agent(tmp_path / "store", env={"PYTHONPATH": path})
        try:
            client = Stub(address)
            digest = client.upload(result.archive)
            opts = agent_pb2.BuildOptions(backend="onnxruntime")
            cold, warm, cold_build_s, warm_lookup_s = [], [], [], []
            for _ in range(args.runs):
                client.prune(agent_pb2.PruneRequest(all=True))
                t0 = time.perf_counter()
                events = list(client.build(digest, opts))
                cold.append(time.perf_counter() - t0)
                cold_build_s.append(sum(e.segment.build_s for e in events if e.WhichOneof("event") == "segment"))
                t0 = time.perf_counter()
                events = list(client.build(digest, opts))
                warm.append(time.perf_counter() - t0)
                warm_lookup_s.append(max(e.segment.lookup_s for e in events
                                         if e.WhichOneof("event") == "segment"
                                         and e.segment.stage == agent_pb2.SegmentEvent.CACHE_HIT))

            sess = ort.InferenceSession(str(model_path),
                                        providers=["CPUExecutionProvider"])
            names = [o.name for o in sess.get_outputs()]
            agent_p50, local_p50, agent_mean, local_mean = [], [], [], []
            request = agent_pb2.BenchmarkRequest(bundle_digest=digest, options=opts, warmup=args.warmup,
                                                 iterations=args.iterations)
            for _ in range(args.runs):
                res = client.benchmark(request)[-1].result.latency
                agent_p50.append(res.p50_ms)
                agent_mean.append(res.mean_ms)
                stats = run_loop(lambda: sess.run(names, feeds), warmup=args.warmup, iterations=args.iterations)
                local_p50.append(stats.p50_ms)
                local_mean.append(stats.mean_ms)
        finally:
            stop_agent(proc)

    ratio = median(agent_p50) / median(local_p50)
    rows = [
        ("agent Benchmark p50 (ms)", median(agent_p50), ", ".join(f"{x:.2f}" for x in agent_p50)),
        ("in-process onnxruntime p50 (ms)", median(local_p50), ", ".join(f"{x:.2f}" for x in local_p50)),
        ("agent Benchmark mean (ms)", median(agent_mean), ", ".join(f"{x:.2f}" for x in agent_mean)),
        ("in-process onnxruntime mean (ms)", median(local_mean), ", ".join(f"{x:.2f}" for x in local_mean)),
        ("ratio agent / in-process (p50)", ratio, "floor: < 1.05"),
        ("Build, cold cache (s, client wall)", median(cold), ", ".join(f"{x:.2f}" for x in cold)),
        ("  of which the backend's build_s", median(cold_build_s), ", ".join(f"{x:.2f}" for x in cold_build_s)),
        ("Build, warm cache (s, client wall)", median(warm), ", ".join(f"{x:.3f}" for x in warm)),
        ("  of which cache lookup_s", median(warm_lookup_s), ", ".join(f"{x:.4f}" for x in warm_lookup_s)),
    ]
    print(f"\n{args.model}, {args.runs} runs x {args.iterations} iterations (warm-up {args.warmup}), median of runs")
    print(f"{'measure':<38} {'median':>10}  runs")
    for name, value, detail in rows:
        print(f"{name:<38} {value:>10.4f}  {detail}")
    verdict = "meets" if ratio < 1.05 else "MISSES"
    print(f"\nratio of medians {ratio:.3f}: {verdict} the floor of 1.05")
    return 0 if ratio < 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
