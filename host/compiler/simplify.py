"""Graph preparation before partitioning: fold constants and shape subgraphs, drop dead nodes.

Exporters (PyTorch, Paddle, tf2onnx) write shape arithmetic (``Shape -> Gather -> Concat ->
Reshape``, ``ConstantOfShape``, ``Range``, ``Cast``) that TVM's ONNX importer cannot take and that
only splits TensorRT segments. Once the input shapes are bound, onnxruntime's offline basic-level
optimization folds all of it into constants; that level emits standard ONNX ops only (constant
folding, redundant-node elimination, Conv+BN/Mul/Add fusions), so every parser still reads the
result. With a dynamic batch, shapes that depend on the batch are not constant and stay in the
graph, for TensorRT's shape tensors.
"""
from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx

from host.compiler.graphs import subgraphs

log = logging.getLogger(__name__)

# Beyond protobuf's 2 GB a model needs external data; we leave such models as they are.
_MAX_INLINE_BYTES = 1_800_000_000


@dataclass
class SimplifyReport:
    """What preparation did, recorded in the bundle manifest (``options.prepare``)."""

    tool: str
    nodes_before: int
    nodes_after: int
    ops_removed: Dict[str, int] = field(default_factory=dict)
    skipped: Optional[str] = None
    rewrites: Dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def _op_counts(model: onnx.ModelProto) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def _optimize_with_onnxruntime(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    with tempfile.TemporaryDirectory(prefix="deploy-simplify-") as tmp:
        path = os.path.join(tmp, "optimized.onnx")
        opts.optimized_model_filepath = path
        # MatMulAddFusion turns a 3-d MatMul + Add into Reshape -> Gemm -> Reshape with initializers named
        # "gemm_input_shape": nothing gained for TensorRT, and onnxruntime itself then fails to load such a
        # segment ("AddInitializedOrtValue Attempt to replace the existing tensor") when it fuses again
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"],
                             disabled_optimizers=["MatMulAddFusion"])
        return onnx.load(path)


def _has_subgraphs(graph: onnx.GraphProto) -> bool:
    return any(True for n in graph.node for _ in subgraphs(n))


def _fold_subgraphs(model: onnx.ModelProto, rounds: int = 4) -> onnx.ModelProto:
    """Fold inside ``If`` branches and ``Loop`` bodies too, which onnxruntime's optimizer leaves alone.

    onnx-graphsurgeon (what Polygraphy's ``surgeon sanitize`` uses) folds constants in subgraphs and
    flattens an ``If`` whose condition became constant (an exporter's check of a dim that the bound
    shapes now decide); shape inference between rounds lets each round see the shapes the last one
    made static.
    """
    import onnx_graphsurgeon as gs
    import onnxruntime as ort

    ort.set_default_logger_severity(3)
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR
    size = _node_count(model.graph)
    for _ in range(rounds):
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
        graph = gs.import_onnx(model)
        graph.fold_constants(recurse_subgraphs=True, flatten_subgraphs=True).cleanup(recurse_subgraphs=True).toposort()
        model = gs.export_onnx(graph)
        new_size = _node_count(model.graph)
        if new_size >= size:
            break
        size = new_size
    return model


def _node_count(graph: onnx.GraphProto) -> int:
    """Nodes, counting those of subgraphs."""
    n = 0
    for node in graph.node:
        n += 1 + sum(_node_count(g) for _, g in subgraphs(node))
    return n


def _clip_bounds_as_max_min(model: onnx.ModelProto) -> int:
    """``Clip(x, lo, hi)`` with a bound computed at run time (a mel front-end clips at ``max(x) - 80 dB``) as
    ``Min(Max(x, lo), hi)``: the same values, and ops every TensorRT takes, where Clip needs constant bounds."""
    from onnx import helper

    consts = {i.name for i in model.graph.initializer}
    nodes, count = [], 0
    for n in model.graph.node:
        bounds = list(n.input[1:3])
        if n.op_type != "Clip" or n.domain not in ("", "ai.onnx") or all(not b or b in consts for b in bounds):
            nodes.append(n)
            continue
        count += 1
        cur = n.input[0]
        for i, (op, bound) in enumerate(zip(("Max", "Min"), bounds + [""] * (2 - len(bounds)))):
            if not bound:
                continue
            last = op == "Min" or len(bounds) < 2 or not bounds[1]
            out = n.output[0] if last else f"{n.output[0]}__clip_lo"
            nodes.append(helper.make_node(op, [cur, bound], [out], name=f"{n.name or 'Clip'}__{op.lower()}"))
            cur = out
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return count


