"""Conformance of the op table over ONNX's own node test cases.

For each single-node case whose op is in the table (and the table's own cases in
``optable/extra_cases.py``): is it offloaded at each TensorRT version, and not below the op's minimum;
does the emitted segment, run in onnxruntime, give the case's expected outputs; and does the same
model compiled by TVM (every op kept in TVM) give them too.

    python -m host.compiler.conformance --markdown docs/conformance.md --tvm-per-op 1000
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import numpy_helper

from host.compiler import frontend
from host.compiler.api import CompileOptions, _partition_and_emit
from host.compiler.partition import TRT, partition
from host.compiler.patterns import OP_TABLE, Context
from host.compiler.profiles import Version, format_version, max_parser_opset, parse_version

VERSIONS = ("8.2.1", "8.5.2", "10.3.0")


@dataclass
class Case:
    name: str
    op: str
    model: onnx.ModelProto
    inputs: Dict[str, np.ndarray]
    expected: List[np.ndarray]
    rtol: float
    atol: float
    opset_note: str = ""     # "28 -> 25" when the case was rewritten for the frontend's opset range
    unusable: str = ""       # why the case cannot be run at all
    extra: bool = False      # one of the table's own cases (optable/extra_cases.py), not ONNX's


@dataclass
class CaseResult:
    name: str
    op: str
    offloaded: Dict[str, bool] = field(default_factory=dict)
    reasons: Dict[str, str] = field(default_factory=dict)
    trt_pass: Optional[bool] = None      # emitted segments in onnxruntime vs expected (None: never offloaded)
    trt_pass_at: Dict[str, bool] = field(default_factory=dict)  # the same, per TensorRT version
    tvm_pass: Optional[bool] = None      # op kept in TVM vs expected (None: not run)
    gate_ok: Optional[bool] = None       # refused just below the op's minimum TensorRT version
    ort_differs: bool = False            # onnxruntime on the *original* model misses the expected output too
    skipped: str = ""
    detail: str = ""


def _as_array(a):
    if isinstance(a, np.ndarray):
        return a
    if isinstance(a, onnx.TensorProto):
        try:
            return numpy_helper.to_array(a)
        except Exception:  # noqa: BLE001 - element types numpy lacks (float8, int4, ...)
            return None
    return None


def _to_frontend_opset(model: onnx.ModelProto) -> Tuple[Optional[onnx.ModelProto], str]:
    """ONNX writes its cases at the newest opset (up to 28); the frontend takes 7..25. Newer cases are
    rewritten to 25 node by node as emit does (relabelled where the op's schema is the same), older
    ones upgraded with onnx.version_converter."""
    from host.compiler.emit import EmitError, downgrade
    from host.compiler.profiles import MAX_SOURCE_OPSET, MIN_SOURCE_OPSET

    opset = next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))
    try:
        if opset > MAX_SOURCE_OPSET:
            return downgrade(model, MAX_SOURCE_OPSET), f"{opset} -> {MAX_SOURCE_OPSET}"
        if opset < MIN_SOURCE_OPSET:
            from onnx import version_converter

            return version_converter.convert_version(model, MIN_SOURCE_OPSET), f"{opset} -> {MIN_SOURCE_OPSET}"
    except (EmitError, Exception) as e:  # noqa: BLE001
        return None, f"opset {opset} case not convertible: {str(e).splitlines()[0][:80]}"
    return model, ""


@functools.lru_cache(maxsize=1)
def load_cases() -> Tuple[Case, ...]:
    """Single-node cases of ops in the table (inputs the table needs constant become initializers),
    then the table's own cases (``optable.extra_cases``) for what ONNX's cases do not exercise."""
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    from host.compiler.optable.extra_cases import extra_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = collect_testcases()
    cases = []
    for c in raw:
        g = c.model.graph
        if len(g.node) != 1 or g.node[0].op_type not in OP_TABLE or not c.data_sets:
            continue
        ins, outs = [[_as_array(a) for a in part] for part in c.data_sets[0]]
        if any(a is None for a in list(ins) + list(outs)):
            continue
        model = onnx.ModelProto()
        model.CopyFrom(c.model)
        node = model.graph.node[0]
        rule = OP_TABLE[node.op_type]
        names = [vi.name for vi in model.graph.input]
        feed = dict(zip(names, ins))
        for pos in rule.const_inputs:
            if pos < len(node.input) and node.input[pos] in feed:
                name = node.input[pos]
                model.graph.initializer.append(numpy_helper.from_array(feed.pop(name), name))
                keep = [vi for vi in model.graph.input if vi.name != name]
                del model.graph.input[:]
                model.graph.input.extend(keep)
        converted, how = _to_frontend_opset(model)
        cases.append(Case(c.name, node.op_type, converted if converted is not None else model, feed, list(outs),
                          float(c.rtol), float(c.atol), opset_note=how, unusable="" if converted is not None else how))
    for name, op, model, feed, expected in extra_cases():
        cases.append(Case(name, op, model, feed, expected, 1e-4, 1e-5, extra=True))
    return tuple(cases)


def _close(got: Sequence[np.ndarray], want: Sequence[np.ndarray], rtol: float, atol: float) -> Tuple[bool, str]:
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        if g.shape != w.shape:
            return False, f"shape {g.shape} != {w.shape}"
        if not np.allclose(g.astype(np.float64), w.astype(np.float64), rtol=max(rtol, 1e-4), atol=max(atol, 1e-5),
                           equal_nan=True):
            return False, f"max abs err {np.nanmax(np.abs(g.astype(np.float64) - w)):.3g}"
    return True, ""


def _ctx(loaded: frontend.LoadedModel, trt: Version) -> Context:
    return Context.for_model(loaded.model, loaded.value_types, trt, max_parser_opset(trt), loaded.opset)


def _run_ort(model: onnx.ModelProto, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: feed[i.name] for i in sess.get_inputs()})


def _run_tvm(loaded: frontend.LoadedModel, case: Case) -> Tuple[bool, str]:
    import tvm
    from tvm import relax

    from host.compiler import lower

    ctx = _ctx(loaded, (10, 3, 0))
    part = partition(loaded.model, ctx, exclude=sorted({n.op_type for n in loaded.model.graph.node}))
    mod = lower.build_module(loaded.model, part, loaded.value_types, [s.name for s in loaded.inputs],
                             [s.name for s in loaded.outputs], loaded.opset)
    ex = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    res = vm["main"](*[tvm.runtime.tensor(case.inputs[s.name]) for s in loaded.inputs])
    outs = [res[i] for i in range(len(loaded.outputs))]
    # a graph output that is a shape (Shape) comes back as a ShapeTuple, not a tensor
    got = [o.numpy() if hasattr(o, "numpy") else np.array(list(o), np.int64) for o in outs]
    return _close(got, case.expected, case.rtol, case.atol)


def check_case(case: Case, versions: Sequence[str] = VERSIONS, run_tvm: bool = True) -> CaseResult:
    r = CaseResult(case.name, case.op)
    if case.unusable:
        r.skipped = case.unusable
        return r
    try:
        loaded = frontend.prepare(case.model, "sha256:" + "0" * 64)
    except Exception as e:  # noqa: BLE001 - the case is outside what the frontend accepts
        r.skipped = f"frontend: {str(e)[:120]}"
        return r
    trt_ok: List[bool] = []
    for v in versions:
        trt = parse_version(v)
        opts = CompileOptions(trt_version=v)
        try:
            part, emitted = _partition_and_emit(loaded, _ctx(loaded, trt), opts, min(loaded.opset, max_parser_opset(trt)))
        except Exception as e:  # noqa: BLE001
            r.offloaded[v], r.reasons[v] = False, f"partition failed: {str(e)[:120]}"
            continue
        r.offloaded[v] = part.fully_offloaded
        if not part.fully_offloaded:
            r.reasons[v] = part.not_offloaded[0]["reason"] if part.not_offloaded else "no segment"
            continue
        try:
            ok, why = _close(_run_ort(emitted["trt_0"], case.inputs), case.expected, case.rtol, case.atol)
        except Exception as e:  # noqa: BLE001 - onnxruntime refusing the emitted model is a failure
            ok, why = False, f"onnxruntime: {str(e).splitlines()[0][:120]}"
        if not ok:
            try:
                same, _ = _close(_run_ort(case.model, case.inputs), case.expected, case.rtol, case.atol)
            except Exception as e:  # noqa: BLE001 - onnxruntime has no kernel for the original either
                same, why = False, f"onnxruntime cannot run it: {str(e).splitlines()[0][-90:]}"
            if not same:  # the reference runtime itself disagrees with ONNX's expected output
                r.ort_differs = True
                r.detail += f"[{v}] onnxruntime on the original model differs too ({why}) "
                continue
            r.detail += f"[{v}] {why} "
        trt_ok.append(ok)
        r.trt_pass_at[v] = ok
    r.trt_pass = all(trt_ok) if trt_ok else None
    rule = OP_TABLE[case.op]
    if rule.min_trt > (5, 0, 0):
        below = (rule.min_trt[0], rule.min_trt[1], rule.min_trt[2] - 1) if rule.min_trt[2] else \
            (rule.min_trt[0], rule.min_trt[1] - 1, 9) if rule.min_trt[1] else (rule.min_trt[0] - 1, 9, 9)
        part = partition(loaded.model, _ctx(loaded, below))
        r.gate_ok = not any(p.kind == TRT and case.op in p.ops for p in part.parts)
    if run_tvm:
        try:
            r.tvm_pass, why = _run_tvm(loaded, case)
        except Exception as e:  # noqa: BLE001 - TVM's frontend or build refusing is recorded
            r.tvm_pass, why = False, f"tvm: {str(e).splitlines()[-1][:120]}"
        if not r.tvm_pass:
            r.detail += f"[tvm] {why}"
    return r


def tvm_sample(cases: Sequence[Case], per_op: int) -> set:
    seen: Dict[str, int] = defaultdict(int)
    chosen = set()
    for c in cases:
        if seen[c.op] < per_op:
            seen[c.op] += 1
            chosen.add(c.name)
    return chosen


HEADER = """# Op-table conformance (ONNX backend node test cases)

Generated by `{command}`
(apache-tvm {tvm}, onnx {onnx}, onnxruntime {ort}, on the CPU machine; {n_cases} cases over the {n_ops} ops of the
table, {seconds:.0f} s on 2 shared cores). The test `tests/host/compiler/test_conformance.py`
runs the same harness with TVM on 3 cases per op plus every known TVM failure.

Cases: ONNX's single-node test cases (`onnx.backend.test.case.node.collect_testcases()`) of every op in the table,
plus {n_extra} cases of the table's own (`host/compiler/optable/extra_cases.py`, expected outputs from
`onnx.reference`) for what ONNX's cases do not exercise the way TensorRT takes it: shape tensors computed at run time
(Shape -> Gather -> Concat -> Reshape, ConstantOfShape/Expand/Tile/Slice/Range from Shape), Loop with a constant trip
count, Constant nodes inside If branches, float NonZero/CumSum/ReduceLogSumExp, constant NMS parameters, Q/DQ pairs.
ONNX writes its cases at opsets up to 28; the frontend takes 7..25, so newer cases are rewritten to opset 25 node by
node as the emitter does (older ones upgraded to 7); a case that has no opset-25 form is skipped.

