"""Conformance of the op table over ONNX's own node test cases.

For each single-node case whose op is in the table: is it offloaded at each TensorRT version, and
not below the op's minimum; does the emitted segment, run in onnxruntime, give the case's expected
outputs; and does the same model compiled by TVM (op kept in TVM) give them too.

    python -m host.compiler.conformance --markdown docs/conformance.md
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


@dataclass
class CaseResult:
    name: str
    op: str
    offloaded: Dict[str, bool] = field(default_factory=dict)
    reasons: Dict[str, str] = field(default_factory=dict)
    trt_pass: Optional[bool] = None      # emitted segments in onnxruntime vs expected (None: never offloaded)
    tvm_pass: Optional[bool] = None      # op kept in TVM vs expected (None: not run)
    gate_ok: Optional[bool] = None       # refused just below the op's minimum TensorRT version
    ort_differs: bool = False            # onnxruntime on the *original* model misses the expected output too
    skipped: str = ""
    detail: str = ""


@functools.lru_cache(maxsize=1)
def load_cases() -> Tuple[Case, ...]:
    """Single-node cases of ops in the table; inputs the table needs constant become initializers."""
    import warnings

    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = collect_testcases()
    cases = []
    for c in raw:
        g = c.model.graph
        if len(g.node) != 1 or g.node[0].op_type not in OP_TABLE or not c.data_sets:
            continue
        ins, outs = c.data_sets[0]
        if not all(isinstance(a, np.ndarray) for a in list(ins) + list(outs)):
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
        cases.append(Case(c.name, node.op_type, model, feed, list(outs), float(c.rtol), float(c.atol)))
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
    return Context(types=loaded.value_types, constants={i.name for i in loaded.model.graph.initializer}, trt=trt,
                   parser_opset=max_parser_opset(trt), model_opset=loaded.opset)


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
    part = partition(loaded.model, ctx, exclude=[case.op])
    mod = lower.build_module(loaded.model, part, loaded.value_types, [s.name for s in loaded.inputs],
                             [s.name for s in loaded.outputs], loaded.opset)
    ex = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(ex, tvm.cpu())
    res = vm["main"](*[tvm.runtime.tensor(case.inputs[s.name]) for s in loaded.inputs])
    got = [res[i].numpy() for i in range(len(loaded.outputs))]
    return _close(got, case.expected, case.rtol, case.atol)


def check_case(case: Case, versions: Sequence[str] = VERSIONS, run_tvm: bool = True) -> CaseResult:
    r = CaseResult(case.name, case.op)
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
            same, _ = _close(_run_ort(case.model, case.inputs), case.expected, case.rtol, case.atol)
            if not same:  # the reference runtime itself disagrees with ONNX's expected output
                r.ort_differs = True
                r.detail += f"[{v}] onnxruntime on the original model differs too ({why}) "
                continue
            r.detail += f"[{v}] {why} "
        trt_ok.append(ok)
    r.trt_pass = all(trt_ok) if trt_ok else None
    rule = OP_TABLE[case.op]
    if rule.min_trt > (5, 0, 0):
        below = (rule.min_trt[0], rule.min_trt[1], rule.min_trt[2] - 1) if rule.min_trt[2] else \
            (rule.min_trt[0], rule.min_trt[1] - 1, 9) if rule.min_trt[1] else (rule.min_trt[0] - 1, 9, 9)
        part = partition(loaded.model, _ctx(loaded, below))
        r.gate_ok = not any(p.kind == TRT for p in part.parts)
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


def markdown(results: Sequence[CaseResult], versions: Sequence[str] = VERSIONS) -> str:
    by_op: Dict[str, List[CaseResult]] = defaultdict(list)
    for r in results:
        by_op[r.op].append(r)
    head = "| op | min TensorRT | cases | " + " | ".join(f"offloaded @ {v}" for v in versions) + \
           " | segment in onnxruntime | kept in TVM | refused below min | why not offloaded (examples) |"
    lines = [head, "|" + "---|" * (7 + len(versions))]
    for op in sorted(by_op):
        rs = by_op[op]
        run = [r for r in rs if not r.skipped]
        cols = [f"{sum(r.offloaded.get(v, False) for r in run)}/{len(run)}" for v in versions]
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
            notes += f"{'; ' if notes else ''}{len(skipped)} skipped ({skipped[0].skipped[:60]})"
        lines.append(f"| {op} | {format_version(OP_TABLE[op].min_trt)} | {len(rs)} | " + " | ".join(cols) +
                     f" | {sum(trt)}/{len(trt)} pass | {sum(tvm_)}/{len(tvm_)} pass | "
                     f"{'yes' if gate and all(gate) else ('-' if not gate else 'NO')} | {notes.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="op-table conformance over ONNX node test cases")
    ap.add_argument("--markdown", help="write the table to this file")
    ap.add_argument("--tvm-per-op", type=int, default=2, help="cases per op also compiled by TVM")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    cases = load_cases()
    sample = tvm_sample(cases, a.tvm_per_op)
    results = [check_case(c, run_tvm=c.name in sample) for c in cases]
    table = markdown(results)
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
