"""Device classes from what real agents report, plus the inventory's profile."""
from __future__ import annotations

from host.client.agent import AgentClient
from host.fleet.classes import classify, effective_backend, group
from host.inventory import Device


def info_of(handle):
    with AgentClient(Device(name="x", address=handle.address)) as client:
        return client.info()


def test_two_agents_in_one_environment_are_one_class_and_the_class_names_the_real_backend_version(agent_factory):
    import onnxruntime

    a, b = agent_factory(), agent_factory()
    ca = classify(info_of(a), Device(name="a", address=a.address, profile="x86-cpu"))
    cb = classify(info_of(b), Device(name="b", address=b.address, profile="x86-cpu"))
    assert ca == cb
    assert (ca.backend, ca.backend_version) == ("onnxruntime", onnxruntime.__version__)
    assert ca.profile == "x86-cpu" and ca.arch and "onnxruntime " + onnxruntime.__version__ in ca.label


def test_the_profile_splits_a_class_and_the_agents_own_profile_wins_over_the_inventory(agent_factory):
    plain, told = agent_factory(), agent_factory(profile="jetson-nano")
    nano = classify(info_of(told), Device(name="t", address=told.address, profile="x86-cpu"))
    cpu = classify(info_of(plain), Device(name="p", address=plain.address, profile="x86-cpu"))
    assert nano.profile == "jetson-nano" and cpu.profile == "x86-cpu" and nano != cpu
    assert list(group([("t", nano), ("p", cpu), ("q", cpu)]).values()) == [["t"], ["p", "q"]] or \
        list(group([("t", nano), ("p", cpu), ("q", cpu)]).values()) == [["p", "q"], ["t"]]


def test_an_agent_told_its_backend_builds_with_that_backend(agent_factory):
    handle = agent_factory(backend="onnxruntime")
    info = info_of(handle)
    assert info.default_backend == "onnxruntime"
    assert effective_backend(info)[0] == "onnxruntime"
