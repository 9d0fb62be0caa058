#!/usr/bin/env python3
"""The device runtime (issue 23) against what it wraps, the OIP endpoint against Run, activation and swap times.

    python scripts/bench/runtime.py [--runs 5] [--models tiny,resnet18] [--swap-models resnet18]
                                    [--backend onnxruntime|onnxruntime-cuda] [--threads 2] [--json]

Starts a real agent on loopback on a temporary store and pushes two versions of each model under one name
(`host.api.push(..., name=, activate=)`, different weights: seeds 0 and 1 of tests' tiny_conv_net and of
scripts/make_models.py's ResNet-18), then measures, in this process:

1. `runtime.run`: `open_model(name, store=...).run(feeds)` against the same cached engine without the runtime
   layer: `LoadedModels.from_settings(settings).open(digest, opts).run` (the agent's loaded-engines seam),
   `ModelRunner.run` (the runner the seam composes, one level lower) and the engine's own onnxruntime
   InferenceSession.run (single-segment onnxruntime bundles), all on one loaded engine (the runtime `Model` is
   built as open_model builds it, over that LoadedModels). Per-call p50 of each variant per run; the variants
   interleaved in rounds of one block of about --block-seconds each, in rotating order (a slower call: one call
   each in turn). The ratio is the median over all rounds of all runs of the ratio of the two blocks' p50s (pairs
   that ran back to back, so load from outside the benchmark hits both alike), [the range of the per-run
   medians]; the p50 column is the median over runs of each variant's per-run p50.
   Floor (issue 23): runtime.run / the backend called directly <= 1.03.
2. `ModelInfer` through tritonclient.grpc against the agent's own `Run` RPC (AgentClient.run), same agent, same
   active bundle and input, loopback; client wall per call including encoding and decoding, interleaved as in 1.
3. Activate returning -> first answer from the new version: a loop thread calling `run_versioned` (runtime in this
   process), then in a second phase a loop thread calling `ModelInfer` (tritonclient), while the main thread
   activates the two versions alternately (AgentClient.activate, what `deploy activate` calls). Median over the
   activations (negative: the answer came before the Activate reply reached the client).
4. Latency of `runtime.run` from --threads threads calling in a loop: per run a phase with no swap, then one with
   an activation every --swap-every seconds for policy "availability" (default) and one for "resource";
   p50/p99 over the calls of all runs.

Everything runs on onnxruntime on the CPU by default; `--backend onnxruntime-cuda` on a GPU machine. `--json`
prints every number (per run) as one JSON object instead of the tables. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _agent import median, start_agent, stop_agent  # noqa: E402

FLOOR_RUNTIME = 1.03
from device_agent.oip import DTYPE_TO_DATATYPE as DATATYPES  # noqa: E402 - KServe v2 datatype by dtype


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    if not s:
        return float("nan")
    return s[max(0, min(len(s) - 1, math.ceil(q / 100 * len(s)) - 1))]


def write_model(kind: str, path: Path, seed: int) -> Path:
    if kind == "tiny":
        sys.path.insert(0, str(REPO / "tests" / "host" / "cli"))
        from helpers import tiny_conv_net

        return tiny_conv_net(path, seed=seed)
    import onnx

    import make_models

    depth = {"resnet18": 18, "resnet50": 50}.get(kind)
    if depth is None:
        raise SystemExit(f"unknown model {kind!r}: use tiny, resnet18 or resnet50")
    onnx.save(make_models.resnet(depth, seed=seed), str(path))
    return path


def feeds_for(specs: Sequence[Any]) -> Dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    return {s.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in s.shape]).astype(s.dtype)
            for s in specs}


def timed_calls(fn: Callable[[], Any], n: int) -> List[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def plan_calls(fn: Callable[[], Any], seconds: float, lo: int, hi: int, block_s: float) -> Tuple[int, int]:
    """(calls per variant per run, calls per block): about `seconds` of calls, in blocks of about `block_s`, at
    least 4 blocks (a call slower than `block_s`: the variants alternate call by call). fn is warmed up first."""
    for _ in range(3):
        fn()
    t = max(min(timed_calls(fn, 3)) / 1e3, 1e-6)
    calls = max(lo, min(hi, int(seconds / t)))
    return calls, max(1, min(calls // 4, int(block_s / t)))


def interleaved(variants: Dict[str, Callable[[], Any]], calls: int, per_block: int
                ) -> Tuple[Dict[str, List[float]], Dict[str, List[float]]]:
    """`calls` calls of each variant in rounds: one block of `per_block` calls of each variant per round, in an
    order that rotates. Returns the per-call ms and the p50 of each block (index: round), by variant."""
    names = list(variants)
    out: Dict[str, List[float]] = {k: [] for k in names}
    blocks: Dict[str, List[float]] = {k: [] for k in names}
    for b in range(max(1, calls // per_block)):
        order = names[b % len(names):] + names[:b % len(names)]
        for k in order:
            if per_block > 1:
                variants[k]()  # not timed: the first call after another variant's block (its thread pool wakes)
            got = timed_calls(variants[k], per_block)
            out[k] += got
            blocks[k].append(pct(got, 50))
    return out, blocks


def paired(blocks: Dict[str, List[float]], a: str, b: str) -> List[float]:
    """a / b per round: each pair ran back to back, so load from outside the benchmark hits both alike."""
    return [x / y for x, y in zip(blocks[a], blocks[b])]


# ---------------------------------------------------------------------------------------------------------- setup
class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.store = tmp / "agent" / "store"
        self.proc = None
        self.address = ""
        self.client: Any = None
        self.triton: Any = None
        self.names: Dict[str, str] = {}  # model kind -> name on the device
        self.versions: Dict[str, Tuple[int, int]] = {}

    def start(self) -> None:
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self.proc, self.address = start_agent(self.store, env={"PYTHONPATH": path})
        from host.client.agent import connect
        import tritonclient.grpc as tc

        self.client = connect(self.address)
        self.triton = tc.InferenceServerClient(url=self.address)

    def stop(self) -> None:
        if self.triton is not None:
            self.triton.close()
        if self.client is not None:
            self.client.close()
        if self.proc is not None:
            stop_agent(self.proc)

    def push_two(self, kind: str) -> None:
        from host import api

        name = f"bench-{kind}"
        got = []
        for seed in (0, 1):
            path = write_model(kind, self.tmp / f"{kind}_{seed}.onnx", seed)
            t0 = time.perf_counter()
            res = api.push(path, self.address, name=name, activate=(seed == 0), backend=self.args.backend)
            got.append(res["model"]["version"])
            log(f"pushed {kind} seed {seed}: {name} version {res['model']['version']} "
                f"({time.perf_counter() - t0:.1f} s)")
        self.names[kind] = name
        self.versions[kind] = (got[0], got[1])

    def active(self, kind: str) -> Any:
        """The active ModelVersion (bundle digest, options) as the agent lists it."""
        info = self.client.list_models(self.names[kind]).models[0]
        return next(v for v in info.versions if v.version == info.active)

    def activate(self, kind: str, version: int) -> float:
        """Activate; returns perf_counter when the reply came back."""
        self.client.activate(self.names[kind], version)
        return time.perf_counter()


# ------------------------------------------------------------------------------------- 1. runtime vs the backend
def bench_runtime(b: Bench, kind: str) -> Dict[str, Any]:
    from device_agent.loaded import LoadedModels
    from device_agent.models import ModelRepository
    from device_agent.runtime import Model
    from device_agent.runtime.load import record_options, settings_for, version_loader

    a = b.args
    settings = settings_for(b.store, None, a.backend)
    lm = LoadedModels.from_settings(settings)
    # open_model(name, store=, backend=) is this very Model over LoadedModels.from_settings(settings); built here so
    # that every variant runs the one engine `lm` loads (separate sessions of one plan differ by more than the
    # runtime layer costs: weights warm in the CPU cache or not, their own thread pools)
    m = Model(b.names[kind], ModelRepository(Path(settings.data_dir) / "models"), version_loader(models=lm))
    rec = m.record
    bundle = lm.bundles.get(rec.bundle_digest)
    opts = record_options(lm, rec, bundle)
    seam = lm.open(rec.bundle_digest, opts)
    runner = lm.runner(rec.bundle_digest, bundle, opts, lm.planner.segment_batch(bundle, opts))
    feeds = feeds_for(m.inputs)
    variants: Dict[str, Callable[[], Any]] = {
        "runtime.run": lambda: m.run(feeds),
        "LoadedModels.open().run": lambda: seam.run(feeds),
        "ModelRunner.run": lambda: runner.run(feeds),
    }
    sess = getattr(runner.engine, "session", None)  # onnxruntime: the engine's own InferenceSession
    if sess is not None and bundle.manifest.remainder is None:
        out_names = [o.name for o in sess.get_outputs()]
        variants["onnxruntime InferenceSession.run"] = lambda: sess.run(out_names, feeds)
    calls, per_block = plan_calls(lambda: m.run(feeds), a.variant_seconds, a.min_calls, 1000, a.block_seconds)
    for fn in variants.values():
        for _ in range(3):
            fn()
    per_run: Dict[str, List[float]] = {k: [] for k in variants}
    others = [k for k in variants if k != "runtime.run"]
    pairs: Dict[str, List[float]] = {k: [] for k in others}
    run_ratios: Dict[str, List[float]] = {k: [] for k in others}
    for r in range(a.runs):
        got, blocks = interleaved(variants, calls, per_block)
        for k, v in got.items():
            per_run[k].append(pct(v, 50))
        for k in others:
            ratios = paired(blocks, "runtime.run", k)
            pairs[k] += ratios
            run_ratios[k].append(median(ratios))
        log(f"  runtime {kind} run {r + 1}/{a.runs}: " + ", ".join(f"{k} {pct(v, 50):.3f}" for k, v in got.items()))
    m.close()
    return {"model": kind, "calls_per_run": calls, "per_block": per_block, "p50_ms": per_run,
            "ratio_runtime_over": {k: median(v) for k, v in pairs.items()}, "run_ratios": run_ratios,
            "backend": opts.backend.name}


# ------------------------------------------------------------------------------------------ 2. ModelInfer vs Run
def bench_oip(b: Bench, kind: str) -> Dict[str, Any]:
    import numpy as np
    import tritonclient.grpc as tc

    from host.pipeline.tensors import to_arrays, to_tensors
    from protos import agent_pb2

    a = b.args
    name = b.names[kind]
    v = b.active(kind)
    meta = b.triton.get_model_metadata(name)
    from device_agent.manifest import TensorSpec

    dtypes = {v: k for k, v in DATATYPES.items()}
    specs = [TensorSpec(i.name, dtypes[i.datatype], [int(d) if d >= 0 else "n" for d in i.shape])
             for i in meta.inputs]
    feeds = feeds_for(specs)

    def infer() -> Dict[str, Any]:
        inputs = []
        for k, x in feeds.items():
            t = tc.InferInput(k, list(x.shape), DATATYPES[x.dtype.name])
            t.set_data_from_numpy(x)
            inputs.append(t)
        res = b.triton.infer(name, inputs)
        return {o.name: res.as_numpy(o.name) for o in meta.outputs}

    def run() -> Dict[str, Any]:
        reply = b.client.run(agent_pb2.RunRequest(bundle_digest=v.bundle_digest, options=v.options,
                                                  inputs=to_tensors(feeds)))
        return to_arrays(reply.outputs)

    x, y = infer(), run()
    same = all(np.array_equal(x[k], y[k]) for k in x)
    variants = {"ModelInfer (tritonclient)": infer, "Run (AgentClient)": run}
    calls, per_block = plan_calls(run, a.variant_seconds, a.min_calls, 500, a.block_seconds)
    per_run: Dict[str, List[float]] = {k: [] for k in variants}
    pairs: List[float] = []
    run_ratios: List[float] = []
    for r in range(a.runs):
        got, blocks = interleaved(variants, calls, per_block)
        for k, vals in got.items():
            per_run[k].append(pct(vals, 50))
        ratios = paired(blocks, "ModelInfer (tritonclient)", "Run (AgentClient)")
        pairs += ratios
        run_ratios.append(median(ratios))
        log(f"  oip {kind} run {r + 1}/{a.runs}: " + ", ".join(f"{k} {pct(v, 50):.3f}" for k, v in got.items()))
    return {"model": kind, "calls_per_run": calls, "per_block": per_block, "p50_ms": per_run,
            "ratio_modelinfer_over_run": median(pairs), "run_ratios": run_ratios,
            "same_outputs": same}


# ------------------------------------------------------------------------- 3. activate -> first new answer
def follow_times(b: Bench, kind: str, ask: Callable[[], int], count: int, label: str) -> Dict[str, Any]:
    """A loop thread calls `ask` (returns the version that answered); the main thread activates the versions
    alternately and waits until the loop has an answer from the new one."""
    v1, v2 = b.versions[kind]
    want: List[Optional[int]] = [None]
    seen = threading.Event()
    at: List[float] = [0.0]
    stop = threading.Event()
    errors: List[str] = []
    answered = [0]

    def loop() -> None:
        while not stop.is_set():
            try:
                got = ask()
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            t = time.perf_counter()
            answered[0] += 1
            if want[0] is not None and got == want[0] and not seen.is_set():
                at[0] = t
                seen.set()

    current = int(ask())
    th = threading.Thread(target=loop, daemon=True)
    th.start()
    delays, from_call, rpc = [], [], []
    try:
        for i in range(count):
            target = v2 if current == v1 else v1
            seen.clear()
            want[0] = target
            t0 = time.perf_counter()
            t_ret = b.activate(kind, target)
            rpc.append((t_ret - t0) * 1e3)
            if not seen.wait(120):
                raise SystemExit(f"{label}: no answer from version {target} within 120 s after activate "
                                 f"(errors: {errors[:3]})")
            delays.append((at[0] - t_ret) * 1e3)
            from_call.append((at[0] - t0) * 1e3)
            want[0] = None
            current = target
            log(f"  follow {label} {kind} activation {i + 1}/{count}: version {target}, activate {rpc[-1]:.1f} ms, "
                f"first answer {delays[-1]:.1f} ms after it returned")
            time.sleep(b.args.settle)
    finally:
        stop.set()
        th.join(60)
    return {"model": kind, "client": label, "first_answer_ms": delays, "first_answer_from_call_ms": from_call,
            "activate_rpc_ms": rpc, "errors": errors,
            "calls": answered[0]}


def bench_follow(b: Bench, kind: str) -> List[Dict[str, Any]]:
    import tritonclient.grpc as tc

    from device_agent.runtime import open_model

    t0 = time.perf_counter()
    m = open_model(b.names[kind], store=b.store, backend=b.args.backend)
    open_ms = (time.perf_counter() - t0) * 1e3
    feeds = feeds_for(m.inputs)
    out = [follow_times(b, kind, lambda: m.run_versioned(feeds).version, b.args.activations, "runtime.run_versioned")]
    out[0]["open_model_ms"] = open_ms
    m.close()

    name = b.names[kind]
    inputs = []
    for k, x in feeds.items():
        t = tc.InferInput(k, list(x.shape), DATATYPES[x.dtype.name])
        t.set_data_from_numpy(x)
        inputs.append(t)

    def ask() -> int:
        return int(b.triton.infer(name, inputs).get_response().model_version)

    out.append(follow_times(b, kind, ask, b.args.activations, "ModelInfer (tritonclient)"))
    return out


# ------------------------------------------------------------------------------------ 4. p99 during a swap
def load_phase(b: Bench, kind: str, m: Any, feeds: Dict[str, Any], seconds: float, swap: bool) -> Dict[str, Any]:
    v1, v2 = b.versions[kind]
    stop = threading.Event()
    lat: List[List[float]] = [[] for _ in range(b.args.threads)]
    errors: List[str] = []
    start = threading.Barrier(b.args.threads + 1)

    def worker(i: int) -> None:
        start.wait()
        mine = lat[i]
        while not stop.is_set():
            t0 = time.perf_counter_ns()
            try:
                m.run(feeds)
            except Exception as exc:  # noqa: BLE001 - counted
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            mine.append((time.perf_counter_ns() - t0) / 1e6)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(b.args.threads)]
    for t in threads:
        t.start()
    start.wait()
    t_end = time.perf_counter() + seconds
    swaps = 0
    current = m.version
    if swap:
        time.sleep(min(b.args.swap_every / 2, seconds / 4))
        while time.perf_counter() < t_end:
            current = v2 if current == v1 else v1
            b.activate(kind, current)
            swaps += 1
            time.sleep(max(0.0, min(b.args.swap_every, t_end - time.perf_counter())))
    else:
        time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(120)
    allv = [x for xs in lat for x in xs]
    return {"calls": len(allv), "p50_ms": pct(allv, 50), "p99_ms": pct(allv, 99), "max_ms": max(allv or [0.0]),
            "swaps": swaps, "errors": len(errors), "first_error": errors[0] if errors else "", "latencies_ms": allv}


def bench_swap(b: Bench, kind: str) -> Dict[str, Any]:
    """Per run: a phase with no swap, then one with swaps for each policy. With no swap both policies take the same
    path (one stat, the loaded version), so one reference phase serves both. Percentiles over the calls of all runs
    (a phase has tens of calls of a big model: a p99 of one phase would be its maximum)."""
    from device_agent.runtime import open_model

    a = b.args
    models = {p: open_model(b.names[kind], store=b.store, policy=p, backend=a.backend)
              for p in ("availability", "resource")}
    feeds = feeds_for(models["availability"].inputs)
    phases = [("no swap", "availability", False), ("swap", "availability", True), ("swap", "resource", True)]
    res: Dict[str, List[Dict[str, Any]]] = {f"{what} {p}": [] for what, p, _ in phases}
    try:
        for r in range(a.runs):
            for what, p, swap in phases:
                m = models[p]
                m.run(feeds)  # on the active version before the phase starts
                got = load_phase(b, kind, m, feeds, a.phase_seconds, swap)
                res[f"{what} {p}"].append(got)
                log(f"  swap {kind} run {r + 1}/{a.runs} {what}, policy {p}: {got['calls']} calls, "
                    f"p50 {got['p50_ms']:.2f} ms, p99 {got['p99_ms']:.2f} ms, {got['swaps']} swaps, "
                    f"{got['errors']} errors")
    finally:
        for m in models.values():
            m.close()
    phases_out = {}
    for k, runs in res.items():
        allv = [x for ph in runs for x in ph.pop("latencies_ms")]
        phases_out[k] = {"calls": len(allv), "p50_ms": pct(allv, 50), "p99_ms": pct(allv, 99), "max_ms": max(allv),
                         "swaps": sum(ph["swaps"] for ph in runs), "errors": sum(ph["errors"] for ph in runs),
                         "first_error": next((ph["first_error"] for ph in runs if ph["first_error"]), ""),
                         "runs": runs}
    return {"model": kind, "threads": a.threads, "phases": phases_out}


# ------------------------------------------------------------------------------------------------------ report
def fmt_ms(x: float) -> str:
    return f"{x * 1e3:.1f} µs" if x < 1 else f"{x:.2f} ms"


def spread(xs: Sequence[float]) -> str:
    return f"{min(xs):.3f}–{max(xs):.3f}"


def print_tables(results: Dict[str, Any]) -> bool:
    ok = True
    env = results["env"]
    print(f"\nscripts/bench/runtime.py: {env['runs']} runs, backend {env['backend']}, onnxruntime "
          f"{env['onnxruntime']}, {env['cores']} cores, Python {env['python']}; 1-minute load average "
          f"{env['load_before']:.1f} before, {env['load_after']:.1f} after; medians over runs\n")

    if results["runtime"]:
        print("**1. `runtime.run` against the same engine called without the runtime layer** (variants "
              "interleaved; p50: median over runs; ratio: median of the paired ratios of back-to-back blocks "
              "[range of the per-run medians])\n")
        print("| model | call | p50 per call | runtime.run − this | runtime.run / this | floor |")
        print("| --- | --- | ---: | ---: | ---: | --- |")
        for r in results["runtime"]:
            for k, vals in r["p50_ms"].items():
                if k == "runtime.run":
                    print(f"| {r['model']} | `{k}` ({r['calls_per_run']} calls/run) | {fmt_ms(median(vals))} "
                          "| - | - | |")
                    continue
                rat = r["run_ratios"][k]
                ratio = r["ratio_runtime_over"][k]
                meets = ratio <= FLOOR_RUNTIME
                ok &= meets
                diff_us = (median(r["p50_ms"]["runtime.run"]) - median(vals)) * 1e3
                print(f"| {r['model']} | `{k}` | {fmt_ms(median(vals))} | {diff_us:+.0f} µs | {ratio:.3f} "
                      f"[{spread(rat)}] | {'meets' if meets else '**MISSES**'} ≤ {FLOOR_RUNTIME} |")

    if results["oip"]:
        print("\n**2. `ModelInfer` (tritonclient.grpc) against the agent's `Run` RPC**, same agent over loopback, "
              "client wall per call incl. encode/decode; ratio paired as in 1\n")
        print("| model | ModelInfer p50 | Run p50 | ModelInfer / Run | same outputs |")
        print("| --- | ---: | ---: | ---: | --- |")
        for r in results["oip"]:
            mi, rn = r["p50_ms"]["ModelInfer (tritonclient)"], r["p50_ms"]["Run (AgentClient)"]
            rat = r["run_ratios"]
            print(f"| {r['model']} | {fmt_ms(median(mi))} | {fmt_ms(median(rn))} | "
                  f"{r['ratio_modelinfer_over_run']:.3f} [{spread(rat)}] | {'yes' if r['same_outputs'] else 'NO'} |")

    if results["follow"]:
        print("\n**3. Activate returned → first answer from the new version** (a loop calling all the time; versions "
              "alternate; medians over activations; negative: the answer came before the Activate reply)\n")
        print("| model | client | activations | Activate RPC | returned → first new answer | min | max | "
              "Activate called → first new answer | failed calls |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in results["follow"]:
            d = r["first_answer_ms"]
            print(f"| {r['model']} | {r['client']} | {len(d)} | {median(r['activate_rpc_ms']):.1f} ms | "
                  f"**{median(d):.1f} ms** | {min(d):.1f} ms | {max(d):.1f} ms | "
                  f"{median(r['first_answer_from_call_ms']):.1f} ms | {len(r['errors'])} |")
        for r in results["follow"]:
            if "open_model_ms" in r:
                print(f"\n{r['model']}: `open_model` (loads one version from the cache) took "
                      f"{r['open_model_ms']:.0f} ms in this process")

    if results["swap"]:
        print(f"\n**4. `runtime.run` latency during swaps** ({env['threads']} threads calling in a loop; per run a "
              f"{env['phase_seconds']:.1f} s phase with no swap, then one per policy with an activation every "
              f"{env['swap_every']:.2f} s; percentiles over the calls of all runs)\n")
        print("| model | phase | calls | p50 | p99 | p99 / p99 no swap | max | swaps | failed calls |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in results["swap"]:
            ref = r["phases"]["no swap availability"]["p99_ms"]
            for k, ph in r["phases"].items():
                what = "no swap (either policy)" if k.startswith("no swap") else k.replace("swap ", "swap, policy ")
                print(f"| {r['model']} | {what} | {ph['calls']} | {fmt_ms(ph['p50_ms'])} | {fmt_ms(ph['p99_ms'])} | "
                      f"{ph['p99_ms'] / ref:.2f} | {fmt_ms(ph['max_ms'])} | {ph['swaps']} | {ph['errors']} |")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--models", default="tiny,resnet18", help="models for 1 and 2: tiny, resnet18, resnet50")
    ap.add_argument("--swap-models", default="resnet18", help="models for 3 and 4 (comma-separated; '' skips)")
    ap.add_argument("--backend", default="onnxruntime", help="build backend passed to push (onnxruntime-cuda on "
                                                             "a GPU)")
    ap.add_argument("--variant-seconds", type=float, default=0.5, help="about this long per variant per run "
                                                                       "(1, 2)")
    ap.add_argument("--min-calls", type=int, default=20, help="at least this many calls per variant per run (1, 2)")
    ap.add_argument("--block-seconds", type=float, default=0.05, help="length of an interleaved block (1, 2); "
                                                                      "slower calls alternate one by one")
    ap.add_argument("--activations", type=int, default=6, help="activations per client (3)")
    ap.add_argument("--settle", type=float, default=0.2, help="seconds between activations (3)")
    ap.add_argument("--threads", type=int, default=2, help="threads calling runtime.run in a loop (4)")
    ap.add_argument("--phase-seconds", type=float, default=2.5, help="length of each phase (4)")
    ap.add_argument("--swap-every", type=float, default=1.25, help="seconds between activations in a swap phase (4)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: runtime, oip, follow, swap")
    ap.add_argument("--json", action="store_true", help="print all results (per run) as one JSON object")
    ap.add_argument("--keep", action="store_true", help="keep the temporary store and models")
    a = ap.parse_args()

    kinds = [k for k in a.models.split(",") if k]
    swap_kinds = [k for k in a.swap_models.split(",") if k]
    skip = set(a.skip.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    # the host's caches (compiled bundles, digests) in the temporary dir too: nothing of the user's is touched
    for var, sub in (("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data")):
        os.environ[var] = str(tmp / "home" / sub)
    os.environ.pop("DEPLOY_INVENTORY", None)

    import onnxruntime as ort

    load_before = os.getloadavg()[0]
    results: Dict[str, Any] = {"runtime": [], "oip": [], "follow": [], "swap": []}
    b = Bench(a, tmp)
    t_start = time.perf_counter()
    try:
        b.start()
        log(f"agent at {b.address}, store {b.store}")
        for kind in dict.fromkeys(kinds + swap_kinds):
            b.push_two(kind)
        for kind in kinds:
            if "runtime" not in skip:
                log(f"1. runtime.run vs the backend: {kind}")
                results["runtime"].append(bench_runtime(b, kind))
            if "oip" not in skip:
                log(f"2. ModelInfer vs Run: {kind}")
                results["oip"].append(bench_oip(b, kind))
        for kind in swap_kinds:
            if "follow" not in skip:
                log(f"3. activate -> first answer: {kind}")
                results["follow"] += bench_follow(b, kind)
            if "swap" not in skip:
                log(f"4. p99 during swaps: {kind}")
                results["swap"].append(bench_swap(b, kind))
    finally:
        b.stop()
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    results["env"] = {"runs": a.runs, "backend": a.backend, "onnxruntime": ort.__version__, "cores": os.cpu_count(),
                      "python": platform.python_version(), "load_before": load_before,
                      "load_after": os.getloadavg()[0], "phase_seconds": a.phase_seconds, "swap_every": a.swap_every,
                      "threads": a.threads, "wall_s": round(time.perf_counter() - t_start, 1)}
    if a.json:
        print(json.dumps(results, indent=1))
        return 0
    ok = print_tables(results)
    print(f"\nwall {results['env']['wall_s']:.0f} s; runtime.run floor (≤ {FLOOR_RUNTIME} against every direct "
          f"call): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
