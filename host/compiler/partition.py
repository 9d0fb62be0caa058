"""Split an ONNX graph into TensorRT segments and TVM parts, guided by the op table.

Partitioning happens on the ONNX graph (not on Relax composites) so each TensorRT segment is a
plain ONNX subgraph of the user's own nodes, which any TensorRT ONNX parser reads. Neighbouring
nodes of the same kind are merged greedily as long as the part graph stays acyclic.
"""
from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set

import onnx

from host.compiler.patterns import MAC_OPS, Context, check_node, outer_scope_inputs

TRT, TVM = "tensorrt", "tvm"


@dataclass
class Part:
    id: str
    kind: str                       # "tensorrt" | "tvm"
    nodes: List[onnx.NodeProto]
    inputs: List[str] = field(default_factory=list)
    outputs: List[str] = field(default_factory=list)

    @property
    def ops(self) -> List[str]:
        return [n.op_type for n in self.nodes]


@dataclass
class Partition:
    parts: List[Part]                       # in execution order
    not_offloaded: List[Dict[str, str]]     # {"op", "node", "reason", "part"}

    @property
    def segments(self) -> List[Part]:
        return [p for p in self.parts if p.kind == TRT]

    @property
    def fully_offloaded(self) -> bool:
        return all(p.kind == TRT for p in self.parts) and len(self.parts) == 1


def node_inputs(node: onnx.NodeProto) -> List[str]:
    """A node's inputs including the outer-scope values its subgraphs read (If branches, Loop bodies).

    Those implicit inputs are real dependencies: a part that holds the node must receive them.
    """
    names = [t for t in node.input if t]
    return names + [t for t in outer_scope_inputs(node) if t not in names]


class _Groups:
    """Union-find over node indices with a part-level acyclicity check on merge.

    The part graph's edges are kept up to date on every merge, so the check is one BFS over parts.
    """

    def __init__(self, n: int, succ: List[Set[int]]) -> None:
        self.parent = list(range(n))
        self.members: Dict[int, Set[int]] = {i: {i} for i in range(n)}
        self.gsucc: Dict[int, Set[int]] = {i: set(succ[i]) - {i} for i in range(n)}
        self.gpred: Dict[int, Set[int]] = {i: set() for i in range(n)}
        self.gmin = list(range(n))  # lowest / highest node index (topological position) per group
        self.gmax = list(range(n))
        for i in range(n):
            for j in self.gsucc[i]:
                self.gpred[j].add(i)

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def _group_succ(self, g: int) -> Set[int]:
        return self.gsucc[g]

    def _reaches_indirectly(self, a: int, b: int) -> bool:
        """Is there a path a -> x -> ... -> b with some group x not in {a, b}?

        Nodes are in topological order, so a group on a path into b starts before b ends: groups
        with gmin > gmax[b] are pruned.
        """
        limit = self.gmax[b]
        start = [g for g in self.gsucc[a] if g != b and self.gmin[g] <= limit]
        seen = set(start)
        queue = deque(start)
        while queue:
            g = queue.popleft()
            for h in self.gsucc[g]:
                if h == b:
                    return True
                if h != a and h not in seen and self.gmin[h] <= limit:
                    seen.add(h)
                    queue.append(h)
        return False

    def try_union(self, i: int, j: int) -> bool:
        a, b = self.find(i), self.find(j)
        if a == b:
            return True
        if self._reaches_indirectly(a, b) or self._reaches_indirectly(b, a):
            return False
        if len(self.members[a]) < len(self.members[b]):
            a, b = b, a
        self.parent[b] = a
        self.members[a] |= self.members.pop(b)
        self.gmin[a], self.gmax[a] = min(self.gmin[a], self.gmin[b]), max(self.gmax[a], self.gmax[b])
        succ_b, pred_b = self.gsucc.pop(b), self.gpred.pop(b)
        for h in succ_b:
            self.gpred[h].discard(b)
            if h != a:
                self.gpred[h].add(a)
        for h in pred_b:
            self.gsucc[h].discard(b)
            if h != a:
                self.gsucc[h].add(a)
        self.gsucc[a] = (self.gsucc[a] | succ_b) - {a, b}
        self.gpred[a] = (self.gpred[a] | pred_b) - {a, b}
        return True


