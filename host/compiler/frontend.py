"""Load, check and shape-infer an ONNX model; resolve symbolic input dims.

Every failure a user can cause becomes one ``InvalidInput`` line naming the fix.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from device_agent.errors import InvalidInput
from device_agent.fileio import sha256_file as file_digest
from device_agent.manifest import TensorSpec
from host.compiler.profiles import MAX_SOURCE_OPSET, MIN_SOURCE_OPSET
from host.compiler.shape_ranges import ProfileRanges, check_against_model, parse_input_shape, ranged_dims  # noqa: F401
from host.compiler.simplify import SimplifyReport, decompose_layer_norm, simplify


class ModelError(InvalidInput):
    """The model file itself is unusable."""


class ShapeError(InvalidInput):
    """Input shapes cannot be resolved to something compilable."""


@dataclass
class BatchRange:
    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: str) -> "BatchRange":
        m = re.fullmatch(r"(\d+):(\d+):(\d+)", text.strip())
        if not m:
            raise ShapeError(f"--batch-range {text!r} must be MIN:OPT:MAX, e.g. 1:8:32")
        lo, opt, hi = (int(g) for g in m.groups())
        if not 1 <= lo <= opt <= hi:
            raise ShapeError(f"--batch-range {text!r} needs 1 <= MIN <= OPT <= MAX")
        return cls(lo, opt, hi)

    def to_list(self) -> List[int]:
        return [self.min, self.opt, self.max]


@dataclass
class LoadedModel:
    model: onnx.ModelProto           # shape-inferred, symbolic dims resolved, Constant nodes folded
    source_digest: str
    opset: int
    inputs: List[TensorSpec]         # as the bundle declares them (symbolic batch kept when --batch)
    outputs: List[TensorSpec]
    concrete_inputs: Dict[str, List[int]]  # shapes used for reference data and for TVM
    batch: Optional[BatchRange] = None
    value_types: Dict[str, Tuple[str, List]] = field(default_factory=dict)  # every tensor: (dtype, shape)
    simplified: Optional[SimplifyReport] = None  # graph preparation, when it ran
    profiles: List[ProfileRanges] = field(default_factory=list)  # --shape-range / --shape-profiles
    #: with profiles: each tensor's shape at MIN, OPT and MAX of each profile, in that order (segment profiles)
    range_points: Dict[str, List[List[int]]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.model.graph.name or "model"


def _dtype_name(elem_type: int) -> str:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:  # noqa: BLE001 - unknown/complex element types
        return f"onnx:{TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else elem_type}"


def _shape_of(vi: onnx.ValueInfoProto) -> Optional[List[Union[int, str]]]:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    dims: List[Union[int, str]] = []
    for i, d in enumerate(t.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_value"):  # -1 or 0: exporters' way (Paddle, older tf2onnx) to say "any size"
            dims.append(str(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(f"?{vi.name}:{i}")
    return dims


def load_model(path: Union[str, os.PathLike]) -> Tuple[onnx.ModelProto, str]:
    """Read and check a model file (with external data) -> (model, sha256 of the file)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: no such model file")
    digest = file_digest(p)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types
        raise ModelError(f"{p} is not an ONNX model (or is truncated): {str(e).splitlines()[0][:200]}") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{p} is not an ONNX model (or is truncated): it has no graph")
    for init in model.graph.initializer:
        if init.data_location == TensorProto.EXTERNAL:
            loc = {e.key: e.value for e in init.external_data}.get("location", "")
            ext = p.parent / loc
            if not loc or not ext.is_file():
                raise ModelError(f"{p}: external data file {loc!r} for initializer {init.name!r} is missing; "
                                 "put it next to the model")
    try:
        onnx.load_external_data_for_model(model, str(p.parent))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{p}: cannot read external data: {str(e).splitlines()[0][:200]}") from None
    return model, digest


def model_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ModelError("the model imports no default-domain ONNX opset")


