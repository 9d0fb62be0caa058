"""An agent the host never calls (as behind NAT) gets its class's bundle, engines and timing cache by polling the
registry (--registry-poll-s): real registry process, real agents, `deploy fleet warm --via-registry` publishing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import tomli_w

from device_agent.cache import device_class
from device_agent.registry import RegistryClient, RegistryRef, class_tag
from host.client.agent import AgentClient
from host.client.errors import AgentError
from host.inventory import Device
from protos import agent_pb2
from tests.conftest import REPO
from tests.device_agent.onnx_models import conv_net
from tests.device_agent.test_timing_cache import chunks, class_facts
from tests.host.fleet.test_warm_timing import sha


def test_an_agent_polling_its_class_tag_pulls_what_fleet_warm_published_without_any_host_call(
        agent_factory, registry, tmp_path, deploy):
    model = tmp_path / "convnet.onnx"
    model.write_bytes(conv_net(seed=8, channels=8))
    ref = f"{registry.address}/fleet/poll"
    builder = agent_factory(registry=ref)
    behind_nat = agent_factory(registry=ref, registry_poll_s=0.2)  # not in the inventory: the host cannot reach it
    timing = b"the builder's timing cache " * 300
    with AgentClient(Device(name="b", address=builder.address)) as c:
        c.put_timing_cache(chunks(class_facts(c), timing))
    inventory = tmp_path / "deploy.toml"
    inventory.write_text(tomli_w.dumps({"devices": {"b": {"address": builder.address, "profile": "x86-cpu"}}}))
    proc = deploy("fleet", "warm", str(model), "--via-registry", "--registry", ref, "--json",
                  env=dict(os.environ, DEPLOY_INVENTORY=str(inventory)), timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    (cls,) = json.loads(proc.stdout)["classes"]
    digest, (key,) = cls["bundle_digest"], cls["engines"]
    with AgentClient(Device(name="nat", address=behind_nat.address)) as c:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (c.query_upload(digest).complete and
                                                   [e.key for e in c.list_engines().engines] == [key]):
            time.sleep(0.1)
        assert c.query_upload(digest).complete, behind_nat.log()[-2000:]
        assert [e.key for e in c.list_engines().engines] == [key]
        assert [t.digest for t in c.list_engines().timing_caches] == [sha(timing)]
        summary = [e.summary for e in c.build(digest, agent_pb2.BuildOptions()) if e.WhichOneof("event") == "summary"]
        assert summary[0].built == 0 and summary[0].cache_hits == summary[0].segments
        (entry,) = c.list_engines().engines
    # the tag it polled is its own class's, which it computes itself; the host named it nowhere but the registry
    doc, _ = RegistryClient(RegistryRef.parse(ref)).manifest(class_tag(entry.device_class))
    assert doc["annotations"]["org.jetson-deploy.bundle.digest"] == digest
    log = behind_nat.log()  # every RPC it served is logged (method=...): only this test's own checks above
    assert "registry poll: holds bundle" in log
    assert "DeviceAgent/Pull" not in log and "DeviceAgent/GetInfo" not in log and "DeviceAgent/Upload" not in log
    assert device_class(json.loads(entry.attributes["parts"])) == entry.device_class



@pytest.mark.parametrize("args, says", [(["--registry-poll-s", "1"], "needs --registry"),
                                        (["--registry-poll-s", "-1", "--registry", "127.0.0.1:5000/a"], "seconds > 0"),
                                        (["--registry-poll-s", "1", "--registry", "no-repo"], "HOST[:PORT]/REPO")])
def test_an_agent_told_to_poll_without_a_usable_registry_refuses_to_start_in_one_line(tmp_path, args, says):
    proc = subprocess.run([sys.executable, "-m", "device_agent", "--listen", "127.0.0.1:0", "--store",
                           str(tmp_path / "store"), *args], capture_output=True, text=True, timeout=60, cwd=str(REPO))
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], proc.stderr


# ---------------------------------------------------------------- model targets: the version that should be active
def _models(agent) -> dict:
    with AgentClient(Device(name="nat", address=agent.address)) as c:
        (m,) = c.list_models("det").models
        return {"active": m.active if m.HasField("active") else None,
                "previous": m.previous if m.HasField("previous") else None,
                "versions": [(v.version, v.bundle_digest) for v in m.versions]}


def _wait(what: str, cond, agent, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except AgentError:  # the name not there yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {agent.log()[-3000:]}")


def test_a_polling_agent_the_host_never_calls_activates_the_version_its_class_artifact_names(
        agent_factory, registry, tmp_path):
    from device_agent.registry import RegistryClient, RegistryRef
    from host.fleet.via_registry import RegistryWarmer
    from host.fleet.warm import ClassPlan
    from host.registry.publish import publish_model_target, publish_no_model_active
    from tests.device_agent.onnx_models import single_segment_bundle
    from tests.device_agent.test_metrics import HealthScript, labelled, metrics_url, scrape

    ref = f"{registry.address}/fleet/targets"
    reg = RegistryClient(RegistryRef.parse(ref))
    health = HealthScript(tmp_path / "health")
    builder = agent_factory(registry=ref)
    nat = agent_factory(registry=ref, registry_poll_s=0.2, metrics_listen="127.0.0.1:0", health_cmd=health.cmd,
                        health_timeout_s=30)  # not in any inventory: nothing but the registry reaches it
    url = metrics_url(nat)

    def warm(seed: int) -> tuple[str, str]:
        archive, _, _ = single_segment_bundle(tmp_path / f"b{seed}", conv_net(seed=seed), f"det{seed}")
        result = RegistryWarmer([Device(name="b", address=builder.address, profile="x86-cpu")],
                                lambda cls, info, device: ClassPlan(archive), registry=reg).run()
        (cls,) = result.classes
        assert result.ok and cls.published, cls.to_dict()
        return cls.bundle_digest, cls.published

    def metric(name: str, **labels: str) -> float:
        return labelled(scrape(url), name, name="det", **labels)

    def activated(version: int, ok: int) -> None:
        """Wait for `version` active with its health check passed (ListModels shows it active while the check
        runs; the activation is counted once it passed)."""
        _wait(f"version {version} active", lambda: metric("deploy_agent_model_activations_total", result="ok") == ok
              and _models(nat)["active"] == version, nat)

    first, first_engines = warm(1)
    published = publish_model_target(reg, first_engines, "det", first, 1e-3)
    activated(1, ok=1)
    assert _models(nat) == {"active": 1, "previous": None, "versions": [(1, first)]}
    assert metric("deploy_agent_model_active_version") == 1
    assert metric("deploy_agent_model_activations_total", result="ok") == 1

    # later polls (and the same target published again: the same manifest) do nothing new
    assert publish_model_target(reg, first_engines, "det", first, 1e-3).manifest_digest == \
        published.manifest_digest
    time.sleep(1.5)  # several polls
    assert _models(nat) == {"active": 1, "previous": None, "versions": [(1, first)]}
    assert metric("deploy_agent_model_activations_total", result="ok") == 1
    assert nat.log().count("registry poll: model 'det' version 1") == 1, nat.log()[-3000:]

    # a new version for the class, then the host takes the class back: the kept version 1 is used again
    second, second_engines = warm(2)
    publish_model_target(reg, second_engines, "det", second, 1e-3)
    activated(2, ok=2)
    publish_model_target(reg, first_engines, "det", first, 1e-3)
    activated(1, ok=3)
    assert _models(nat) == {"active": 1, "previous": 2, "versions": [(1, first), (2, second)]}
    assert metric("deploy_agent_model_activations_total", result="ok") == 3

    # version 2 again, but its health check fails on this device: back on version 1 by itself, counted, not retried
    health.set("fail")
    publish_model_target(reg, second_engines, "det", second, 1e-3)
    _wait("the failed health check counted", lambda: metric("deploy_agent_model_rollbacks_total",
                                                            reason="health") == 1, nat)
    assert metric("deploy_agent_model_activations_total", result="health_failed") == 1
    assert metric("deploy_agent_model_rollbacks_total", reason="health") == 1
    assert metric("deploy_agent_model_active_version") == 1
    time.sleep(1.0)
    assert _models(nat)["active"] == 1 and len(_models(nat)["versions"]) == 2
    assert metric("deploy_agent_model_activations_total", result="health_failed") == 1, "tried once per artifact"
    assert metric("deploy_agent_model_activations_total", result="ok") == 3
    log = nat.log()
    assert "health check after activating 'det' version 2" in log and "rolled back to version 1" in log
    for rpc in ("RegisterVersion", "Activate", "Rollback", "Deactivate", "Pull", "Upload"):
        assert f"DeviceAgent/{rpc}" not in log, rpc

    # the host takes the class back to "none active" (what it had before version 1): kept versions stay
    publish_no_model_active(reg, first_engines, "det", first)
    _wait("no version active", lambda: _models(nat)["active"] is None, nat)
    assert [v for v, _ in _models(nat)["versions"]] == [1, 2]
    assert metric("deploy_agent_model_active_version") == 0
    assert metric("deploy_agent_model_rollbacks_total", reason="deactivate") == 1


def test_a_model_target_for_engines_that_are_not_there_is_refused_on_the_host(registry):
    from device_agent.errors import InvalidInput, NotFound
    from device_agent.registry import RegistryClient, RegistryRef, engines_tag
    from host.registry.publish import publish_model_target

    reg = RegistryClient(RegistryRef.parse(f"{registry.address}/fleet/none"))
    digest = "sha256:" + "a" * 64
    with pytest.raises(NotFound):
        publish_model_target(reg, engines_tag(digest, "x"), "det", digest, 1e-3)
    for name, tolerance, says in [("../x", 1e-3, "bad model name"), ("det", 0.0, "above 0")]:
        with pytest.raises(InvalidInput, match=says):
            publish_model_target(reg, engines_tag(digest, "x"), name, digest, tolerance)


def test_a_model_target_carries_every_build_option_the_agent_accepts_in_one_and_nothing_else():
    """The host writes the target's options from the list the agent checks them against (MODEL_OPTION_FIELDS), so
    a build option added there travels without a second list on the host to update."""
    from device_agent.registry import MODEL_OPTION_FIELDS
    from host.registry.publish import target_options

    every = agent_pb2.BuildOptions(backend="onnxruntime", fp16=False, max_workspace_bytes=1 << 20,
                                   multi_engine_mode=0, batch=2, force_rebuild=True)
    options = target_options(every)
    assert set(options) == set(MODEL_OPTION_FIELDS), options
    assert all(type(options[k]) is t for k, t in MODEL_OPTION_FIELDS.items()), options


def test_model_target_annotations_round_trip_and_what_does_not_parse_is_one_clear_error():
    from device_agent.errors import InvalidInput
    from device_agent.registry import ModelTarget
    from host.registry.publish import target_options

    options = target_options(agent_pb2.BuildOptions(fp16=True, max_workspace_bytes=1 << 28, force_rebuild=True))
    target = ModelTarget("det", 1e-3, options)
    ann = target.annotations()
    assert ann == {"org.jetson-deploy.model.name": "det", "org.jetson-deploy.model.tolerance": "0.001",
                   "org.jetson-deploy.model.options": '{"fp16":true,"max_workspace_bytes":268435456}'}
    assert ModelTarget.from_annotations(ann) == target and ModelTarget.from_annotations({}) is None
    none = ModelTarget("det", 0.0, active=False)
    assert ModelTarget.from_annotations(none.annotations()) == none
    name, tol, opts = ("org.jetson-deploy.model." + k for k in ("name", "tolerance", "options"))
    for bad, says in [({name: "../x", tol: "0.1"}, "bad model name"), ({name: "d", tol: "0"}, "above 0"),
                      ({name: "d", tol: "nan"}, "above 0"), ({name: "d"}, "above 0"),
                      ({name: "d", tol: "0.1", opts: '{"fp16": 1}'}, "with their types"),
                      ({name: "d", tol: "0.1", opts: '{"force_rebuild": true}'}, "with their types"),
                      ({name: "d", tol: "0.1", opts: '{"batch": -1}'}, "integers >= 0"),
                      ({name: "d", "org.jetson-deploy.model.active": "yes"}, "is not 'none'")]:
        with pytest.raises(InvalidInput, match=says):
            ModelTarget.from_annotations(bad)