def _io(nodes: Sequence[onnx.NodeProto], constants: Set[str], consumed_outside: Set[str],
        graph_outputs: Set[str]) -> tuple:
    produced: List[str] = []
    produced_set: Set[str] = set()
    inputs: List[str] = []
    for n in nodes:
        for t in node_inputs(n):
            if t and t not in produced_set and t not in constants and t not in inputs:
                inputs.append(t)
        for t in n.output:
            if t:
                produced.append(t)
                produced_set.add(t)
    outputs = [t for t in produced if t in consumed_outside or t in graph_outputs]
    return inputs, outputs


def partition(model: onnx.ModelProto, ctx: Context, *, exclude: Sequence[str] = (),
              remove_no_mac_subgraphs: bool = False,
              forced: Optional[Dict[str, str]] = None) -> Partition:
    """Decide each node, group them, and order the groups. ``forced``: node name -> reason to keep in TVM."""
    g = model.graph
    nodes = list(g.node)
    seen_names: Set[str] = set()
    for i, n in enumerate(nodes):  # names key decisions and reasons: make them present and unique
        if not n.name or n.name in seen_names:
            n.name = f"{n.name or n.op_type}_{i}"
        seen_names.add(n.name)
    forced = dict(forced or {})
    producer: Dict[str, int] = {}
    for i, n in enumerate(nodes):
        for t in n.output:
            if t:
                producer[t] = i
    succ: List[Set[int]] = [set() for _ in nodes]
    preds: List[List[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        for t in node_inputs(n):
            if t in producer and producer[t] != i:
                succ[producer[t]].add(i)
                preds[i].append(producer[t])

    while True:
        reason: Dict[int, Optional[str]] = {}
        for i, n in enumerate(nodes):
            reason[i] = forced.get(n.name) or check_node(n, ctx, exclude)
        kind = [TRT if reason[i] is None else TVM for i in range(len(nodes))]
        groups = _Groups(len(nodes), succ)
        for i in range(len(nodes)):
            for p in preds[i]:
                if kind[p] == kind[i]:
                    groups.try_union(p, i)
        # TensorRT groups that no edge joins (a model's independent heads, a Cast on the side) still make
        # one engine when no path between them runs through a TVM part: fewer segments, fewer launches
        if not remove_no_mac_subgraphs:
            trt_groups = sorted((min(ms), r) for r, ms in groups.members.items() if kind[r] == TRT)
            for _, r in trt_groups[1:]:
                groups.try_union(trt_groups[0][1], r)
        changed = False
        if remove_no_mac_subgraphs:
            for root, members in list(groups.members.items()):
                if kind[root] == TRT and not any(nodes[m].op_type in MAC_OPS for m in members):
                    for m in members:
                        forced[nodes[m].name] = ("segment without multiply-accumulate ops kept in TVM "
                                                 "(remove_no_mac_subgraphs)")
                    changed = True
        if not changed:
            break

    # order groups topologically (Kahn on the group graph, ties by first node index)
    roots = sorted(groups.members, key=lambda r: min(groups.members[r]))
    gsucc = {r: groups._group_succ(r) for r in roots}
    indeg = {r: 0 for r in roots}
    for r in roots:
        for s in gsucc[r]:
            indeg[s] += 1
    ready = [r for r in roots if indeg[r] == 0]
    order: List[int] = []
    while ready:
        ready.sort(key=lambda r: min(groups.members[r]))
        r = ready.pop(0)
        order.append(r)
        for s in gsucc[r]:
            indeg[s] -= 1
            if indeg[s] == 0:
                ready.append(s)
    assert len(order) == len(roots), "partition produced a cycle"

    constants = ctx.constants
    graph_outputs = {o.name for o in g.output}
    parts: List[Part] = []
    counters = {TRT: 0, TVM: 0}
    group_of = {m: r for r, ms in groups.members.items() for m in ms}
    not_offloaded: List[Dict[str, str]] = []
    consumers: Dict[str, Set[int]] = defaultdict(set)
    for i, n in enumerate(nodes):
        for t in node_inputs(n):
            consumers[t].add(group_of[i])
    for r in order:
        members = sorted(groups.members[r])
        k = kind[r]
        pid = f"{'trt' if k == TRT else 'tvm'}_{counters[k]}"
        counters[k] += 1
        part_nodes = [nodes[m] for m in members]
        outside = {t for m in members for t in nodes[m].output if t and consumers.get(t, set()) - {r}}
        ins, outs = _io(part_nodes, constants, outside, graph_outputs)
        parts.append(Part(pid, k, part_nodes, ins, outs))
        if k == TVM:
            for m in members:
                not_offloaded.append({"op": nodes[m].op_type, "node": nodes[m].name,
                                      "reason": str(reason[m]), "part": pid})
    return Partition(parts, not_offloaded)
