"""Small real ONNX models written with onnx.helper, and the reference every backend must match."""
from __future__ import annotations

from typing import Union

import numpy as np


def conv_net(batch: Union[int, str] = 1, seed: int = 0, channels: int = 8) -> bytes:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm: the op mix of a classifier, in 10 kB."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b")
    fc = numpy_helper.from_array(rng.standard_normal((10, channels)).astype(np.float32), "fc")
    fcb = numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fcb")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        [w, b, fc, fcb])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def reference_run(onnx_bytes: bytes, feeds: dict) -> dict:
    """onnxruntime on the original model, default settings: the reference every backend must match."""
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def max_rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """Largest absolute difference over the reference's largest magnitude (the agent's definition)."""
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def single_segment_bundle(root, onnx_bytes: bytes, name: str = "convnet", profile: str = "x86-cpu",
                          trt_version: str = "10.3.0", compute_capability=None, batch: int = 1, seed: int = 0,
                          reference_from: "bytes | None" = None):
    """A bundle as the compiler writes one when every op is offloaded: one segment, reference samples.

    `reference_from`: another model's bytes whose outputs become the reference (a bundle that fails verify).
    Returns (archive path, reference inputs, reference outputs). Built with device_agent.bundle itself.
    """
    import platform
    from pathlib import Path

    import onnx

    from device_agent.archive import write_archive
    from device_agent.fileio import sha256_bytes, sha256_file
    from device_agent.manifest import Manifest, Segment, Target, TensorSpec, write_manifest

    root = Path(root)
    d = root / name
    (d / "segments").mkdir(parents=True)
    (d / "reference" / "inputs").mkdir(parents=True)
    (d / "reference" / "outputs").mkdir(parents=True)
    (d / "segments" / "seg0.onnx").write_bytes(onnx_bytes)
    model = onnx.load_from_string(onnx_bytes)
    elem = {1: "float32", 7: "int64", 10: "float16", 6: "int32"}

    def specs(values):
        out = []
        for v in values:
            dims = [dd.dim_param if dd.dim_param else dd.dim_value for dd in v.type.tensor_type.shape.dim]
            out.append(TensorSpec(v.name, elem[v.type.tensor_type.elem_type], dims))
        return out

    inputs, outputs = specs(model.graph.input), specs(model.graph.output)
    rng = np.random.default_rng(seed)
    feeds = {t.name: rng.standard_normal([batch if isinstance(x, str) else x for x in t.shape]).astype(t.dtype)
             for t in inputs}
    want = reference_run(onnx_bytes if reference_from is None else reference_from, feeds)
    ref = {"seed": seed, "inputs": [], "outputs": [], "rtol": 1e-4, "atol": 1e-5}
    for key, arrays in (("inputs", feeds), ("outputs", want)):
        for i, (tname, arr) in enumerate(arrays.items()):
            rel = f"reference/{key}/{i}.npy"
            np.save(d / rel, arr)
            ref[key].append({"name": tname, "path": rel, "digest": sha256_file(d / rel)})
    manifest = Manifest(
        name=name, source_digest=sha256_bytes(onnx_bytes), inputs=inputs, outputs=outputs,
        target=Target(profile=profile, trt_version=trt_version, compute_capability=compute_capability,
                      device="cpu" if compute_capability is None else "cuda", arch=platform.machine()),
        compiler={"tests": "single_segment_bundle"}, options={},
        segments=[Segment(id="seg0", path="segments/seg0.onnx", digest=sha256_bytes(onnx_bytes),
                          ops=[n.op_type for n in model.graph.node], inputs=inputs, outputs=outputs,
                          opset=model.opset_import[0].version)],
        remainder=None, reference=ref)
    write_manifest(d, manifest)
    archive = root / f"{name}.bundle.tar"
    write_archive(d, archive)
    return archive, feeds, want


def wide_mlp(width: int = 4096, layers: int = 2, seed: int = 0) -> bytes:
    """MatMul/Add/Relu layers of width x width float32 weights: large plans (64 MB per layer at 4096)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(width, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"h{i}"] if i < layers - 1 else ["y"])]
        x = f"h{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()
