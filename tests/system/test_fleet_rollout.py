"""`deploy fleet rollout` and `deploy fleet status` over 24 real agents in 3 device classes on loopback.

The classes differ by the profile each agent reports (`--profile`), so each class gets its own bundle. Every agent
runs one health command that appends "NAME VERSION" to its own log at each activation (the count of activations
the tests check) and fails, like a camera pipeline that is down, when the test drops a `fail-NAME-VERSION` file
into its class's directory (a `slow-NAME` file makes it take a second). Each device has the tags `lab` and its
profile, so a test can roll out over one class. The agents are shared by the tests of this module; each test uses
its own model name.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
import tomli_w

from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.fleet.rollout_db import RolloutDB
from host.inventory import Device
from tests.conftest import REPO, AgentHandle, agent_flags, deploy_bin
from tests.host.cli.helpers import interrupt_after, parse_json, tiny_conv_net

pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(420)]

PROFILES = ("jetson-nano", "jetson-xavier-nx", "x86-cpu")  # sorted: the order classes take in a wave
PER_CLASS = 8
HEALTH = """#!/bin/sh
echo "$DEPLOY_MODEL_NAME $DEPLOY_MODEL_VERSION" >> "$1"
if [ -e "$2/slow-$DEPLOY_MODEL_NAME" ]; then sleep 1; fi
if [ -e "$2/fail-$DEPLOY_MODEL_NAME-$DEPLOY_MODEL_VERSION" ]; then echo "camera pipeline down"; exit 3; fi
"""


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.handles: dict[str, AgentHandle] = {}
        self.profile: dict[str, str] = {}
        self.inventory = root / "deploy.toml"
        self.env = dict(os.environ, DEPLOY_INVENTORY=str(self.inventory))

    def class_dir(self, profile: str) -> Path:
        return self.root / "classes" / profile

    def activations(self, device: str, name: str) -> list[int]:
        """The versions of NAME each activation on `device` ran its health check for, in order."""
        log = self.root / "health" / f"{device}.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [int(line.split()[1]) for line in lines if line.split()[0] == name]

    def active(self, device: str, name: str) -> tuple:
        with AgentClient(Device(name=device, address=self.handles[device].address)) as client:
            models = client.list_models(name).models
        m = models[0]
        return (m.active if m.HasField("active") else None), (m.previous if m.HasField("previous") else None)

    def serving(self, device: str, name: str) -> tuple:
        """(active, previous) of NAME on `device`; (None, None) while the device never recorded NAME."""
        try:
            return self.active(device, name)
        except AgentError as exc:
            assert exc.code.name == "NOT_FOUND", exc
            return None, None

    def of_class(self, profile: str) -> list[str]:
        return [d for d in self.handles if self.profile[d] == profile]

    def deploy(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([deploy_bin(), *args], capture_output=True, text=True, timeout=timeout, env=self.env)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("rollout-fleet")
    fl = Fleet(root)
    script = root / "health.sh"
    script.write_text(HEALTH)
    (root / "health").mkdir()
    env = dict(os.environ)
    env.setdefault("PYTHONPATH", str(REPO))
    handles = []
    for k, profile in enumerate(PROFILES):
        fl.class_dir(profile).mkdir(parents=True)
        for i in range(PER_CLASS):
            name = f"c{k}-{i}"
            (root / name).mkdir()
            health = f"sh {script} {root / 'health' / (name + '.log')} {fl.class_dir(profile)}"
            h = AgentHandle(store_dir=root / name / "store", log_path=root / name / "agent.log", env=env,
                            args=agent_flags(profile=profile, health_cmd=health, health_timeout_s=5))
            fl.handles[name], fl.profile[name] = h, profile
            handles.append(h)
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda h: h.start(), handles))
        entries = {n: {"address": h.address, "tags": ["lab", fl.profile[n]]} for n, h in fl.handles.items()}
        fl.inventory.write_text(tomli_w.dumps({"devices": entries}))
        yield fl
    finally:
        for h in handles:
            h.stop()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rollout-models")
    return {"good": tiny_conv_net(root / "good.onnx", seed=1), "other": tiny_conv_net(root / "other.onnx", seed=2)}


def rollout_json(fleet: Fleet, *args: str, exit_code: int = 0) -> dict:
    proc = fleet.deploy("fleet", "rollout", *args, "--json")
    return parse_json(proc, exit_code)


def test_a_healthy_version_reaches_all_24_and_a_failing_one_stops_at_its_wave_and_leaves_all_24_as_they_were(
        fleet, models):
    first = rollout_json(fleet, str(models["good"]), "--name", "det", "--tag", "lab", "--health-timeout", "30")
    assert first["state"] == "done" and len(first["activated"]) == 24 and first["failed"] == [], first
    assert len(first["bundles"]) == 3  # one bundle per class, built once per class
    for d in fleet.handles:
        assert fleet.active(d, "det") == (1, None)
        assert fleet.activations(d, "det") == [1]

    bad_class = PROFILES[2]
    (fleet.class_dir(bad_class) / "fail-det-2").touch()
    proc = fleet.deploy("fleet", "rollout", str(models["other"]), "--name", "det", "--waves", "1,10%,50%,100%",
                        "--health-timeout", "30", "--json", "--events")
    second = parse_json(proc, exit_code=1)
    assert second["state"] == "rolled_back" and "more than --max-failures 0" in second["detail"], second
    [failed] = second["failed"]
    assert fleet.profile[failed] == bad_class
    row = next(d for d in second["devices"] if d["device"] == failed)
    assert "camera pipeline down" in row["last_step"]["detail"] and "rolled back to version 1" in \
        row["last_step"]["detail"]
    # the wave that met the failing class was the last one started: later devices were never touched
    stop_wave = row["wave"]
    assert stop_wave == 2
    for d in second["devices"]:
        if d["wave"] > stop_wave:
            assert d["outcome"] == "not_started" and d["last_step"] is None, d
    assert len(second["not_started"]) == 24 - 3 and sorted(second["rolled_back"]) == sorted(
        d["device"] for d in second["devices"] if d["wave"] <= stop_wave and d["device"] != failed)
    for d in fleet.handles:
        assert fleet.active(d, "det")[0] == 1, d  # every device on the version it had
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(e["event"] == "stopped" for e in events)
    assert sum(1 for e in events if e["event"] == "step" and e["step"] == "rollback" and e["state"] == "done") == 2

    status = parse_json(fleet.deploy("fleet", "status", "det", "--json"))
    assert status["expected_from"] == first["id"] and status["drifted"] == []
    assert {r["active"] for r in status["devices"]} == {1}
    assert {r["device"]: r["last_rollout"]["step"] for r in status["devices"]
            if r["last_rollout"]["id"] == second["id"]}[failed] == "activate"
    plain = fleet.deploy("fleet", "status", "det")
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert len(lines) == 24 + 2 and all(len(line) <= 80 for line in lines), plain.stdout


def _kill_mid_activation(fleet: "Fleet", cmd: list[str], name: str, activations: int) -> tuple[int, set[str]]:
    """Run the CLI; SIGKILL it once the record shows `activations` activations done and one still in flight that
    the agent has already begun (its health check wrote its line: the host dies between asking the agent and
    hearing back). Returns the rollout id and the devices whose agent had begun the activation at the kill."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=fleet.env)
    reached: set[str] = set()
    try:
        deadline = time.monotonic() + 240
        with RolloutDB() as db:
            while time.monotonic() < deadline and proc.poll() is None:
                rollouts = db.rollouts(name)
                steps = db.steps(rollouts[0].id) if rollouts else []
                done = sum(1 for s in steps if s.step == "activate" and s.state == "done")
                # begun less than half a second ago: with a health check of a second it is far from its end (an
                # activation about to end could still be written done while the signal is on its way)
                fresh = [s.device for s in steps if s.step == "activate" and s.state == "started"
                         and time.time() - s.time < 0.5]
                reached = {d for d in fresh if fleet.activations(d, name)}
                if done >= activations and reached:
                    proc.send_signal(signal.SIGKILL)
                    break
                time.sleep(0.02)
    finally:
        if proc.poll() is None and time.monotonic() >= deadline:
            proc.kill()
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL, "the rollout ended before the test could kill it"
    return rollouts[0].id, reached


