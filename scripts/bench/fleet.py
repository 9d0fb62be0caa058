#!/usr/bin/env python3
"""Fleet warming against every device building for itself: wall time and build seconds as the fleet grows.

For N = 6, 12, 24 real agents on loopback in 3 real classes (the main venv's onnxruntime and two older
releases in their own virtualenvs, tests/system/envs.py), in one run:
- warm:       `host.fleet.warm.Warmer` (one build per class, engines fetched once and put on the rest);
- everywhere: every device builds the bundle itself (the Build RPC on each, same concurrency).
Each mode starts from empty engine caches (Prune all) and the bundle already in every agent's store (each mode
would upload it the same way; the one-off upload time is printed for reference). Median of --runs runs each.
CPU s is the user + system time of all agent processes and the host process during the mode: all agents share
this machine's cores, so wall time here is bounded by that total work, unlike a real fleet where each device
has its own CPU and only the host relays copies.
Floors (issue 5): warm builds == classes; warm wall time at N = 24 under half the everywhere wall time.

Models (--models): resnet18 (scripts/make_models.py; 47 MB of weights, onnxruntime "builds" it in a fraction of a
second, so moving its plan costs nearly as much as building it) and encoder24 (24 blocks of make_models'
transformer encoder chained with onnx.compose; 19 MB, more optimizer work per byte) and thin96 (96 narrow blocks,
d=32: 4,800 nodes in 4 MB, so the build is graph work and the plan is small: the regime of TensorRT, whose builds
take minutes for plans of tens of MB). Any .onnx path works too.

--mode registry (issue 17) compares, for the same N, `warm` over gRPC (the host uploads the bundle and puts the
engines on every device) with `warm --via-registry` (host/fleet/via_registry.py: the host publishes one bundle and
one set of engines per class to a real `docker-registry` process on loopback, the devices pull). Every run starts
from empty engine caches, no bundle in any store and an empty registry. Host MB sent is the payload the host
process sent (bundle and engine bytes: gRPC uploads and PutEngine, or registry blob uploads), from the warmer's own
counter. All agents run in the main venv; the classes come from 3 profiles (x86-cpu, jetson-xavier-nx,
jetson-nano), so there is no need for the older onnxruntime environments. Floor: registry host bytes per class,
not per device (at most classes x (bundle + engines) plus manifests).

--mode rollout (issue 24) compares, for N = 24, 96 (default) agents in 3 classes by profile (as --mode registry),
each started with `--health-cmd` (default `true`), a model name already active on every device (an untimed first
rollout), in each run:
- one-by-one: `host.api.push(model, address, name=NAME, activate=True)` (`deploy push --activate`) device after
  device, timed in total;
- rollout:    `host.api.fleet_rollout(other model, name=NAME)` (`deploy fleet rollout`, default waves 1,10%,50%,100%,
  --concurrency) over the same devices from a deploy.toml ($DEPLOY_INVENTORY), timed.
Every run uses two new models (--models tiny: tests/host/cli/helpers.py tiny_conv_net; or a scripts/make_models.py
architecture) from new seeds, so each mode records, verifies and activates a new version on every device; the mode
that goes first alternates across runs. Each model is compiled into the host cache per class before the timings
(both modes compile once per class). Floor: rollout / one-by-one wall time <= 0.3 at N = 96. Also printed: wall
time per device as N grows, and where the rollout's time goes (warm, each wave, register and activate steps, host
CPU) against push's phases. All agents share this machine's cores: `rollout: CPU s / cores` is a lower bound on
the rollout's wall time here, which a real fleet (a CPU per device) does not have; `--health-cmd 'sleep 0.5'`
gives each activation device-side time that is not CPU on those cores.

usage: .venv/bin/python scripts/bench/fleet.py [--sizes 6,12,24] [--runs 3] [--models thin96,resnet18]
                                               [--concurrency 8] [--mode everywhere|registry|rollout]
                                               [--health-cmd CMD] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _agent import REPO, median, start_agent, stop_agent  # noqa: E402

from host.client.agent import AgentClient  # noqa: E402
from host.fleet.classes import classify, group  # noqa: E402
from host.fleet.fanout import fan_out  # noqa: E402
from host.inventory import Device  # noqa: E402
from host.fleet.warm import ClassPlan, Warmer, model_plans  # noqa: E402
from protos import agent_pb2  # noqa: E402
from tests.system.envs import agent_envs  # noqa: E402

PROFILES = ("x86-cpu", "jetson-xavier-nx", "jetson-nano")


def cpu_seconds(procs: list[subprocess.Popen]) -> float:
    """User + system CPU seconds of the agent processes and this (host) process so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for proc in procs:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def timed(procs: list[subprocess.Popen], fn) -> dict:
    before = cpu_seconds(procs)
    out = fn()
    out["cpu_s"] = cpu_seconds(procs) - before
    return out


