"""The bundle manifest: its data (`Manifest` and the specs it holds) and the validation of every field.

A bundle is a directory (``manifest.json``, ``segments/<id>.onnx``, optionally ``remainder/remainder.so``,
``reference/{inputs,outputs}/<i>.npy``); its manifest names every file by digest (schema 2: by path, digest and
size, so the bundle can travel as parts). Everything read from disk or the network is validated here, because
the agent must never act on a manifest it has not checked. The directory is device_agent/bundle.py, its archive
device_agent/archive.py.

stdlib only; Python >= 3.9.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Tuple, Union

from device_agent.bounded_json import loads_bounded
from device_agent.errors import InvalidInput
from device_agent.fileio import atomic_write

SCHEMA_VERSION = 2  # 2: `files` pins every file (path, digest, size); segments may keep weights in weights/<hex>
READABLE_SCHEMAS = (1, 2)  # 1: archives of hosts before bundles travelled by parts
MANIFEST_NAME = "manifest.json"
SEGMENT_DIR = "segments"
REMAINDER_PATH = "remainder/remainder.so"
REFERENCE_DIR = "reference"

# Bounds on anything a manifest or archive may claim; a bundle beyond them is refused.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
MAX_SEGMENTS = 1024
MAX_TENSORS = 4096
MAX_OPS_PER_SEGMENT = 100_000
MAX_NOT_OFFLOADED = 100_000
MAX_JSON_ITEMS = 100_000  # free-form option lists (e.g. a segment's ops); the manifest's byte bound caps the total
MAX_STRING = 4096
MAX_RANK = 16
MAX_PROFILES = 64  # optimization profiles per segment (shape ranges)
MAX_ARCHIVE_MEMBERS = 10_000
MAX_ARCHIVE_BYTES = 16 * 1024 ** 3

DTYPES = frozenset(
    {
        "float16", "float32", "float64", "bfloat16",
        "int8", "int16", "int32", "int64",
        "uint8", "uint16", "uint32", "uint64", "bool",
    }
)
DEVICES = frozenset({"cpu", "cuda"})
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

Dim = Union[int, str]



# ---------------------------------------------------------------- helpers


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, fixed separators, UTF-8, trailing newline: same data, same bytes."""
    return (json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                       allow_nan=False) + "\n").encode("utf-8")


def _fail(where: str, what: str) -> InvalidInput:
    return InvalidInput(f"invalid bundle manifest: {where}: {what}")


