"""Named model versions end to end, with real agents on loopback (issue 23's "Show"): push versions under one
name, activate and roll back through the installed CLI; the device runtime in another process follows each
switch; 8 runtime threads and 8 `tritonclient` threads keep answering while versions are switched 20 times; an
agent SIGKILLed during an activation comes back with exactly one active version; failing and hanging health checks
roll back by themselves; bad input changes nothing; kept versions survive pruning.

Which version answered is told by the output: the models are the same tiny net with different weights (one seed
per version, pushed in order, so version N is `models[N]`), and each one's expected output is computed once with
onnxruntime on its ONNX file.
"""
from __future__ import annotations

import bisect
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Optional

import grpc
import numpy as np
import pytest

from device_agent.errors import InvalidInput
from device_agent.runtime import open_model
from host import api
from host.client.agent import connect
from host.client.errors import AgentError
from protos import agent_pb2
from tests.conftest import REPO, AgentHandle
from tests.host.cli.helpers import parse_json, tiny_conv_net

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(180)]

NAME = "det"
SEEDS = {1: 101, 2: 202, 3: 303}  # version -> the seed of its weights (versions are pushed in this order)
X = np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float32)


# ---------------------------------------------------------------- models and what each version answers
@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("versions")
    return {v: tiny_conv_net(root / f"det-v{v}.onnx", seed=seed) for v, seed in SEEDS.items()}


@pytest.fixture(scope="module")
def expected(models: dict[int, Path]) -> dict[int, np.ndarray]:
    import onnxruntime as ort

    out = {v: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": X})[0]
           for v, p in models.items()}
    for a in out:
        for b in out:
            assert a == b or not np.allclose(out[a], out[b], rtol=1e-2, atol=1e-3), "versions must be told apart"
    return out


def versions_matching(out: np.ndarray, expected: dict[int, np.ndarray]) -> list[int]:
    return [v for v, want in expected.items() if np.allclose(out, want, rtol=1e-4, atol=1e-5)]


def push(agent: AgentHandle, models: dict[int, Path], v: int, **options: Any) -> dict:
    """Push `models[v]` as the next version of NAME through the Python API; checks it got number `v`."""
    data = api.push(models[v], agent.address, name=NAME, **options)
    assert data["model"]["version"] == v and data["model"]["created"], data["model"]
    return data


def models_ls(deploy, agent: AgentHandle) -> dict:
    """NAME's entry of `deploy models ls --json`, through the installed CLI."""
    data = parse_json(deploy("models", "ls", "--device", agent.address, "--json"))
    assert [m["name"] for m in data["models"]] == [NAME], data
    return data["models"][0]


def listed_by_api(agent: AgentHandle) -> dict:
    """The same entry through the code the CLI prints (host/models.py), without a CLI start (a second each)."""
    from host.models import list_models

    with connect(agent.address) as client:
        data = list_models(client)
    assert [m["name"] for m in data["models"]] == [NAME], data
    return data["models"][0]


def active_of(agent: AgentHandle) -> tuple[Optional[int], Optional[int]]:
    with connect(agent.address) as client:
        m = client.list_models(NAME).models[0]
    return (m.active if m.HasField("active") else None, m.previous if m.HasField("previous") else None)


def repo_dir(agent: AgentHandle) -> Path:
    return agent.store_dir.parent / "models" / NAME


def state_doc(agent: AgentHandle) -> dict:
    return json.loads((repo_dir(agent) / "state.json").read_text())


def linked_version(agent: AgentHandle) -> int:
    """The version the stable per-name path (`models/det/active`, for DeepStream) points at."""
    return int((repo_dir(agent) / "active" / "VERSION").read_text())


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {proc.stderr!r}"
    return lines[0]


# ---------------------------------------------------------------- the Open Inference Protocol client
def oip_client(agent: AgentHandle) -> Any:
    import tritonclient.grpc as tc

    return tc.InferenceServerClient(agent.address)


def oip_infer(client: Any, x: np.ndarray = X, name: str = "input", datatype: str = "FP32",
              model: str = NAME, version: str = "") -> tuple[int, np.ndarray]:
    import tritonclient.grpc as tc

    inp = tc.InferInput(name, list(x.shape), datatype)
    inp.set_data_from_numpy(x)
    res = client.infer(model, [inp], model_version=version)
    return int(res.get_response().model_version), res.as_numpy("logits")


