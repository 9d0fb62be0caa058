"""Lower the TVM parts and the glue between segments to one Relax VM library.

Each TVM part is imported on its own by TVM's ONNX frontend; a hand-built ``main`` calls the parts
as Relax functions and each TensorRT segment through ``R.call_dps_packed("<segment id>", ...)``.
The device registers that name, backed by the built engine.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple, Union

import onnx

from device_agent.errors import InvalidInput, Unavailable
from host.compiler.emit import EmitError, part_model
from host.compiler.partition import TRT, Partition
from host.compiler.graphs import subgraphs
from host.compiler.patterns import Context, check_node, first_version_taking
from host.compiler.profiles import Profile, format_version

log = logging.getLogger(__name__)

CROSS_CXX = {"aarch64": "aarch64-linux-gnu-g++"}


class TvmImportError(InvalidInput):
    """TVM's ONNX frontend cannot import part of the model."""


def _tensor_type(rx, tirx, dtype: str, shape: list, symbols: Dict[str, object]):
    dims = []
    for d in shape:
        if isinstance(d, int):
            dims.append(d)
        else:
            if d not in symbols:
                symbols[d] = tirx.Var(str(d), "int64")
            dims.append(symbols[d])
    return rx.TensorType(dims, dtype)


def _ops_within(node: onnx.NodeProto) -> List[str]:
    """The node's op and the ops of its subgraphs (If branches, Loop bodies), recursively."""
    ops = [node.op_type]
    for _, g in subgraphs(node):
        for n in g.node:
            ops.extend(_ops_within(n))
    return ops


def check_importable(part_list: Partition, ctx: Context, exclude: Sequence[str] = ()) -> None:
    """Fail with one line before importing when a node neither TensorRT nor TVM's ONNX importer takes.

    Without this, such an op ends in TVM and the user sees the importer's message about a whole part.
    """
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = set(_get_convert_map()) | {"If"}  # the importer handles If itself, outside its convert map
    reasons = {e["node"]: e["reason"] for e in part_list.not_offloaded}
    target = format_version(ctx.trt)
    for part in part_list.parts:
        if part.kind == TRT:
            continue
        for node in part.nodes:
            missing = [op for op in dict.fromkeys(_ops_within(node)) if op not in known]
            if not missing:
                continue
            if node.op_type in exclude and check_node(node, ctx) is None:
                fix = f"drop --no-offload {node.op_type}: TensorRT {target} takes it"
            else:
                would = first_version_taking(node, ctx)
                fix = (f"TensorRT >= {would} takes it: compile for a device or --trt-version that has it" if would
                       else "no TensorRT version in the op table takes it as written: re-export the model without it")
            inner = "" if missing == [node.op_type] else f" (inside it: {', '.join(missing)})"
            raise TvmImportError(
                f"{node.op_type} node {node.name!r}{inner} cannot be compiled for TensorRT {target}: "
                f"{reasons.get(node.name, 'not offloaded')}, and TVM 0.27's ONNX importer has no "
                f"{', '.join(missing)}; {fix}")


@contextlib.contextmanager
def tvm_warnings_to_log() -> Iterator[None]:
    """TVM's warnings go to the log, not the terminal: its Python warnings (an importer gives hundreds of
    "Renaming name ...") and what its C++ side writes to stderr ("Warning: Fast mode segfaults ...").

    The C++ logger writes to file descriptor 2 directly, so that descriptor is pointed at a temp file
    for the duration and each line is logged after."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip():
                    log.info("tvm: %s", line.strip())
            for w in caught:
                log.info("tvm: %s", w.message)


def _safe_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """The part with every tensor renamed ``t0, t1, ...``: exporters' names (``model_1/cq/Pow;...``) become
    TVM variable names and then CUDA kernel parameters, which NVRTC rejects. Parts are called by position,
    so the names carry no meaning past this point."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    names: Dict[str, str] = {}

    def new(name: str) -> str:
        if not name:
            return name
        if name not in names:
            names[name] = f"t{len(names)}"
        return names[name]

    def walk(g: onnx.GraphProto) -> None:
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            vi.name = new(vi.name)
        for t in g.initializer:
            t.name = new(t.name)
        for n in g.node:
            n.input[:] = [new(t) for t in n.input]
            n.output[:] = [new(t) for t in n.output]
            for _, sub in subgraphs(n):
                walk(sub)

    walk(m.graph)
    return m