def _fold_constants(model: onnx.ModelProto) -> None:
    """Turn Constant nodes into initializers, so partitioning sees them as weights."""
    keep = []
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            t = onnx.TensorProto()
            t.CopyFrom(node.attribute[0].t)
            t.name = node.output[0]
            model.graph.initializer.append(t)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


def prepare(model: onnx.ModelProto, source_digest: str, *, input_shapes: Optional[Dict[str, Sequence[int]]] = None,
            batch: Optional[BatchRange] = None, fold: bool = False,
            samples: Optional[Dict[str, np.ndarray]] = None,
            decompose_layer_norm_below_86: bool = False,
            profiles: Optional[Sequence[ProfileRanges]] = None) -> LoadedModel:
    """Check opset and graph, resolve input dims, infer every tensor's shape.

    ``fold``: fold constants and shape subgraphs once the dims are bound (``simplify``); the
    conformance harness leaves it off so each single-op case keeps its op. ``samples``: the user's
    inputs, fed to the runs that read shapes the graph computes (a VAD's sample rate picks its branch).
    ``profiles``: shape ranges (`shape_ranges`); each dim they vary stays symbolic, the rest is bound.
    """
    opset = _check_source(model)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    _fold_constants(model)
    init_names = {i.name for i in model.graph.initializer}
    graph_inputs = [vi for vi in model.graph.input if vi.name not in init_names]
    input_shapes = dict(input_shapes or {})
    for name in input_shapes:
        if name not in {vi.name for vi in graph_inputs}:
            raise ShapeError(f"--input-shape names {name!r}, but the model's inputs are "
                             f"{[vi.name for vi in graph_inputs]}")
    profiles = list(profiles or [])
    symbols: Dict[Tuple[str, int], str] = {}
    if profiles:
        model_shapes = {vi.name: _shape_of(vi) or [] for vi in graph_inputs}
        check_against_model(profiles, model_shapes, input_shapes)
        symbols = {(r.input, r.axis): r.symbol for r in ranged_dims(profiles, model_shapes)}
    declared: List[TensorSpec] = []
    concrete: Dict[str, List[int]] = {}
    for vi in graph_inputs:
        spec, concrete[vi.name] = _bind_input(vi, input_shapes, profiles, symbols, batch)
        declared.append(spec)
    report = None
    if fold:
        model, report = simplify(model)
        if decompose_layer_norm_below_86:
            n = decompose_layer_norm(model)
            if n:
                report.rewrites["LayerNormalization -> ReduceMean/Sub/Mul/Add/Sqrt/Div (TensorRT < 8.6)"] = n
    model = _infer_shapes(model)
    types = tensor_types(model)
    unknown = [t for n in model.graph.node for t in n.output
               if t and (t not in types or any(isinstance(d, str) and not is_batch_dim(d) for d in types[t][1]))]
    points: Dict[str, List[List[int]]] = {}
    if profiles:
        named = [t for n in model.graph.node for t in n.output if t]
        ranged_types, points = _ranged_shapes_by_running(model, declared, concrete, named, profiles, samples)
        types.update(ranged_types)
    elif unknown and batch is None:
        types.update(_shapes_by_running(model, declared, concrete, unknown, samples))
    elif unknown:
        types.update(_batch_shapes_by_running(model, declared, concrete, unknown, batch, samples))
    outputs = _output_specs(model, types, ranged=bool(profiles))
    for s in declared:
        if s.dtype.startswith("onnx:"):
            raise ModelError(f"input {s.name!r} has unsupported element type {s.dtype[5:]}")
    return LoadedModel(model=model, source_digest=source_digest, opset=opset, inputs=declared, outputs=outputs,
                       concrete_inputs=concrete, batch=batch, value_types=types, simplified=report,
                       profiles=profiles, range_points=points)


