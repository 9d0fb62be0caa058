"""The bundle format: canonical manifest, validation, deterministic archive, safe extraction."""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from device_agent.archive import archive_digest, extract_archive, read_manifest_from_archive, write_archive
from device_agent.bundle import Bundle
from device_agent.errors import DataLoss, InvalidInput
from device_agent.fileio import sha256_bytes, sha256_file
from device_agent.manifest import SCHEMA_VERSION, Manifest, Remainder, Segment, Target, TensorSpec, write_manifest


def _make_bundle(root: Path, *, remainder: bool = False) -> Manifest:
    """A small but real bundle directory: a segment file, maybe a library, reference arrays."""
    (root / "segments").mkdir(parents=True)
    seg_bytes = b"not really onnx but bytes with a digest"
    (root / "segments" / "trt_0.onnx").write_bytes(seg_bytes)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 4, 4), dtype=np.float32)
    y = x * 2
    refs = {}
    for key, arr in (("inputs", x), ("outputs", y)):
        (root / "reference" / key).mkdir(parents=True)
        p = root / "reference" / key / "0.npy"
        np.save(p, arr, allow_pickle=False)
        refs[key] = [{"name": "x" if key == "inputs" else "y", "path": f"reference/{key}/0.npy",
                      "digest": sha256_file(p)}]
    x_spec = TensorSpec("x", "float32", ["batch", 3, 4, 4])
    y_spec = TensorSpec("y", "float32", ["batch", 3, 4, 4])
    rem = None
    seg_in, seg_out = [x_spec], [y_spec]
    if remainder:
        (root / "remainder").mkdir()
        (root / "remainder" / "remainder.so").write_bytes(b"\x7fELF fake library")
        rem = Remainder(path="remainder/remainder.so", digest=sha256_file(root / "remainder" / "remainder.so"),
                        target="llvm", host="llvm")
        seg_out = [TensorSpec("mid", "float32", ["batch", 3, 4, 4])]
    m = Manifest(
        name="tiny", source_digest=sha256_bytes(b"model"), inputs=[x_spec], outputs=[y_spec],
        target=Target(profile="x86-cpu", trt_version="10.3.0", compute_capability=None, device="cpu",
                      arch="x86_64"),
        compiler={"tvm": "0.27.0"}, options={"fp16": False, "batch": [1, 4, 8]},
        segments=[Segment(id="trt_0", path="segments/trt_0.onnx", digest=sha256_bytes(seg_bytes), ops=["Mul"],
                          inputs=seg_in, outputs=seg_out, opset=17)],
        remainder=rem, not_offloaded=[{"op": "Erf", "reason": "erf needs TensorRT >= 7.0.0, target is 6.0.1"}],
        reference={"seed": 0, "inputs": refs["inputs"], "outputs": refs["outputs"]},
    )
    write_manifest(root, m)
    return m


def test_manifest_round_trips_through_canonical_json(tmp_path):
    m = _make_bundle(tmp_path / "b", remainder=True)
    text = m.to_json()
    again = Manifest.from_json(text)
    assert again == m
    assert again.to_json() == text
    assert json.loads(text)["schema_version"] == SCHEMA_VERSION == 2
    # canonical: sorted keys, no spaces
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":")) + "\n"


def test_open_verify_and_read_reference(tmp_path):
    _make_bundle(tmp_path / "b")
    b = Bundle.open(tmp_path / "b")
    b.verify()
    ins, outs = b.read_reference()
    np.testing.assert_array_equal(outs["y"], ins["x"] * 2)
    assert b.segment_path("trt_0") == tmp_path / "b" / "segments" / "trt_0.onnx"
    assert b.remainder_path is None


def test_verify_reports_corrupt_file_as_data_loss(tmp_path):
    _make_bundle(tmp_path / "b")
    (tmp_path / "b" / "segments" / "trt_0.onnx").write_bytes(b"tampered")
    with pytest.raises(DataLoss, match="trt_0.onnx is corrupt"):
        Bundle.open(tmp_path / "b").verify()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("target"), "missing required key 'target'"),
        (lambda d: d.update(schema_version=3), "schema_version 3 is not supported"),
        (lambda d: d["segments"][0].update(path="../etc/passwd"), "relative path inside the bundle"),
        (lambda d: d["segments"][0].update(path="/abs/x.onnx"), "relative path inside the bundle"),
        (lambda d: d["segments"].append(dict(d["segments"][0])), "segment ids are not unique"),
        (lambda d: d["segments"][0].update(digest="md5:abc"), "is not 'sha256:'"),
        (lambda d: d["inputs"][0].update(dtype="complex64"), "'complex64' is not one of"),
        (lambda d: d["inputs"][0].update(shape=[1] * 17), "more than 16 entries"),
        (lambda d: d["target"].update(device="tpu"), "'tpu' is not 'cpu' or 'cuda'"),
        (lambda d: d["segments"][0].update(opset="17"), "expected an integer"),
        (lambda d: d["segments"][0]["outputs"][0].update(name="other"),
         "without a remainder the segment's inputs/outputs must be the model's"),
    ],
)
def test_invalid_manifest_is_refused_with_a_clear_message(tmp_path, mutate, message):
    m = _make_bundle(tmp_path / "b")
    d = json.loads(m.to_json())
    mutate(d)
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        Manifest.from_json(json.dumps(d))