def build_module(model: onnx.ModelProto, part_list: Partition, types: Dict[str, Tuple[str, list]],
                 model_inputs: List[str], model_outputs: List[str], opset: int):
    """The Relax IRModule: one function per TVM part plus the ``main`` glue."""
    import tvm
    from tvm import relax as rx
    from tvm import tirx
    from tvm.relax.frontend.onnx import from_onnx

    symbols: Dict[str, object] = {}
    bb = rx.BlockBuilder()
    part_fns = {}
    for part in part_list.parts:
        if part.kind == TRT:
            continue
        try:
            sub = part_model(model, part, types)
        except EmitError as e:
            raise TvmImportError(f"the TVM part with {sorted(set(part.ops))} is not valid ONNX on its own: {e}") from None
        try:
            with tvm_warnings_to_log():
                imported = from_onnx(_safe_names(sub), keep_params_in_input=False)
        except Exception as e:  # noqa: BLE001 - the frontend raises many kinds
            ops = sorted(set(part.ops))
            raise TvmImportError(f"TVM cannot import {ops} ({str(e).splitlines()[-1][:160]}); "
                                 "this model cannot be compiled for this target") from None
        part_fns[part.id] = _add_part(bb, imported, part.id)
    params = [rx.Var(_sanitize(n), _tensor_type(rx, tirx, types[n][0], types[n][1], symbols)) for n in model_inputs]
    env: Dict[str, object] = dict(zip(model_inputs, params))
    bound = set(symbols)  # sizes main knows before a call: the inputs', then those match_cast binds
    with bb.function("main", params):
        with bb.dataflow():
            for part in part_list.parts:
                args = [env[t] for t in part.inputs]
                if part.kind == TRT and _sized_at_run_time(part, types, bound):
                    _emit_allocating_call(bb, rx, tirx, part, args, types, symbols, env)
                    bound.update(d for t in part.outputs for d in types[t][1] if isinstance(d, str))
                    continue
                if part.kind == TRT:
                    out_types = [_tensor_type(rx, tirx, types[t][0], types[t][1], symbols) for t in part.outputs]
                    call = rx.call_dps_packed(part.id, args, out_types if len(out_types) > 1 else out_types[0])
                else:
                    call = rx.Call(part_fns[part.id], args)
                res = bb.emit(call)
                if len(part.outputs) == 1:
                    env[part.outputs[0]] = res
                else:
                    for i, t in enumerate(part.outputs):
                        env[t] = bb.emit(rx.TupleGetItem(res, i))
            out = bb.emit_output(rx.Tuple([env[t] for t in model_outputs]))
        bb.emit_func_output(out)
    return bb.get()


def _sized_at_run_time(part, types: Dict[str, Tuple[str, list]], bound: set) -> bool:
    """A segment output with a dim nothing bound yet (a strided conv's width under a shape range): ``main`` cannot
    size its destination before the call."""
    return any(isinstance(d, str) and d not in bound for t in part.outputs for d in types[t][1])


def _emit_allocating_call(bb, rx, tirx, part, args, types: Dict[str, Tuple[str, list]], symbols: Dict[str, object],
                          env: Dict[str, object]) -> None:
    """The segment through ``R.call_pure_packed("<id>.alloc", ...)``, which returns its outputs (the agent allocates
    them at their run-time shape), then ``match_cast`` to the declared shapes: that binds each new dim to a
    variable later parts use, so one library serves every shape in the range."""
    loose = [rx.TensorType(ndim=len(types[t][1]), dtype=types[t][0]) for t in part.outputs]
    res = bb.emit(rx.op.call_pure_packed(part.id + ".alloc", *args,
                                         ty_args=loose[0] if len(loose) == 1 else rx.TupleType(loose)))
    for i, t in enumerate(part.outputs):
        value = res if len(part.outputs) == 1 else bb.emit(rx.TupleGetItem(res, i))
        env[t] = bb.match_cast(value, _tensor_type(rx, tirx, types[t][0], types[t][1], symbols))


def _add_part(bb, imported, part_id: str):
    """Add an imported module's ``main`` as ``part_id`` and its helpers under part-unique names."""
    from tvm.relax.expr_functor import PyExprMutator, mutator

    mapping = {}
    for gv, func in imported.functions_items():
        if gv.name_hint != "main":
            mapping[gv.name_hint] = bb.add_func(func, f"{part_id}_{gv.name_hint}")

    @mutator
    class _Rename(PyExprMutator):
        def visit_global_var_(self, op):  # noqa: N802 - TVM's visitor naming
            return mapping.get(op.name_hint, op)

    main = imported["main"]
    if mapping:
        main = _Rename().visit_expr(main)
    return bb.add_func(main.with_attr("global_symbol", part_id), part_id)


def _sanitize(name: str) -> str:
    s = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return s if s and not s[0].isdigit() else "v_" + s


def tvm_targets(profile: Profile):
    import tvm

    target, host = profile.tvm_target()
    return tvm.target.Target(target, host=host)


def compile_module(mod, profile: Profile, out_path: Union[str, os.PathLike]) -> Tuple[str, str]:
    """tvm.compile for the profile, export (cross-linked when needed); returns (target json, host json)."""
    import json

    import tvm
    import tvm.support.nvcc  # noqa: F401 - registers the NVRTC compile callback
    from tvm.support import cc

    target = tvm_targets(profile)
    with tvm_warnings_to_log():
        ex = tvm.compile(mod, target=target)
    fcompile = None
    if profile.cross:
        cxx = CROSS_CXX.get(profile.arch)
        if cxx is None or shutil.which(cxx) is None:
            raise Unavailable(f"cross-compiling for {profile.arch} needs {cxx or 'a cross compiler'} on PATH "
                              "(Debian: apt-get install g++-aarch64-linux-gnu)")
        fcompile = cc.cross_compiler(cxx)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {}
    if fcompile is not None:
        kwargs["fcompile"] = fcompile
    if profile.device == "cuda":
        from host.compiler.cuda_embed import pack_imports_with_cubin

        assert profile.sm is not None
        kwargs["fpack_imports"] = pack_imports_with_cubin(profile.sm, profile.cuda_code)
    elif profile.cross:
        from host.compiler.cuda_embed import pack_imports_as_c

        kwargs["fpack_imports"] = pack_imports_as_c()
    ex.export_library(str(out_path), **kwargs)
    t, h = profile.tvm_target()
    return json.dumps(t, sort_keys=True), json.dumps(h, sort_keys=True)


def plain_compile(model: onnx.ModelProto, profile: Profile, shape_dict: Dict[str, List[int]]):
    """Plain ``tvm.compile`` of the whole model (the benchmark's reference)."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(model, shape_dict=shape_dict, keep_params_in_input=False)
    return tvm.compile(mod, target=tvm_targets(profile))