def prune_all(devices: list[Device]) -> None:
    def one(d: Device) -> None:
        with AgentClient(d) as c:
            c.prune(agent_pb2.PruneRequest(all=True))
            assert not c.list_engines().engines
    for out in fan_out(devices, one, concurrency=8):
        if not out.ok:
            raise RuntimeError(f"prune on {out.item.name}: {out.error}")


def plans_by_device(devices: list[Device], plan_for) -> dict[str, ClassPlan]:
    """Each device's plan (bundle + build options), made once per class as `warm` does."""
    infos = fan_out(devices, lambda d: AgentClient(d).info(), concurrency=8)
    members = [((o.item, o.value), classify(o.value, o.item)) for o in infos]
    out: dict[str, ClassPlan] = {}
    for cls, pairs in group(members).items():
        plan = plan_for(cls, pairs[0][1], pairs[0][0])
        for device, _info in pairs:
            out[device.name] = plan
    return out


def upload_all(devices: list[Device], plans: dict[str, ClassPlan], concurrency: int) -> float:
    t = time.perf_counter()
    outs = fan_out(devices, lambda d: AgentClient(d).upload(plans[d.name].archive, kind="bundle"),
                   concurrency=concurrency)
    for o in outs:
        if not o.ok:
            raise RuntimeError(f"upload to {o.item.name}: {o.error}")
    return time.perf_counter() - t


def build_everywhere(devices: list[Device], plans: dict[str, ClassPlan], concurrency: int) -> dict:
    from host.client.digests import digest_of
    from host.pipeline.build_stream import build_bundle

    def one(d: Device) -> tuple[int, float]:
        plan = plans[d.name]
        with AgentClient(d) as c:  # read as every host build reads the stream (host/pipeline/build_stream.py)
            streamed = build_bundle(c, digest_of(plan.archive), plan.options, device=d.name)
        return streamed.built, streamed.built_s

    t = time.perf_counter()
    outs = fan_out(devices, one, concurrency=concurrency)
    wall = time.perf_counter() - t
    for o in outs:
        if not o.ok:
            raise RuntimeError(f"build on {o.item.name}: {o.error}")
    return {"wall_s": wall, "build_s": sum(o.value[1] for o in outs), "builds": sum(1 for o in outs if o.value[0])}


def warm_once(devices: list[Device], plan_for, concurrency: int) -> dict:
    result = Warmer(devices, plan_for, concurrency=concurrency).run()
    if not result.ok:
        raise RuntimeError(f"warm failed: {json.dumps(result.to_dict())[:2000]}")
    return {"wall_s": result.wall_s, "build_s": result.build_s, "builds": result.builds,
            "classes": len(result.classes)}


def make_model(name: str, out_dir: Path) -> Path:
    """A model by name (see the module docstring) or an existing .onnx path."""
    if name.endswith(".onnx"):
        return Path(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    if name.startswith(("encoder", "thin")):
        import onnx
        from onnx import compose

        sys.path.insert(0, str(REPO / "scripts"))
        from make_models import transformer_encoder

        thin = name.startswith("thin")
        blocks = int(name[len("thin" if thin else "encoder"):] or 24)
        dims = dict(d=32, heads=2, ff=64, seq=16) if thin else {}
        model = transformer_encoder(seed=0, **dims)
        for i in range(1, blocks):
            nxt = compose.add_prefix(transformer_encoder(seed=i, **dims), f"b{i}_")
            model = compose.merge_models(model, nxt, io_map=[(model.graph.output[0].name, f"b{i}_tokens")])
        onnx.checker.check_model(model)
        path = out_dir / f"{name}.onnx"
        onnx.save(model, str(path))
        return path
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_models.py"), str(out_dir), "--only", name],
                   check=True, capture_output=True)
    return out_dir / f"{name}.onnx"