def _check_source(model: onnx.ModelProto) -> int:
    """The model's opset, when in the range the compiler takes and the ONNX checker passes the model."""
    opset = model_opset(model)
    if not MIN_SOURCE_OPSET <= opset <= MAX_SOURCE_OPSET:
        raise ModelError(f"model opset {opset} is outside the supported range {MIN_SOURCE_OPSET}..{MAX_SOURCE_OPSET}; "
                         "convert it with onnx.version_converter")
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - ValidationError and friends
        raise ModelError(f"the ONNX checker refuses the model: {str(e).splitlines()[0][:200]}") from None
    return opset


def _bind_input(vi: onnx.ValueInfoProto, input_shapes: Dict[str, Sequence[int]], profiles: List[ProfileRanges],
                symbols: Dict[Tuple[str, int], str], batch: Optional[BatchRange]) -> Tuple[TensorSpec, List[int]]:
    """One graph input's declared spec (ranged dims symbolic, a `--batch-range` batch "batch") and the concrete
    shape for reference data and shape runs; the resolved dims are written back into `vi` for shape inference."""
    dtype = _dtype_name(vi.type.tensor_type.elem_type)
    shape = _shape_of(vi)
    if shape is None:
        raise ShapeError(f"input {vi.name!r} has no shape; pass --input-shape {vi.name}=Dx...")
    shape_decl: List[Union[int, str]]
    if profiles and vi.name in profiles[0]:
        conc = list(profiles[0][vi.name][1])  # OPT of the first profile: reference data, shape runs
        shape_decl = [symbols.get((vi.name, i), d) for i, d in enumerate(conc)]
    elif vi.name in input_shapes:
        given = list(input_shapes[vi.name])
        if len(given) != len(shape) or any(isinstance(d, int) and d != g for d, g in zip(shape, given)):
            raise ShapeError(f"--input-shape {vi.name}={'x'.join(map(str, given))} does not fit the model's "
                             f"shape {shape}")
        shape_decl = list(given)
        conc = list(given)
    else:
        shape_decl, conc = [], []
        for i, d in enumerate(shape):
            if isinstance(d, int) and d > 0:
                shape_decl.append(d)
                conc.append(d)
            elif i == 0 and batch is not None:
                shape_decl.append("batch")
                conc.append(batch.opt)
            else:
                raise ShapeError(f"input {vi.name!r} dim {i} is symbolic ({d!r}) and has no size: fix it with "
                                 f"--input-shape {vi.name}=Dx... or give its range with --shape-range "
                                 f"{vi.name}=MIN:OPT:MAX (full shapes; --batch-range MIN:OPT:MAX for the "
                                 "batch dim alone)")
    dims = vi.type.tensor_type.shape.dim
    for i, d in enumerate(shape_decl):
        dims[i].Clear()
        if isinstance(d, int):
            dims[i].dim_value = d
        else:
            dims[i].dim_param = d
    return TensorSpec(vi.name, dtype, shape_decl), conc