def oip_error(fn: Any) -> tuple[str, str]:
    """(status code name, message) of a failing tritonclient call."""
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as info:
        fn()
    return str(info.value.status()), info.value.message()


def serves(agent: AgentHandle, version: int, expected: dict[int, np.ndarray]) -> None:
    """Both ways an application reaches the model answer with `version`: the runtime and ModelInfer."""
    with open_model(NAME, store=agent.store_dir) as m:
        r = m.run_versioned({"input": X})
        assert (m.version, r.version) == (version, version)
        assert versions_matching(r.outputs["logits"], expected) == [version]
    client = oip_client(agent)
    try:
        got, out = oip_infer(client)
    finally:
        client.close()
    assert got == version and versions_matching(out, expected) == [version]


# ---------------------------------------------------------------- a health command the test steers
HEALTH_SH = textwrap.dedent("""\
    # run by the agent after each switch; mode.<version> (written by the test) says what the check does
    echo "$DEPLOY_MODEL_NAME $DEPLOY_MODEL_VERSION" >> "{dir}/checks"
    mode=$(cat "{dir}/mode.$DEPLOY_MODEL_VERSION" 2>/dev/null)
    case "$mode" in
      fail) echo "starting checks"; echo "camera pipeline down on version $DEPLOY_MODEL_VERSION"; exit 3;;
      hang) echo $$ > "{dir}/hang.pid"; exec sleep 30;;
    esac
    exit 0
""")


class Health:
    def __init__(self, root: Path) -> None:
        self.dir = root
        root.mkdir(parents=True, exist_ok=True)
        self.script = root / "health.sh"
        self.script.write_text(HEALTH_SH.format(dir=root))
        self.cmd = f"sh {self.script}"

    def set(self, version: int, mode: str) -> None:
        (self.dir / f"mode.{version}").write_text(mode)

    def checked(self) -> list[str]:
        path = self.dir / "checks"
        return path.read_text().splitlines() if path.exists() else []

    def hang_pid(self) -> Optional[int]:
        path = self.dir / "hang.pid"
        text = path.read_text().strip() if path.exists() else ""
        return int(text) if text else None

    def end_hang(self) -> None:
        """The hanging check of an agent that was SIGKILLed outlives it (its own session): end it, by its pid."""
        pid = self.hang_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def running(pid: int) -> bool:
    """Whether `pid` still runs (a zombie does not: a killed orphan waits for a reaper that a container's init may
    not be)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(what: str, cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


# ================================================================ 1. the CLI: push two versions, activate, roll back
def test_push_two_versions_under_one_name_then_activate_and_roll_back_through_the_cli(agent_factory, deploy, models):
    agent = agent_factory()
    dev = ("--device", agent.address)

    first = parse_json(deploy("push", str(models[1]), *dev, "--name", NAME, "--activate", "--json"))
    assert first["model"] | {"seconds": 0} == {"name": NAME, "version": 1, "created": True, "state": "verified",
                                                "why": None, "active": 1, "previous": None, "activated": True,
                                                "seconds": 0}
    second = parse_json(deploy("push", str(models[2]), *dev, "--name", NAME, "--json"))
    m = second["model"]
    assert (m["version"], m["created"], m["state"], m["active"], m["activated"]) == (2, True, "verified", 1, False)

    listed = models_ls(deploy, agent)
    assert (listed["active"], listed["previous"]) == (1, None), "a new version does not become active by itself"
    assert [v["version"] for v in listed["versions"]] == [1, 2]
    assert [v["bundle_digest"] for v in listed["versions"]] == [first["bundle_digest"], second["bundle_digest"]]
    for v in listed["versions"]:
        assert v["state"] == "verified" and v["why"] is None and v["verify"]["passed"], v
        assert v["build"]["backend"] == "onnxruntime" and v["build"]["precision"] == "fp32"
        assert v["engine_paths"] and all(Path(p).is_file() for p in v["engine_paths"]), v
    active_dir = Path(listed["active_path"])
    assert [os.path.realpath(p) for p in sorted(active_dir.glob("*.plan"))] == \
        [os.path.realpath(p) for p in listed["versions"][0]["engine_paths"]], "the stable path is version 1's"

    done = parse_json(deploy("activate", NAME, *dev, "--json"))  # default: the newest
    assert (done["name"], done["active"], done["previous"]) == (NAME, 2, 1)
    assert done["version"]["state"] == "verified" and done["bundle_digest"] == second["bundle_digest"]
    assert linked_version(agent) == 2
    assert [os.path.realpath(p) for p in sorted(active_dir.glob("*.plan"))] == \
        [os.path.realpath(p) for p in listed["versions"][1]["engine_paths"]], "the stable path follows"

    back = parse_json(deploy("rollback", NAME, *dev, "--json"))
    assert (back["active"], back["previous"]) == (1, 2), "rollback names the version it left"
    listed = models_ls(deploy, agent)
    assert (listed["active"], listed["previous"]) == (1, None)
    assert [(v["version"], v["state"]) for v in listed["versions"]] == [(1, "verified"), (2, "verified")]
    assert linked_version(agent) == 1


# ================================================================ 2. the runtime in another process follows
RUNTIME_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from device_agent.runtime import open_model
    store, name, feeds = sys.argv[1:4]
    x = np.load(feeds)
    m = open_model(name, store=store)
    leaked = sorted(k for k in sys.modules if k.split(".")[0] in ("host", "grpc"))
    print(json.dumps({"version": m.version, "leaked": leaked}), flush=True)
    for line in sys.stdin:
        r = m.run_versioned({"input": x})
        print(json.dumps({"version": r.version, "logits": r.outputs["logits"].tolist()}), flush=True)
""")


