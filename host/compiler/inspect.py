"""Explain a bundle: where each part runs, its ops, and why each op was not offloaded."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Union

from device_agent.archive import manifest_bytes_of_archive, read_manifest_from_archive
from device_agent.bundle import Bundle
from device_agent.errors import InvalidInput
from device_agent.fileio import sha256_bytes
from device_agent.manifest import Manifest


def load_manifest(path: Union[str, os.PathLike]) -> tuple:
    """(manifest, digest) from a compile output dir, a bundle dir, or a bundle archive; the digest is the bundle's
    identity, its manifest's (docs/transport.md)."""
    p = Path(path)
    if p.is_file():
        manifest = read_manifest_from_archive(p)  # checked first: a bounded, regular manifest.json
        return manifest, sha256_bytes(manifest_bytes_of_archive(p))  # the bytes signing covers, too
    for root in (p / "bundle", p):
        if (root / "manifest.json").is_file():
            bundle = Bundle.open(root)
            return bundle.manifest, bundle.manifest_digest
    raise InvalidInput(f"{p} is not a bundle (expected a compile output dir, a bundle dir, or a .tar archive)")


def _summary(ops: List[str]) -> str:
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in Counter(ops).most_common())


def describe(manifest: Manifest, digest: Union[str, None] = None) -> Dict[str, Any]:
    """The JSON shape of ``deploy inspect --json``."""
    m = manifest
    parts = m.options.get("parts") or [{"id": s.id, "kind": "tensorrt", "ops": s.ops} for s in m.segments]
    rem = m.options.get("remainder") or {}
    placement = []
    for p in parts:
        if p["kind"] == "tensorrt":
            where = f"TensorRT {m.target.trt_version} on the device (engine built there from segments/{p['id']}.onnx)"
        else:
            where = f"TVM on the device {'GPU' if rem.get('device') == 'cuda' else 'CPU'}: {rem.get('why', '')}"
        placement.append({"id": p["id"], "kind": p["kind"], "ops": p["ops"], "runs_on": where})
    return {
        "digest": digest,
        "name": m.name,
        "source_digest": m.source_digest,
        "target": m.target.to_dict(),
        "inputs": [t.to_dict() for t in m.inputs],
        "outputs": [t.to_dict() for t in m.outputs],
        "segments": placement,
        "not_offloaded": [{"op": e["op"], "node": e.get("node", ""), "reason": e["reason"]} for e in m.not_offloaded],
        "remainder": None if m.remainder is None else {
            "path": m.remainder.path, "target": m.remainder.target, "host": m.remainder.host,
            "device": rem.get("device"), "why": rem.get("why")},
        "needs_tvm_runtime": m.remainder is not None,
        "options": {k: v for k, v in m.options.items() if k not in ("parts", "remainder")},
        "compiler": m.compiler,
    }


def _dims(shape: List[int]) -> str:
    return "x".join(str(d) for d in shape)


def render_lines(info: Dict[str, Any]) -> List[str]:
    """Human lines for the terminal."""
    t = info["target"]
    lines = [f"bundle {info['name']}  {info['digest'] or ''}".rstrip(),
             f"target {t['profile']}: TensorRT {t['trt_version']}, "
             f"sm {t['compute_capability'] or '-'}, {t['arch']}"]
    for k, prof in enumerate(info["options"].get("shape_profiles") or []):  # --shape-range / --shape-profiles
        ranges = ", ".join(f"{n} {_dims(r['min'])}..{_dims(r['max'])} (opt {_dims(r['opt'])})" for n, r in prof.items())
        lines.append(f"profile {k}: {ranges}")
    for p in info["segments"]:
        lines.append(f"  {p['id']:<8} {p['kind']:<9} {len(p['ops']):>4} ops  {_summary(p['ops'])}")
        lines.append(f"           runs on: {p['runs_on']}")
    if info["remainder"] is None:
        lines.append("everything is offloaded to TensorRT: the device needs no TVM runtime")
    else:
        r = info["remainder"]
        lines.append(f"TVM remainder: {r['path']} for {r['target']} (host {r['host']})")
    if info["not_offloaded"]:
        lines.append("not offloaded:")
        for e in info["not_offloaded"]:
            lines.append(f"  {e['op']:<20} {e['node']:<28} {e['reason']}")
    return lines