def _infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every tensor's shape inferred afresh from the bound inputs (declared output and intermediate shapes may
    still carry the old symbols, so they are dropped first)."""
    del model.graph.value_info[:]
    for vi in model.graph.output:
        vi.type.tensor_type.ClearField("shape")
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as e:  # noqa: BLE001
        raise ShapeError(f"shape inference failed: {str(e).splitlines()[0][:200]}") from None


def _output_specs(model: onnx.ModelProto, types: Dict[str, Tuple[str, List]], ranged: bool) -> List[TensorSpec]:
    """The graph outputs as the bundle declares them: computed by a node, of a known type, every dim resolved
    (a batch dim, or with shape ranges a dynamic one, may stay symbolic)."""
    produced = {t for n in model.graph.node for t in n.output}
    outputs: List[TensorSpec] = []
    for vi in model.graph.output:
        if vi.name not in produced:
            raise ModelError(f"output {vi.name!r} is a model input or a constant, not computed by any node; "
                             "remove it from the outputs")
        dtype, shape = types.get(vi.name, ("", None))
        if not dtype or dtype.startswith("onnx:"):
            raise ShapeError(f"output {vi.name!r} has an unknown or unsupported element type")
        if shape is None:
            raise ShapeError(f"the shape of output {vi.name!r} cannot be inferred; pass --input-shape")
        unresolved = [d for d in shape if isinstance(d, str) and not is_batch_dim(d)
                      and not (ranged and is_dynamic_dim(d))]
        if unresolved:
            raise ShapeError(f"output {vi.name!r} has unresolved dims {unresolved}; pass --input-shape with "
                             "concrete sizes")
        outputs.append(TensorSpec(vi.name, dtype, shape))
    return outputs


def tensor_types(model: onnx.ModelProto) -> Dict[str, Tuple[str, List]]:
    """(dtype, shape) of every tensor a shape-inferred model declares: inputs, value_info, outputs, initializers."""
    types: Dict[str, Tuple[str, List]] = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if vi.type.HasField("tensor_type") and _shape_of(vi) is not None:
            types[vi.name] = (_dtype_name(vi.type.tensor_type.elem_type), _shape_of(vi))
    for init in model.graph.initializer:
        types[init.name] = (_dtype_name(init.data_type), list(init.dims))
    return types


def is_batch_dim(d: Union[int, str]) -> bool:
    """The dynamic batch ("batch") or a dim that grows with it ("batch*2"): known to the compiler."""
    return isinstance(d, str) and (d == "batch" or d.startswith("batch*"))


def is_dynamic_dim(d: Union[int, str]) -> bool:
    """A dim that varies within what the compiler was told: the batch (`is_batch_dim`), a ranged input dim or one
    that moves with it (`--shape-range`). Unknown dims ("?...", an exporter's "-1") are not."""
    return isinstance(d, str) and not d.startswith("?") and not d.lstrip("-").isdigit()


def _batch_shapes_by_running(model: onnx.ModelProto, inputs: List[TensorSpec], shapes: Dict[str, List[int]],
                             names: List[str], batch: BatchRange,
                             samples: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, Tuple[str, List]]:
    """With a dynamic batch, shapes ONNX inference cannot follow (``Reshape`` to a shape computed from the
    batch) from runs at two batch sizes: a dim that follows the batch is "batch" (or "batch*K"), one that
    stays is a number, anything else stays unknown."""
    other = batch.max if batch.max != batch.opt else batch.min
    at_opt = _shapes_by_running(model, inputs, shapes, names, samples)
    if other == batch.opt:
        return at_opt
    dynamic = {s.name for s in inputs if s.shape and s.shape[0] == "batch"}
    shapes2 = {k: ([other] + v[1:] if k in dynamic else v) for k, v in shapes.items()}
    at_other = _shapes_by_running(model, inputs, shapes2, names, samples)
    out: Dict[str, Tuple[str, List]] = {}
    for n in names:
        (dtype, a), (_, b) = at_opt[n], at_other[n]
        if len(a) != len(b):
            continue
        dims: List[Union[int, str]] = []
        for x, y in zip(a, b):
            if x == y:
                dims.append(x)
            elif x == batch.opt and y == other:
                dims.append("batch")
            elif x % batch.opt == 0 and x // batch.opt * other == y:
                dims.append(f"batch*{x // batch.opt}")
            else:
                dims.append(f"?{n}")
        out[n] = (dtype, dims)
    return out


def range_feeds(inputs: List[TensorSpec], concrete: Dict[str, List[int]],
                profiles: Sequence[ProfileRanges]) -> List[Dict[str, List[int]]]:
    """Input shapes at MIN, OPT and MAX of each profile, in that order (inputs without a range as bound)."""
    return [{s.name: (list(prof[s.name][k]) if s.name in prof else list(concrete[s.name])) for s in inputs}
            for prof in profiles for k in range(3)]


def _ranged_shapes_by_running(model: onnx.ModelProto, inputs: List[TensorSpec], concrete: Dict[str, List[int]],
                              names: List[str], profiles: Sequence[ProfileRanges],
                              samples: Optional[Dict[str, np.ndarray]] = None
                              ) -> Tuple[Dict[str, Tuple[str, List]], Dict[str, List[List[int]]]]:
    """Every tensor's shape from runs at MIN, OPT and MAX of each profile: a dim that stays is a number, one that
    moves with an input's ranged dim is that dim's symbol, any other moving dim gets its own symbol
    (``TENSOR_dI``). Also the shapes at each point, from which each segment's own profiles are taken."""
    points = range_feeds(inputs, concrete, profiles)
    probe = _probe_point(inputs, points)
    from device_agent.shape_profiles import fit_to_shape

    # the user's samples cut or repeated to each point: token ids, type ids and masks stay valid there
    runs = [_shapes_by_running(model, inputs, p, names,
                               {k: fit_to_shape(v, p[k]) for k, v in (samples or {}).items() if k in p})
            for p in points + [probe]]
    sym_values: Dict[str, List[int]] = {}
    for s in inputs:
        for i, d in enumerate(s.shape):
            if isinstance(d, str):
                sym_values.setdefault(d, [p[s.name][i] for p in points + [probe]])
    by_values: Dict[Tuple[int, ...], str] = {}
    for k, v in sym_values.items():  # two symbols that move alike are told apart by nothing: neither is used
        by_values[tuple(v)] = "" if tuple(v) in by_values else k
    types: Dict[str, Tuple[str, List]] = {}
    shapes_at: Dict[str, List[List[int]]] = {s.name: [p[s.name] for p in points] for s in inputs}
    for n in names:
        at = [r[n][1] for r in runs]
        shapes_at[n] = at[:-1]
        if any(len(a) != len(at[0]) for a in at):
            types[n] = (runs[0][n][0], [f"?{n}"])
            continue
        dims: List[Union[int, str]] = []
        for i in range(len(at[0])):
            vals = tuple(a[i] for a in at)
            if len(set(vals)) == 1:
                dims.append(vals[0])
            else:
                dims.append(by_values.get(vals) or f"{n[:100]}_d{i}")
        types[n] = (runs[0][n][0], dims)
    return types, shapes_at


def _probe_point(inputs: List[TensorSpec], points: List[Dict[str, List[int]]]) -> Dict[str, List[int]]:
    """The first profile's OPT with its symbols at MIN, MAX or OPT in turn, so that symbols with equal ranges (H and
    W of 16..64) take different sizes in one run and a tensor's dims can be told to follow the one or the other."""
    probe = {k: list(v) for k, v in points[1].items()}
    order: Dict[str, int] = {}
    for s in inputs:
        for i, d in enumerate(s.shape):
            if isinstance(d, str):
                k = order.setdefault(d, len(order))
                probe[s.name][i] = points[(0, 2, 1)[k % 3]][s.name][i]
    return probe


def _shapes_by_running(model: onnx.ModelProto, inputs: List[TensorSpec], shapes: Dict[str, List[int]],
                       names: List[str], samples: Optional[Dict[str, np.ndarray]] = None
                       ) -> Dict[str, Tuple[str, List]]:
    """Shapes ONNX inference leaves open (shape computed by the graph), taken from one onnxruntime run
    on the samples that fit ``shapes`` (seeded data for the rest)."""
    import onnxruntime as ort

    from host.compiler.reference import make_inputs

    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in existing)
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        fitting = {k: np.asarray(v, dtype=np.dtype(spec.dtype)) for spec in inputs
                   for k, v in (samples or {}).items()
                   if k == spec.name and list(np.shape(v)) == list(shapes[k])
                   and np.asarray(v).dtype.kind == np.dtype(spec.dtype).kind}
        feed = make_inputs(inputs, shapes, seed=0, samples=fitting)
        outs = sess.run(names, {i.name: feed[i.name] for i in sess.get_inputs()})
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
        raise ShapeError(f"shapes cannot be resolved (onnxruntime: {str(e).splitlines()[0][:160]}); "
                         "pass --input-shape") from None
    return {n: (np.asarray(arr).dtype.name, list(np.asarray(arr).shape)) for n, arr in zip(names, outs)}


def initializer_array(model: onnx.ModelProto, name: str) -> Optional[np.ndarray]:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    return None
