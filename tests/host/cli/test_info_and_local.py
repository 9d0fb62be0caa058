"""`deploy info`, the on-demand local agent, and the inventory, through the installed entry point."""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest


def test_info_json_has_documented_keys_from_real_probes(agent, deploy):
    proc = deploy("info", "--device", agent.address, "--json", check=True)
    data = json.loads(proc.stdout)
    assert data["address"] == agent.address
    assert data["agent_version"] and data["arch"] == os.uname().machine
    assert isinstance(data["backends"], list)
    assert "trt_version" in data  # null where no TensorRT is importable: this machine has none
    assert data["trt_version"] is None
    assert data["cpu_count"] == os.cpu_count()
    assert data["store_free_bytes"] > 0 and data["memory_total_bytes"] > 0
    assert data["jetson_model"] is None and data["l4t_release"] is None  # absent, not guessed


def test_unreachable_device_exits_3_with_one_line(deploy):
    proc = deploy("info", "--device", "127.0.0.1:1")
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and "unreachable" in proc.stderr


def test_unknown_device_name_exits_2_naming_the_inventory(deploy, tmp_path):
    proc = deploy("info", "--device", "nano-99", cwd=tmp_path)
    assert proc.returncode == 2 and "nano-99" in proc.stderr and "inventory" in proc.stderr


def test_inventory_device_resolves_to_its_address(agent, deploy, tmp_path):
    (tmp_path / "deploy.toml").write_text(
        f'[devices.bench-01]\naddress = "{agent.address}"\nprofile = "x86-cpu"\ntags = ["lab"]\n')
    data = json.loads(deploy("info", "--device", "bench-01", "--json", cwd=tmp_path, check=True).stdout)
    assert data["address"] == agent.address


@pytest.mark.parametrize("text, expected", [
    ('[devices.a]\nprofile = "x"\n', "devices.a.address"),
    ('[devices.a]\naddress = "nohost"\n', "HOST:PORT"),
    ('[devices.a]\naddress = "h:1"\ncolour = "red"\n', "colour"),
    ("[devices.a\n", "not valid TOML"),
])
def test_bad_inventory_is_one_clear_line_and_exit_2(deploy, tmp_path, text, expected):
    (tmp_path / "deploy.toml").write_text(text)
    proc = deploy("info", "--device", "a", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and proc.stderr.count("\n") == 1


def test_local_agent_starts_on_demand_is_reused_and_stops(deploy, tmp_path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    first = json.loads(deploy("info", "--device", "local", "--json", env=env, check=True).stdout)
    second = json.loads(deploy("info", "--device", "local", "--json", env=env, check=True).stdout)
    assert first["address"] == second["address"]  # the same agent answered twice
    state = json.loads((tmp_path / "cache" / "deploy" / "local-agent.json").read_text())
    pid = state["pid"]
    os.kill(pid, 0)
    assert (tmp_path / "cache" / "deploy" / "agent" / "store").is_dir()  # store under the user cache dir
    stopped = json.loads(deploy("agent", "stop", "--device", "local", "--json", env=env, check=True).stdout)
    assert stopped["stopped"] is True
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("local agent still running after `deploy agent stop`")
    again = json.loads(deploy("agent", "stop", "--device", "local", "--json", env=env, check=True).stdout)
    assert again["stopped"] is False


def test_local_agent_exits_by_itself_when_idle(tmp_path):
    """The idle exit the local agent is started with, shortened to a second."""
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "device_agent", "--listen", "127.0.0.1:0", "--store",
                             str(tmp_path / "store"), "--idle-exit-s", "1"], stdout=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"deploy-agent listening on")
    assert proc.wait(timeout=20) == 0


def test_agent_serve_runs_the_agent_in_the_foreground(deploy_path, tmp_path):
    proc = subprocess.Popen([deploy_path, "agent", "serve", "--listen", "127.0.0.1:0", "--store",
                             str(tmp_path / "store"), "--idle-exit-s", "1"], stdout=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"deploy-agent listening on 127.0.0.1:")
    assert proc.wait(timeout=20) == 0


def test_agent_refuses_to_listen_beyond_loopback_without_credentials(tmp_path):
    import sys

    proc = subprocess.run([sys.executable, "-m", "device_agent", "--listen", "0.0.0.0:0", "--store",
                           str(tmp_path / "store")], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "--insecure" in proc.stderr


def test_deploy_agent_help_lists_every_setting_with_its_environment_variable():
    import sys

    out = subprocess.run([sys.executable, "-m", "device_agent", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for flag, env in (("--fp16", "DEPLOY_AGENT_FP16"), ("--cache-dir", "DEPLOY_AGENT_CACHE_DIR"),
                      ("--max-workspace-bytes", "DEPLOY_AGENT_MAX_WORKSPACE_BYTES"),
                      ("--multi-engine-mode", "DEPLOY_AGENT_MULTI_ENGINE_MODE")):
        assert flag in out and env in out
