"""Malicious bundle archives against `device_agent.archive.extract_archive`: each refused with InvalidInput,
nothing left in the destination's directory, nothing planted outside it. (Basic cases live in
tests/device_agent/test_bundle.py; these are the trickier ones.)"""
from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from device_agent.archive import extract_archive
from device_agent.errors import InvalidInput

MARK = "planted-by-test"


def _member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = "") -> tuple:
    return name, kind, data, link


def _write(path: Path, members: list, fmt: int = tarfile.GNU_FORMAT, pax: dict = None) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        for name, kind, data, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            if pax and name in pax:
                info.pax_headers = pax[name]
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


CASES = {
    "file then directory of the same name": ([_member("segments"), _member("segments/a.onnx")], {}, "conflict"),
    "directory then file of the same name": ([_member("segments", tarfile.DIRTYPE), _member("segments")], {},
                                             "twice"),
    "the same file twice": ([_member("segments/a.onnx"), _member("segments/a.onnx")], {}, "twice"),
    "fifo": ([_member("pipe", tarfile.FIFOTYPE, b"")], {}, "links and devices"),
    "block device": ([_member("disk", tarfile.BLKTYPE, b"")], {}, "links and devices"),
    "symlinked directory then a file through it": (
        [_member("segments", tarfile.SYMTYPE, b"", "/tmp"), _member(f"segments/{MARK}")], {}, "links and devices"),
    "long GNU name that escapes": ([_member("a/" * 60 + "../" * 62 + MARK)], {}, "leaves the bundle"),
    "pax header renaming a member outside": ([_member("segments/ok.onnx")],
                                             {"segments/ok.onnx": {"path": f"../../{MARK}"}}, "leaves the bundle"),
    "backslash path": ([_member(f"..\\..\\{MARK}")], {}, "leaves the bundle"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malicious_archive_is_refused_and_leaves_nothing(tmp_path: Path, case: str) -> None:
    members, pax, message = CASES[case]
    fmt = tarfile.PAX_FORMAT if pax else tarfile.GNU_FORMAT
    archive = _write(tmp_path / "evil.tar", [_member("manifest.json", data=b"{}")] + members, fmt, pax)
    dest = tmp_path / "store" / "bundles" / "b"
    with pytest.raises(InvalidInput, match=message):
        extract_archive(archive, dest)
    assert list((tmp_path / "store" / "bundles").iterdir()) == []
    assert not list(tmp_path.rglob(f"*{MARK}*")) and not list(Path("/tmp").glob(f"{MARK}*"))


def test_archive_error_messages_do_not_reveal_the_agents_paths(tmp_path: Path) -> None:
    archive = _write(tmp_path / "evil.tar", [_member("manifest.json", data=b"{}"), _member("segments"),
                                              _member("segments/a.onnx")])
    dest = tmp_path / "secret-store-location" / "b"
    with pytest.raises(InvalidInput) as err:
        extract_archive(archive, dest)
    assert "secret-store-location" not in str(err.value)
