"""Bytes an update sends by parts against today's whole archive, per kind of change, and the store it leaves.

    python scripts/bench/delta.py [--model resnet50] [--runs 3] [--versions 5] [--work DIR] [--link]
                                  [--registry-agents 8]

The model is made by scripts/make_models.py (seeded weights, no download). Each run starts a fresh agent and pushes
the model, then the updates below, each with `deploy push --json` as a user would; the table gives medians over the
runs of the bytes the push sent (`upload.bytes_sent`) and of its wall time, against what the whole-archive
transport sent before bundles travelled by parts: the whole archive of the new bundle whenever its archive differs
from the one on the device (the archive digest was the bundle's identity), nothing when it is the same.

- first: run: a fresh device's first contact, `deploy run MODEL --input SAMPLE` (the sample is the reference input)
- samples: then `deploy push MODEL` (the compiler's own reference data: only they differ)
- max-rel-err: the same push again with another --max-rel-err (a verify option: the bundle is unchanged)
- retrained-fc: the model with its last Gemm's weights and bias drawn again (a re-trained classifier head)
- one-op: the partition moved by one op (`--no-offload Flatten`: the head runs in TVM; the backbone's weights stay)

With --link (root, iproute2) the agent runs in a network namespace behind a veth pair shaped by netem to 10 Mbit/s
and 50 ms delay each way (scripts/bench/upload.py makes the namespaces, as scripts/bench/faults.py does), and the
host's `deploy` in the other; the archive column's wall time is then the first push's (a whole bundle: what every
update cost before).

With --registry-agents N (needs docker-registry): a registry process and N agents on loopback; the model's bundle
and then the re-trained one are published by parts (host/registry/publish.py) and every agent pulls each (`Pull`,
as `fleet warm --via-registry` has them do): the bytes the registry received and all agents pulled for the
re-trained bundle, against the whole archive once to the registry and once to each agent.

Then `--versions` fine-tuned versions (last Gemm re-drawn, each its own seed) pushed to one fresh agent: the bytes
of the agent's store against as many whole archives. The host compile cache under --work is kept between
invocations, so a second invocation pays no compile.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "scripts" / "bench"))
DEPLOY = Path(sys.executable).parent / "deploy"

from scripts.bench._agent import median, start_agent, stop_agent  # noqa: E402


def _env(work: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(XDG_CACHE_HOME=str(work / "cache"), XDG_CONFIG_HOME=str(work / "config"),
               XDG_DATA_HOME=str(work / "data"))
    env.pop("DEPLOY_INVENTORY", None)
    return env


def deploy(env: dict[str, str], *args: str, prefix: Any = ()) -> dict[str, Any]:
    proc = subprocess.run([*prefix, str(DEPLOY), *args, "--json"], capture_output=True, text=True, env=env,
                          timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"deploy {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout)


def make_models(name: str, work: Path, versions: int) -> tuple[Path, list[Path], int]:
    """The model, its fine-tuned versions (last Gemm re-drawn, seeds 1..versions), and that layer's bytes."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    import make_models

    base = work / "models" / f"{name}.onnx"
    if not base.is_file():
        base.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(make_models.MODELS[name](), str(base))
    model = onnx.load(str(base))
    gemm = [n for n in model.graph.node if n.op_type == "Gemm"][-1]
    inits = {t.name: t for t in model.graph.initializer}
    layer = [inits[i] for i in gemm.input[1:] if i in inits]
    out = []
    for seed in range(1, versions + 1):
        path = work / "models" / f"{name}-ft{seed}" / f"{name}.onnx"  # one file name, as checkpoints would be
        if not path.is_file():
            rng = np.random.default_rng(1000 + seed)
            for t in layer:
                arr = numpy_helper.to_array(t)
                t.CopyFrom(numpy_helper.from_array((rng.standard_normal(arr.shape) * arr.std()).astype(arr.dtype),
                                                   t.name))
            path.parent.mkdir(parents=True, exist_ok=True)
            onnx.save(model, str(path))
        out.append(path)
    return base, out, sum(numpy_helper.to_array(t).nbytes for t in layer)


def _archive_sent(data: dict[str, Any], on_device: set[str]) -> int:
    """What the whole-archive transport sent for this push: the archive, unless that same archive was there."""
    archive = Path(data["compile"]["archive"])
    from host.client.digests import digest_of

    digest = digest_of(archive)
    sent = 0 if digest in on_device else archive.stat().st_size
    on_device.add(digest)
    return sent


