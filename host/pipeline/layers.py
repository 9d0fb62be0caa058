"""`deploy bench --layers` on the host: name the agent's layer rows by the user's own ONNX nodes.

The agent names a kernel by the nodes of the bundle's segment it does; the host compiler may have folded nodes
before partitioning (a BatchNormalization into its Conv), so the host, which has the model and the bundle, maps
segment nodes back to the model's nodes with the same tensor-name rules (``device_agent.engines.layers``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from device_agent.engines.layers import map_kernels, onnx_nodes


def name_by_model(rows: list[dict[str, Any]], model: Path, bundle_dir: Optional[Path],
                  manifest: Optional[Any]) -> list[dict[str, Any]]:
    """Rows renamed by the model's nodes; a model node no row covers gets a zero row saying the compiler removed
    it (only when everything is offloaded: otherwise it runs in the TVM remainder's row)."""
    if bundle_dir is None or manifest is None or model.suffix != ".onnx":
        return rows
    source = onnx_nodes(model.read_bytes())
    by_segment: dict[str, dict[str, list[str]]] = {}
    for seg in manifest.segments:
        path = Path(bundle_dir) / seg.path
        if not path.is_file():
            return rows
        mapping = map_kernels(source, onnx_nodes(path.read_bytes()), suffixes=())
        by_segment[seg.id] = {k: [n.name for n in nodes] for k, nodes in mapping.items()}
    out: list[dict[str, Any]] = []
    covered: set[str] = set()
    for r in rows:
        mapping = by_segment.get(r["segment"], {})
        parts: list[str] = []
        for part in r["name"].split(" + "):
            for name in mapping.get(part, [part]):
                if name not in parts:
                    parts.append(name)
        covered.update(parts)
        out.append({**r, "name": " + ".join(parts)})
    if manifest.remainder is None:
        op_of = {n.name: n.op_type for n in source}
        for name in [n.name for n in source if n.name not in covered]:
            out.append({"name": name, "op": f"{op_of[name]} (removed by the compiler)", "mean_ms": 0.0,
                        "share": 0.0, "segment": "", "calls": 0})
    return out
