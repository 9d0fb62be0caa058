"""`--int8` flags to `Int8Options`, and their share of the host compile-cache key."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

from device_agent.errors import InvalidInput


def int8_options(int8: bool, calibration: Optional[Path], calibrator: str = "minmax",
                 validation: Optional[Path] = None, max_rel_err: Optional[float] = None,
                 min_cosine: Optional[float] = None) -> Optional[Any]:
    """None without --int8; refuses INT8-only flags given without it and --int8 without samples."""
    if not int8:
        extra = [f for f, v in (("--calibration", calibration), ("--validation", validation),
                                ("--min-cosine", min_cosine)) if v is not None]
        if extra:
            raise InvalidInput(f"{', '.join(extra)} only apply with --int8; add --int8 or drop them")
        return None
    if calibration is None:
        raise InvalidInput("--int8 needs --calibration FILE.npz or DIR (samples stacked on a new leading axis, "
                           "one array per model input)")
    from host.compiler.quantize import Int8Options

    return Int8Options(calibration=Path(calibration), calibrator=calibrator,
                       validation=None if validation is None else Path(validation),
                       max_rel_err=max_rel_err, min_cosine=min_cosine)


def _files_digest(path: Path) -> str:
    """sha256 of the file, or of a folder's .npy files (names and bytes); a missing path hashes as missing."""
    h = hashlib.sha256()
    files = sorted(path.glob("*.npy")) if path.is_dir() else [path] if path.is_file() else []
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return "sha256:" + h.hexdigest() if files else "missing"


def int8_cache_part(opts: Any) -> dict[str, Any]:
    """Everything of `Int8Options` that changes the bundle."""
    return {"calibration": _files_digest(Path(opts.calibration)), "calibrator": opts.calibrator,
            "validation": None if opts.validation is None else _files_digest(Path(opts.validation)),
            "max_rel_err": opts.max_rel_err, "min_cosine": opts.min_cosine}