def _archive_of(env: dict[str, str], model: Path, sample: Path) -> str:
    """The archive `deploy run MODEL --input SAMPLE` compiled (the host compile cache's newest entry)."""
    caches = sorted((Path(env["XDG_CACHE_HOME"]) / "deploy" / "bundles").glob("*/entry.json"),
                    key=lambda p: p.stat().st_mtime)
    entry = json.loads(caches[-1].read_text())
    return str(caches[-1].parent / entry["archive"])


LINK = ("netem", "delay", "50ms", "rate", "10mbit", "limit", "10000")
#: where the kernel lacks sch_netem (this machine's): the rate alone, no added delay (only netem delays packets)
LINK_FALLBACK = ("tbf", "rate", "10mbit", "burst", "32kb", "latency", "400ms")
NAMES = ("ddelta_a", "ddelta_b", "ddv_a", "ddv_b")


def run_once(env: dict[str, str], work: Path, model: Path, retrained: Path, sample: Path,
             link: bool = False) -> dict[str, dict]:
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    host_prefix: list[str] = []
    if link:
        from upload import ADDR_B

        proc, address = start_agent(store, listen=f"{ADDR_B}:7312", prefix=["ip", "netns", "exec", NAMES[1]],
                                    extra=["--backend", "onnxruntime", "--insecure"])  # a bench link, no TLS
        host_prefix = ["ip", "netns", "exec", NAMES[0]]
    else:
        proc, address = start_agent(store, extra=["--backend", "onnxruntime"])
    rows: dict[str, dict] = {}
    on_device: set[str] = set()
    try:
        def push(label: str, source: Path, *extra: str, command: str = "push") -> None:
            started = time.perf_counter()
            if command == "run":
                data = deploy(env, "run", str(source), "--device", address, "-o", str(work / "out.npz"), *extra,
                              prefix=host_prefix)
                data["compile"] = {"archive": _archive_of(env, source, sample)}
            else:
                data = deploy(env, "push", str(source), "--device", address, "--no-verify", *extra,
                              prefix=host_prefix)
            up = data["upload"]
            rows[label] = {"bytes_sent": up["bytes_sent"], "bytes_total": up["bytes_total"],
                           "parts": f"{up['parts_sent']}/{up['parts_total']}",
                           "archive": _archive_sent(data, on_device),
                           "wall_s": time.perf_counter() - started}

        push("first: run", model, "--input", f"input={sample}", command="run")  # a new user's first contact
        push("samples", model)  # then a push: the compiler's own reference data
        push("max-rel-err", model, "--max-rel-err", "0.5")
        push("retrained-fc", retrained)
        push("one-op", model, "--no-offload", "Flatten")
    finally:
        stop_agent(proc)
    return rows


def registry_bytes(work: Path, env: dict[str, str], model: Path, retrained: Path, agents: int) -> dict[str, int]:
    """Bundle bytes through a registry to `agents` agents: the model's, then the re-trained one's (by parts)."""
    import socket

    from device_agent.registry import RegistryClient, RegistryRef
    from host.client.agent import AgentClient
    from host.inventory import Device
    from host.registry.publish import publish_bundle_parts
    from tests.conftest import RegistryHandle

    dirs = []
    for path in (model, retrained):  # the compiled bundles (host compile cache, loopback agents' x86-cpu target)
        out = work / "registry-bundles" / path.parent.name
        if not (out / "bundle" / "manifest.json").is_file():
            deploy(env, "compile", str(path), "-o", str(out), "--profile", "x86-cpu")
        dirs.append(out / "bundle")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = work / "registry"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    registry = RegistryHandle(root / "data", port, root / "registry.log").start()
    ref = f"{registry.address}/bench/delta"
    procs, clients = [], []
    out: dict[str, int] = {}
    try:
        for i in range(agents):
            proc, address = start_agent(root / f"agent{i}", extra=["--registry", ref, "--backend", "onnxruntime"])
            procs.append(proc)
            clients.append(AgentClient(Device(name=f"a{i}", address=address)))
        client = RegistryClient(RegistryRef.parse(ref))
        for label, bundle_dir in zip(("model", "retrained"), dirs):
            published = publish_bundle_parts(client, bundle_dir)
            digest = "sha256:" + published.reference.split("-", 1)[1]
            out[f"{label}_registry"] = published.bytes_sent
            out[f"{label}_pulled"] = sum(c.pull(digest).bytes_pulled for c in clients)
            out[f"{label}_archive"] = (bundle_dir.parent / "bundle.tar").stat().st_size
    finally:
        for c in clients:
            c.close()
        for proc in procs:
            stop_agent(proc)
        registry.stop()
    return out