def test_not_json_manifest_is_invalid_input(tmp_path):
    with pytest.raises(InvalidInput, match="not JSON"):
        Manifest.from_json(b"{nope")
    (tmp_path / "d").mkdir()
    with pytest.raises(InvalidInput, match="has no manifest.json"):
        Bundle.open(tmp_path / "d")


def test_archive_is_deterministic_and_digest_is_sha256_of_bytes(tmp_path):
    _make_bundle(tmp_path / "b", remainder=True)
    d1 = write_archive(tmp_path / "b", tmp_path / "one.tar")
    os.utime(tmp_path / "b" / "segments" / "trt_0.onnx", (12345, 12345))  # mtimes must not matter
    d2 = write_archive(tmp_path / "b", tmp_path / "two.tar")
    assert d1 == d2 == archive_digest(tmp_path / "one.tar")
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    assert d1 == sha256_bytes((tmp_path / "one.tar").read_bytes())
    with tarfile.open(tmp_path / "one.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" for m in members)
    assert {m.mode for m in members} <= {0o644, 0o755}


def test_extract_round_trip_gives_identical_bundle(tmp_path):
    m = _make_bundle(tmp_path / "b", remainder=True)
    write_archive(tmp_path / "b", tmp_path / "b.tar")
    out = extract_archive(tmp_path / "b.tar", tmp_path / "store" / "x")
    b = Bundle.open(out)
    b.verify()
    assert b.manifest == m
    assert read_manifest_from_archive(tmp_path / "b.tar") == m
    # a second extraction to the same place keeps the first
    assert extract_archive(tmp_path / "b.tar", tmp_path / "store" / "x") == out
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["x"]


def _evil_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w") as tar:
        manifest = b"{}"
        info = tarfile.TarInfo("manifest.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        if member.isreg():
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        else:
            tar.addfile(member)


@pytest.mark.parametrize(
    "member, message",
    [
        (tarfile.TarInfo("../escape.txt"), "leaves the bundle"),
        (tarfile.TarInfo("/etc/evil"), "leaves the bundle"),
        (lambda: (lambda i: (setattr(i, "type", tarfile.SYMTYPE), setattr(i, "linkname", "/etc/passwd"), i)[-1])(
            tarfile.TarInfo("segments/link")), "links and devices are refused"),
        (lambda: (lambda i: (setattr(i, "type", tarfile.LNKTYPE), setattr(i, "linkname", "manifest.json"), i)[-1])(
            tarfile.TarInfo("segments/hard")), "links and devices are refused"),
        (lambda: (lambda i: (setattr(i, "type", tarfile.CHRTYPE), i)[-1])(tarfile.TarInfo("dev")),
         "links and devices are refused"),
    ],
)
def test_extract_refuses_unsafe_members_and_leaves_nothing(tmp_path, member, message):
    if callable(member):
        member = member()
    _evil_tar(tmp_path / "evil.tar", member, b"x")
    dest = tmp_path / "store" / "bundle"
    with pytest.raises(InvalidInput, match=message):
        extract_archive(tmp_path / "evil.tar", dest)
    assert not dest.exists()
    assert list((tmp_path / "store").iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()


def test_extract_refuses_too_many_members_and_too_many_bytes(tmp_path):
    _make_bundle(tmp_path / "b")
    write_archive(tmp_path / "b", tmp_path / "b.tar")
    with pytest.raises(InvalidInput, match="more than 3 members"):
        extract_archive(tmp_path / "b.tar", tmp_path / "o1", max_members=3)
    with pytest.raises(InvalidInput, match="more than 10 bytes"):
        extract_archive(tmp_path / "b.tar", tmp_path / "o2", max_bytes=10)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_extract_of_truncated_or_tampered_archive_fails_cleanly(tmp_path):
    _make_bundle(tmp_path / "b")
    write_archive(tmp_path / "b", tmp_path / "b.tar")
    data = (tmp_path / "b.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises((InvalidInput, DataLoss)):
        extract_archive(tmp_path / "cut.tar", tmp_path / "o1")
    assert not (tmp_path / "o1").exists()
    # flip bytes inside the segment payload: digest check catches it
    seg = b"not really onnx but bytes with a digest"
    (tmp_path / "bad.tar").write_bytes(data.replace(seg, seg.upper()))
    with pytest.raises(DataLoss, match="corrupt"):
        extract_archive(tmp_path / "bad.tar", tmp_path / "o2")
    assert not (tmp_path / "o2").exists()
    (tmp_path / "gz.tar").write_bytes(b"\x1f\x8b" + b"\x00" * 100)
    with pytest.raises(InvalidInput, match="not an uncompressed tar"):
        extract_archive(tmp_path / "gz.tar", tmp_path / "o3")


def test_manifest_accepts_a_segment_of_more_than_4096_ops_in_its_options():
    """Large real models (thousands of nodes in one segment) must fit the manifest's bounds."""
    from device_agent.manifest import _json_value

    value = {"parts": [{"ops": ["MatMul"] * 5000}]}
    assert _json_value(value, "options") == value