def test_the_runtime_in_another_process_answers_with_each_new_version_right_after_activate_returns(
        agent_factory, deploy, models, expected, tmp_path):
    agent = agent_factory()
    push(agent, models, 1, activate=True)
    push(agent, models, 2)
    push(agent, models, 3)
    np.save(tmp_path / "x.npy", X)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = tmp_path / "runtime.log"
    with open(log, "wb") as err:
        child = subprocess.Popen([sys.executable, "-c", RUNTIME_CHILD, str(agent.store_dir), NAME,
                                  str(tmp_path / "x.npy")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=err, text=True, env=env, cwd=str(tmp_path))
    try:
        assert child.stdin is not None and child.stdout is not None
        hello = json.loads(child.stdout.readline() or "{}")
        assert hello.get("version") == 1, (hello, log.read_text(errors="replace")[-2000:])
        assert hello["leaked"] == [], "the device runtime imports no host package and no gRPC"

        def ask() -> int:
            child.stdin.write("run\n")
            child.stdin.flush()
            line = child.stdout.readline()
            assert line, f"the runtime process died: {log.read_text(errors='replace')[-2000:]}"
            answer = json.loads(line)
            out = np.asarray(answer["logits"], dtype=np.float32)
            assert versions_matching(out, expected) == [answer["version"]], "the output is the version it names"
            return answer["version"]

        assert ask() == 1
        for step, want in ((("activate", NAME, "2"), 2), (("activate", NAME), 3), (("rollback", NAME), 2),
                           (("activate", NAME, "1"), 1)):
            proc = deploy(*step, "--device", agent.address)
            assert proc.returncode == 0, proc.stderr
            assert ask() == want, f"the first run after `deploy {' '.join(step)}` returned"
            assert ask() == want
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)


