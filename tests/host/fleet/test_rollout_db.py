"""The rollout record's group commit (host/fleet/rollout_db.py): writes made at once share one transaction, each
is durable when its call returns, and a statement that fails fails only its own caller."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from host.fleet import rollout_db as rdb


def test_writes_made_at_once_share_one_commit_and_a_bad_one_fails_alone(tmp_path):
    db = rdb.RolloutDB(tmp_path / "rollouts.sqlite3")
    devices = [f"d{i}" for i in range(12)]
    rid = db.create("det", "/m.onnx", {}, devices)
    commits: list[str] = []
    db._conn.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    errors: dict[str, BaseException] = {}

    def write(device: str) -> None:
        step = None if device == "d5" else rdb.REGISTER  # NOT NULL: this one statement fails
        try:
            db.start_step(rid, device, 1, step)  # type: ignore[arg-type]
        except BaseException as exc:  # noqa: BLE001 - what the caller sees
            errors[device] = exc

    with db._lock:  # the first writer leads and waits here; the others queue behind it
        threads = [threading.Thread(target=write, args=(d,)) for d in devices]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while len(db._queue) < len(devices) - 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(db._queue) == len(devices) - 1
    for t in threads:
        t.join(10)
    assert commits == ["COMMIT", "COMMIT"]  # the leader's own write, then the 11 queued ones together
    assert list(errors) == ["d5"] and isinstance(errors["d5"], sqlite3.IntegrityError)
    db.close()
    with rdb.RolloutDB(tmp_path / "rollouts.sqlite3") as again:  # durable: a new connection reads them
        assert sorted(again.device_steps(rid)) == sorted(d for d in devices if d != "d5")
        assert again.steps_of(rid, "d0")[rdb.REGISTER].state == rdb.STARTED


def test_a_write_alone_is_committed_before_it_returns(tmp_path):
    path = tmp_path / "rollouts.sqlite3"
    with rdb.RolloutDB(path) as db:
        rid = db.create("det", "/m.onnx", {}, ["a"])
        db.start_step(rid, "a", 1, rdb.ACTIVATE, 2, 1)
        with rdb.RolloutDB(path) as reader:
            step = reader.steps_of(rid, "a")[rdb.ACTIVATE]
        assert (step.state, step.version, step.previous) == (rdb.STARTED, 2, 1)
        with pytest.raises(sqlite3.IntegrityError):
            db.start_step(rid, "a", 1, None)  # type: ignore[arg-type]
        db.end_step(rid, "a", rdb.ACTIVATE, rdb.STEP_DONE)  # the connection is usable after a failed write
        assert db.steps_of(rid, "a")[rdb.ACTIVATE].state == rdb.STEP_DONE
