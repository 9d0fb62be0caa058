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

from device_agent.ready import wait_ready
from tests.conftest import REPO, AgentHandle, deploy_bin
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

    def start(self) -> "EmulatedAgent":
        cmd = [deploy_bin(), "agent", "emulate", "--profile", self.profile, "--listen", f"127.0.0.1:{self.port}",
               "--store", str(self.store_dir), *self.args]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=self.env, cwd=str(REPO))
        log.close()
        address = wait_ready(self.proc, timeout=180)
        if address is None:
            raise RuntimeError(f"emulated agent did not start (exit {self.proc.poll()}): {self.log()[-2000:]}")
        self.address = address
        self.port = int(address.rsplit(":", 1)[1])
        return self


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
    assert "no GPU" in errors[0]  # the device's side
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