# ================================================================ 3. answers while versions switch 20 times
def test_8_runtime_and_8_modelinfer_threads_never_fail_and_answer_from_the_active_or_next_version_across_20_switches(
        agent_factory, models, expected):
    agent = agent_factory()
    for v in (1, 2, 3):
        push(agent, models, v, activate=(v == 1))
    # three versions in turn (1 -> 2 -> 3 -> 1 ...): an answer one switch late is then a wrong version, not a
    # lucky right one as it would be when only two versions alternate
    order = [2, 3, 1] * 7
    order = order[:20]
    # four threads on each policy: "availability" (load the new version, then release the old) and "resource"
    # (release first, calls wait while the new one loads)
    runtimes = {p: open_model(NAME, store=agent.store_dir, policy=p) for p in ("availability", "resource")}
    stop = threading.Event()
    calls: list[tuple[str, float, float, int, np.ndarray]] = []  # (who, asked, answered, version, output)
    failures: list[str] = []
    lock = threading.Lock()

    def by_runtime(policy: str) -> None:
        runtime = runtimes[policy]
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = runtime.run_versioned({"input": X})
                row = (policy, t0, time.monotonic(), r.version, r.outputs["logits"])
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                with lock:
                    failures.append(f"runtime ({policy}): {type(exc).__name__}: {exc}")
                continue
            with lock:
                calls.append(row)

    def by_oip() -> None:
        client = oip_client(agent)
        try:
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    version, out = oip_infer(client)
                    row = ("oip", t0, time.monotonic(), version, out)
                except Exception as exc:  # noqa: BLE001
                    with lock:
                        failures.append(f"oip: {type(exc).__name__}: {exc}")
                    continue
                with lock:
                    calls.append(row)
        finally:
            client.close()

    threads = [threading.Thread(target=by_runtime, args=(p,)) for p in runtimes for _ in range(4)] + \
              [threading.Thread(target=by_oip) for _ in range(8)]
    switches: list[tuple[float, float, int]] = []  # (activate called, activate returned, version)
    try:
        for t in threads:
            t.start()
        with connect(agent.address) as client:
            time.sleep(0.3)
            for v in order:
                t0 = time.monotonic()
                reply = client.activate(NAME, v)
                switches.append((t0, time.monotonic(), v))
                assert reply.active.version == v
                time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        for runtime in runtimes.values():
            runtime.close()

    assert failures == [], f"{len(failures)} failed calls, e.g. {failures[:3]}"
    assert len(calls) > 200, len(calls)
    for who in ("availability", "resource", "oip"):
        assert {c[3] for c in calls if c[0] == who} == {1, 2, 3}, f"{who} answered from every version"
    history = [1] + [v for _, _, v in switches]  # history[i]: active after the i-th activation
    begun, returned = [b for b, _, _ in switches], [r for _, r, _ in switches]
    wants = np.stack([expected[v] for v in (1, 2, 3)])
    late, wrong_output = [], []
    for who, asked, answered, version, out in calls:  # tens of thousands: kept cheap
        err = np.abs(wants - out).max(axis=(1, 2))
        if not (err[version - 1] <= 1e-4 and np.sum(err <= 1e-4) == 1):
            wrong_output.append((who, version, versions_matching(out, expected)))
        done_before = bisect.bisect_left(returned, asked)  # switches surely in effect when asked
        begun_before = bisect.bisect_left(begun, asked)  # ... or possibly (one was in flight)
        begun_by_answer = bisect.bisect_left(begun, answered)
        allowed = history[done_before:min(begun_before + 1, begun_by_answer) + 1]  # active when asked, or the next
        if version not in allowed:
            late.append((who, round(asked - switches[0][0], 3), version, allowed))
    assert wrong_output == [], f"answers whose output is not the version they name: {wrong_output[:5]}"
    assert late == [], f"answers neither from the version active when asked nor the next one: {late[:5]}"
    assert active_of(agent) == (order[-1], order[-2])


# ================================================================ 4. SIGKILL during an activation
def test_an_agent_sigkilled_during_or_after_an_activation_comes_back_with_exactly_one_active_version(
        agent_factory, deploy, models, expected, tmp_path):
    health = Health(tmp_path / "health")
    agent = agent_factory(health_cmd=health.cmd, health_timeout_s=60)
    for v in (1, 2, 3):
        push(agent, models, v, activate=(v == 1))
    health.set(2, "hang")

    # killed while version 2's health check runs: state.json holds the switch as pending
    outcome: list[BaseException] = []

    def activate_2() -> None:
        try:
            with connect(agent.address) as client:
                client.activate(NAME, 2)
        except BaseException as exc:  # noqa: BLE001 - looked at below
            outcome.append(exc)

    caller = threading.Thread(target=activate_2)
    caller.start()
    try:
        wait_for("version 2's health check to start", lambda: health.hang_pid() is not None)
        doc = state_doc(agent)
        assert (doc["history"][-1], doc["pending"]) == (2, 2), doc
        agent.kill()
    finally:
        health.end_hang()
        caller.join(30)
    assert outcome and isinstance(outcome[0], AgentError) and outcome[0].unreachable, outcome
    assert state_doc(agent)["pending"] == 2, "the kill left the activation pending on disk"

    agent.start()
    listed = models_ls(deploy, agent)
    assert (listed["active"], listed["previous"]) == (1, None), "the pending switch was rolled back at restart"
    assert [v["state"] for v in listed["versions"]] == ["verified"] * 3
    assert state_doc(agent)["pending"] is None and linked_version(agent) == 1
    assert "version 2's health check never finished; back on version 1" in agent.log()
    serves(agent, 1, expected)

    # killed right after an activation returned: the new version stays
    with connect(agent.address) as client:
        assert client.activate(NAME, 3).active.version == 3
    agent.kill()
    agent.start()
    assert active_of(agent) == (3, 1)
    assert state_doc(agent)["pending"] is None and linked_version(agent) == 3

    # killed at a random moment of back-to-back activations (a check that passes): one of the two, consistently
    rng = random.Random(23)
    for _ in range(2):
        stop = threading.Event()

        def flip() -> None:
            with contextlib.suppress(AgentError), connect(agent.address) as client:
                while not stop.is_set():
                    for v in (1, 3):
                        client.activate(NAME, v)

        flipper = threading.Thread(target=flip)
        flipper.start()
        time.sleep(rng.uniform(0.05, 0.4))
        agent.kill()
        stop.set()
        flipper.join(30)
        agent.start()
        active, _previous = active_of(agent)
        assert active in (1, 3) and linked_version(agent) == active
        assert state_doc(agent)["pending"] is None
        serves(agent, active, expected)