def bench_size(n: int, envs, model: Path, runs: int, concurrency: int, tmp: Path) -> dict:
    procs, devices = [], []
    try:
        for i in range(n):
            k = i % len(envs)
            proc, address = start_agent(tmp / f"n{n}" / f"agent{i}" / "store", python=envs[k].python)
            procs.append(proc)
            devices.append(Device(name=f"c{k}-{i}", address=address, profile=PROFILES[k]))
        plan_for = model_plans(model)
        plans = plans_by_device(devices, plan_for)  # compiles into the host cache, outside the timings
        upload_s = upload_all(devices, plans, concurrency)
        warm, everywhere = [], []
        for _ in range(runs):  # interleaved, so both modes see the same machine weather
            prune_all(devices)
            warm.append(timed(procs, lambda: warm_once(devices, plan_for, concurrency)))
            prune_all(devices)
            everywhere.append(timed(procs, lambda: build_everywhere(devices, plans, concurrency)))
        return {"n": n, "upload_s": upload_s, "warm": warm, "everywhere": everywhere}
    finally:
        for proc in procs:
            stop_agent(proc)


def reset(devices: list[Device], stores: list[Path], registry) -> None:
    """Empty engine caches, no bundle in any store (the bench's own agent dirs), an empty registry."""
    import shutil

    prune_all(devices)
    for store in stores:
        for blob in (store / "blobs").iterdir():
            blob.unlink()
    registry.stop()
    shutil.rmtree(registry.root, ignore_errors=True)
    registry.start()


def warm_bytes(devices: list[Device], plan_for, concurrency: int, registry_ref: str = "") -> dict:
    if registry_ref:
        from host.fleet.via_registry import RegistryWarmer
        from host.registry.credentials import registry_client

        warmer: Warmer = RegistryWarmer(devices, plan_for, registry=registry_client(registry_ref),
                                        concurrency=concurrency)
    else:
        warmer = Warmer(devices, plan_for, concurrency=concurrency)
    result = warmer.run()
    if not result.ok:
        raise RuntimeError(f"warm failed: {json.dumps(result.to_dict())[:2000]}")
    return {"wall_s": result.wall_s, "builds": result.builds, "classes": len(result.classes),
            "bytes_sent": warmer.bytes_sent, "payload_bytes": getattr(warmer, "payload_bytes", 0)}


def bench_registry(n: int, model: Path, runs: int, concurrency: int, tmp: Path) -> dict:
    import socket

    from tests.conftest import RegistryHandle

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp / f"r{n}").mkdir(parents=True, exist_ok=True)
    registry = RegistryHandle(tmp / f"r{n}" / "data", port, tmp / f"r{n}" / "registry.log").start()
    ref = f"{registry.address}/bench/fleet"
    procs, devices, stores = [], [], []
    try:
        for i in range(n):
            k = i % len(PROFILES)
            store = tmp / f"r{n}" / f"agent{i}" / "store"
            proc, address = start_agent(store, extra=["--registry", ref])
            procs.append(proc)
            stores.append(store)
            devices.append(Device(name=f"c{k}-{i}", address=address, profile=PROFILES[k]))
        plan_for = model_plans(model)
        plans = plans_by_device(devices, plan_for)  # compiles into the host cache, outside the timings
        sizes = {str(p.archive): Path(p.archive).stat().st_size for p in plans.values()}
        grpc_runs, registry_runs = [], []
        for _ in range(runs):  # interleaved
            reset(devices, stores, registry)
            grpc_runs.append(timed(procs, lambda: warm_bytes(devices, plan_for, concurrency)))
            reset(devices, stores, registry)
            registry_runs.append(timed(procs, lambda: warm_bytes(devices, plan_for, concurrency, ref)))
        return {"n": n, "grpc": grpc_runs, "registry": registry_runs, "bundle_bytes": sum(sizes.values())}
    finally:
        for proc in procs:
            stop_agent(proc)
        registry.stop()


