"""`fan_out`: order kept, concurrency bounded, only transient failures retried, a deadline per device."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from device_agent.errors import InvalidInput
from host.client.agent import AgentClient
from host.fleet.fanout import Limiter, RetryPolicy, fan_out
from host.inventory import Device


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fan_out_keeps_input_order_and_never_exceeds_the_concurrency():
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def work(i: int) -> int:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return i * i

    outcomes = fan_out(list(range(20)), work, concurrency=3)
    assert [o.value for o in outcomes] == [i * i for i in range(20)]
    assert state["max"] == 3


def test_a_shared_limiter_bounds_two_fan_outs_running_at_once():
    lock = threading.Lock()
    state = {"now": 0, "max": 0}

    def work(i: int) -> None:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1

    limiter = Limiter(2)
    threads = [threading.Thread(target=fan_out, args=(list(range(8)), work), kwargs={"limiter": limiter,
                                                                                    "concurrency": 8})
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state["max"] == 2


def test_an_unreachable_agent_is_retried_with_backoff_then_reported_not_raised(agent):
    dead = Device(name="dead", address=f"127.0.0.1:{closed_port()}")
    alive = Device(name="alive", address=agent.address)

    def info(d: Device):
        with AgentClient(d) as client:
            return client.info(timeout=10.0)

    policy = RetryPolicy(attempts=3, deadline_s=30, first_wait_s=0.1, max_wait_s=1.0)
    ok, down = fan_out([alive, dead], info, policy=policy)
    assert ok.ok and ok.attempts == 1 and ok.value.python_version
    assert not down.ok and down.unreachable and down.attempts == 3
    assert down.seconds >= 0.1 + 0.2  # two waits, doubling


def test_a_real_error_is_not_retried():
    calls = []

    def refuse(i: int) -> None:
        calls.append(i)
        raise InvalidInput("bad request")

    [out] = fan_out([1], refuse, policy=RetryPolicy(attempts=5))
    assert calls == [1] and isinstance(out.error, InvalidInput) and not out.unreachable


def test_the_per_device_deadline_stops_retrying_before_the_attempts_run_out():
    dead = Device(name="dead", address=f"127.0.0.1:{closed_port()}")

    def info(d: Device):
        with AgentClient(d) as client:
            return client.info(timeout=0.5)

    [out] = fan_out([dead], info, policy=RetryPolicy(attempts=1000, deadline_s=1.0, first_wait_s=0.2, max_wait_s=0.2))
    assert out.unreachable and 2 <= out.attempts < 20 and out.seconds < 5


def test_limiter_refuses_zero():
    with pytest.raises(ValueError):
        Limiter(0)
