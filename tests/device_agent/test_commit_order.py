"""Crash consistency of every commit, checked on the system calls themselves (strace), as the ALICE study
(Pillai et al., OSDI 2014) found it must be: the data fsynced, then the rename, then the directory fsynced.

Commits checked: a blob published by the store, an engine-cache entry (built and imported), the local agent's state,
a model version's record and each activation's state.json (issue 23), a bundle's manifest and archive, a private key
written with mode 0600, and `atomic_file` itself.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("strace") is None,
                                reason="strace is not installed (scripts/setup.sh installs it as root)")

DRIVER = textwrap.dedent("""
    import hashlib, os, sys
    from pathlib import Path
    root = Path(sys.argv[1])
    os.environ["XDG_CACHE_HOME"] = str(root / "xdg")
    from device_agent.store import Store
    from device_agent.cache import EngineCache, cache_key
    from host.client import local

    data = os.urandom(3 * 1024 * 1024 + 17)
    store = Store(root / "store", 1 << 30, 4 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    store.receive(digest, len(data), 0, (data[i:i + (1 << 20)] for i in range(0, len(data), 1 << 20)))

    cache = EngineCache(root / "engines")
    parts = {"schema": 1, "segment": "sha256:" + "1" * 64, "backend": "b", "backend_version": "1", "gpu": "",
             "cc": "", "l4t": "", "arch": "x", "precision": "fp32", "workspace": 1, "profiles": [], "flags": []}
    plan = os.urandom(200_000)
    cache.put(parts, plan)
    other = dict(parts, segment="sha256:" + "2" * 64)
    cache.put_external_stream(cache_key(other), other, [plan[:100_000], plan[100_000:]], len(plan),
                              "sha256:" + hashlib.sha256(plan).hexdigest(), other)

    (root / "xdg" / "deploy").mkdir(parents=True)
    local.write_state(local.LocalAgent(12345, "127.0.0.1:7311"))

    from device_agent.archive import write_archive
    from device_agent.fileio import atomic_file, atomic_write, sha256_bytes
    from device_agent.manifest import Manifest, Segment, Target, TensorSpec, write_manifest
    bdir = root / "bundle"
    (bdir / "segments").mkdir(parents=True)
    (bdir / "segments" / "seg0.onnx").write_bytes(b"segment")
    x, y = TensorSpec("x", "float32", [1, 4]), TensorSpec("y", "float32", [1, 4])
    write_manifest(bdir, Manifest(name="m", source_digest="sha256:" + "3" * 64, inputs=[x], outputs=[y],
                                  target=Target("x86-cpu", "10.3.0", None, "cpu", "x86_64"),
                                  segments=[Segment(id="seg0", path="segments/seg0.onnx", ops=["Relu"],
                                                    digest=sha256_bytes(b"segment"), inputs=[x], outputs=[y],
                                                    opset=17)]))
    write_archive(bdir, root / "out" / "bundle.tar")
    atomic_write(root / "keys" / "agent.key", b"-----BEGIN PRIVATE KEY-----", 0o600)
    with atomic_file(root / "streamed.bin") as f:
        f.write(data[:1000])
        f.write(data[1000:2000])

    from device_agent.models import VERIFIED, EngineRef, ModelRepository
    repo = ModelRepository(root / "models", engine_path=lambda key: root / "engines" / "entries" / key / "plan")
    repo.add_version("det", "sha256:" + "4" * 64, [EngineRef("seg0", cache_key(parts))], {}, {}, {"passed": True})
    repo.activate("det", 1, lambda rec: (VERIFIED, ""))
    print(hashlib.sha256(data).hexdigest(), cache_key(parts), cache_key(other))
""")

_CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)\)\s+=\s+(-?\d+)")
_FD_PATH = re.compile(r"^\d+<([^>]*)>")


@dataclass
class Call:
    n: int
    name: str
    args: str
    result: int

    @property
    def fd_path(self) -> str:
        m = _FD_PATH.match(self.args)
        return m.group(1) if m else ""

    @property
    def rename(self) -> tuple[str, str]:
        paths = re.findall(r'"([^"]*)"', self.args)
        return (paths[0], paths[1]) if len(paths) >= 2 else ("", "")


def traced(tmp_path: Path) -> tuple[list[Call], list[str]]:
    log = tmp_path / "strace.log"
    root = tmp_path / "root"
    root.mkdir()
    proc = subprocess.run(["strace", "-f", "-y", "-qq", "-s", "0", "-o", str(log),
                           "-e", "trace=openat,write,pwrite64,fsync,fdatasync,rename,renameat,renameat2",
                           sys.executable, "-c", DRIVER, str(root)], capture_output=True, text=True, cwd=str(REPO),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    calls = []
    for line in log.read_text().splitlines():
        m = _CALL.match(line)
        if m and int(m.group(3)) >= 0:
            calls.append(Call(len(calls), m.group(1), m.group(2), int(m.group(3))))
    return calls, proc.stdout.split()


def renames(calls: list[Call], dst: str) -> Call:
    found = [c for c in calls if c.name.startswith("rename") and c.rename[1] == dst]
    assert len(found) == 1, f"expected one rename onto {dst}, got {found}"
    return found[0]


def fsyncs(calls: list[Call], path: str) -> list[int]:
    return [c.n for c in calls if c.name in ("fsync", "fdatasync") and c.fd_path == path]


def writes(calls: list[Call], path: str) -> list[int]:
    return [c.n for c in calls if c.name in ("write", "pwrite64") and c.fd_path == path]


def assert_commit(calls: list[Call], files: list[str], dst: str, dirs_after: list[str]) -> None:
    """Every file written and then fsynced before the rename onto `dst`; each of `dirs_after` fsynced after it."""
    rename = renames(calls, dst)
    for f in files:
        w, s = writes(calls, f), fsyncs(calls, f)
        assert w, f"no write to {f}"
        assert s and max(w) < min(x for x in s if x > max(w)) < rename.n, (f, w, s, rename.n)
    for d in dirs_after:
        assert any(x > rename.n for x in fsyncs(calls, d)), f"{d} not fsynced after the rename onto {dst}"


def test_every_commit_fsyncs_data_then_renames_then_fsyncs_the_directory(tmp_path):
    calls, (blob, key, imported) = traced(tmp_path)
    root = str(tmp_path / "root")

    # the store: partial/<hex> written, fsynced; renamed into blobs/; blobs/ and partial/ fsynced
    assert_commit(calls, [f"{root}/store/partial/{blob}"], f"{root}/store/blobs/{blob}",
                  [f"{root}/store/blobs", f"{root}/store/partial"])

    # the engine cache, a built entry and an imported one: plan and meta.json fsynced, the temp dir fsynced,
    # renamed into entries/; entries/ fsynced after
    for k in (key, imported):
        rename = renames(calls, f"{root}/engines/entries/{k}")
        tmp = rename.rename[0]
        assert tmp.startswith(f"{root}/engines/tmp/{k}.")
        assert_commit(calls, [f"{tmp}/plan", f"{tmp}/meta.json"], f"{root}/engines/entries/{k}",
                      [f"{root}/engines/entries"])
        assert any(x < rename.n for x in fsyncs(calls, tmp)), "the entry's directory is not fsynced before rename"

    # the local agent's state file
    state = f"{root}/xdg/deploy/local-agent.json"
    rename = renames(calls, state)
    assert_commit(calls, [rename.rename[0]], state, [f"{root}/xdg/deploy"])

    # a model version's record, then each commit of its name's state.json (the version number taken, then the
    # activation): temp file written, fsynced, renamed, the directory fsynced; the stable active/ link after it
    det = f"{root}/models/det"
    record = renames(calls, f"{det}/versions/1.json")
    assert_commit(calls, [record.rename[0]], f"{det}/versions/1.json", [f"{det}/versions"])
    states = [c for c in calls if c.name.startswith("rename") and c.rename[1] == f"{det}/state.json"]
    assert len(states) == 2 and record.n < states[0].n, "the record is durable before its number is taken"
    for commit in states:
        tmp = commit.rename[0]
        w, s = writes(calls, tmp), fsyncs(calls, tmp)
        assert w and s and max(w) < min(s) < commit.n, (tmp, w, s, commit.n)
        assert any(commit.n < x for x in fsyncs(calls, det)), f"{det} not fsynced after the rename onto state.json"
    link = renames(calls, f"{det}/active")
    assert states[-1].n < link.n and any(x > link.n for x in fsyncs(calls, det)), "active/ follows state.json"


def test_bundle_files_keys_and_atomic_file_fsync_then_rename_then_fsync_the_directory(tmp_path):
    calls, _ = traced(tmp_path)
    root = str(tmp_path / "root")
    for dst, directory in ((f"{root}/bundle/manifest.json", f"{root}/bundle"),  # write_manifest did not fsync
                           (f"{root}/out/bundle.tar", f"{root}/out"),  # write_archive: no directory fsync
                           (f"{root}/keys/agent.key", f"{root}/keys"),
                           (f"{root}/streamed.bin", root)):
        rename = renames(calls, dst)
        assert Path(rename.rename[0]).parent == Path(dst).parent, "the temp file is not beside its destination"
        assert_commit(calls, [rename.rename[0]], dst, [directory])
    assert (tmp_path / "root" / "keys" / "agent.key").stat().st_mode & 0o777 == 0o600


def test_place_dir_puts_a_finished_directory_in_place_keeps_one_placed_first_and_refuses_a_partial_one(tmp_path):
    from device_agent.fileio import place_dir

    complete = lambda d: (d / "manifest.json").is_file()

    def finished(name: str, text: str) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "manifest.json").write_text(text)
        return d

    dest = tmp_path / "bundle"
    assert place_dir(finished("ours", "first"), dest, complete) == dest
    assert (dest / "manifest.json").read_text() == "first" and not (tmp_path / "ours").exists()

    late = finished("late", "second")  # another writer's, finished after ours was placed
    assert place_dir(late, dest, complete) == dest
    assert (dest / "manifest.json").read_text() == "first" and not late.exists()

    partial = tmp_path / "partial"
    (partial / "segments").mkdir(parents=True)  # a directory in the way that is not a finished bundle
    (partial / "segments" / "x").write_text("x")
    with pytest.raises(OSError):
        place_dir(finished("third", "third"), partial, complete)
    assert (tmp_path / "third").is_dir()  # left for the caller, whose error path removes it