# ================================================================ 5. failing and hanging health checks
@pytest.mark.parametrize("mode, why", [
    ("fail", r"failed \(exit 3\): camera pipeline down on version 2"),
    ("hang", r"did not finish within 1 s"),
])
def test_a_failing_or_hanging_health_check_rolls_back_by_itself_and_the_cli_says_why(
        agent_factory, deploy, models, expected, tmp_path, mode, why):
    health = Health(tmp_path / "health")
    agent = agent_factory(health_cmd=health.cmd, health_timeout_s=1)
    push(agent, models, 1, activate=True)
    push(agent, models, 2)
    runtime = open_model(NAME, store=agent.store_dir)  # opened before the switch: it must come back to 1 by itself
    client = oip_client(agent)
    try:
        assert runtime.run_versioned({"input": X}).version == 1 and oip_infer(client)[0] == 1
        health.set(2, mode)
        t0 = time.monotonic()
        proc = deploy("activate", NAME, "--device", agent.address)
        took = time.monotonic() - t0
        assert proc.returncode == 1, (proc.returncode, proc.stderr)  # FAILED_PRECONDITION: a device failure
        line = one_error_line(proc)
        assert re.search(f"health check after activating '{NAME}' version 2 .*{why}.*; rolled back to version 1",
                         line), line
        assert took < 15, took
        if mode == "hang":
            pid = health.hang_pid()
            assert pid is not None
            assert not running(pid), "the hung check was ended, not left running"
        assert f"{NAME} 2" in health.checked()

        listed = listed_by_api(agent)
        assert (listed["active"], listed["previous"]) == (1, None)
        assert state_doc(agent)["pending"] is None and linked_version(agent) == 1
        r = runtime.run_versioned({"input": X})
        assert r.version == 1 and versions_matching(r.outputs["logits"], expected) == [1]
        version, out = oip_infer(client)
        assert version == 1 and versions_matching(out, expected) == [1]
    finally:
        client.close()
        runtime.close()
        health.end_hang()