def report_registry(model: Path, results: list[dict], args) -> list[tuple[str, bool]]:
    print(f"\nmodel {model.name} ({model.stat().st_size / 2**20:.0f} MB), {len(PROFILES)} classes (profiles "
          f"{', '.join(PROFILES)}; one onnxruntime), concurrency {args.concurrency}, median of {args.runs} runs, "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| N | gRPC wall s | registry wall s | wall ratio (registry/gRPC) | gRPC host MB sent | registry host MB "
          "sent | host bytes ratio (registry/gRPC) | builds (gRPC, registry) | gRPC CPU s | registry CPU s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for r in results:
        g = {k: median([x[k] for x in r["grpc"]]) for k in ("wall_s", "builds", "cpu_s", "bytes_sent")}
        q = {k: median([x[k] for x in r["registry"]]) for k in ("wall_s", "builds", "cpu_s", "bytes_sent")}
        print(f"| {r['n']} | {g['wall_s']:.2f} | {q['wall_s']:.2f} | {q['wall_s'] / g['wall_s']:.2f} | "
              f"{g['bytes_sent'] / 2**20:.1f} | {q['bytes_sent'] / 2**20:.1f} | "
              f"{q['bytes_sent'] / max(1, g['bytes_sent']):.3f} | {g['builds']:.0f}, {q['builds']:.0f} | "
              f"{g['cpu_s']:.1f} | {q['cpu_s']:.1f} |")
        verdicts.append((f"{model.stem} N={r['n']}: builds == classes in both modes",
                         all(x["builds"] == r["registry"][0]["classes"] for x in r["registry"] + r["grpc"])))
        over = [x["bytes_sent"] - x["payload_bytes"] for x in r["registry"]]
        verdicts.append((f"{model.stem} N={r['n']}: registry host bytes <= one bundle + one set of engines per "
                         f"class + 64 KiB (largest excess {max(over) / 1024:.1f} KiB)", max(over) <= 64 * 1024))
    return verdicts


# ---------------------------------------------------------------- --mode rollout (issue 24)

ROLLOUT_NAME = "det"


def versioned_model(kind: str, seed: int, out_dir: Path) -> Path:
    """One version of a model: `tiny` (tests/host/cli/helpers.py tiny_conv_net: 2 KB, one Conv and one Gemm) or a
    scripts/make_models.py architecture (resnet18, resnet50, mobilenetv2, transformer), weights from `seed`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{kind}-s{seed}.onnx"
    if path.exists():
        return path
    if kind == "tiny":
        from tests.host.cli.helpers import tiny_conv_net

        return tiny_conv_net(path, seed=seed)
    import onnx

    sys.path.insert(0, str(REPO / "scripts"))
    import make_models

    makers = {"resnet18": lambda: make_models.resnet(18, seed=seed),
              "resnet50": lambda: make_models.resnet(50, seed=seed),
              "mobilenetv2": lambda: make_models.mobilenetv2(seed=seed),
              "transformer": lambda: make_models.transformer_encoder(seed=seed)}
    if kind not in makers:
        raise SystemExit(f"--models {kind}: rollout mode takes tiny, {', '.join(makers)}")
    onnx.save(makers[kind](), str(path))
    return path


def start_fleet(n: int, root: Path, health_cmd: str) -> tuple[list[subprocess.Popen], list[Device]]:
    """N agents on loopback in 3 classes (by --profile, one onnxruntime), each with the health command; started 4 at
    a time (each takes about a second of CPU to import its stack; the start is not timed)."""
    from concurrent.futures import ThreadPoolExecutor

    extra = ["--health-cmd", health_cmd] if health_cmd else []

    def one(i: int) -> tuple[subprocess.Popen, Device]:
        k = i % len(PROFILES)
        proc, address = start_agent(root / f"agent{i}" / "store", extra=["--profile", PROFILES[k], *extra])
        return proc, Device(name=f"c{k}-{i}", address=address, profile=PROFILES[k])

    procs: list[subprocess.Popen] = []
    devices: list[Device] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        errors = []
        for f in futures:
            try:
                proc, device = f.result()
            except Exception as exc:  # noqa: BLE001 - stop the others, then raise
                errors.append(exc)
                continue
            procs.append(proc)
            devices.append(device)
    if errors:
        for proc in procs:
            stop_agent(proc)
        raise errors[0]
    return procs, devices


def write_inventory(devices: list[Device], path: Path) -> None:
    """The fleet as a deploy.toml; $DEPLOY_INVENTORY points at it, as `deploy fleet rollout` reads it."""
    import tomli_w

    path.write_text(tomli_w.dumps({"devices": {d.name: {"address": d.address, "tags": ["bench"]} for d in devices}}))
    os.environ["DEPLOY_INVENTORY"] = str(path)


def push_one_by_one(devices: list[Device], model: Path) -> dict:
    """`deploy push MODEL --device D --name NAME --activate` for each device in turn, as a script would run it."""
    from host import api

    phases: dict[str, float] = {}
    cpu, t = time.process_time(), time.perf_counter()
    for d in devices:
        out = api.push(model, d.address, name=ROLLOUT_NAME, activate=True)
        m = out["model"]
        if not (m and m["created"] and m["activated"] and m["active"] == m["version"]):
            raise RuntimeError(f"push to {d.name} did not activate a new version: {json.dumps(m)}")
        for k, v in out["timings"].items():
            if k != "total":
                phases[k] = phases.get(k, 0.0) + v
    return {"wall_s": time.perf_counter() - t, "phases": phases, "host_cpu_s": time.process_time() - cpu}


def rollout_once(devices: list[Device], model: Path, concurrency: int) -> dict:
    """`deploy fleet rollout MODEL --name NAME` (default waves 1,10%,50%,100%) over the inventory's devices; where
    its time went, from its own events: warm (until the first wave starts), each wave, the register and activate
    steps summed over devices (they overlap, `concurrency` at a time)."""
    import threading

    from host import api

    marks: list[tuple[str, float]] = []
    steps: dict[str, float] = {}
    lock = threading.Lock()
    cpu, t = time.process_time(), time.perf_counter()

    def on_event(e) -> None:
        with lock:
            if e.kind == "wave":
                marks.append((f"wave {e.wave}", time.perf_counter() - t))
            elif e.kind == "step":
                steps[e.step] = steps.get(e.step, 0.0) + e.seconds

    out = api.fleet_rollout(model, name=ROLLOUT_NAME, concurrency=concurrency, on_event=on_event)
    wall, host_cpu = time.perf_counter() - t, time.process_time() - cpu
    if out["state"] != "done" or len(out["activated"]) != len(devices):
        raise RuntimeError(f"rollout ended {out['state']}: {out.get('detail')}; {len(out['activated'])} of "
                           f"{len(devices)} activated, failed {out['failed'][:3]}")
    versions = {d["version"] for d in out["devices"]}
    previous = {d["previous"] for d in out["devices"]}
    if versions & previous:
        raise RuntimeError(f"rollout did not switch every device to a new version: {versions} after {previous}")
    bounds = [m[1] for m in marks] + [wall]
    return {"wall_s": wall, "warm_s": bounds[0], "waves_s": [b - a for a, b in zip(bounds, bounds[1:])],
            "register_s": steps.get("register", 0.0), "activate_s": steps.get("activate", 0.0),
            "host_cpu_s": host_cpu}


def bench_rollout(n: int, kind: str, runs: int, concurrency: int, health_cmd: str, tmp: Path) -> dict:
    procs, devices = start_fleet(n, tmp / f"n{n}", health_cmd)
    try:
        write_inventory(devices, tmp / f"n{n}" / "deploy.toml")
        models = tmp.parent / "models"
        prime = versioned_model(kind, 1000, models)
        # every model of the runs compiled into the host cache per class, outside the timings (both modes would
        # compile once per class the same way: push's first device of a class misses, the rest hit)
        pairs = [(versioned_model(kind, 2 * r + 1, models), versioned_model(kind, 2 * r + 2, models))
                 for r in range(runs)]
        for m in [prime, *(p for pair in pairs for p in pair)]:
            plans_by_device(devices, model_plans(m))
        rollout_once(devices, prime, concurrency)  # untimed: every device has a version active, channels warm
        one, roll = [], []
        for r, (push_model, roll_model) in enumerate(pairs):
            # each run activates two new versions of NAME on every device; the order alternates across runs
            order = [("one", push_model), ("roll", roll_model)]
            for which, model in (order if r % 2 == 0 else order[::-1]):
                if which == "one":
                    one.append(timed(procs, lambda: push_one_by_one(devices, model)))
                else:
                    roll.append(timed(procs, lambda: rollout_once(devices, model, concurrency)))
        return {"n": n, "one_by_one": one, "rollout": roll}
    finally:
        for proc in procs:
            stop_agent(proc)


def report_rollout(kind: str, model: Path, results: list[dict], args) -> list[tuple[str, bool]]:
    print(f"\nmodel {kind} ({model.stat().st_size / 1024:.0f} KB a version), {len(PROFILES)} classes (profiles "
          f"{', '.join(PROFILES)}; one onnxruntime), health command {args.health_cmd!r}, rollout waves 1,10%,50%,100% "
          f"and concurrency {args.concurrency}, median of {args.runs} runs, {os.cpu_count()} CPU cores, load "
          f"average {os.getloadavg()[0]:.1f} at the end\n")
    print("| N | one-by-one push --activate wall s | rollout wall s | ratio (rollout/one-by-one) | one-by-one s/device "
          "| rollout s/device | one-by-one CPU s | rollout CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    verdicts = []
    rows = {}
    for r in results:
        n = r["n"]
        o = {k: median([x[k] for x in r["one_by_one"]]) for k in ("wall_s", "cpu_s")}
        q = {k: median([x[k] for x in r["rollout"]]) for k in ("wall_s", "cpu_s")}
        ratio = q["wall_s"] / o["wall_s"]
        rows[n] = (o, q, ratio)
        print(f"| {n} | {o['wall_s']:.2f} | {q['wall_s']:.2f} | {ratio:.2f} | {o['wall_s'] / n:.3f} | "
              f"{q['wall_s'] / n:.3f} | {o['cpu_s']:.1f} | {q['cpu_s']:.1f} |")
        if n == 96:
            verdicts.append((f"{kind} N=96: rollout wall <= 0.3 x one-by-one wall ({ratio:.2f})", ratio <= 0.3))
    print("\nWhere the time goes (medians; step and phase seconds are summed over devices, the rollout's overlap "
          f"{args.concurrency} at a time):\n")
    print("| N | rollout: warm s | rollout: waves s (1, 2, ...) | rollout: register s | rollout: activate s "
          "| rollout: host CPU s | rollout: CPU s / cores | one-by-one: target, compile, upload, build, verify, "
          "version s | one-by-one: host CPU s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        q = r["rollout"]
        waves = [median([x["waves_s"][i] for x in q]) for i in range(min(len(x["waves_s"]) for x in q))]
        keys = ("target", "compile", "upload", "build", "verify", "version")
        phases = [median([x["phases"].get(k, 0.0) for x in r["one_by_one"]]) for k in keys]
        print(f"| {r['n']} | {median([x['warm_s'] for x in q]):.2f} | {', '.join(f'{w:.2f}' for w in waves)} | "
              f"{median([x['register_s'] for x in q]):.2f} | {median([x['activate_s'] for x in q]):.2f} | "
              f"{median([x['host_cpu_s'] for x in q]):.1f} | "
              f"{median([x['cpu_s'] for x in q]) / (os.cpu_count() or 1):.2f} | "
              f"{', '.join(f'{p:.2f}' for p in phases)} | "
              f"{median([x['host_cpu_s'] for x in r['one_by_one']]):.1f} |")
    if len(rows) > 1:
        lo, hi = min(rows), max(rows)
        grow = rows[hi][1]["wall_s"] / rows[lo][1]["wall_s"]
        print(f"\ngrowth {lo} -> {hi} devices (x{hi / lo:.0f}): rollout wall x{grow:.2f}, one-by-one wall "
              f"x{rows[hi][0]['wall_s'] / rows[lo][0]['wall_s']:.2f}; rollout s/device "
              f"{rows[lo][1]['wall_s'] / lo:.3f} -> {rows[hi][1]['wall_s'] / hi:.3f}")
    # checked in each run (a rollout not `done` on all N, or a push that did not activate a new version, stops the
    # bench with the reason)
    verdicts.append((f"{kind}: every rollout done on all N, every push activated a new version", True))
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=None, help="comma-separated fleet sizes (default 6,12,24; rollout: 24,96)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default=None, help="comma-separated: thin96, resnet18, encoder24, another "
                        "scripts/make_models.py name, or .onnx paths (default thin96,resnet18); rollout mode: tiny "
                        "(the default), resnet18, resnet50, mobilenetv2, transformer (versions made from seeds)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="also print the raw measurements as JSON")
    parser.add_argument("--mode", choices=("everywhere", "registry", "rollout"), default="everywhere",
                        help="everywhere: warm against every device building; registry: warm over gRPC against "
                        "warm --via-registry (needs docker-registry); rollout: `fleet rollout` against one-by-one "
                        "`push --activate`")
    parser.add_argument("--health-cmd", default="true", help="rollout mode: each agent's --health-cmd, run at every "
                        "activation (default `true`; e.g. `sleep 0.5` for a check that takes time; '' for none)")
    args = parser.parse_args()
    rollout = args.mode == "rollout"
    args.sizes = args.sizes or ("24,96" if rollout else "6,12,24")
    args.models = args.models or ("tiny" if rollout else "thin96,resnet18")
    sizes = [int(s) for s in args.sizes.split(",")]
    envs = agent_envs() if args.mode == "everywhere" else []
    verdicts: list[tuple[str, bool]] = []
    raw = {}
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmpdir:
        tmp = Path(tmpdir)
        os.environ.setdefault("XDG_CACHE_HOME", str(tmp / "host-cache"))  # host compile cache: this run only
        os.environ["DEPLOY_ROLLOUT_DB"] = str(tmp / "rollouts.sqlite3")  # rollout records: this run only
        for name in args.models.split(","):
            if rollout:
                results = [bench_rollout(n, name, args.runs, args.concurrency, args.health_cmd, tmp / name)
                           for n in sizes]
                verdicts += report_rollout(name, versioned_model(name, 1, tmp / "models"), results, args)
                raw[name] = results
                continue
            model = make_model(name, tmp / "models")
            if args.mode == "registry":
                results = [bench_registry(n, model, args.runs, args.concurrency, tmp / name) for n in sizes]
                verdicts += report_registry(model, results, args)
            else:
                results = [bench_size(n, envs, model, args.runs, args.concurrency, tmp / name) for n in sizes]
                verdicts += report(model, results, envs, args)
            raw[name] = results
    print()
    for what, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    if args.json:
        print(json.dumps(raw, indent=1))
    return 0 if all(ok for _, ok in verdicts) else 1


def report(model: Path, results: list[dict], envs, args) -> list[tuple[str, bool]]:
    print(f"\nmodel {model.name} ({model.stat().st_size / 2**20:.0f} MB), {len(envs)} classes (onnxruntime "
          f"{', '.join(e.ort_version for e in envs)}), concurrency {args.concurrency}, median of {args.runs} runs, "
          f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| N | warm wall s | everywhere wall s | wall ratio (warm/everywhere) | warm builds | everywhere builds "
          "| warm build s | everywhere build s | warm CPU s | everywhere CPU s "
          "| bundle upload to all s (both modes, not timed) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    verdicts = []
    for r in results:
        w = {k: median([x[k] for x in r["warm"]]) for k in ("wall_s", "build_s", "builds", "cpu_s")}
        e = {k: median([x[k] for x in r["everywhere"]]) for k in ("wall_s", "build_s", "builds", "cpu_s")}
        classes = r["warm"][0]["classes"]
        ratio = w["wall_s"] / e["wall_s"]
        print(f"| {r['n']} | {w['wall_s']:.2f} | {e['wall_s']:.2f} | {ratio:.2f} | {w['builds']:.0f} | "
              f"{e['builds']:.0f} | {w['build_s']:.2f} | {e['build_s']:.2f} | {w['cpu_s']:.1f} | {e['cpu_s']:.1f} | "
              f"{r['upload_s']:.2f} |")
        verdicts.append((f"{model.stem} N={r['n']}: warm builds == classes ({classes})",
                         all(x["builds"] == classes for x in r["warm"])))
        if r["n"] == 24:
            verdicts.append((f"{model.stem} N=24: warm wall < 0.5 x everywhere wall ({ratio:.2f})", ratio < 0.5))
    return verdicts


if __name__ == "__main__":
    sys.exit(main())
