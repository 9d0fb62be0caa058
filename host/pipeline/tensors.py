"""Tensors between .npy/.npz files and the wire (`Tensor`: dtype name, shape, C-order little-endian bytes).

No pickle: .npy files are read with allow_pickle=False, outputs written with np.savez.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from device_agent.errors import InvalidInput
from device_agent.fileio import atomic_file
from protos import agent_pb2


def read_inputs(items: Iterable[str]) -> dict[str, np.ndarray]:
    """`NAME=FILE.npy` pairs into arrays; a bad pair or file is one clear InvalidInput."""
    arrays: dict[str, np.ndarray] = {}
    for item in items:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise InvalidInput(f"--input {item!r} must be NAME=FILE.npy")
        if name in arrays:
            raise InvalidInput(f"--input {name} is given twice")
        path = Path(file)
        if not path.is_file():
            raise InvalidInput(f"--input {name}: {path}: no such file")
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidInput(f"--input {name}: {path} is not a .npy array ({exc}); save it with numpy.save") from None
        if not isinstance(arrays[name], np.ndarray):
            raise InvalidInput(f"--input {name}: {path} holds several arrays; pass one .npy per input")
    return arrays


def read_samples(npz: Optional[Path], items: Iterable[str]) -> dict[str, np.ndarray]:
    """`--inputs FILE.npz` (one array per input name) plus `--input NAME=FILE.npy`, which win."""
    arrays: dict[str, np.ndarray] = {}
    if npz is not None:
        if not Path(npz).is_file():
            raise InvalidInput(f"--inputs {npz}: no such file")
        try:
            with np.load(npz, allow_pickle=False) as archive:
                if not isinstance(archive, np.lib.npyio.NpzFile):
                    raise ValueError("a single array, not an .npz")
                arrays = {k: np.asarray(archive[k]) for k in archive.files}
        except (ValueError, OSError, EOFError) as exc:
            raise InvalidInput(f"--inputs {npz} is not an .npz of arrays ({str(exc).splitlines()[0][:120]}); "
                               "write it with numpy.savez(FILE, NAME=array, ...)") from None
    arrays.update(read_inputs(items))
    return arrays


def samples_digest(arrays: dict[str, np.ndarray]) -> Optional[str]:
    """One digest over names, dtypes, shapes and bytes: the compile cache key's share of the samples."""
    if not arrays:
        return None
    import hashlib

    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.asarray(arrays[name], order="C")
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def to_tensors(arrays: dict[str, np.ndarray]) -> list[agent_pb2.Tensor]:
    out = []
    for name, array in arrays.items():
        a = np.asarray(array, order="C")
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        out.append(agent_pb2.Tensor(name=name, dtype=a.dtype.name, shape=list(a.shape), data=a.tobytes()))
    return out


def to_arrays(tensors: Iterable[agent_pb2.Tensor]) -> dict[str, np.ndarray]:
    arrays = {}
    for t in tensors:
        dtype = np.dtype(t.dtype).newbyteorder("<")
        arrays[t.name] = np.frombuffer(t.data, dtype=dtype).reshape(tuple(t.shape)).astype(dtype.newbyteorder("="))
    return arrays


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Atomically: the .npz appears complete or not at all."""
    path = Path(path)
    if path.suffix != ".npz":
        raise InvalidInput(f"-o {path}: the output file must end in .npz")
    with atomic_file(path) as f:
        np.savez(f, **arrays)
