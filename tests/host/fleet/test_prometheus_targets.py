"""`deploy fleet prometheus-targets`: the inventory as file_sd targets, and a real Prometheus scraping from them."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from host.fleet.prometheus import scrape_targets
from host.inventory import Device, TlsFiles


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_device_becomes_one_target_on_its_host_at_the_metrics_port_labelled_and_https_under_tls(tmp_path):
    devices = [Device(name="nano-01", address="nano-01.lab:7311", profile="jetson-nano", tags=["lab", "cam"]),
               Device(name="v6", address="[fd00::7]:7311", tls=TlsFiles(ca=tmp_path / "ca.pem"))]
    assert scrape_targets(devices, 9400) == [
        {"targets": ["nano-01.lab:9400"], "labels": {"device": "nano-01", "profile": "jetson-nano", "tags": "lab,cam"}},
        {"targets": ["[fd00::7]:9400"], "labels": {"device": "v6", "profile": "", "tags": "", "__scheme__": "https"}},
    ]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Prometheus (apt-get install prometheus)")
def test_a_real_prometheus_scrapes_the_agents_the_targets_file_names(agent_factory, deploy, tmp_path):
    metrics_port = _free_port()
    agent = agent_factory(metrics_listen=f"127.0.0.1:{metrics_port}")
    inventory = tmp_path / "deploy.toml"
    inventory.write_text(f'[devices.board-1]\naddress = "{agent.address}"\nprofile = "x86-cpu"\ntags = ["lab"]\n')
    targets = tmp_path / "targets.json"
    proc = deploy("fleet", "prometheus-targets", "--metrics-port", str(metrics_port), "-o", str(targets),
                  env={**os.environ, "DEPLOY_INVENTORY": str(inventory)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(targets.read_text())[0]["targets"] == [f"127.0.0.1:{metrics_port}"]
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: deploy-agents\n    file_sd_configs:\n"
        f"      - files: [{targets}]\n")
    web = _free_port()
    prom = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{web}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        query = urllib.parse.quote('deploy_agent_store_free_bytes{device="board-1",tags="lab"}')
        result: list = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not result:
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/v1/query?query={query}", timeout=5) as r:
                    result = json.loads(r.read())["data"]["result"]
            except OSError:
                continue
    finally:
        prom.terminate()
        prom.wait(10)
    assert result and float(result[0]["value"][1]) > 0, "Prometheus never scraped the agent"