def test_the_host_sigkilled_mid_rollout_is_resumed_and_each_device_is_activated_exactly_once(fleet, models):
    for profile in PROFILES:
        (fleet.class_dir(profile) / "slow-cam").touch()  # activations take a second: the kill lands mid-way
    cmd = [deploy_bin(), "fleet", "rollout", str(models["good"]), "--name", "cam", "--waves", "25%,50%,100%",
           "--concurrency", "4", "--health-timeout", "8"]
    rid, reached = _kill_mid_activation(fleet, cmd, "cam", activations=9)
    with RolloutDB() as db:
        assert db.rollout(rid).state == "running"
        in_flight = [s.device for s in db.steps(rid) if s.step == "activate" and s.state == "started"]
        assert in_flight

    proc = fleet.deploy("fleet", "rollout", "--resume", str(rid), "--json")
    resumed = parse_json(proc)
    assert resumed["state"] == "done" and len(resumed["activated"]) == 24, resumed
    settled = {d["device"]: d["last_step"] for d in resumed["devices"] if d["device"] in in_flight}
    assert reached <= set(settled)
    for device, step in settled.items():
        assert step["step"] == "activate" and step["state"] == "done", step
        if device in reached:  # the agent finished the check alone: found active, not switched again
            assert (step["detail"] or "").startswith("found active"), step
        # a device whose request had not reached its agent at the kill is activated by the resume: once, below
    for d in fleet.handles:
        assert fleet.activations(d, "cam") == [1], d  # exactly one activation each, across both runs
        assert fleet.active(d, "cam") == (1, None)
    again = parse_json(fleet.deploy("fleet", "rollout", "--resume", str(rid), "--json"))
    assert again["state"] == "done"
    assert all(fleet.activations(d, "cam") == [1] for d in fleet.handles)


