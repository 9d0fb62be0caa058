"""Jetson bundles with a remainder hold an aarch64 ELF; CUDA profiles embed a cubin for their sm."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from onnx import helper

from host.compiler.api import compile_model
from host.compiler.cuda_embed import embedded_cubin_arches
from host.compiler.inspect import describe, load_manifest

pytestmark = pytest.mark.skipif(shutil.which("aarch64-linux-gnu-g++") is None,
                                reason="needs g++-aarch64-linux-gnu (CI installs it)")


def _erf_model(tiny):
    return tiny([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Erf", ["a"], ["b"]),
                 helper.make_node("Sigmoid", ["b"], ["y"])], [("x", [4, 32])], [("y", [4, 32])])


def _machine(path) -> str:
    out = subprocess.run(["readelf", "-h", str(path)], capture_output=True, text=True, check=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if "Machine:" in line)


@pytest.mark.parametrize("profile, sm", [("jetson-xavier-nx", 72), ("jetson-orin", 87)])
def test_cuda_jetson_remainder_is_aarch64_elf_with_cubin_for_the_profile_sm(tiny, save_model, tmp_path, profile, sm):
    r = compile_model(save_model(_erf_model(tiny)), tmp_path / "out", profile=profile, trt_version="6.0.1")
    lib = r.bundle_dir / r.manifest.remainder.path
    assert _machine(lib) == "AArch64"
    assert embedded_cubin_arches(lib.read_bytes()) == [sm]
    assert r.manifest.target.device == "cuda"
    assert f'"arch": "sm_{sm}"' in r.manifest.remainder.target


def test_nano_remainder_goes_to_the_cpu_and_inspect_says_why(tiny, save_model, tmp_path):
    r = compile_model(save_model(_erf_model(tiny)), tmp_path / "out", profile="jetson-nano", trt_version="6.0.1")
    lib = r.bundle_dir / r.manifest.remainder.path
    assert _machine(lib) == "AArch64"
    assert embedded_cubin_arches(lib.read_bytes()) == []
    assert r.manifest.target.device == "cpu" and r.manifest.remainder.target.startswith('{"kind": "llvm"')
    info = describe(*load_manifest(tmp_path / "out"))
    tvm_part = next(p for p in info["segments"] if p["kind"] == "tvm")
    assert "CUDA 10.2 driver" in tvm_part["runs_on"] and "device CPU" in tvm_part["runs_on"]
    assert info["remainder"]["device"] == "cpu"


def test_nano_remainder_on_gpu_when_asked(tiny, save_model, tmp_path):
    r = compile_model(save_model(_erf_model(tiny)), tmp_path / "out", profile="jetson-nano", trt_version="6.0.1",
                      remainder_device="cuda")
    assert embedded_cubin_arches((r.bundle_dir / r.manifest.remainder.path).read_bytes()) == [53]
    assert "because it was asked for" in r.manifest.options["remainder"]["why"]


def test_generic_cuda_remainder_embeds_ptx_for_sm80_and_newer(tiny, save_model, tmp_path):
    from host.compiler.cuda_embed import embedded_ptx_targets

    r = compile_model(save_model(_erf_model(tiny)), tmp_path / "out", profile="generic-cuda", trt_version="6.0.1")
    lib = (r.bundle_dir / r.manifest.remainder.path).read_bytes()
    assert embedded_ptx_targets(lib) == ["sm_80"] and embedded_cubin_arches(lib) == []
    assert _machine(r.bundle_dir / r.manifest.remainder.path) == "Advanced Micro Devices X86-64"


def test_generic_cuda_compiles_for_the_compute_capability_it_is_given(tiny, save_model, tmp_path):
    from host.compiler.cuda_embed import embedded_ptx_targets

    r = compile_model(save_model(_erf_model(tiny)), tmp_path / "out", profile="generic-cuda", trt_version="6.0.1",
                      compute_capability="9.0")
    assert embedded_ptx_targets((r.bundle_dir / r.manifest.remainder.path).read_bytes()) == ["sm_90"]
    assert r.manifest.target.compute_capability == "9.0"
    assert "sm_90" in r.manifest.options["remainder"]["why"]


@pytest.mark.parametrize("profile, cc, words", [("x86-cpu", "9.0", "has no GPU"),
                                                ("generic-cuda", "sm_90", "not MAJOR.MINOR")])
def test_a_compute_capability_that_cannot_apply_is_refused(profile, cc, words):
    from device_agent.errors import InvalidInput
    from host.compiler.profiles import get_profile

    with pytest.raises(InvalidInput, match=words):
        get_profile(profile, compute_capability=cc)


def test_jetson_bundle_is_host_checked_with_an_x86_build_of_the_same_remainder(tiny, save_model, tmp_path):
    import numpy as np

    from device_agent.errors import BuildFailed

    m = tiny([helper.make_node("Relu", ["x"], ["a"]),
              helper.make_node("Resize", ["a", "", "scales"], ["y"], mode="linear")],
             [("x", [1, 1, 2, 4])], [("y", [1, 1, 1, 2])], inits={"scales": np.array([1, 1, 0.6, 0.6], np.float32)})
    with pytest.raises(BuildFailed, match="does not reproduce onnxruntime"):
        compile_model(save_model(m), tmp_path / "out", profile="jetson-orin", trt_version="6.0.1")
    assert not (tmp_path / "out").exists()
