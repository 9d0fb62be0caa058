"""Walking ONNX subgraphs (If branches, Loop and Scan bodies): one helper for every module that must."""
from __future__ import annotations

from typing import Iterator, Tuple

import onnx


def subgraphs(node: onnx.NodeProto) -> Iterator[Tuple[str, onnx.GraphProto]]:
    """(attribute name, graph) for each graph a node holds."""
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.name, a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            for g in a.graphs:
                yield a.name, g