def _req(d: Dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(d, dict):
        raise _fail(where, "expected an object")
    if key not in d:
        raise _fail(where, f"missing required key {key!r}")
    return d[key]


def _str(v: Any, where: str, *, allow_empty: bool = False, max_len: int = MAX_STRING) -> str:
    if not isinstance(v, str):
        raise _fail(where, f"expected a string, got {type(v).__name__}")
    if not allow_empty and not v:
        raise _fail(where, "must not be empty")
    if len(v) > max_len:
        raise _fail(where, f"longer than {max_len} characters")
    return v


def _int(v: Any, where: str, *, lo: int = 0, hi: int = 2 ** 62) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail(where, f"expected an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise _fail(where, f"{v} is outside [{lo}, {hi}]")
    return v


def _list(v: Any, where: str, max_len: int) -> list:
    if not isinstance(v, list):
        raise _fail(where, f"expected a list, got {type(v).__name__}")
    if len(v) > max_len:
        raise _fail(where, f"more than {max_len} entries")
    return v


def _digest(v: Any, where: str) -> str:
    s = _str(v, where)
    if not _DIGEST_RE.match(s):
        raise _fail(where, f"{s!r} is not 'sha256:' followed by 64 lowercase hex digits")
    return s


def check_relpath(v: Any, where: str = "path") -> str:
    """A POSIX path relative to the bundle root that cannot leave it."""
    s = _str(v, where, max_len=512)
    if "\\" in s or "\x00" in s:
        raise _fail(where, f"{s!r} contains a backslash or NUL")
    p = PurePosixPath(s)
    if p.is_absolute() or any(part in ("..", ".", "") for part in s.split("/")):
        raise _fail(where, f"{s!r} must be a relative path inside the bundle (no '/', '.' or '..' parts)")
    if str(p) == MANIFEST_NAME:
        raise _fail(where, "must not name the manifest itself")
    return s


def _json_value(v: Any, where: str, depth: int = 0) -> Any:
    """Options/compiler dicts must be plain, bounded JSON."""
    if depth > 8:
        raise _fail(where, "nested too deeply")
    if v is None or isinstance(v, (bool, int, float, str)):
        if isinstance(v, str) and len(v) > MAX_STRING:
            raise _fail(where, "string too long")
        return v
    if isinstance(v, list):
        return [_json_value(x, where, depth + 1) for x in _list(v, where, MAX_JSON_ITEMS)]
    if isinstance(v, dict):
        if len(v) > MAX_JSON_ITEMS:
            raise _fail(where, "too many keys")
        return {_str(k, where): _json_value(x, f"{where}.{k}", depth + 1) for k, x in v.items()}
    raise _fail(where, f"{type(v).__name__} is not JSON data")


# ---------------------------------------------------------------- dataclasses


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: List[Dim]

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "tensor") -> "TensorSpec":
        name = _str(_req(d, "name", where), f"{where}.name")
        dtype = _str(_req(d, "dtype", where), f"{where}.dtype")
        if dtype not in DTYPES:
            raise _fail(f"{where}.dtype", f"{dtype!r} is not one of {sorted(DTYPES)}")
        shape: List[Dim] = []
        for i, dim in enumerate(_list(_req(d, "shape", where), f"{where}.shape", MAX_RANK)):
            w = f"{where}.shape[{i}]"
            if isinstance(dim, str):
                shape.append(_str(dim, w, max_len=128))
            else:
                shape.append(_int(dim, w, lo=0))
        return cls(name=name, dtype=dtype, shape=shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)


@dataclass
class Segment:
    """One TensorRT segment: an ONNX file the device's TensorRT parser builds."""

    id: str
    path: str
    digest: str
    ops: List[str]
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    opset: int
    kind: str = "tensorrt"
    calibration: str = ""  # sha256 of the INT8 calibration samples when the segment holds Q/DQ, else ""
    #: optimization profiles of a ranged bundle (--shape-range): per profile, [{name, min, opt, max}] per input
    profiles: List[List[Dict[str, Any]]] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        d = {
            "id": self.id, "kind": self.kind, "path": self.path, "digest": self.digest,
            "ops": list(self.ops), "opset": self.opset,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }
        if self.calibration:  # absent for FP32/FP16 bundles, whose archives stay byte-identical
            d["calibration"] = self.calibration
        if self.profiles:  # absent without shape ranges, so those archives stay byte-identical
            d["profiles"] = self.profiles
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "segment") -> "Segment":
        sid = _str(_req(d, "id", where), f"{where}.id", max_len=128)
        if not _ID_RE.match(sid):
            raise _fail(f"{where}.id", f"{sid!r} may only hold letters, digits, '_', '.', '-'")
        kind = _str(d.get("kind", "tensorrt"), f"{where}.kind")
        if kind != "tensorrt":
            raise _fail(f"{where}.kind", f"{kind!r} is not 'tensorrt'")
        return cls(
            id=sid,
            kind=kind,
            path=check_relpath(_req(d, "path", where), f"{where}.path"),
            digest=_digest(_req(d, "digest", where), f"{where}.digest"),
            ops=[_str(o, f"{where}.ops") for o in _list(_req(d, "ops", where), f"{where}.ops", MAX_OPS_PER_SEGMENT)],
            opset=_int(_req(d, "opset", where), f"{where}.opset", lo=1, hi=1000),
            inputs=_tensors(_req(d, "inputs", where), f"{where}.inputs"),
            outputs=_tensors(_req(d, "outputs", where), f"{where}.outputs"),
            calibration=_digest(d["calibration"], f"{where}.calibration") if "calibration" in d else "",
            profiles=_profiles(d.get("profiles", []), f"{where}.profiles"),
        )