| TensorRT | cases offloaded whole | segment matches ONNX's expected outputs | differs | onnxruntime itself misses |
|---|---:|---:|---:|---:|
{summary}

What each column of the table below means:

- **seed**: the op's name in the seed's table, "-" for rows taken from onnx-tensorrt's `docs/operators.md`;
  **min TensorRT** is the seed's minimum or the first release branch whose list marks the op supported.
- **offloaded @ V**: cases the partitioner puts whole into one TensorRT segment for TensorRT V (8.2.1 = Jetson
  Nano, 8.5.2 = Xavier NX, 10.3.0 = Orin), and how many of those segments match. The others stay in TVM; "why not
  offloaded" gives the recorded reasons (dtype, attributes, opset the parser reads, version).
- **segment in onnxruntime**: the emitted segment ONNX (downgraded to the parser's opset where needed) run in
  onnxruntime, compared with the case's expected outputs (rtol = max(case, 1e-4)), over all versions. This is the
  host-side proof that the segment is a faithful ONNX; TensorRT itself does not run here.
- **kept in TVM**: the same model with every op kept in TVM (`--no-offload`), compiled by `tvm.compile` for llvm and
  run in the Relax VM ({tvm_note}): {tvm_fail} of {tvm_run} runs fail, all limits of TVM 0.27's ONNX frontend
  (missing converters: Celu, DeformConv, GRU/LSTM/RNN, Loop, LpNormalization, ReverseSequence; float8/4-bit types;
  listed in the test with the reason). Those ops still compile wherever TensorRT takes them.
- **refused below min**: at the version just below the op's minimum, the op is not offloaded ("-" when the minimum is
  the oldest supported, 5.0.0).
