"""Bundles travel as parts: only what the agent lacks is sent, damaged parts are sent again alone, a killed
agent keeps the parts it committed, prune keeps parts a kept bundle names, engines follow content.

Real agents on loopback, the installed `deploy`, real compiles (small models whose weights are a few files)."""
from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from device_agent.bundle import Bundle
from tests.conftest import deploy_bin
from tests.device_agent.onnx_models import wide_mlp

MB = 1024 * 1024


def backbone_head_net(path: Path, head_seed: int = 0) -> Path:
    """Conv backbone (two weight files of 72 and 144 KiB) and a Gemm head (25 KiB) whose weights `head_seed` sets:
    a "fine-tuned" version of the same model changes only the head."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng, head = np.random.default_rng(0), np.random.default_rng(100 + head_seed)
    inits = [numpy_helper.from_array((rng.standard_normal((32, 3, 3, 3)) * 0.3).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.standard_normal((64, 32, 3, 3)) * 0.1).astype(np.float32), "w2"),
             numpy_helper.from_array((rng.standard_normal((64, 64, 3, 3)) * 0.1).astype(np.float32), "w3"),
             numpy_helper.from_array((head.standard_normal((100, 64)) * 0.3).astype(np.float32), "fc_w"),
             numpy_helper.from_array((head.standard_normal(100) * 0.1).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c3"], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 100])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def versions(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("versions")
    out = []
    for i in range(3):  # one file name, as a user's fine-tuned checkpoints would be
        (root / f"v{i}").mkdir()
        out.append(backbone_head_net(root / f"v{i}" / "net.onnx", head_seed=i))
    return out


def push(deploy, model: Path, address: str, *args: str) -> dict:
    proc = deploy("push", str(model), "--device", address, "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_fine_tuned_versions_send_only_their_head_store_the_backbone_once_and_prune_keeps_shared_parts(
        agent_factory, deploy, versions):
    agent = agent_factory(backend="onnxruntime", keep_versions=1)  # only the newest version pins its bundle
    first = push(deploy, versions[0], agent.address)
    up = first["upload"]
    assert up["transport"] == "parts" and up["parts_sent"] == up["parts_total"]
    assert up["bytes_sent"] == up["bytes_total"]
    archives = [Path(first["compile"]["archive"]).stat().st_size]
    bundles = [Bundle.open(first["compile"]["bundle_dir"])]
    for model in versions[1:]:
        data = push(deploy, model, agent.address)
        archives.append(Path(data["compile"]["archive"]).stat().st_size)
        bundle = Bundle.open(data["compile"]["bundle_dir"])
        bundles.append(bundle)
        changed = {e.digest for e in bundle.manifest.file_list} - {
            e.digest for e in Bundle.open(first["compile"]["bundle_dir"]).manifest.file_list}
        # the head's weight file, the graph that names it, the reference outputs, and the manifest
        assert data["upload"]["parts_sent"] == len(changed) + 1 == 4, data["upload"]
        assert data["upload"]["bytes_sent"] < 0.3 * data["upload"]["bytes_total"]
    listing = json.loads(deploy("store", "ls", "--device", agent.address, "--json", check=True).stdout)
    stored = sum(p.stat().st_size for p in (agent.store_dir / "blobs").iterdir())
    assert stored < 0.6 * sum(archives), (stored, archives)  # the backbone once, not three times
    assert listing["total_bytes"] >= stored and len(listing["entries"]) == 3  # three bundles, parts listed with them

    # two bundles share parts; pruning one leaves the other's parts, and it still verifies and builds
    a, b = bundles[0], bundles[-1]
    pruned = json.loads(deploy("store", "prune", "--device", agent.address, "--digest", a.manifest_digest, "--json",
                               check=True).stdout)
    assert pruned["removed"] == [a.manifest_digest], pruned
    on_disk = {"sha256:" + p.name for p in (agent.store_dir / "blobs").iterdir()}
    b_parts = {e.digest for e in b.manifest.file_list}
    a_only = {e.digest for e in a.manifest.file_list} - {e.digest for other in bundles[1:]
                                                        for e in other.manifest.file_list}
    assert b_parts <= on_disk and a_only and not (a_only & on_disk), (a_only, on_disk)  # shared parts stay
    again = push(deploy, versions[-1], agent.address, "--force-rebuild")
    assert again["upload"]["bytes_sent"] == 0 and again["build"]["built"] == 1 and again["verify"]["passed"]


def test_push_after_run_with_other_samples_sends_only_the_reference_and_builds_nothing(agent_factory, deploy,
                                                                                        versions, tmp_path):
    agent = agent_factory(backend="onnxruntime")
    sample = tmp_path / "x.npy"
    np.save(sample, np.random.default_rng(7).standard_normal((1, 3, 16, 16)).astype(np.float32))
    ran = deploy("run", str(versions[0]), "--device", agent.address, "--input", f"input={sample}", "--json",
                 "-o", str(tmp_path / "out.npz"))
    assert ran.returncode == 0, ran.stderr
    pushed = push(deploy, versions[0], agent.address)
    up = pushed["upload"]
    # reference inputs, reference outputs, the manifest: the graph and weights were there
    assert up["parts_sent"] == 3 and up["bytes_sent"] < 0.1 * up["bytes_total"], up
    assert pushed["build"]["built"] == 0 and pushed["build"]["cache_hits"] == len(pushed["build"]["segments"])
    tolerant = push(deploy, versions[0], agent.address, "--max-rel-err", "0.5")
    assert tolerant["upload"]["parts_sent"] == 0 and tolerant["upload"]["bytes_sent"] == 0
    assert tolerant["build"]["built"] == 0 and tolerant["verify"]["tolerance"] == 0.5


class FlipOnce:
    """A TCP relay to the agent that flips one byte of the first occurrence of `pattern` it carries to the agent:
    a part corrupted in transit (HTTP/2 over plain TCP has no checksum of its own)."""

    def __init__(self, target: str, pattern: bytes) -> None:
        self.target = target.rsplit(":", 1)
        self.pattern = pattern
        self.flipped = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.target[0], int(self.target[1])))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, to_agent: bool) -> None:
        tail = b""
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if to_agent and not self.flipped:
                    window = tail + data
                    at = window.find(self.pattern)
                    if at >= 0:
                        at -= len(tail)
                        if at >= 0:  # (a pattern that began in the last block was already sent; not seen here)
                            data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
                            self.flipped = True
                    tail = window[-len(self.pattern):]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def test_a_part_corrupted_in_transit_is_data_loss_and_sent_again_alone(agent_factory, deploy, versions):
    import onnx
    from onnx import numpy_helper

    agent = agent_factory(backend="onnxruntime")
    [w3] = [t for t in onnx.load(str(versions[0])).graph.initializer if t.name == "w3"]  # the largest weight file
    data = numpy_helper.to_array(w3).tobytes()
    relay = FlipOnce(agent.address, data[len(data) // 2:len(data) // 2 + 16])
    try:
        pushed = push(deploy, versions[0], relay.address)
    finally:
        relay.close()
    assert relay.flipped
    up = pushed["upload"]
    assert up["parts_resent"] == 1 and up["parts_sent"] == up["parts_total"]
    assert up["bytes_sent"] == up["bytes_total"] + len(data)  # that part twice, every other part once
    assert pushed["verify"]["passed"]


def test_an_agent_killed_mid_bundle_keeps_the_parts_it_committed_and_the_next_push_sends_the_rest(agent_factory,
                                                                                                   deploy, tmp_path):
    model = tmp_path / "mlp.onnx"
    model.write_bytes(wide_mlp(512, 8, seed=3))  # eight 1 MiB weight files
    agent = agent_factory(backend="onnxruntime")
    proc = subprocess.Popen([deploy_bin(), "push", str(model), "--device", agent.address, "--no-verify", "--json",
                             "--retry-for", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    blobs = agent.store_dir / "blobs"
    while proc.poll() is None and not (blobs.is_dir() and len(list(blobs.iterdir())) >= 3):
        time.sleep(0.001)
    agent.kill()
    proc.communicate(timeout=60)
    assert proc.returncode != 0, "the push finished before the agent was killed"
    agent.start()
    committed = {"sha256:" + p.name: p.stat().st_size for p in blobs.iterdir()}
    partial = {"sha256:" + p.name: p.stat().st_size for p in (agent.store_dir / "partial").iterdir()}
    again = push(deploy, model, agent.address, "--no-verify")
    bundle = Bundle.open(again["compile"]["bundle_dir"])
    parts = {e.digest: e.size for e in bundle.manifest.file_list}
    kept = sum(parts[d] for d in committed if d in parts) + sum(n for d, n in partial.items() if d in parts)
    up = again["upload"]
    assert len([d for d in committed if d in parts]) >= 3 and up["parts_sent"] < up["parts_total"]
    assert up["bytes_sent"] == up["bytes_total"] - kept, (up, kept)


def test_fleet_warm_of_a_fine_tuned_version_sends_each_device_only_the_changed_parts(agent_factory, deploy, versions,
                                                                                     tmp_path):
    import os

    import tomli_w

    agents = [agent_factory(backend="onnxruntime") for _ in range(2)]
    inventory = tmp_path / "deploy.toml"
    inventory.write_text(tomli_w.dumps({"devices": {f"d{i}": {"address": a.address, "tags": ["lab"]}
                                                    for i, a in enumerate(agents)}}))
    env = dict(os.environ, DEPLOY_INVENTORY=str(inventory))

    def warm(model: Path) -> dict:
        proc = deploy("fleet", "warm", str(model), "--json", env=env)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    first, second = warm(versions[0]), warm(versions[1])
    parts = len(Bundle.open(_bundle_dir_of(versions[0])).manifest.file_list) + 1  # and the manifest
    assert first["parts_sent"] == 2 * parts, first  # each device gets every part once (a second offer: none)
    # then each device is sent the head's weights, the graph naming them, the reference outputs and the manifest
    assert second["parts_sent"] == 2 * 4 and second["bytes_sent"] < 0.3 * second["bytes_total"], second
    human = deploy("fleet", "warm", str(versions[1]), env=env)
    assert "bundles to devices" not in human.stdout and "already warm" in human.stdout, human.stdout


def _bundle_dir_of(model: Path) -> Path:
    """The host compile cache's bundle of `model` for the loopback agents' x86-cpu target."""
    from host.pipeline import bundle_cache

    entries = [e for e in bundle_cache.entries() if e.get("model") == str(model.resolve())]
    return bundle_cache.root() / entries[0]["key"] / entries[0]["bundle_dir"]


def test_through_a_registry_a_fine_tuned_version_sends_and_pulls_only_its_changed_parts(agent_factory, registry,
                                                                                         deploy, versions):
    from device_agent.registry import RegistryClient, RegistryRef
    from host.client.agent import AgentClient
    from host.inventory import Device

    ref = f"{registry.address}/lab/net"
    a, b = agent_factory(backend="onnxruntime", registry=ref), agent_factory(backend="onnxruntime", registry=ref)
    first = push(deploy, versions[0], a.address, "--registry", ref, "--no-verify")
    with AgentClient(Device(name="b", address=b.address)) as client:
        assert client.pull(first["bundle_digest"]).bytes_pulled == first["upload"]["bytes_total"]
        second = push(deploy, versions[1], a.address, "--registry", ref, "--no-verify")
        pulled = client.pull(second["bundle_digest"]).bytes_pulled
    total = second["upload"]["bytes_total"]
    # the registry received the changed parts (and the artifact manifests), b pulled only those
    assert 0 < second["upload"]["bytes_sent"] < 0.3 * total and 0 < pulled < 0.3 * total, (second["upload"], pulled)
    layers = RegistryClient(RegistryRef.parse(ref)).manifest(f"bundle-{second['bundle_digest'].split(':')[1]}")[0]
    assert sum(layer["size"] for layer in layers["layers"]) == total