def test_an_agent_down_during_its_wave_is_reported_unreachable_and_reached_by_resume(fleet, models):
    from host import api

    victim: list[str] = []
    started: list[int] = []

    def on_event(event) -> None:
        if event.kind == "rollout":
            started.append(int(event.detail.split()[1]))
        if event.kind == "wave" and event.wave == 1 and not victim:
            with RolloutDB() as db:
                victim.append(next(t.device for t in db.targets(started[0]) if t.wave == 2))
            fleet.handles[victim[0]].kill()

    saved = os.environ.get("DEPLOY_INVENTORY")
    os.environ["DEPLOY_INVENTORY"] = str(fleet.inventory)
    try:
        data = api.fleet_rollout(models["good"], "ocr", ["lab"], waves="3,100%", health_timeout=30,
                                 on_event=on_event)
    finally:
        if saved is None:
            os.environ.pop("DEPLOY_INVENTORY", None)
        else:
            os.environ["DEPLOY_INVENTORY"] = saved
    assert victim and data["state"] == "incomplete" and data["unreachable"] == victim, data
    assert data["failed"] == [] and len(data["activated"]) == 23
    assert f"--resume {data['id']}" in data["detail"]
    assert fleet.activations(victim[0], "ocr") == []

    down = fleet.deploy("fleet", "status", "ocr", "--json")
    assert down.returncode == 1 and [r["device"] for r in json.loads(down.stdout)["devices"]
                                     if r["state"] != "up"] == victim

    fleet.handles[victim[0]].start()  # same port, same store
    resumed = parse_json(fleet.deploy("fleet", "rollout", "--resume", str(data["id"]), "--json"))
    assert resumed["state"] == "done" and len(resumed["activated"]) == 24 and resumed["unreachable"] == []
    for d in fleet.handles:
        assert fleet.activations(d, "ocr") == [1], d


def test_bad_input_is_one_line_exit_2_and_starts_nothing(fleet, models):
    with RolloutDB() as db:
        before = len(db.rollouts("bad"))
    cases = [
        (["--tag", "nosuch"], "no devices with tag(s) nosuch"),
        (["--waves", "1,50%"], "must be 100%"),
        (["--waves", "50%,10%,100%"], "does not increase"),
        (["--waves", "30,10%,100%"], "must increase"),
        (["--max-failures", "-1"], "--max-failures '-1'"),
        (["--max-failures", "-5%"], "--max-failures '-5%'"),
    ]
    for args, words in cases:
        proc = fleet.deploy("fleet", "rollout", str(models["good"]), "--name", "bad", *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], (args, proc.stderr)
    for args, words in ((["nosuch"], "no device has a model named 'nosuch'"),
                        (["det", "--tag", "nosuch"], "no devices with tag(s) nosuch")):
        proc = fleet.deploy("fleet", "status", *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], (args, proc.stderr)
    proc = fleet.deploy("fleet", "rollout", "--resume", "99999")
    assert proc.returncode == 2 and "no rollout 99999" in proc.stderr
    with RolloutDB() as db:
        assert len(db.rollouts("bad")) == before
    assert all(fleet.activations(d, "bad") == [] for d in fleet.handles)


def test_ctrl_c_exits_130_once_the_steps_in_flight_are_recorded_and_resume_finishes(fleet, models):
    for profile in PROFILES:
        (fleet.class_dir(profile) / "slow-seg").touch()
    cmd = [deploy_bin(), "fleet", "rollout", str(models["good"]), "--name", "seg", "--waves", "50%,100%",
           "--concurrency", "4", "--health-timeout", "8"]
    saved = os.environ.get("DEPLOY_INVENTORY")
    os.environ["DEPLOY_INVENTORY"] = str(fleet.inventory)
    try:
        code, before, after, exit_s = interrupt_after(cmd, " activate done")
    finally:
        if saved is None:
            os.environ.pop("DEPLOY_INVENTORY", None)
        else:
            os.environ["DEPLOY_INVENTORY"] = saved
    assert code == 130 and exit_s < 8, (before, after)
    rid = int(before.split("rollout ", 1)[1].split()[0])
    assert f"--resume {rid}" in after and after.strip().splitlines()[-1].startswith("error: interrupted")
    with RolloutDB() as db:
        steps = db.steps(rid)
    assert not any(s.state == "started" for s in steps)  # the steps in flight ended and were recorded
    assert len([s for s in steps if s.step == "activate"]) < 24

    resumed = parse_json(fleet.deploy("fleet", "rollout", "--resume", str(rid), "--json"))
    assert resumed["state"] == "done" and len(resumed["activated"]) == 24
    assert all(fleet.activations(d, "seg") == [1] for d in fleet.handles)