- Inputs the table needs constant (weights, shapes, axes, pads, scales) are turned into initializers, as they are in
  real models; cases with symbolic or empty (0-sized) input dims are skipped (the compiler asks for `--input-shape`).

"""


def _summary(results: Sequence[CaseResult], versions: Sequence[str]) -> str:
    rows = []
    for v in versions:
        off = [r for r in results if r.offloaded.get(v)]
        ok = sum(1 for r in off if r.trt_pass_at.get(v) is True)
        bad = sum(1 for r in off if r.trt_pass_at.get(v) is False)
        odd = sum(1 for r in off if v not in r.trt_pass_at)
        rows.append(f"| {v} | {len(off)} | {ok} | {bad} | {odd} |")
    return "\n".join(rows)


def markdown(results: Sequence[CaseResult], versions: Sequence[str] = VERSIONS, *, command: str = "",
             seconds: float = 0.0, tvm_per_op: Optional[int] = None) -> str:
    import onnxruntime
    import tvm

    by_op: Dict[str, List[CaseResult]] = defaultdict(list)
    for r in results:
        by_op[r.op].append(r)
    n_extra = sum(1 for r in results if r.name.startswith("extra_"))
    tvm_note = "every case" if tvm_per_op is None else f"the first {tvm_per_op} cases of each op"
    out = HEADER.format(command=command or "python -m host.compiler.conformance", tvm=tvm.__version__,
                        onnx=onnx.__version__, ort=onnxruntime.__version__, n_cases=len(results),
                        n_ops=len(OP_TABLE), seconds=seconds, n_extra=n_extra, tvm_note=tvm_note,
                        tvm_run=sum(1 for r in results if r.tvm_pass is not None),
                        tvm_fail=sum(1 for r in results if r.tvm_pass is False),
                        summary=_summary(results, versions))
    head = "| op | seed | min TensorRT | cases | " + " | ".join(f"offloaded @ {v}" for v in versions) + \
           " | segment in onnxruntime | kept in TVM | refused below min | why not offloaded (examples) |"
    lines = [head, "|" + "---|" * (8 + len(versions))]
    for op in sorted(OP_TABLE):
        rs = by_op.get(op, [])
        run = [r for r in rs if not r.skipped]
        cols = []
        for v in versions:
            off = [r for r in run if r.offloaded.get(v, False)]
            passed = sum(1 for r in off if r.trt_pass_at.get(v) is True)
            cols.append(f"{len(off)}/{len(run)}" + (f" ({passed} pass)" if off else ""))
        trt = [r.trt_pass for r in run if r.trt_pass is not None]
        tvm_ = [r.tvm_pass for r in run if r.tvm_pass is not None]
        gate = [r.gate_ok for r in run if r.gate_ok is not None]
        reasons = sorted({r.reasons[v] for r in run for v in versions if v in r.reasons})
        skipped = [r for r in rs if r.skipped]
        notes = "; ".join(reasons[:3])
        odd = [r.name for r in run if r.ort_differs]
        if odd:
            notes += f"{'; ' if notes else ''}onnxruntime itself misses the expected output of {', '.join(odd)}"
        if skipped:
            notes += f"{'; ' if notes else ''}{len(skipped)} skipped ({skipped[0].skipped[:70]})"
        rule = OP_TABLE[op]
        lines.append(f"| {op} | {rule.seed if rule.from_seed else '-'} | {format_version(rule.min_trt)} | {len(rs)} | "
                     + " | ".join(cols) + f" | {sum(trt)}/{len(trt)} pass | {sum(tvm_)}/{len(tvm_)} pass | "
                     f"{'yes' if gate and all(gate) else ('-' if not gate else 'NO')} | {notes.replace('|', '/')} |")
    out += "\n".join(lines) + "\n"
    from host.compiler.patterns import LEFT_OUT

    out += "\nOn the lists but not in the table: " + "; ".join(f"{k} ({v})" for k, v in LEFT_OUT.items()) + ".\n"
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="op-table conformance over ONNX node test cases")
    ap.add_argument("--markdown", help="write the table to this file")
    ap.add_argument("--tvm-per-op", type=int, default=2, help="cases per op also compiled by TVM")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    cases = load_cases()
    sample = tvm_sample(cases, a.tvm_per_op)
    results = [check_case(c, run_tvm=c.name in sample) for c in cases]
    command = "python -m host.compiler.conformance" + (f" --markdown {a.markdown}" if a.markdown else "") + \
        f" --tvm-per-op {a.tvm_per_op}"
    per_op_all = a.tvm_per_op >= max(sum(1 for c in cases if c.op == op) for op in {c.op for c in cases})
    table = markdown(results, command=command, seconds=time.perf_counter() - t0,
                     tvm_per_op=None if per_op_all else a.tvm_per_op)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table)
    else:
        sys.stdout.write(table)
    bad = [r for r in results if r.trt_pass is False or r.tvm_pass is False or r.gate_ok is False]
    for r in bad:
        print(f"FAIL {r.name}: {r.detail}", file=sys.stderr)
    print(f"{len(results)} cases, {len(bad)} failing, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
