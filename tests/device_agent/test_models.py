"""The model repository on real files: version numbers, keeping, gated activation, rollback, health checks, and
exactly one active version after a SIGKILL at any system call of an activation."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from device_agent.errors import InvalidInput, NotFound, PreconditionFailed
from device_agent.models import (BUILT, VERIFIED, EngineRef, HealthCheckFailed, ModelRepository, VersionRecord)
from tests.conftest import REPO


def verified(_rec: VersionRecord) -> "tuple[str, str]":
    return VERIFIED, ""


def _add(repo: ModelRepository, name: str = "det", digest: str = "sha256:" + "a" * 64) -> VersionRecord:
    return repo.add_version(name, digest, [EngineRef("trt_0", "k" * 64)], {"backend": "onnxruntime"},
                            {"fp16": False}, {"passed": True, "max_rel_err": 0.0})


def test_version_numbers_only_grow_and_old_versions_are_released(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, keep_versions=2)
    assert [_add(repo).version for _ in range(4)] == [1, 2, 3, 4]
    assert repo.versions("det") == [3, 4]
    # a new repository object on the same files (an agent restart) goes on counting
    assert _add(ModelRepository(tmp_path, keep_versions=2)).version == 5


def test_an_agent_keeps_the_last_3_versions_of_each_name_unless_told(tmp_path: Path) -> None:
    from device_agent.config import parse_args

    assert parse_args(["--store", str(tmp_path / "store")]).keep_versions == 3
    assert parse_args(["--store", str(tmp_path / "store"), "--keep-versions", "5"]).keep_versions == 5
    repo = ModelRepository(tmp_path / "models")
    for _ in range(5):
        _add(repo)
    assert repo.versions("det") == [3, 4, 5]


def test_active_and_previous_versions_are_kept_past_keep_versions(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path, keep_versions=1)
    _add(repo)
    repo.activate("det", 1, verified)
    _add(repo)
    repo.activate("det", 2, verified)
    _add(repo, digest="sha256:" + "b" * 64)
    assert repo.versions("det") == [1, 2, 3]
    bundles, keys = repo.pinned()
    assert bundles == {"sha256:" + "a" * 64, "sha256:" + "b" * 64} and keys == {"k" * 64}


def test_activation_is_refused_unless_the_version_is_verified(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    _add(repo)
    with pytest.raises(PreconditionFailed, match="version 1 cannot be activated: engines were never verified"):
        repo.activate("det", None, lambda rec: (BUILT, "engines were never verified"))
    assert repo.state("det").active is None


def test_unknown_names_and_versions_are_one_clear_error(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    with pytest.raises(NotFound, match="no model named 'nope'"):
        repo.activate("nope", None, verified)
    _add(repo)
    with pytest.raises(NotFound, match=r"no version 7 .*kept versions: 1"):
        repo.activate("det", 7, verified)
    with pytest.raises(InvalidInput, match="bad model name"):
        repo.activate("../etc", None, verified)


def test_rollback_returns_to_the_previous_activation(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    _add(repo), _add(repo)
    repo.activate("det", 1, verified)
    with pytest.raises(PreconditionFailed, match="no previous version"):
        repo.rollback("det", verified)
    repo.activate("det", 2, verified)
    rec, left = repo.rollback("det", verified)
    assert (rec.version, left) == (1, 2)
    st = repo.state("det")
    assert (st.active, st.previous) == (1, None)


@pytest.mark.parametrize("cmd, why", [("echo 'camera pipeline down' >&2; exit 3", r"failed \(exit 3\): camera"),
                                      ("sleep 30", "did not finish within 1 s")])
def test_a_failing_or_hanging_health_check_rolls_back_by_itself(tmp_path: Path, cmd: str, why: str) -> None:
    repo = ModelRepository(tmp_path, health_cmd="true")
    _add(repo), _add(repo)
    repo.activate("det", 1, verified)
    repo.health_cmd, repo.health_timeout_s = cmd, 1.0
    t0 = time.monotonic()
    with pytest.raises(HealthCheckFailed, match=why + ".*rolled back to version 1"):
        repo.activate("det", 2, verified)
    assert time.monotonic() - t0 < 10
    st = repo.state("det")
    assert (st.active, st.pending) == (1, None)
    assert (tmp_path / "det" / "active" / "VERSION").read_text().strip() == "1"


def test_the_health_command_is_told_which_version_it_checks(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    repo = ModelRepository(tmp_path / "repo", health_cmd=f'echo "$DEPLOY_MODEL_NAME $DEPLOY_MODEL_VERSION" > {seen}')
    _add(repo)
    repo.activate("det", None, verified)
    assert seen.read_text().strip() == "det 1"


def test_a_pending_activation_is_rolled_back_at_restart(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    _add(repo), _add(repo)
    repo.activate("det", 1, verified)
    doc = json.loads((tmp_path / "det" / "state.json").read_text())
    doc.update(history=[1, 2], pending=2)  # what an agent killed during the health check of version 2 leaves
    (tmp_path / "det" / "state.json").write_text(json.dumps(doc))
    notes = ModelRepository(tmp_path).recover()
    assert notes and "never finished" in notes[0]
    assert ModelRepository(tmp_path).state("det").active == 1


def test_observers_hear_each_switch_and_one_that_raises_fails_none(tmp_path: Path) -> None:
    """The hook the agent's metrics use; the repository itself imports no metrics module."""
    heard: list = []

    def broken(_event: object) -> None:
        raise RuntimeError("an observer's bug")

    repo = ModelRepository(tmp_path, health_cmd=f"test ! -e {tmp_path / 'fail'}")
    repo.observe(broken)
    repo.observe(lambda ev: heard.append((ev.kind, ev.outcome, ev.version, ev.active)))
    _add(repo), _add(repo)
    repo.activate("det", 1, verified)
    repo.activate("det", 1, verified)  # already active: no switch, no event
    with pytest.raises(PreconditionFailed):
        repo.activate("det", 2, lambda rec: (BUILT, "not verified"))
    (tmp_path / "fail").write_text("")
    with pytest.raises(HealthCheckFailed):
        repo.activate("det", 2, verified)
    (tmp_path / "fail").unlink()
    repo.activate("det", 2, verified)
    repo.rollback("det", verified)
    repo.deactivate("det")
    assert heard == [("activation", "ok", 1, 1), ("activation", "refused", 2, 1),
                     ("activation", "health_failed", 2, 1), ("rollback", "health", 2, 1),
                     ("activation", "ok", 2, 2), ("rollback", "request", 2, 1), ("rollback", "deactivate", 1, None)]


