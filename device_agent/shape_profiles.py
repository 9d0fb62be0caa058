"""Which optimization profile a run's inputs fall in (bundles compiled with ``--shape-range``/``--shape-profiles``).

The manifest's ``options.shape_profiles`` holds, per profile, each ranged input's min, opt and max shapes. A run
takes the tightest profile whose ranges hold every input; an input outside every profile is refused with the
ranges named, before anything is built: TensorRT would fail or, worse, onnxruntime's TensorRT provider would
rebuild silently (onnxruntime#13851). The TensorRT backend picks its engine profile with the same rule.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import InvalidInput

#: per profile: input name -> (min shape, max shape)
Bounds = List[Dict[str, Tuple[Sequence[int], Sequence[int]]]]


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def bundle_bounds(options: Mapping[str, Any]) -> Bounds:
    """The profiles of a manifest's ``options`` as bounds ([] for a bundle without shape ranges)."""
    raw = options.get("shape_profiles") or []
    out: Bounds = []
    for prof in raw if isinstance(raw, list) else []:
        if isinstance(prof, dict):
            out.append({name: (r["min"], r["max"]) for name, r in prof.items()
                        if isinstance(r, dict) and "min" in r and "max" in r})
    return out


def holds(bounds: Dict[str, Tuple[Sequence[int], Sequence[int]]], shapes: Mapping[str, Sequence[int]]) -> bool:
    for name, (lo, hi) in bounds.items():
        shape = shapes.get(name)
        if shape is None or len(shape) != len(lo) or any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False
    return True


def _volume(bounds: Dict[str, Tuple[Sequence[int], Sequence[int]]]) -> int:
    total = 0
    for lo, hi in bounds.values():
        n = 1
        for a, b in zip(lo, hi):
            n *= int(b) - int(a) + 1
        total += n
    return total


def pick(profiles: Bounds, shapes: Mapping[str, Sequence[int]]) -> Optional[int]:
    """The index of the tightest profile (fewest shapes in range) that holds ``shapes``, or None."""
    fitting = [i for i, b in enumerate(profiles) if holds(b, shapes)]
    return min(fitting, key=lambda i: (_volume(profiles[i]), i)) if fitting else None


def check_feeds(options: Mapping[str, Any], feeds: Mapping[str, Any]) -> Optional[int]:
    """The profile a run's feeds take (None for a bundle without ranges); outside every profile: InvalidInput
    naming the input, its shape and the ranges."""
    profiles = bundle_bounds(options)
    if not profiles:
        return None
    shapes = {k: tuple(getattr(v, "shape", ())) for k, v in feeds.items()}
    k = pick(profiles, shapes)
    if k is not None:
        return k
    name = next((n for n, (lo, hi) in profiles[0].items() if not holds({n: (lo, hi)}, shapes)),
                next(iter(profiles[0])))
    ranges = "; ".join(f"{_fmt(p[name][0])}..{_fmt(p[name][1])}" for p in profiles if name in p)
    got = _fmt(shapes[name]) if name in shapes else "missing"
    raise InvalidInput(f"input {name!r} has shape {got}, outside every optimization profile of this bundle "
                       f"({name}: {ranges}); send a shape in range or recompile with a --shape-range that holds it")


def fit_to_shape(arr: Any, shape: Sequence[int]) -> Any:
    """``arr`` cut or repeated (wrapping) along each axis to ``shape``: a sample at one shape becomes one at another,
    and token ids or masks keep their meaning (reference samples at MIN and MAX, `deploy bench --shape`)."""
    import numpy as np

    arr = np.asarray(arr)
    if arr.ndim != len(shape) or 0 in arr.shape:
        return arr  # not a sample of this input: the caller's own checks refuse it
    for axis, size in enumerate(shape):
        if arr.shape[axis] != size:
            arr = np.take(arr, np.arange(size) % arr.shape[axis], axis=axis)
    return np.asarray(arr, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d


__all__ = ["Bounds", "bundle_bounds", "check_feeds", "fit_to_shape", "holds", "pick"]
