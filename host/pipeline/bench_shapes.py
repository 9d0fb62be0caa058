"""`deploy bench --shape NAME=DxD...` and `--shapes min,opt,max`: a ranged bundle benchmarked at chosen shapes.

Each shape gets one table row: the first call after the shape changed (timed alone: TensorRT switches profile and
shapes there, an onnxruntime session re-plans its memory; TensorRT#4289), then the timed runs. The inputs are the
bundle's reference samples cut or repeated to the shape (token ids stay token ids), so the agent sends nothing back
that the host did not choose.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from device_agent.bundle import Bundle
from device_agent.errors import InvalidInput
from device_agent.manifest import Manifest
from protos import agent_pb2

POINTS = ("min", "opt", "max")


@dataclass
class ShapeChoice:
    """One row of the table: a label ("p0 opt", or the user's shape) and each input's shape."""

    label: str
    shapes: Dict[str, List[int]] = field(default_factory=dict)


def choose(manifest: Manifest, shape: Sequence[str], points: Optional[str]) -> List[ShapeChoice]:
    """The shapes `--shape` (one row) or `--shapes` (MIN, OPT, MAX of each profile) name; none without either."""
    from host.compiler.shape_ranges import fmt, parse_input_shape

    if not shape and not points:
        return []
    profiles = manifest.options.get("shape_profiles") or []
    if not profiles:
        raise InvalidInput("--shape and --shapes need a bundle compiled with --shape-range or --shape-profiles")
    opt = {s.name: list(profiles[0][s.name]["opt"]) if s.name in profiles[0] else list(s.shape)
           for s in manifest.inputs}
    if shape and points:
        raise InvalidInput("give --shape NAME=DxD... or --shapes min,opt,max, not both")
    if shape:
        given = dict(parse_input_shape(s) for s in shape)
        unknown = sorted(set(given) - set(opt))
        if unknown:
            raise InvalidInput(f"--shape names {unknown}, but the model's inputs are {sorted(opt)}")
        chosen = {**opt, **given}
        return [ShapeChoice(", ".join(f"{k}={fmt(v)}" for k, v in given.items()), chosen)]
    wanted = [p.strip() for p in points.split(",") if p.strip()] if points else []
    bad = [p for p in wanted if p not in POINTS]
    if bad or not wanted:
        raise InvalidInput(f"--shapes {points!r}: give some of min,opt,max separated by commas")
    rows = []
    for k, prof in enumerate(profiles):
        for p in wanted:
            rows.append(ShapeChoice(f"p{k} {p}", {**opt, **{n: list(r[p]) for n, r in prof.items()}}))
    return rows


def feeds_for(bundle: Optional[Bundle], manifest: Manifest, shapes: Dict[str, List[int]]) -> List[agent_pb2.Tensor]:
    """Wire tensors at ``shapes``: the reference samples fitted to them, else seeded normal values."""
    import numpy as np

    from device_agent.engines.model import numpy_to_wire
    from device_agent.shape_profiles import fit_to_shape

    ref = bundle.read_reference()[0] if bundle is not None else {}
    rng = np.random.default_rng(0)
    out = []
    for spec in manifest.inputs:
        shape = shapes[spec.name]
        if any(not isinstance(d, int) for d in shape):
            raise InvalidInput(f"input {spec.name!r} has no size for its symbolic dims; give it in --shape")
        arr = (fit_to_shape(ref[spec.name], shape) if spec.name in ref
               else rng.standard_normal(shape).astype(spec.dtype))
        dtype, dims, data = numpy_to_wire(arr)
        out.append(agent_pb2.Tensor(name=spec.name, dtype=dtype, shape=dims, data=data))
    return out


def bench_rows(client: Any, digest: str, build_options: agent_pb2.BuildOptions, push: Any, bundle: Optional[Bundle],
               manifest: Manifest, choices: List[ShapeChoice], observer: Any = None) -> List[Dict[str, Any]]:
    """Per shape: the first call's latency after the change, then the benchmark (`host.pipeline.push.benchmark`)."""
    from host.pipeline.push import benchmark

    rows = []
    for choice in choices:
        inputs = feeds_for(bundle, manifest, choice.shapes)
        first = client.run(agent_pb2.RunRequest(bundle_digest=digest, options=build_options, inputs=inputs))
        result = benchmark(client, digest, build_options, push, observer, inputs=inputs)
        rows.append({"shape": choice.label, "shapes": choice.shapes, "first_call_ms": first.latency_ms,
                     **result.to_json()})
    return rows


__all__ = ["POINTS", "ShapeChoice", "bench_rows", "choose", "feeds_for"]