# ================================================================ 6. bad input changes nothing
def test_unknown_names_unverified_versions_and_bad_infer_inputs_are_one_clear_error_and_change_nothing(
        agent_factory, deploy, models, expected):
    agent = agent_factory()
    dev = ("--device", agent.address)
    push(agent, models, 1, activate=True)
    push(agent, models, 2, verify=False)
    push(agent, models, 3)
    # version 3 as a JetPack upgrade leaves it: built for another backend version than the device has now
    record = repo_dir(agent) / "versions" / "3.json"
    doc = json.loads(record.read_text())
    doc["build"]["backend_version"] = "0.0.1"
    record.write_text(json.dumps(doc))
    state_before = (repo_dir(agent) / "state.json").read_bytes()

    proc = deploy("activate", "nope", *dev)
    assert proc.returncode == 2 and "no model named 'nope'" in one_error_line(proc), proc.stderr
    with connect(agent.address) as client:
        with pytest.raises(AgentError) as info:
            client.activate(NAME, 7)
        assert info.value.code == grpc.StatusCode.NOT_FOUND and "has no version 7" in str(info.value)

    listed = listed_by_api(agent)
    v2 = listed["versions"][1]
    assert (v2["version"], v2["state"], v2["verify"]) == (2, "unverified", None)
    assert "--no-verify" in v2["why"]
    v3 = listed["versions"][2]
    assert v3["state"] == "stale" and "backend_version 0.0.1" in v3["why"] and "push it again" in v3["why"], v3
    proc = deploy("activate", NAME, "2", *dev)
    line = one_error_line(proc)
    assert proc.returncode == 1, proc.stderr  # FAILED_PRECONDITION: host/cli/_errors.py, a device failure
    assert "FAILED_PRECONDITION" in line and "version 2 cannot be activated: not verified" in line, line
    with connect(agent.address) as client:
        with pytest.raises(AgentError) as info:
            client.activate(NAME, 2)
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(AgentError) as info:
            client.activate(NAME, 3)
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION, info.value
        assert "version 3 cannot be activated: built for backend_version 0.0.1" in str(info.value)
        with pytest.raises(AgentError) as info:
            client.rollback(NAME)
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION and "no previous version" in str(info.value)

    client = oip_client(agent)
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(NAME) and not client.is_model_ready("nope")
        meta = client.get_model_metadata(NAME)
        assert list(meta.versions) == ["1"]
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("input", "FP32", [1, 3, 32, 32])]
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [("logits", "FP32", [1, 10])]
        index = client.get_model_repository_index()
        assert [(m.name, m.version, m.state) for m in index.models] == [(NAME, "1", "READY")]
        for kwargs, words in (({"name": "images"}, "has no input 'images'"),
                              ({"x": X.astype(np.float64), "datatype": "FP64"}, "is float32, not float64"),
                              ({"x": X[:, :, :16, :16].copy()}, "has shape [1, 3, 16, 16]")):
            code, message = oip_error(lambda: oip_infer(client, **kwargs))
            assert code == "StatusCode.INVALID_ARGUMENT" and words in message, (kwargs.keys(), code, message)
        code, message = oip_error(lambda: oip_infer(client, model="nope"))
        assert code == "StatusCode.NOT_FOUND" and "no model named 'nope'" in message, (code, message)
        code, message = oip_error(lambda: oip_infer(client, version="2"))
        assert code == "StatusCode.NOT_FOUND" and "serves version 1, not 2" in message, (code, message)
        with open_model(NAME, store=agent.store_dir) as m:
            with pytest.raises(InvalidInput, match="has no input 'images'"):
                m.run({"images": X})
            with pytest.raises(InvalidInput, match="is float32, not float64"):
                m.run({"input": X.astype(np.float64)})
        version, out = oip_infer(client)
        assert version == 1 and versions_matching(out, expected) == [1], "the running version keeps serving"
    finally:
        client.close()
    assert (repo_dir(agent) / "state.json").read_bytes() == state_before, "nothing changed on the device"
    assert active_of(agent) == (1, None)
    serves(agent, 1, expected)


# ================================================================ 7. kept versions are pinned
def _pushed_three_with_keep_2(agent_factory, models) -> tuple[AgentHandle, dict[int, dict]]:
    agent = agent_factory(keep_versions=2)
    pushed = {v: push(agent, models, v) for v in (1, 2, 3)}  # none active yet: version 1 falls out of the kept
    with connect(agent.address) as client:
        client.activate(NAME, 3)
    return agent, pushed