def test_a_bound_in_percent_lets_failures_up_to_it_pass_and_devices_that_had_no_version_go_back_to_none(
        fleet, models):
    bad_class = PROFILES[2]
    (fleet.class_dir(bad_class) / "fail-cold-1").touch()  # "cold" is new: no device has a version of it
    proc = fleet.deploy("fleet", "rollout", str(models["good"]), "--name", "cold", "--max-failures", "10%",
                        "--health-timeout", "30", "--json")
    data = parse_json(proc, exit_code=1)
    # 10% of 24 is 2: the failure of wave 2 (sizes 1, 2, 9, 12) is within it, so wave 3 starts and passes it
    assert data["state"] == "rolled_back" and "more than --max-failures 10% (2 of 24)" in data["detail"], data
    waves = {d["device"]: d["wave"] for d in data["devices"]}
    assert {waves[d] for d in data["failed"]} == {2, 3} and len(data["failed"]) >= 3
    assert all(fleet.profile[d] == bad_class for d in data["failed"])
    assert {waves[d] for d in data["not_started"]} >= {4}
    assert all(d["last_step"] is None for d in data["devices"] if d["wave"] == 4)
    assert data["rolled_back"] and all(waves[d] <= 3 for d in data["rolled_back"])
    for d in data["devices"]:
        if d["outcome"] == "rolled_back":
            assert d["last_step"]["step"] == "rollback" and d["last_step"]["version"] is None, d
    for d in fleet.handles:  # every device switched is back to no version active, as it was before
        assert fleet.serving(d, "cold")[0] is None, d


def test_an_activation_past_health_timeout_is_a_failure_and_the_device_is_put_back(fleet, models):
    profile = PROFILES[1]
    (fleet.class_dir(profile) / "slow-hang").touch()  # the health check takes 1 s, the host waits 0.5 s
    proc = fleet.deploy("fleet", "rollout", str(models["good"]), "--name", "hang", "--tag", profile,
                        "--waves", "1,100%", "--health-timeout", "0.5", "--json")
    data = parse_json(proc, exit_code=1)
    [failed] = data["failed"]
    assert data["state"] == "rolled_back" and data["rolled_back"] == [], data
    assert len(data["not_started"]) == PER_CLASS - 1
    row = next(d for d in data["devices"] if d["device"] == failed)
    assert row["last_step"]["step"] == "rollback" and row["last_step"]["state"] == "done", row
    with RolloutDB() as db:
        act = next(s for s in db.steps(data["id"]) if s.device == failed and s.step == "activate")
    assert act.state == "failed" and act.detail.startswith("no answer within --health-timeout 0.5 s"), act
    # the agent passed its own check after the host gave up; the rollout took that switch back
    assert fleet.activations(failed, "hang") == [1]
    assert fleet.serving(failed, "hang") == (None, None)
    assert all(fleet.activations(d, "hang") == [] for d in fleet.of_class(profile) if d != failed)


def test_fleet_status_shows_a_device_switched_by_hand_as_drift(fleet, models):
    profile = PROFILES[0]
    done = rollout_json(fleet, str(models["good"]), "--name", "drift", "--tag", profile, "--waves", "100%")
    assert done["state"] == "done" and sorted(done["activated"]) == sorted(fleet.of_class(profile)), done
    moved = sorted(done["activated"])[0]
    with AgentClient(Device(name=moved, address=fleet.handles[moved].address)) as client:
        client.deactivate("drift")  # someone on the device, not a rollout

    status = parse_json(fleet.deploy("fleet", "status", "drift", "--tag", profile, "--json"), exit_code=1)
    assert status["drifted"] == [moved] and status["expected_from"] == done["id"], status
    assert sorted(r["device"] for r in status["devices"]) == sorted(fleet.of_class(profile))
    row = next(r for r in status["devices"] if r["device"] == moved)
    assert row["active"] is None and row["previous"] is None and row["expected_bundle"] in done["bundles"].values()
    plain = fleet.deploy("fleet", "status", "drift", "--tag", profile)
    lines = plain.stdout.splitlines()
    assert plain.returncode == 1 and len(lines) == PER_CLASS + 2 and all(len(line) <= 80 for line in lines)
    assert [line.split()[0] for line in lines if "DRIFT" in line] == [moved] and "1 drifted" in lines[-1]
