"""Shape ranges and optimization profiles: ``--shape-range NAME=MIN:OPT:MAX`` and ``--shape-profiles FILE``.

A profile maps each ranged input to three full shapes (TensorRT's min, opt and max of an ``IOptimizationProfile``,
trtexec's ``--minShapes/--optShapes/--maxShapes`` of one ``--profile`` group). The syntax is checked here, before
any model is read; what the ranges mean for a model (rank, dims the model fixes) is checked by
`check_against_model`. Standard library only, so the CLI can parse flags without loading the compiler.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from device_agent.errors import InvalidInput

Shape = List[int]
#: one profile: input name -> [min, opt, max], each a full shape
ProfileRanges = Dict[str, List[Shape]]

_SHAPE_RE = re.compile(r"-?\d+(?:[x,]-?\d+)*")
MAX_PROFILES = 16  # TensorRT allows more, but every profile is another set of kernels to build
MAX_DIM = 1 << 24


class ShapeRangeError(InvalidInput):
    """A shape range or profile file that cannot be what the user meant."""


def parse_dims(text: str, what: str) -> Shape:
    """'1x3x48x320' -> [1, 3, 48, 320]; every dim must be at least 1 (``what`` names the flag for the message)."""
    t = text.strip()
    if not _SHAPE_RE.fullmatch(t):
        raise ShapeRangeError(f"{what}: {text!r} is not a shape like 1x3x48x320")
    dims = [int(d) for d in re.split(r"[x,]", t)]
    bad = [d for d in dims if d < 1 or d > MAX_DIM]
    if bad:
        raise ShapeRangeError(f"{what}: dim {bad[0]} in {t} is not a size between 1 and {MAX_DIM}; every dim of a "
                              "shape must be at least 1")
    return dims


def parse_input_shape(text: str) -> Tuple[str, List[int]]:
    """'data=1x3x224x224' -> ('data', [1, 3, 224, 224]); a zero or negative dim is refused here, before TVM."""
    m = re.fullmatch(r"([^=]+)=(-?\d+(?:[x,]-?\d+)*)", text.strip())
    if not m:
        raise ShapeRangeError(f"--input-shape {text!r} must be NAME=DxDx..., e.g. input=1x3x224x224")
    return m.group(1), parse_dims(m.group(2), f"--input-shape {m.group(1)}")


def fmt(shape: Sequence[Union[int, str]]) -> str:
    return "x".join(str(d) for d in shape)


def fmt_range(rng: Sequence[Shape]) -> str:
    return ":".join(fmt(s) for s in rng)


def check_range(name: str, rng: Sequence[Shape], what: str) -> List[Shape]:
    """MIN <= OPT <= MAX, dim by dim, and the three of one rank."""
    lo, opt, hi = (list(s) for s in rng)
    if not len(lo) == len(opt) == len(hi):
        raise ShapeRangeError(f"{what} {name}={fmt_range(rng)}: MIN, OPT and MAX have ranks {len(lo)}, {len(opt)}, "
                              f"{len(hi)}; give three shapes of the input's rank")
    for i, (a, b, c) in enumerate(zip(lo, opt, hi)):
        if a > b:
            raise ShapeRangeError(f"{what} {name}={fmt_range(rng)}: MIN {a} > OPT {b} at dim {i}; "
                                  "each dim needs MIN <= OPT <= MAX")
        if b > c:
            raise ShapeRangeError(f"{what} {name}={fmt_range(rng)}: OPT {b} > MAX {c} at dim {i}; "
                                  "each dim needs MIN <= OPT <= MAX")
    return [lo, opt, hi]


def parse_shape_range(text: str, what: str = "--shape-range") -> Tuple[str, List[Shape]]:
    """'x=1x3x48x10:1x3x48x320:1x3x48x2304' -> ('x', [[1,3,48,10], [1,3,48,320], [1,3,48,2304]])."""
    name, sep, body = text.strip().rpartition("=")
    parts = body.split(":")
    if not sep or not name or len(parts) != 3:
        raise ShapeRangeError(f"{what} {text!r} must be NAME=MIN:OPT:MAX with full shapes, e.g. "
                              "x=1x3x48x10:1x3x48x320:1x3x48x2304")
    rng = [parse_dims(p, f"{what} {name}") for p in parts]
    return name, check_range(name, rng, what)


def parse_shape_ranges(items: Sequence[str]) -> ProfileRanges:
    """Several ``--shape-range`` flags: one profile. An input named twice is refused."""
    out: ProfileRanges = {}
    for item in items:
        name, rng = parse_shape_range(item)
        if name in out:
            raise ShapeRangeError(f"--shape-range names input {name!r} twice; give one range per input "
                                  "(several profiles go in --shape-profiles FILE)")
        out[name] = rng
    return out


def read_shape_profiles(path: Union[str, Path]) -> List[ProfileRanges]:
    """A TOML file with one table per profile, each ``NAME = "MIN:OPT:MAX"`` per ranged input::

        [narrow]
        x = "1x3x48x10:1x3x48x160:1x3x48x320"
        [wide]
        x = "1x3x48x320:1x3x48x960:1x3x48x2304"

    (also accepted under a ``[profiles.NAME]`` prefix). Profiles keep the file's order."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib  # type: ignore[no-redef]

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShapeRangeError(f"--shape-profiles {p}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ShapeRangeError(f"--shape-profiles {p}: not a readable TOML file ({str(e).splitlines()[0]})") from None
    if set(data) == {"profiles"} and isinstance(data["profiles"], dict):
        data = data["profiles"]
    tables = [(k, v) for k, v in data.items()]
    if not tables or not all(isinstance(v, dict) for _, v in tables):
        raise ShapeRangeError(f"--shape-profiles {p}: needs one table per profile, e.g. [narrow] with lines "
                              'x = "1x3x48x10:1x3x48x160:1x3x48x320"')
    if len(tables) > MAX_PROFILES:
        raise ShapeRangeError(f"--shape-profiles {p}: {len(tables)} profiles, at most {MAX_PROFILES}")
    profiles: List[ProfileRanges] = []
    for pname, table in tables:
        prof: ProfileRanges = {}
        for name, value in table.items():
            if not isinstance(value, str):
                raise ShapeRangeError(f"--shape-profiles {p} [{pname}] {name}: give the range as a string "
                                      '"MIN:OPT:MAX", e.g. "1x3x48x10:1x3x48x320:1x3x48x2304"')
            prof[name] = parse_shape_range(f"{name}={value}", f"--shape-profiles {p} [{pname}]")[1]
        if not prof:
            raise ShapeRangeError(f"--shape-profiles {p} [{pname}] holds no range")
        profiles.append(prof)
    names = [sorted(pr) for pr in profiles]
    if any(n != names[0] for n in names):
        raise ShapeRangeError(f"--shape-profiles {p}: every profile must range the same inputs "
                              f"(found {names}); TensorRT needs each input's range in every profile")
    return profiles


def profiles_from_flags(shape_range: Sequence[str], shape_profiles: Optional[Union[str, Path]],
                        batch_range: Optional[str] = None) -> List[ProfileRanges]:
    """The profiles the flags give: ``--shape-range`` (one profile) or ``--shape-profiles`` (several)."""
    if shape_range and shape_profiles:
        raise ShapeRangeError("give --shape-range or --shape-profiles FILE, not both (put every profile in the file)")
    if (shape_range or shape_profiles) and batch_range:
        raise ShapeRangeError("--batch-range is the short form of a range on the batch dim alone; with "
                              "--shape-range or --shape-profiles write the batch into the full shapes instead")
    if shape_profiles:
        return read_shape_profiles(shape_profiles)
    return [parse_shape_ranges(shape_range)] if shape_range else []


@dataclass
class RangedDim:
    """One input dim that varies: its symbol in the bundle and its (min, max) in each profile."""

    input: str
    axis: int
    symbol: str


def check_against_model(profiles: Sequence[ProfileRanges], model_shapes: Dict[str, List[Union[int, str]]],
                        input_shapes: Dict[str, Sequence[int]]) -> None:
    """Ranges that fit the model: a known input, its rank, no range where the model fixes a dim (unless the
    range is that size), and not also given by ``--input-shape``."""
    for prof in profiles:
        for name, (lo, opt, hi) in prof.items():
            if name not in model_shapes:
                raise ShapeRangeError(f"--shape-range names {name!r}, but the model's inputs are "
                                      f"{sorted(model_shapes)}")
            if name in input_shapes:
                raise ShapeRangeError(f"input {name!r} has both --input-shape and a range; give one of them")
            declared = model_shapes[name]
            if len(lo) != len(declared):
                raise ShapeRangeError(f"--shape-range {name}={fmt_range([lo, opt, hi])}: rank {len(lo)}, but the "
                                      f"model's input {name!r} has rank {len(declared)} ({fmt(declared)})")
            for i, d in enumerate(declared):
                if isinstance(d, int) and (lo[i] != d or hi[i] != d):
                    raise ShapeRangeError(f"--shape-range {name}={fmt_range([lo, opt, hi])}: the model fixes dim "
                                          f"{i} of {name!r} at {d} ({fmt(declared)}); range only its symbolic dims")


def ranged_dims(profiles: Sequence[ProfileRanges], model_shapes: Dict[str, List[Union[int, str]]]) -> List[RangedDim]:
    """The dims that vary across the profiles, each with a symbol: the model's own dim name where every input that
    shares it is ranged alike (MiniLM's ``sequence`` on ids and mask), else ``INPUT_dI``."""
    varying: List[Tuple[str, int]] = []
    for name in (profiles[0] if profiles else {}):
        rank = len(profiles[0][name][0])
        for i in range(rank):
            sizes = {s[i] for prof in profiles for s in prof[name]}
            if len(sizes) > 1:
                varying.append((name, i))

    def ranges_of(name: str, i: int) -> List[Tuple[int, int, int]]:
        return [tuple(s[i] for s in prof[name]) for prof in profiles]  # type: ignore[misc]

    out = []
    for name, i in varying:
        d = model_shapes[name][i]
        symbol = f"{name}_d{i}"
        if isinstance(d, str) and d != "batch" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", d):
            sharing = [(n, j) for n, shape in model_shapes.items() for j, e in enumerate(shape) if e == d]
            if all((n, j) in varying and ranges_of(n, j) == ranges_of(name, i) for n, j in sharing):
                symbol = d
        out.append(RangedDim(name, i, symbol))
    return out


__all__ = ["ProfileRanges", "RangedDim", "ShapeRangeError", "check_against_model", "check_range", "fmt", "fmt_range",
           "parse_dims", "parse_input_shape", "parse_shape_range", "parse_shape_ranges", "profiles_from_flags", "ranged_dims",
           "read_shape_profiles"]