def _profiles(v: Any, where: str) -> List[List[Dict[str, Any]]]:
    """A segment's optimization profiles: lists of {name, min, opt, max} with shapes of one rank, min <= opt <= max."""
    out = []
    for i, prof in enumerate(_list(v, where, MAX_PROFILES)):
        entries = []
        for j, e in enumerate(_list(prof, f"{where}[{i}]", MAX_RANK * 64)):
            w = f"{where}[{i}][{j}]"
            if not isinstance(e, dict):
                raise _fail(w, "expected an object")
            name = _str(_req(e, "name", w), f"{w}.name")
            lo, opt, hi = ([_int(x, f"{w}.{k}", lo=1) for x in _list(_req(e, k, w), f"{w}.{k}", MAX_RANK)]
                           for k in ("min", "opt", "max"))
            if not len(lo) == len(opt) == len(hi) or any(not a <= b <= c for a, b, c in zip(lo, opt, hi)):
                raise _fail(w, "min, opt and max must have one rank and min <= opt <= max")
            entries.append({"name": name, "min": lo, "opt": opt, "max": hi})
        out.append(entries)
    return out


@dataclass
class Remainder:
    """The part of the model TVM compiled (Relax VM library, ``export_library``)."""

    path: str
    digest: str
    target: str
    host: str
    entry: str = "main"

    def to_dict(self) -> Dict[str, Any]:
        return {"path": self.path, "digest": self.digest, "target": self.target,
                "host": self.host, "entry": self.entry}

    @classmethod
    def from_dict(cls, d: Any, where: str = "remainder") -> "Remainder":
        return cls(
            path=check_relpath(_req(d, "path", where), f"{where}.path"),
            digest=_digest(_req(d, "digest", where), f"{where}.digest"),
            target=_str(_req(d, "target", where), f"{where}.target"),
            host=_str(_req(d, "host", where), f"{where}.host", allow_empty=True),
            entry=_str(d.get("entry", "main"), f"{where}.entry", max_len=128),
        )


@dataclass
class Target:
    profile: str
    trt_version: str
    compute_capability: Optional[str]
    device: str
    arch: str

    def to_dict(self) -> Dict[str, Any]:
        return {"profile": self.profile, "trt_version": self.trt_version,
                "compute_capability": self.compute_capability, "device": self.device,
                "arch": self.arch}

    @classmethod
    def from_dict(cls, d: Any, where: str = "target") -> "Target":
        cc = _req(d, "compute_capability", where)
        device = _str(_req(d, "device", where), f"{where}.device")
        if device not in DEVICES:
            raise _fail(f"{where}.device", f"{device!r} is not 'cpu' or 'cuda'")
        return cls(
            profile=_str(_req(d, "profile", where), f"{where}.profile", max_len=128),
            trt_version=_str(_req(d, "trt_version", where), f"{where}.trt_version", max_len=64),
            compute_capability=None if cc is None else _str(cc, f"{where}.compute_capability", max_len=16),
            device=device,
            arch=_str(_req(d, "arch", where), f"{where}.arch", max_len=64),
        )


def _tensors(v: Any, where: str) -> List[TensorSpec]:
    out = [TensorSpec.from_dict(t, f"{where}[{i}]") for i, t in enumerate(_list(v, where, MAX_TENSORS))]
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise _fail(where, "tensor names are not unique")
    return out


@dataclass(frozen=True)
class FileEntry:
    """One file of the bundle and one part of its transport: stored and sent once per digest."""

    path: str
    digest: str
    size: int

    def to_dict(self) -> Dict[str, Any]:
        return {"path": self.path, "digest": self.digest, "size": self.size}

    @classmethod
    def from_dict(cls, d: Any, where: str = "file") -> "FileEntry":
        return cls(path=check_relpath(_req(d, "path", where), f"{where}.path"),
                   digest=_digest(_req(d, "digest", where), f"{where}.digest"),
                   size=_int(_req(d, "size", where), f"{where}.size", lo=0, hi=MAX_ARCHIVE_BYTES))


