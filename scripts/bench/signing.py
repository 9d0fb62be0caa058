"""What signing bundles costs: host signing and agent verification against a push of ResNet-50 and a warm of 8.

    python scripts/bench/signing.py [--model resnet50] [--runs 3] [--agents 8]

1. The parts, in this process (medians of --runs): `sign_manifest` making a new targets/snapshot/timestamp version
   (what the first push of a bundle pays), `metadata_for` when valid metadata already lists the manifest (what every
   later push and every device of a warm pays), and the agent's `Trust.verify_bundle` on the ResNet-50 archive
   (the tuf client on the metadata, then every archive member hashed against the manifest), beside the file
   check that unpacking no longer repeats for a bundle the agent verified (`Bundle.verify`).
2. A push, whole (`deploy push MODEL --device ADDR`, the host's compile cache warm, so compile is a cache hit and
   the push is upload + build + verify + version: the strictest denominator; the first push, which compiles, is
   printed too): to a fresh agent without a trust root from a host without keys
   ("off"), and to a fresh agent with the fleet's trust root from a host with the keys ("on").
3. A warm of N agents as `deploy fleet warm` moves a bundle: the archive uploaded to N fresh agents at once, with
   and without signing (metadata made once, verified by each agent).
The floor (issue 27): sign + verify <= 3 % of the push's wall time. Also printed: the size of the metadata.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _agent import bench_model, median, start_agent, stop_agent, timed_push  # noqa: E402

DEPLOY = Path(sys.executable).parent / "deploy"
FLOOR = 0.03


def _env(home: Path, keys_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(XDG_CACHE_HOME=str(home / "cache"), XDG_CONFIG_HOME=str(home / "config"),
               XDG_DATA_HOME=str(home / "data"), DEPLOY_KEYS_DIR=str(keys_dir))
    env.pop("DEPLOY_INVENTORY", None)
    return env


def _push(model: Path, address: str, env: dict) -> tuple[float, dict]:
    return timed_push(model, address, env, ["--backend", "onnxruntime"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50", help="a model of scripts/make_models.py")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--part-runs", type=int, default=7, help="runs of each part (1.), which are cheap")
    a = ap.parse_args()

    from device_agent.fileio import sha256_file
    from device_agent.trust import Trust
    from host.client.agent import AgentClient
    from host.inventory import Device
    from host.security import keys, signing

    model = bench_model(a.model)
    work = Path(tempfile.mkdtemp(prefix="signing-bench-"))
    procs: list = []
    try:
        fleet = keys.init(work / "keys").path
        no_keys = work / "no-keys"
        home = work / "home"
        load_before = os.getloadavg()[0]

        # a first push (off) fills the host's compile cache; its bundle is what the parts are timed on
        proc, address = start_agent(work / "warmup" / "store", extra=["--backend", "onnxruntime"])
        procs.append(proc)
        first_wall, first = _push(model, address, _env(home, no_keys))
        stop_agent(procs.pop())
        archive = Path(first["compile"]["archive"])
        digest = sha256_file(archive)
        manifest = signing.manifest_of_archive(archive)

        # 1. the parts
        sign_new, sign_listed, verify, unpack_check = [], [], [], []
        from device_agent.archive import extract_archive
        from device_agent.bundle import Bundle

        unpacked = extract_archive(archive, work / "unpacked")
        wire = b""
        for i in range(a.part_runs):
            t = time.perf_counter()
            wire = signing.sign_manifest(manifest, fleet, force=True)
            sign_new.append(time.perf_counter() - t)
            t = time.perf_counter()
            signing.metadata_for(archive, fleet)
            sign_listed.append(time.perf_counter() - t)
            trust = Trust(fleet / keys.TRUST_ROOT, work / f"trust-{i}")
            t = time.perf_counter()
            trust.verify_bundle(digest, archive, wire)
            verify.append(time.perf_counter() - t)
            t = time.perf_counter()
            Bundle.open(unpacked).verify()  # what unpacking a bundle the agent verified no longer does
            unpack_check.append(time.perf_counter() - t)

        # 2. a push, whole, off and on (compile cache warm)
        walls: dict = {"off": [], "on": []}
        phases: dict = {"off": {}, "on": {}}
        for i in range(a.runs):
            for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):  # alternated: no order effect
                extra = ["--backend", "onnxruntime"]
                if mode == "on":
                    extra += ["--trust-root", str(fleet / keys.TRUST_ROOT), "--require-signed"]
                proc, address = start_agent(work / f"push-{mode}-{i}" / "store", extra=extra)
                procs.append(proc)
                wall, data = _push(model, address, _env(home, fleet if mode == "on" else no_keys))
                assert data["compile"]["cache"] == "hit" and data["upload"]["bytes_sent"] > 0
                walls[mode].append(wall)
                for phase, seconds in data["timings"].items():
                    phases[mode].setdefault(phase, []).append(seconds)
                stop_agent(procs.pop())

        # 3. a warm of N agents: the archive to N fresh agents at once
        warm: dict = {"off": [], "on": []}
        for i in range(max(1, a.runs // 2)):
            for mode in (("off", "on") if i % 2 == 0 else ("on", "off")):
                extra = ["--trust-root", str(fleet / keys.TRUST_ROOT)] if mode == "on" else []
                started = [start_agent(work / f"warm-{mode}-{i}-{n}" / "store", extra=extra)
                           for n in range(a.agents)]
                procs.extend(p for p, _ in started)
                t = time.perf_counter()
                meta = signing.metadata_for(archive, fleet) if mode == "on" else None

                def one(address: str) -> None:
                    AgentClient(Device(name="w", address=address)).upload(archive, digest=digest, kind="bundle",
                                                                          trust=meta)

                with ThreadPoolExecutor(a.agents) as pool:
                    list(pool.map(one, [addr for _, addr in started]))
                warm[mode].append(time.perf_counter() - t)
                for p, _ in started:
                    stop_agent(p)
                    procs.remove(p)

        parts = median(sign_new) + median(verify)
        net = parts - median(unpack_check)
        push_off, push_on = median(walls["off"]), median(walls["on"])
        doc = json.loads(wire)
        print(f"\n{a.model}: archive {archive.stat().st_size / 2**20:.1f} MiB; {os.cpu_count()} cores, Python "
              f"{platform.python_version()}, medians of {a.part_runs} runs of each part and {a.runs} of the rest; 1-minute load {load_before:.1f} before, "
              f"{os.getloadavg()[0]:.1f} after\n")
        print("| what | s |")
        print("| --- | ---: |")
        print(f"| host: sign a new manifest (targets, snapshot, timestamp) | {median(sign_new):.4f} |")
        print(f"| host: metadata for a manifest already listed (later pushes, each device of a warm) | "
              f"{median(sign_listed):.4f} |")
        print(f"| agent: verify (tuf client + every file hashed against the manifest) | {median(verify):.4f} |")
        print(f"| agent: the unpack's own file check, skipped for a verified bundle | {median(unpack_check):.4f} |")
        print(f"| first push, compile included, signing off (wall, one run) | {first_wall:.2f} |")
        print(f"| push, signing off (wall) | {push_off:.2f} |")
        print(f"| push, signing on (wall) | {push_on:.2f} |")
        for phase in phases["off"]:
            print(f"| push phase {phase}: off / on | {median(phases['off'][phase]):.3f} / "
                  f"{median(phases['on'].get(phase, [0.0])):.3f} |")
        print(f"| warm of {a.agents} agents (upload fan-out), off | {median(warm['off']):.2f} |")
        print(f"| warm of {a.agents} agents (upload fan-out), on | {median(warm['on']):.2f} |")
        ratio = parts / push_off
        print(f"\nsign + verify = {parts:.3f} s = {100 * ratio:.2f} % of the push's wall time (floor "
              f"{100 * FLOOR:.0f} %): {'meets' if ratio <= FLOOR else 'MISSES'} it; net of the unpack's file check "
              f"it replaces: {net:.3f} s = {100 * net / push_off:.2f} %; the whole push on/off: "
              f"{push_on / push_off:.3f}; the warm on/off: {median(warm['on']) / median(warm['off']):.3f}")
        print(f"against the first push (compile included): {100 * parts / first_wall:.2f} % gross")
        print(f"metadata on the wire: {len(wire)} bytes ({len(doc['metadata'])} files: "
              + ", ".join(f"{k} {len(v)}" for k, v in sorted(doc["metadata"].items())) + ")")
    finally:
        for p in procs:
            stop_agent(p)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