def decompose_layer_norm(model: onnx.ModelProto) -> int:
    """``LayerNormalization`` (opset 17) as ``ReduceMean``, ``Sub``, ``Mul``, ``Add``, ``Sqrt``, ``Div``: for
    TensorRT < 8.6, whose parser lacks it, so a transformer stays one segment instead of one per layer.

    Only the single-output form (the Mean and InvStdDev outputs are training's) is rewritten."""
    from onnx import helper, numpy_helper

    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not any(n.op_type == "LayerNormalization" for n in model.graph.node):
        return 0
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim)
             for vi in list(inferred.graph.input) + list(inferred.graph.value_info)
             if vi.type.tensor_type.HasField("shape")}
    nodes, count = [], 0
    for i, n in enumerate(model.graph.node):
        if n.op_type != "LayerNormalization" or n.domain not in ("", "ai.onnx") or len([o for o in n.output if o]) > 1:
            nodes.append(n)
            continue
        count += 1
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        axis, eps = int(attrs.get("axis", -1)), float(attrs.get("epsilon", 1e-5))
        x, scale = n.input[0], n.input[1]
        bias = n.input[2] if len(n.input) > 2 and n.input[2] else ""
        p = f"{n.name or 'LayerNormalization'}_{i}__ln"
        rank = ranks.get(x)
        if axis < 0:
            if rank is None:  # the rank decides which axes to reduce: leave the node as it is
                nodes.append(n)
                count -= 1
                continue
            axis += rank
        axes = list(range(axis, rank if rank is not None else axis + 1))

        def mean(src: str, dst: str) -> onnx.NodeProto:
            if opset >= 18:
                return helper.make_node("ReduceMean", [src, f"{p}_axes"], [dst], keepdims=1)
            return helper.make_node("ReduceMean", [src], [dst], axes=axes, keepdims=1)

        if opset >= 18:
            model.graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), f"{p}_axes"))
        dtype = helper.tensor_dtype_to_np_dtype(next(
            (t.data_type for t in model.graph.initializer if t.name == scale), onnx.TensorProto.FLOAT))
        model.graph.initializer.append(numpy_helper.from_array(np.array(eps, dtype), f"{p}_eps"))
        y = n.output[0]
        nodes += [mean(x, f"{p}_mean"),
                  helper.make_node("Sub", [x, f"{p}_mean"], [f"{p}_d"]),
                  helper.make_node("Mul", [f"{p}_d", f"{p}_d"], [f"{p}_d2"]),
                  mean(f"{p}_d2", f"{p}_var"),
                  helper.make_node("Add", [f"{p}_var", f"{p}_eps"], [f"{p}_ve"]),
                  helper.make_node("Sqrt", [f"{p}_ve"], [f"{p}_std"]),
                  helper.make_node("Div", [f"{p}_d", f"{p}_std"], [f"{p}_n"]),
                  helper.make_node("Mul", [f"{p}_n", scale], [y if not bias else f"{p}_s"])]
        if bias:
            nodes.append(helper.make_node("Add", [f"{p}_s", bias], [y]))
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return count


def _foreign_domains(before: onnx.ModelProto, after: onnx.ModelProto) -> List[str]:
    had = {n.domain for n in before.graph.node}
    return sorted({n.domain for n in after.graph.node if n.domain not in had})


def _restore_interface(before: onnx.ModelProto, after: onnx.ModelProto) -> Optional[str]:
    """Keep the user's inputs and outputs exactly; returns why the result is unusable, if it is."""
    want_in = [vi.name for vi in before.graph.input]
    inits = {i.name for i in after.graph.initializer}
    have_in = {vi.name for vi in after.graph.input}
    missing = [n for n in want_in if n not in have_in and n not in inits]
    if missing:  # an unused input was dropped: put it back, the bundle's interface is the user's
        by_name = {vi.name: vi for vi in before.graph.input}
        after.graph.input.extend(by_name[n] for n in missing)
    produced = {t for n in after.graph.node for t in n.output}
    for vi in after.graph.output:
        if vi.name not in produced:
            return f"output {vi.name!r} folds to a constant"
    order = {n: i for i, n in enumerate(want_in)}
    ins = sorted(after.graph.input, key=lambda vi: order.get(vi.name, len(order)))
    del after.graph.input[:]
    after.graph.input.extend(ins)
    return None


def _onnxruntime_step(model: onnx.ModelProto) -> Tuple[onnx.ModelProto, Optional[str]]:
    """onnxruntime's basic-level optimization, or the model unchanged and why."""
    try:
        out = _optimize_with_onnxruntime(model)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
        return model, f"onnxruntime cannot load the model ({str(e).splitlines()[0][:160]})"
    foreign = _foreign_domains(model, out)
    if foreign:
        return model, f"folding introduced ops of domains {foreign}"
    why = _restore_interface(model, out)
    return (model, why) if why else (out, None)


def simplify(model: onnx.ModelProto) -> Tuple[onnx.ModelProto, SimplifyReport]:
    """The folded model and what was done; the model unchanged (with the reason) if folding cannot apply."""
    import onnxruntime as ort

    tool = f"onnxruntime {ort.__version__} ORT_ENABLE_BASIC"
    before = _op_counts(model)
    n_before = len(model.graph.node)

    def unchanged(why: str) -> Tuple[onnx.ModelProto, SimplifyReport]:
        log.info("graph preparation skipped: %s", why)
        return model, SimplifyReport(tool, n_before, n_before, {}, why)

    if model.ByteSize() > _MAX_INLINE_BYTES:
        return unchanged("model too large to fold in memory")
    out, why = _onnxruntime_step(model)
    if why:
        log.info("onnxruntime's folding skipped: %s", why)
    if _has_subgraphs(out.graph):
        import onnx_graphsurgeon as gs

        try:
            folded = _fold_subgraphs(out)
            why2 = _restore_interface(model, folded)
            if why2 is None:
                out = folded
                tool += f", onnx-graphsurgeon {gs.__version__} in subgraphs"
        except Exception as e:  # noqa: BLE001 - graphsurgeon and onnxruntime raise many kinds
            log.info("folding inside subgraphs skipped: %s", str(e).splitlines()[0][:160])
    if out is model:
        out = onnx.ModelProto()
        out.CopyFrom(model)
    rewrites = {}
    clips = _clip_bounds_as_max_min(out)
    if clips:
        rewrites["Clip with run-time bounds -> Max/Min"] = clips
    out.graph.name = model.graph.name
    del out.graph.value_info[:]
    after = _op_counts(out)
    removed = {op: c - after.get(op, 0) for op, c in sorted(before.items()) if c > after.get(op, 0)}
    log.info("graph preparation: %d nodes -> %d (%s)", n_before, len(out.graph.node), removed)
    return out, SimplifyReport(tool, n_before, len(out.graph.node), removed, why, rewrites)