def _file_entries(v: Any, where: str) -> List[FileEntry]:
    out = [FileEntry.from_dict(e, f"{where}[{i}]") for i, e in enumerate(_list(v, where, MAX_ARCHIVE_MEMBERS))]
    paths = [e.path for e in out]
    if paths != sorted(set(paths)):
        raise _fail(where, "paths must be unique and sorted")
    return out


def _ref_entries(v: Any, where: str) -> List[Dict[str, str]]:
    out = []
    for i, e in enumerate(_list(v, where, MAX_TENSORS)):
        w = f"{where}[{i}]"
        out.append({
            "name": _str(_req(e, "name", w), f"{w}.name"),
            "path": check_relpath(_req(e, "path", w), f"{w}.path"),
            "digest": _digest(_req(e, "digest", w), f"{w}.digest"),
        })
    return out


@dataclass
class Manifest:
    """Everything the device needs to know about a bundle; ``to_json`` is canonical."""

    name: str
    source_digest: str
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    target: Target
    compiler: Dict[str, str] = field(default_factory=dict)
    options: Dict[str, Any] = field(default_factory=dict)
    segments: List[Segment] = field(default_factory=list)
    remainder: Optional[Remainder] = None
    not_offloaded: List[Dict[str, Any]] = field(default_factory=list)
    # {"seed": int, "inputs": [{"name","path","digest"}], "outputs": [...], "rtol": f, "atol": f}
    reference: Dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    # schema 2: every file besides the manifest, sorted by path (empty: the files the fields above name)
    file_list: List[FileEntry] = field(default_factory=list)

    # -- serialization

    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "name": self.name,
            "source_digest": self.source_digest,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "target": self.target.to_dict(),
            "compiler": dict(self.compiler),
            "options": self.options,
            "segments": [s.to_dict() for s in self.segments],
            "remainder": None if self.remainder is None else self.remainder.to_dict(),
            "not_offloaded": list(self.not_offloaded),
            "reference": self.reference,
            **({"files": [e.to_dict() for e in self.file_list]} if self.file_list else {}),
        }

    def to_json(self) -> str:
        """Validated, canonical JSON text (what ``manifest.json`` holds)."""
        d = self.to_dict()
        Manifest.from_dict(d)  # refuse to write what we would refuse to read
        return canonical_json(d).decode("utf-8")

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> "Manifest":
        return cls.from_dict(loads_bounded(text, MAX_MANIFEST_BYTES,
                                           lambda why: InvalidInput(f"invalid bundle manifest: {why}")))

    @classmethod
    def from_dict(cls, d: Any) -> "Manifest":
        w = "manifest"
        if not isinstance(d, dict):
            raise _fail(w, "expected a JSON object")
        version = _int(_req(d, "schema_version", w), "schema_version", lo=0, hi=10 ** 6)
        if version not in READABLE_SCHEMAS:
            raise InvalidInput(
                f"bundle schema_version {version} is not supported (this agent reads {SCHEMA_VERSION}); "
                "recompile the bundle with a matching host or upgrade the agent")
        if "files" in d and version < 2:
            raise _fail("files", "needs schema_version 2")
        compiler = _req(d, "compiler", w)
        if not isinstance(compiler, dict) or len(compiler) > 64:
            raise _fail("compiler", "expected an object of at most 64 string entries")
        compiler = {_str(k, "compiler"): _str(v, f"compiler.{k}", allow_empty=True) for k, v in compiler.items()}
        options = _req(d, "options", w)
        if not isinstance(options, dict):
            raise _fail("options", "expected an object")
        segments = [Segment.from_dict(s, f"segments[{i}]")
                    for i, s in enumerate(_list(_req(d, "segments", w), "segments", MAX_SEGMENTS))]
        rem_raw = _req(d, "remainder", w)
        remainder = None if rem_raw is None else Remainder.from_dict(rem_raw)
        not_off = []
        for i, e in enumerate(_list(_req(d, "not_offloaded", w), "not_offloaded", MAX_NOT_OFFLOADED)):
            ww = f"not_offloaded[{i}]"
            if not isinstance(e, dict):
                raise _fail(ww, "expected an object")
            _str(_req(e, "op", ww), f"{ww}.op")
            _str(_req(e, "reason", ww), f"{ww}.reason")
            not_off.append(_json_value(e, ww))
        reference = _req(d, "reference", w)
        if not isinstance(reference, dict):
            raise _fail("reference", "expected an object")
        reference = _json_value(reference, "reference")
        reference["inputs"] = _ref_entries(reference.get("inputs", []), "reference.inputs")
        reference["outputs"] = _ref_entries(reference.get("outputs", []), "reference.outputs")
        if "at_shapes" in reference:  # a ranged bundle's samples at MIN, OPT and MAX of each profile
            reference["at_shapes"] = [
                {"label": _str(_req(e, "label", f"reference.at_shapes[{i}]"), f"reference.at_shapes[{i}].label"),
                 **{k: _ref_entries(e.get(k, []), f"reference.at_shapes[{i}].{k}") for k in ("inputs", "outputs")}}
                for i, e in enumerate(_list(reference["at_shapes"], "reference.at_shapes", 3 * MAX_PROFILES))]
        m = cls(
            schema_version=version,
            name=_str(_req(d, "name", w), "name", max_len=256),
            source_digest=_digest(_req(d, "source_digest", w), "source_digest"),
            inputs=_tensors(_req(d, "inputs", w), "inputs"),
            outputs=_tensors(_req(d, "outputs", w), "outputs"),
            target=Target.from_dict(_req(d, "target", w)),
            compiler=compiler,
            options=_json_value(options, "options"),
            segments=segments,
            remainder=remainder,
            not_offloaded=not_off,
            reference=reference,
            file_list=_file_entries(d["files"], "files") if "files" in d else [],
        )
        m._check_consistency()
        return m

    def _check_consistency(self) -> None:
        ids = [s.id for s in self.segments]
        if len(set(ids)) != len(ids):
            raise _fail("segments", "segment ids are not unique")
        if not self.outputs:
            raise _fail("outputs", "a model needs at least one output")
        if self.remainder is None:
            if len(self.segments) != 1:
                raise _fail("segments", "without a remainder there must be exactly one segment "
                                        f"(found {len(self.segments)})")
            seg = self.segments[0]
            if [t.name for t in seg.inputs] != [t.name for t in self.inputs] or \
                    [t.name for t in seg.outputs] != [t.name for t in self.outputs]:
                raise _fail("segments[0]", "without a remainder the segment's inputs/outputs must be "
                                           "the model's inputs/outputs")
        named = self._named_files()
        paths = [p for p, _ in named]
        if len(set(paths)) != len(paths):
            raise _fail("manifest", "two entries name the same file")
        if self.file_list:
            listed = {e.path: e.digest for e in self.file_list}
            for path, digest in named:
                if listed.get(path) != digest:
                    raise _fail("files", f"{path} ({digest[:19]}...) is not listed with that digest")

    # -- convenience

    def files(self) -> List[Tuple[str, str]]:
        """(relative path, digest) of every file besides the manifest."""
        if self.file_list:
            return [(e.path, e.digest) for e in self.file_list]
        return self._named_files()

    def _named_files(self) -> List[Tuple[str, str]]:
        """The files the segments, the remainder and the reference name (schema 1: all of them)."""
        out = [(s.path, s.digest) for s in self.segments]
        if self.remainder is not None:
            out.append((self.remainder.path, self.remainder.digest))
        for ref in [self.reference] + list(self.reference.get("at_shapes", [])):
            for key in ("inputs", "outputs"):
                out.extend((e["path"], e["digest"]) for e in ref.get(key, []))
        return out

    def segment(self, segment_id: str) -> Segment:
        for s in self.segments:
            if s.id == segment_id:
                return s
        raise InvalidInput(f"bundle has no segment {segment_id!r} (it has {[s.id for s in self.segments]})")


def write_manifest(bundle_dir: Union[str, os.PathLike], manifest: Manifest) -> Path:
    """Durably (`atomic_write`): the manifest names every file, so a torn one would lose the bundle."""
    path = Path(bundle_dir) / MANIFEST_NAME
    atomic_write(path, manifest.to_json().encode("utf-8"))
    return path