def store_of_versions(env: dict[str, str], work: Path, versions: list[Path]) -> tuple[int, int]:
    """(bytes in the agent's store, bytes of as many whole archives) after pushing every version."""
    store = work / "store-versions"
    shutil.rmtree(store, ignore_errors=True)
    proc, address = start_agent(store, extra=["--backend", "onnxruntime"])
    archives = 0
    try:
        for path in versions:
            data = deploy(env, "push", str(path), "--device", address, "--no-verify", "--name", "ft")
            archives += Path(data["compile"]["archive"]).stat().st_size
    finally:
        stop_agent(proc)
    return sum(p.stat().st_size for p in (store / "blobs").iterdir()), archives


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--work", type=Path, default=REPO / ".bench" / "delta")
    parser.add_argument("--link", action="store_true", help="10 Mbit/s, 50 ms netem link between host and agent")
    parser.add_argument("--registry-agents", type=int, default=0, help="bundle bytes through a registry to N agents")
    args = parser.parse_args()
    import numpy as np

    work = args.work.resolve()
    env = _env(work)
    model, versions, fc_bytes = make_models(args.model, work, args.versions)
    import onnx

    shape = [d.dim_value or 1 for d in onnx.load(str(model), load_external_data=False).graph.input[0].type.tensor_type
             .shape.dim]
    sample = work / "sample.npy"
    np.save(sample, np.random.default_rng(7).standard_normal(shape).astype(np.float32))
    link_text = "10 Mbit/s, 50 ms delay each way (netem)"
    if args.link:
        from upload import make_namespaces, teardown_namespaces

        why = make_namespaces(LINK, NAMES)
        if why and "qdisc kind is unknown" in why:
            why, link_text = make_namespaces(LINK_FALLBACK, NAMES), "10 Mbit/s (tbf; no sch_netem here: no delay)"
        if why:
            raise SystemExit(f"--link: {why}")
    try:
        runs = [run_once(env, work, model, versions[0], sample, args.link) for _ in range(args.runs)]
    finally:
        if args.link:
            teardown_namespaces(NAMES[:2])
    mib = 2 ** 20
    where = f"over {link_text}" if args.link else "on loopback"
    print(f"model {args.model}; last Gemm (weights + bias) {fc_bytes / mib:.2f} MiB; medians of {args.runs} runs; "
          f"onnxruntime agent {where}")
    if runs:  # --runs 0: only the registry and store figures
        whole_s = median([r["first: run"]["wall_s"] for r in runs])  # a whole bundle: every update's cost before
        print(f"{'update':<14}{'parts':>10}{'sent MiB':>11}{'of MiB':>9}{'share':>8}{'archive MiB':>13}{'ratio':>8}"
              f"{'wall s':>8}{'archive wall s':>16}")
        for label in runs[0]:
            sent = median([r[label]["bytes_sent"] for r in runs])
            total = median([r[label]["bytes_total"] for r in runs])
            archive = median([r[label]["archive"] for r in runs])
            ratio = f"{sent / archive:.4f}" if archive else "-"
            wall = median([r[label]["wall_s"] for r in runs])
            print(f"{label:<14}{runs[0][label]['parts']:>10}{sent / mib:>11.3f}{total / mib:>9.1f}"
                  f"{sent / total:>8.2%}{archive / mib:>13.1f}{ratio:>8}{wall:>8.2f}"
                  f"{(f'{whole_s:.2f}' if archive else '-'):>16}")
    if args.registry_agents:
        r = registry_bytes(work, env, model, versions[0], args.registry_agents)
        n = args.registry_agents
        print(f"registry, {n} agents, re-trained bundle after the model's: the registry received "
              f"{r['retrained_registry'] / mib:.2f} MiB (whole archive: {r['retrained_archive'] / mib:.1f} MiB), "
              f"the agents pulled {r['retrained_pulled'] / mib:.2f} MiB in all (whole archives: "
              f"{n * r['retrained_archive'] / mib:.1f} MiB); the model's first: {r['model_registry'] / mib:.1f} MiB "
              f"received, {r['model_pulled'] / mib:.1f} MiB pulled")
    if args.versions:
        stored, archives = store_of_versions(env, work, versions)
        print(f"store after {args.versions} fine-tuned versions: {stored / mib:.1f} MiB by parts, "
              f"{archives / mib:.1f} MiB as {args.versions} archives (ratio {stored / archives:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
