"""Per-layer profiles: the row type, the default whole-engine profiler, and mapping fused kernels to ONNX nodes.

A profiler runs *after* the timed benchmark iterations, on runs of its own, so profiling never perturbs the
latency figures. Its first run is a warm-up and is not counted. The ONNX graph is read through
protos/onnx_graph.proto (node names, op types, input and output tensor names only), since the agent must not
need the onnx package.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np


@dataclass
class LayerTime:
    """One row of a profile: a kernel (or a whole part) and its mean time per run."""

    name: str
    op: str
    mean_ms: float
    calls: int = 1
    segment: str = ""
    share: float = 0.0


@dataclass
class LayerProfile:
    rows: List[LayerTime]
    wall_ms: float  # mean wall time of one profiled run, profiler overhead included
    runs: int


def finish(rows: Sequence[LayerTime], wall_ms: float, runs: int) -> LayerProfile:
    """Shares of the summed means, rows largest first."""
    total = sum(r.mean_ms for r in rows)
    out = sorted(rows, key=lambda r: -r.mean_ms)
    for r in out:
        r.share = r.mean_ms / total if total > 0 else 0.0
    return LayerProfile(out, wall_ms, runs)


class LayerProfiler:
    """Runs one engine with its layers timed; ``rows`` after the runs. This default times the engine whole."""

    def __init__(self, run: Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]], name: str, op: str) -> None:
        self._run, self.name, self.op = run, name, op
        self.walls_ms: List[float] = []

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = self._run(feeds)
        self.walls_ms.append((time.perf_counter() - t0) * 1e3)
        return out

    def rows(self) -> List[LayerTime]:
        counted = self.walls_ms[1:]  # the first run warms up
        return [LayerTime(self.name, self.op, float(np.mean(counted)) if counted else 0.0, len(counted))]

    def close(self) -> None:
        return None


# ---------------------------------------------------------------- ONNX graph, read from the wire format

@dataclass(frozen=True)
class OnnxNode:
    name: str
    op_type: str
    inputs: Tuple[str, ...]
    outputs: Tuple[str, ...]


def onnx_nodes(model: bytes) -> List[OnnxNode]:
    """The top graph's nodes of a serialized ModelProto, in graph order (protos/onnx_graph.proto: onnx.proto's
    field numbers for the node names, op types and tensor names; everything else is skipped as unknown)."""
    from protos import onnx_graph_pb2

    graph = onnx_graph_pb2.ModelProto.FromString(model).graph
    return [OnnxNode(n.name, n.op_type, tuple(n.input), tuple(n.output)) for n in graph.node]


#: ops an optimizer fuses into the kernel that produces their input (a convolution's activation or residual sum)
POST_OPS = frozenset({"Add", "Sum", "Relu", "Clip", "Sigmoid", "HardSigmoid", "LeakyRelu", "Tanh", "HardSwish",
                      "Elu", "Selu", "Softplus", "Gelu"})


def map_kernels(source: Sequence[OnnxNode], kernels: Sequence[OnnxNode],
                suffixes: Sequence[str] = ("_nchwc",)) -> Dict[str, List[OnnxNode]]:
    """Which source nodes each kernel of an optimized graph does, by tensor names.

    A kernel owns the source nodes whose outputs it produces (onnxruntime keeps the last fused node's output
    name, or names a layout-transformed kernel ``<that output>_nchwc``). A source node whose output no kernel
    produces was fused: an activation or residual sum (POST_OPS) into the kernel of its input that runs last,
    anything else into the kernel that owns its consumer.
    """
    produced: Dict[str, str] = {}
    order = {k.name: i for i, k in enumerate(kernels)}
    for k in kernels:
        for t in k.outputs:
            produced.setdefault(t, k.name)
    for k in kernels:
        for s in suffixes:
            if k.name.endswith(s):
                produced[k.name[:-len(s)]] = k.name  # over a ReorderOutput that only converts the layout back
    owner: Dict[str, str] = {}
    for n in source:
        hit = next((produced[t] for t in n.outputs if t in produced), None)
        if hit is not None:
            owner[n.name] = hit
    # the nodes the kernels do: the owned ones and what feeds them, back to the kernels' own inputs (a node
    # before those, or after the kernels' outputs, ran elsewhere: another segment, the TVM remainder)
    fed = {t for k in kernels for t in k.inputs} - {t for k in kernels for t in k.outputs}
    producer: Dict[str, OnnxNode] = {t: n for n in source for t in n.outputs}
    inside = set(owner)
    stack = [n for n in source if n.name in owner]
    while stack:
        for t in stack.pop().inputs:
            p = producer.get(t)
            if t not in fed and p is not None and p.name not in inside:
                inside.add(p.name)
                stack.append(p)
    outside = {n.name for n in source} - inside
    for n in source:  # topological: a chain Add -> Relu follows its first kernel
        if n.name in owner or n.name in outside or n.op_type not in POST_OPS:
            continue
        cands = [owner[producer[t].name] for t in n.inputs if t in producer and producer[t].name in owner]
        if cands:
            owner[n.name] = max(cands, key=lambda k: order.get(k, -1))
    consumers: Dict[str, List[OnnxNode]] = {}
    for n in source:
        for t in n.inputs:
            consumers.setdefault(t, []).append(n)
    for n in reversed(list(source)):  # consumers come later in graph order
        if n.name in owner or n.name in outside:
            continue
        for t in n.outputs:
            hit = next((owner[c.name] for c in consumers.get(t, []) if c.name in owner), None)
            if hit is not None:
                owner[n.name] = hit
                break
    out: Dict[str, List[OnnxNode]] = {}
    for n in source:
        if n.name in owner:
            out.setdefault(owner[n.name], []).append(n)
    return out


def kernel_rows(times_ms: Mapping[str, List[float]], ops: Mapping[str, str], runs: int, segment: str,
                source: Optional[Sequence[OnnxNode]], kernels: Optional[Sequence[OnnxNode]]) -> List[LayerTime]:
    """Rows from per-kernel samples (kernel name -> one time per call): named by the source nodes they do, and a
    zero row, marked, for each source node no kernel does (removed or folded by the optimizer)."""
    mapping = map_kernels(source, kernels) if source and kernels else {}
    rows: List[LayerTime] = []
    seen = set()
    for kname, samples in times_ms.items():
        nodes = mapping.get(kname, [])
        seen.update(n.name for n in nodes)
        name = " + ".join(n.name for n in nodes) if nodes else kname
        op = ops.get(kname, "")
        if nodes and [n.op_type for n in nodes] != [op]:
            op = f"{op} ({' + '.join(n.op_type for n in nodes)})"
        rows.append(LayerTime(name, op, float(np.sum(samples)) / max(runs, 1), len(samples), segment))
    for n in source or []:
        if n.name not in seen and kernels:
            rows.append(LayerTime(n.name, f"{n.op_type} (removed by the optimizer)", 0.0, 0, segment))
    return rows
