"""`deploy store ls|prune`: the device's uploaded bundles, listed and pruned through the installed entry point."""
from __future__ import annotations

from tests.host.cli.helpers import parse_json, tiny_conv_net


def test_store_prune_all_frees_the_bundle_and_the_next_push_sends_it_again_with_its_engine_still_cached(
        agent_factory, deploy, tiny_model, tmp_path):
    agent = agent_factory(keep_versions=1)  # each push records a version; the one kept is pinned (docs/models.md)
    pushed = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--json"))
    assert pushed["model"]["name"] == tiny_model.stem, "without --name the version is recorded under the file's stem"
    listing = parse_json(deploy("store", "ls", "--device", agent.address, "--json"))
    [entry] = listing["entries"]
    assert entry["digest"] == pushed["bundle_digest"] and entry["complete"] and entry["unpacked_bytes"] > 0
    assert listing["total_bytes"] == entry["size"] + entry["unpacked_bytes"] and listing["free_bytes"] > 0
    human = deploy("store", "ls", "--device", agent.address).stdout
    assert entry["digest"][:19] in human and "1 entry" in human
    # a newer version of the same name: the first bundle is no longer a kept version's
    newer = parse_json(deploy("push", str(tiny_conv_net(tmp_path / "newer.onnx", seed=7)), "--device", agent.address,
                              "--name", pushed["model"]["name"], "--json"))
    assert newer["model"]["version"] == 2

    pruned = parse_json(deploy("store", "prune", "--device", agent.address, "--all", "--json"))
    assert pruned["removed"] == [entry["digest"]] and pruned["kept"] == [newer["bundle_digest"]]
    left = parse_json(deploy("store", "ls", "--device", agent.address, "--json"))
    assert pruned["total_bytes"] == left["total_bytes"] and [e["digest"] for e in left["entries"]] == pruned["kept"]
    # all of the first bundle but the reference inputs the kept version shares (the same seed and shape)
    assert 0 < pruned["freed_bytes"] < listing["total_bytes"]

    again = parse_json(deploy("push", str(tiny_model), "--device", agent.address, "--json"))
    up = again["upload"]  # sent again, but for the part the kept version shares (the same reference inputs)
    assert up["parts_sent"] == up["parts_total"] - 1 and 0 < up["bytes_sent"] < up["bytes_total"], up
    assert again["build"]["cache_hits"] == 1  # the engine stayed in the cache


def test_store_prune_without_a_choice_is_a_usage_error_naming_the_choices(agent, deploy):
    proc = deploy("store", "prune", "--device", agent.address)
    assert proc.returncode == 2 and "--all, --max-bytes N or --digest" in proc.stderr, proc.stderr