def test_with_keep_versions_2_pruning_the_store_and_the_cache_leaves_the_kept_versions_bundles_and_engines(
        agent_factory, deploy, models, expected):
    agent, pushed = _pushed_three_with_keep_2(agent_factory, models)
    dev = ("--device", agent.address)
    listed = models_ls(deploy, agent)
    assert [v["version"] for v in listed["versions"]] == [2, 3] and listed["active"] == 3
    keys = {v["version"]: v["segments"][0]["engine_key"] for v in listed["versions"]}
    digest = {v: pushed[v]["bundle_digest"] for v in pushed}

    store = parse_json(deploy("store", "prune", *dev, "--all", "--json"))
    assert store["removed"] == [digest[1]], store
    cache = parse_json(deploy("cache", "prune", *dev, "--all", "--json"))
    assert keys[2] not in cache["removed"] and keys[3] not in cache["removed"] and len(cache["removed"]) == 1, cache

    with connect(agent.address) as client:
        assert {e.digest for e in client.list_store().entries} == {digest[2], digest[3]}
        assert {e.key for e in client.list_engines().engines} == {keys[2], keys[3]}
        # the replies name what they left alone
        again = client.prune(agent_pb2.PruneRequest(all=True))
        assert list(again.removed) == [] and sorted(again.kept) == sorted([keys[2], keys[3]])
        again = client.prune_store(agent_pb2.PruneStoreRequest(all=True))
        assert list(again.removed) == [] and sorted(again.kept) == sorted([digest[2], digest[3]])

    listed = listed_by_api(agent)
    assert [(v["version"], v["state"]) for v in listed["versions"]] == [(2, "verified"), (3, "verified")]
    serves(agent, 3, expected)
    with connect(agent.address) as client:  # the kept previous version is one activation away, no rebuild
        assert client.activate(NAME, 2).active.version == 2
    serves(agent, 2, expected)


def test_prune_json_names_the_kept_versions_files(agent_factory, deploy, models):
    agent, pushed = _pushed_three_with_keep_2(agent_factory, models)
    dev = ("--device", agent.address)
    store = parse_json(deploy("store", "prune", *dev, "--all", "--json"))
    cache = parse_json(deploy("cache", "prune", *dev, "--all", "--json"))
    assert sorted(store["kept"]) == sorted([pushed[2]["bundle_digest"], pushed[3]["bundle_digest"]])
    assert len(cache["kept"]) == 2


# ================================================================ readers of what is active, during switches
@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory, models: dict[int, Path]) -> Any:
    """One agent for the tests below that only switch between versions 1 and 2 (each leaves either active)."""
    root = tmp_path_factory.mktemp("switching")
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(REPO))
    agent = AgentHandle(store_dir=root / "store", args=[], log_path=root / "agent.log", env=env).start()
    try:
        push(agent, models, 1, activate=True)
        push(agent, models, 2)
        yield agent
    finally:
        agent.stop()


STABLE_PATH_POLLER = textwrap.dedent("""
    import os, sys
    active, stop = sys.argv[1:3]
    reads = misses = 0
    seen = set()
    while not os.path.exists(stop):
        reads += 1
        try:
            seen.add(open(os.path.join(active, "VERSION")).read().strip())
            os.stat(os.path.join(active, "trt_0.plan"))
        except FileNotFoundError:
            misses += 1
    print(reads, misses, ",".join(sorted(seen)))
""")


def test_the_stable_active_path_for_deepstream_never_disappears_during_switches(two_versions, tmp_path):
    agent = two_versions
    stop = tmp_path / "stop"
    poller = subprocess.Popen([sys.executable, "-c", STABLE_PATH_POLLER, str(repo_dir(agent) / "active"), str(stop)],
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.2)
        with connect(agent.address) as client:
            for i in range(40):
                client.activate(NAME, 1 + i % 2)
        time.sleep(0.1)
    finally:
        stop.write_text("")
        out = poller.communicate(timeout=30)[0].split()
    reads, misses = int(out[0]), int(out[1])
    assert reads > 1000 and set(out[2].split(",")) == {"1", "2"}, out
    assert misses == 0, f"models/{NAME}/active was missing at {misses} of {reads} reads during 40 switches"


def test_with_policy_resource_what_is_loaded_can_be_asked_during_a_swap(two_versions):
    agent = two_versions
    errors: list[str] = []
    stop = threading.Event()
    with open_model(NAME, store=agent.store_dir, policy="resource") as m:
        def ask() -> None:
            while not stop.is_set():
                try:
                    assert m.version in (1, 2) and [s.name for s in m.inputs] == ["input"]
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    errors.append(f"{type(exc).__name__}: {exc}")

        asker = threading.Thread(target=ask)
        asker.start()
        try:
            with connect(agent.address) as client:
                for i in range(10):
                    v = 1 + i % 2
                    client.activate(NAME, v)
                    assert m.run_versioned({"input": X}).version == v  # the swap, on this thread
        finally:
            stop.set()
            asker.join(30)
    assert errors == [], f"{len(errors)} failed reads of what is loaded, e.g. {errors[:1]}"