KILL_DRIVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from device_agent.models import ModelRepository, EngineRef, VERIFIED
    root, step = Path(sys.argv[1]), sys.argv[2]
    repo = ModelRepository(root, health_cmd=sys.argv[3] if len(sys.argv) > 3 else "")
    ok = lambda rec: (VERIFIED, "")
    if step == "setup":
        for _ in range(2):
            repo.add_version("det", "sha256:" + "a" * 64, [EngineRef("trt_0", "k" * 64)], {}, {}, {"passed": True})
        repo.activate("det", 1, ok)
    elif step == "activate":
        repo.activate("det", 2, ok)
    else:
        repo.recover()
        print(repo.state("det").active, (root / "det" / "active" / "VERSION").read_text().strip())
""")


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (scripts/setup.sh installs it)")
@pytest.mark.parametrize("health", ["", "true"])
def test_sigkill_at_every_step_of_an_activation_leaves_exactly_one_active_version(tmp_path: Path,
                                                                                  health: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    driver = [sys.executable, "-c", KILL_DRIVER]
    calls = "fsync,rename,renameat,renameat2,symlink,symlinkat,mkdir,mkdirat,unlink,unlinkat,write"
    seed = tmp_path / "seed"
    subprocess.run([*driver, str(seed), "setup"], env=env, check=True)
    log = tmp_path / "trace"
    shutil.copytree(seed, tmp_path / "counted", symlinks=True)
    subprocess.run(["strace", "-f", "-qq", "-e", f"trace={calls}", "-o", str(log), *driver, str(tmp_path / "counted"), "activate",
                    health], env=env, check=True)
    counts: dict = {}
    for line in log.read_text().splitlines():
        name = line.split(None, 1)[1].split("(", 1)[0] if " " in line else ""
        if name in calls.split(","):
            counts[name] = counts.get(name, 0) + 1
    assert counts.get("fsync") and counts.get("rename")
    seen = set()
    for name, n in counts.items():
        for when in range(1, n + 1):
            root = tmp_path / f"{name}-{when}"
            shutil.copytree(seed, root, symlinks=True)
            subprocess.run(["strace", "-f", "-qq", "-o", os.devnull, "-e", f"trace={name}",
                            "-e", f"inject={name}:signal=KILL:when={when}", *driver, str(root), "activate", health],
                           env=env)
            out = subprocess.run([*driver, str(root), "check"], env=env, capture_output=True, text=True, check=True)
            active, linked = out.stdout.split()
            assert active == linked and active in ("1", "2"), (name, when, out.stdout)
            seen.add(active)
    assert seen == {"1", "2"}  # killed early the old version stays, killed late the new one is in place


def test_a_chatty_health_command_costs_the_agent_no_memory_beyond_its_last_line(tmp_path: Path) -> None:
    """300 MB of output: only the tail is kept (the whole output had been read into memory)."""
    driver = textwrap.dedent("""
        import resource, sys
        from pathlib import Path
        from device_agent.models import ModelRepository, EngineRef, VERIFIED, HealthCheckFailed
        repo = ModelRepository(Path(sys.argv[1]), health_cmd="yes 'health log line' | head -c 300000000; "
                               "echo 'camera down' >&2; exit 4", health_timeout_s=60)
        repo.add_version("det", "sha256:" + "a" * 64, [EngineRef("trt_0", "k" * 64)], {}, {}, {"passed": True})
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            repo.activate("det", 1, lambda rec: (VERIFIED, ""))
        except HealthCheckFailed as exc:
            print(exc)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", driver, str(tmp_path)], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120).stdout.splitlines()
    assert "failed (exit 4): camera down" in out[0] and "no version is active" in out[0], out
    assert int(out[1]) < 50, f"the health check grew the agent by {out[1]} MiB"


def test_restart_sweeps_what_a_killed_switch_left_and_keeps_the_active_links(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    _add(repo)
    repo.activate("det", 1, verified)
    d = tmp_path / "det"
    os.symlink("links/gone", d / ".active.999.1")  # a temp link of a process killed before its rename
    (d / "links" / "1-999-1").mkdir()  # a link directory it had made
    ModelRepository(tmp_path).recover()
    assert not list(d.glob(".active.*")) and len(list((d / "links").iterdir())) <= 2
    assert (d / "active" / "VERSION").read_text().strip() == "1" and os.path.islink(d / "active")
