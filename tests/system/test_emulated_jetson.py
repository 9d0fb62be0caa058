"""An emulated Jetson: `deploy agent emulate` runs the agent as a real aarch64 process (qemu user mode) and the
bundles cross-compiled here for jetson-nano (TensorRT segments + an aarch64 llvm TVM remainder) run on it.

What this proves and what it does not: docs/hardware.md ("What ran emulated"). No GPU, no TensorRT: the agent's
onnxruntime (1.22.0, aarch64) builds the TensorRT segments, TVM 0.27 (aarch64) runs the remainder.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.conftest import AgentHandle, deploy_bin
from tests.system import envs

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(600)]

# Relu and Sigmoid go to TensorRT segments; Erf is kept in TVM (--no-offload Erf): a hybrid bundle.
HYBRID = ("--profile", "jetson-nano", "--no-offload", "Erf")
EM_AARCH64 = 183  # ELF e_machine of AArch64


@pytest.fixture(scope="session")
def emulation():
    """The aarch64 sysroot and wheels, prepared once and kept between runs (beside the test envs of envs.py)."""
    from host.emulate import EmulationError, prepare
    from host.emulate.sysroot import QEMU, qemu_path

    os.environ.setdefault("DEPLOY_EMULATE_CACHE", str(envs.env_root() / "emulate"))
    try:
        qemu_path()
    except EmulationError as exc:
        pytest.skip(f"{exc} (scripts/setup.sh installs it when run as root); {QEMU} is needed to emulate a Jetson")
    t = time.monotonic()
    emu = prepare(say=print)
    print(f"emulation ready in {time.monotonic() - t:.1f} s: {emu.root}")
    return emu


@dataclass
class EmulatedAgent(AgentHandle):
    """An agent started as a user would: `deploy agent emulate --profile P --listen 127.0.0.1:0 --store DIR`."""

    profile: str = "jetson-nano"

    ready_timeout: float = 180

    def command(self, listen: str) -> list[str]:
        return [deploy_bin(), "agent", "emulate", "--profile", self.profile, "--listen", listen,
                "--store", str(self.store_dir), *self.args]


def start_emulated(root: Path, profile: str = "jetson-nano", store: Path | None = None) -> EmulatedAgent:
    root.mkdir(parents=True, exist_ok=True)
    return EmulatedAgent(store_dir=store or root / "store", args=[], log_path=root / "agent.log",
                         env=dict(os.environ), profile=profile).start()


@pytest.fixture(scope="module")
def nano(emulation, tmp_path_factory):
    agent = start_emulated(tmp_path_factory.mktemp("nano"))
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Erf", ["a"], ["b"]),
             helper.make_node("Sigmoid", ["b"], ["y"])]
    graph = helper.make_graph(nodes, "hybrid", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path_factory.mktemp("model") / "hybrid.onnx"
    onnx.save(m, str(path))
    return path


def deploy(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([deploy_bin(), *args], capture_output=True, text=True, timeout=timeout)


def deploy_json(*args: str) -> dict:
    proc = deploy(*args, "--json")
    assert proc.returncode == 0, f"deploy {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout)


def test_info_reports_aarch64_the_profile_and_its_runtimes_and_fakes_nothing(nano):
    info = deploy_json("info", "--device", nano.address)
    assert info["arch"] == "aarch64" and info["profile"] == "jetson-nano"
    assert info["python_version"].startswith("3.11.")
    backends = {b["name"]: b for b in info["backends"]}
    assert backends["onnxruntime"]["available"] and backends["onnxruntime"]["version"] == "1.22.0"
    assert backends["tvm"]["available"] and backends["tvm"]["version"].startswith("0.27")
    assert info["tvm_runtime"] is True
    assert not backends["tensorrt"]["available"] and info["trt_version"] is None
    # what an emulated CPU cannot have stays unknown
    assert info["jetson_model"] is None and info["l4t_release"] is None and info["cuda_version"] is None
    assert info["gpus"] == []


def test_hybrid_nano_bundle_verifies_and_runs_user_inputs_like_onnxruntime(nano, model, tmp_path):
    import onnxruntime as ort

    pushed = deploy_json("push", str(model), "--device", nano.address, *HYBRID)
    assert pushed["target"]["profile"] == "jetson-nano"
    kinds = [p["kind"] for p in pushed["parts"]]
    assert kinds.count("tensorrt") >= 1 and kinds.count("tvm") == 1, pushed["parts"]
    assert "aarch64" in next(p["runs_on"] for p in pushed["parts"] if p["kind"] == "tvm")
    assert pushed["build"]["failed"] == 0 and pushed["build"]["backend"] == "onnxruntime"
    assert pushed["verify"]["passed"], pushed["verify"]
    manifest = json.loads((Path(pushed["compile"]["bundle_dir"]) / "manifest.json").read_text())
    lib = Path(pushed["compile"]["bundle_dir"]) / manifest["remainder"]["path"]
    assert int.from_bytes(lib.read_bytes()[18:20], "little") == EM_AARCH64  # the library the aarch64 agent ran

    x = np.random.default_rng(7).standard_normal((4, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    ran = deploy_json("run", str(model), "--device", nano.address, *HYBRID, "--input", f"x={tmp_path / 'x.npy'}",
                      "-o", str(tmp_path / "out.npz"))
    assert ran["outputs"] == [{"name": "y", "dtype": "float32", "shape": [4, 32]}]
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = np.load(tmp_path / "out.npz")["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_orin_bundle_with_a_cuda_remainder_is_refused_in_one_line_naming_both_sides(nano, model):
    proc = deploy("push", str(model), "--device", nano.address, "--profile", "jetson-orin", "--no-offload", "Erf")
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "FAILED_PRECONDITION" in errors[0]
    assert "CUDA" in errors[0] and "sm_87" in errors[0]  # the bundle's side
    assert "this aarch64 device has no GPU" in errors[0]  # the device's side
    assert "recompile for a CPU remainder (jetson-nano, or --remainder-device cpu)" in errors[0]  # what to do
    assert nano.alive()


def test_a_missing_qemu_is_one_line_saying_what_to_install(tmp_path):
    env = dict(os.environ, DEPLOY_EMULATE_QEMU=str(tmp_path / "no-qemu"), DEPLOY_EMULATE_CACHE=str(tmp_path))
    proc = subprocess.run([deploy_bin(), "agent", "emulate", "--listen", "127.0.0.1:0"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: qemu-aarch64-static not found: apt-get install qemu-user-static"
    assert list(tmp_path.iterdir()) == []  # nothing prepared


def test_only_aarch64_profiles_are_emulated():
    proc = deploy("agent", "emulate", "--profile", "x86-cpu")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "not an aarch64 device" in proc.stderr and "jetson-nano" in proc.stderr


def test_killed_during_a_build_then_restarted_on_the_same_store_the_next_push_succeeds(emulation, model, tmp_path):
    from device_agent.cache import EngineCache
    from host.client.agent import AgentClient
    from host.client.parts import send_bundle
    from host.inventory import Device
    from protos import agent_pb2

    out = tmp_path / "bundle"
    deploy_json("compile", str(model), "-o", str(out), *HYBRID)
    agent = start_emulated(tmp_path / "agent")
    try:
        killed_at = None
        with AgentClient(Device(name="emu", address=agent.address)) as client:
            digest = send_bundle(client, out / "bundle").digest  # by parts, as deploy push sends it
            for ev in client.build(digest, agent_pb2.BuildOptions()):
                if ev.WhichOneof("event") == "segment" and ev.segment.stage == agent_pb2.SegmentEvent.CACHE_MISS:
                    time.sleep(0.05)
                    killed_at = ev.segment.segment_id
                    agent.kill()  # SIGKILL: the aarch64 process itself (deploy agent emulate execs it)
                    break
        assert killed_at is not None and not agent.alive()
        cache_root = agent.store_dir.parent / "engines"
        left = sorted(p.name for p in (cache_root / "tmp").glob("*"))
        entries = sorted(p.name for p in (cache_root / "entries").glob("*"))
        print(f"killed during {killed_at}: {len(entries)} entries, {len(left)} temp dirs left")
        for key in entries:  # whatever is there must be whole
            assert EngineCache(cache_root).read(key) is not None, key

        agent.start()
        pushed = deploy_json("push", str(out / "bundle.tar"), "--device", agent.address)
        assert pushed["upload"]["bytes_sent"] == 0  # the store kept the committed bundle
        assert pushed["build"]["failed"] == 0 and pushed["verify"]["passed"]
        assert list((cache_root / "tmp").iterdir()) == []
        keys = [p.name for p in (cache_root / "entries").iterdir()]
        assert len(keys) == pushed["build"]["built"] + pushed["build"]["cache_hits"]
        assert all(EngineCache(cache_root).read(k) is not None for k in keys)
    finally:
        agent.stop()


def test_fleet_warm_over_an_emulated_aarch64_class_and_an_x86_class_builds_once_per_class(
        emulation, agent_factory, tmp_path):
    import tomli_w

    from host.client.agent import AgentClient
    from host.inventory import Device
    from protos import agent_pb2
    from tests.device_agent.onnx_models import conv_net, reference_run

    model = tmp_path / "convnet.onnx"
    model.write_bytes(conv_net(seed=5))
    emulated = [start_emulated(tmp_path / f"emu{i}") for i in range(2)]
    try:
        x86 = [agent_factory() for _ in range(2)]
        entries = {f"nano-{i}": {"address": a.address, "profile": "jetson-nano", "tags": ["lab"]}
                   for i, a in enumerate(emulated)}
        entries.update({f"pc-{i}": {"address": a.address, "profile": "x86-cpu", "tags": ["lab"]}
                        for i, a in enumerate(x86)})
        inventory = tmp_path / "deploy.toml"
        inventory.write_text(tomli_w.dumps({"devices": entries}))
        proc = subprocess.run([deploy_bin(), "fleet", "warm", str(model), "--tag", "lab", "--json"],
                              capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, DEPLOY_INVENTORY=str(inventory)))
        assert proc.returncode == 0, proc.stderr[-2000:]
        warm = json.loads(proc.stdout)
        assert warm["ok"] and warm["builds"] == 2 == len(warm["classes"])
        by_arch = {c["facts"]["arch"]: c for c in warm["classes"]}
        assert set(by_arch) == {"aarch64", "x86_64"}
        nano = by_arch["aarch64"]
        assert sorted(nano["devices"]) == ["nano-0", "nano-1"] and nano["facts"]["profile"] == "jetson-nano"
        for c in warm["classes"]:
            assert c["built_on"] in c["devices"] and len(c["copied_to"]) == 1 and c["failed"] == []

        copied = next(d for d in nano["devices"] if d != nano["built_on"])
        feeds = {"x": np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)}
        want = reference_run(model.read_bytes(), feeds)
        with AgentClient(Device(name=copied, address=entries[copied]["address"])) as client:
            events = list(client.build(nano["bundle_digest"], agent_pb2.BuildOptions()))
            summary = [e.summary for e in events if e.WhichOneof("event") == "summary"][0]
            assert summary.built == 0 and summary.cache_hits == summary.segments >= 1  # the copied engine
            tensors = [agent_pb2.Tensor(name=k, dtype=str(v.dtype), shape=list(v.shape), data=v.tobytes())
                       for k, v in feeds.items()]
            reply = client.run(agent_pb2.RunRequest(bundle_digest=nano["bundle_digest"], inputs=tensors))
        for out in reply.outputs:
            got = np.frombuffer(out.data, dtype=out.dtype).reshape(tuple(out.shape))
            np.testing.assert_allclose(got, want[out.name], rtol=1e-4, atol=1e-5)
    finally:
        for agent in emulated:
            agent.stop()


def test_the_offline_wheel_set_of_agent_install_resolves_and_imports_in_the_emulated_interpreter(emulation, tmp_path):
    """What `deploy agent install` ships to an aarch64 device, installed the way it installs it, with no index."""
    from host.install import wheels
    from host.install.agent_installer import _IMPORT_CHECK

    agent_wheel = wheels.build_agent_wheel(tmp_path / "agent")
    requirements = wheels.wheel_requirements(agent_wheel)
    glibc = tuple(int(p) for p in emulation.record["packages"]["libc6"].split("-")[0].split(".")[:2])
    deps = wheels.download_dependencies(requirements, wheels.RemotePython((3, 11), "aarch64", glibc),
                                        tmp_path / "wheels")
    assert all("x86_64" not in w.name for w in deps), [w.name for w in deps]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["DEPLOY_EMULATE_CPU"] = "cortex-a57"
    venv = tmp_path / "venv"
    pip_wheel = next(w for w in deps if w.name.startswith("pip-"))

    def emulated(*cmd: str, timeout: float = 300) -> str:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env, timeout=timeout, cwd=str(tmp_path))
        assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr[-2000:]}"
        return proc.stdout

    emulated(str(emulation.python), "-m", "venv", "--without-pip", "--system-site-packages", str(venv))
    py = str(venv / "bin" / "python")
    pip = [py, str(pip_wheel / "pip"), "--disable-pip-version-check", "-q"]
    emulated(*pip, "install", "--no-index", "--find-links", str(tmp_path / "wheels"), *requirements)
    emulated(*pip, "install", "--no-index", "--no-deps", str(agent_wheel))
    out = emulated(py, "-c", _IMPORT_CHECK + "; import platform, device_agent; "
                   "print(platform.machine(), device_agent.__file__)")
    machine, where = out.split()
    assert machine == "aarch64" and where.startswith(str(venv))


def test_concurrent_preparations_share_one_build_and_a_failed_or_killed_one_leaves_nothing_used(
        tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from host.emulate import sysroot

    builds: list = []

    def fake_build(tmp: Path, pins: list, tools: dict, say) -> None:  # the real one downloads; its steps run above
        builds.append(tmp)
        time.sleep(0.5)
        if fail:
            raise sysroot.EmulationError("pip install of the aarch64 wheels failed (exit 1): ERROR: no network")
        (tmp / "ready").write_text("whole\n")

    monkeypatch.setattr(sysroot, "_build", fake_build)
    monkeypatch.setattr(sysroot, "_need_tools", lambda: {})
    monkeypatch.setenv("DEPLOY_EMULATE_QEMU", "/bin/true")
    key = sysroot.cache_key(sysroot.wheel_pins())
    fail = True
    with pytest.raises(sysroot.EmulationError, match="no network"):
        sysroot.prepare(root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{key}.lock"]  # no half-made directory
    (tmp_path / f".tmp-{key}-1-killed").mkdir()  # what a preparation killed with -9 leaves
    fail, builds[:] = False, []
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: sysroot.prepare(root=tmp_path), range(4)))
    assert len(builds) == 1 and {r.root for r in results} == {tmp_path / key}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([key, f"{key}.lock"])
    assert (tmp_path / key / "ready").read_text() == "whole\n"
