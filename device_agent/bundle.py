"""An unpacked bundle directory: its validated manifest, its files checked against their digests, its reference.

The manifest's format is device_agent/manifest.py; the export archive device_agent/archive.py; a bundle that
travels as parts device_agent/parts.py.

stdlib + numpy only; Python >= 3.9.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from device_agent.errors import DataLoss, InvalidInput
from device_agent.fileio import sha256_file
from device_agent.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, check_relpath


class Bundle:
    """An unpacked bundle directory with a validated manifest."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    @classmethod
    def open(cls, path: Union[str, os.PathLike]) -> "Bundle":
        root = Path(path)
        mpath = root / MANIFEST_NAME
        if not root.is_dir():
            raise InvalidInput(f"{root} is not a bundle directory (expected a directory holding {MANIFEST_NAME})")
        if not mpath.is_file():
            raise InvalidInput(f"{root} has no {MANIFEST_NAME}; is it a bundle directory?")
        if mpath.stat().st_size > MAX_MANIFEST_BYTES:
            raise InvalidInput(f"{mpath} is larger than {MAX_MANIFEST_BYTES} bytes")
        return cls(root, Manifest.from_json(mpath.read_bytes()))

    def path_of(self, rel: str) -> Path:
        return self.root / check_relpath(rel)

    def segment_path(self, segment_id: str) -> Path:
        return self.path_of(self.manifest.segment(segment_id).path)

    @property
    def remainder_path(self) -> Optional[Path]:
        r = self.manifest.remainder
        return None if r is None else self.path_of(r.path)

    def verify(self) -> None:
        """Check every listed file is present and matches its digest; raises DataLoss."""
        for rel, digest in self.manifest.files():
            p = self.path_of(rel)
            if not p.is_file():
                raise DataLoss(f"bundle file {rel} is missing from {self.root}")
            got = sha256_file(p)
            if got != digest:
                raise DataLoss(f"bundle file {rel} is corrupt: digest {got}, manifest says {digest}")

    @property
    def manifest_digest(self) -> str:
        """The bundle's identity when it travels by parts: the digest of its canonical manifest's bytes."""
        return sha256_file(self.root / MANIFEST_NAME)

    def read_reference(self, ref: Optional[Dict[str, Any]] = None) -> Tuple[Dict[str, np.ndarray],
                                                                             Dict[str, np.ndarray]]:
        """(inputs, outputs) by tensor name, loaded without pickle (``ref``: one of ``reference_sets``)."""
        ref = self.manifest.reference if ref is None else ref
        res = []
        for key in ("inputs", "outputs"):
            arrays: Dict[str, np.ndarray] = {}
            for e in ref.get(key, []):
                try:
                    arrays[e["name"]] = np.load(self.path_of(e["path"]), allow_pickle=False)
                except (OSError, ValueError) as err:
                    raise DataLoss(f"reference file {e['path']} cannot be read: {err}") from None
            res.append(arrays)
        return res[0], res[1]
