"""Wave planning of `deploy fleet rollout` (host/fleet/rollout.py): parsing, sizes for a fleet, class interleaving."""
from __future__ import annotations

import pytest

from device_agent.errors import InvalidInput
from host.fleet.rollout import interleave, parse_waves, wave_sizes


@pytest.mark.parametrize("spec, devices, sizes", [
    ("1,10%,50%,100%", 24, [1, 2, 9, 12]),   # 10% of 24 rounds up to 3 cumulative
    ("1,10%,50%,100%", 5, [1, 2, 2]),        # 10% of 5 is 1: a wave that adds nobody is dropped
    ("100%", 7, [7]),
    ("25%,50%,100%", 24, [6, 6, 12]),
    ("3,100%", 2, [2]),                      # a count above the fleet covers it
])
def test_wave_sizes(spec, devices, sizes):
    assert wave_sizes(parse_waves(spec), devices) == sizes
    assert sum(sizes) == devices


@pytest.mark.parametrize("spec, words", [
    ("1,50%", "must be 100%"),
    ("50%,10%,100%", "does not increase"),
    ("5,2,100%", "does not increase"),
    ("0,100%", "out of range"),
    ("1,150%", "out of range"),
    ("1,,100%", "empty entry"),
    ("one,100%", "not a count or a percentage"),
])
def test_bad_waves_are_one_input_line(spec, words):
    with pytest.raises(InvalidInput, match=words):
        parse_waves(spec)


def test_waves_that_go_down_for_this_fleet_are_refused():
    with pytest.raises(InvalidInput, match="must increase"):
        wave_sizes(parse_waves("10,50%,100%"), 12)


def test_interleave_takes_each_class_in_turn():
    assert interleave([["a1", "a2", "a3"], ["b1"], ["c1", "c2"]]) == ["a1", "b1", "c1", "a2", "c2", "a3"]
