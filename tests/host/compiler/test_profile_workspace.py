"""Each Jetson profile's default builder workspace fits its memory, and a compile without one records it."""
from __future__ import annotations

from onnx import helper

from host.compiler.api import compile_model
from host.compiler.profiles import get_profile


def _relu(tiny):
    return tiny([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 8])], [("y", [1, 8])])


def test_jetson_profiles_default_to_a_workspace_that_fits_their_memory():
    assert get_profile("jetson-nano").default_workspace_bytes == 256 << 20  # 4 GB shared with the GPU
    assert get_profile("jetson-xavier-nx").default_workspace_bytes == 512 << 20  # 8 GB
    assert get_profile("jetson-orin").default_workspace_bytes == 1 << 30


def test_compile_without_a_workspace_records_the_profiles_default_and_a_given_one_wins(tiny, save_model, tmp_path):
    model = save_model(_relu(tiny))
    nano = compile_model(model, tmp_path / "a", profile="jetson-nano")
    assert nano.manifest.options["max_workspace_size"] == 256 << 20
    given = compile_model(model, tmp_path / "b", profile="jetson-nano", max_workspace_size=64 << 20)
    assert given.manifest.options["max_workspace_size"] == 64 << 20
