"""The record of fleet rollouts: an embedded SQLite database in the user data dir that outlives the host process.

Every device step is written (state ``started``) before the step is taken and updated when it ends, so a host that
is SIGKILLed mid-rollout leaves a record from which `deploy fleet rollout --resume ID` knows exactly which devices
may have been touched: those are asked what is active before anything else is done. Writes are synchronous
(``synchronous=FULL``) and the journal is WAL, so `deploy fleet status` can read while a rollout writes.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

from device_agent.errors import NotFound, PreconditionFailed

SCHEMA_VERSION = 1
DB_NAME = "rollouts.sqlite3"

# rollout states
PLANNING, RUNNING, STOPPING, ROLLED_BACK, INCOMPLETE, DONE = (
    "planning", "running", "stopping", "rolled_back", "incomplete", "done")
#: States a `--resume` has work in: not yet through every wave, rolling back, or devices left unreachable.
RESUMABLE = (PLANNING, RUNNING, STOPPING, INCOMPLETE)
#: States after which the rollout's class bundles are what the fleet should hold (`deploy fleet status` drift).
WENT_FORWARD = (DONE, INCOMPLETE)

# step kinds and their states
REGISTER, ACTIVATE, ROLLBACK = "register", "activate", "rollback"
STARTED, STEP_DONE, FAILED, UNREACHABLE = "started", "done", "failed", "unreachable"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,              -- the model's name on the devices
    source TEXT NOT NULL,            -- the model or bundle path, absolute
    bundles TEXT NOT NULL,           -- JSON {class label: bundle digest}
    options TEXT NOT NULL,           -- JSON: tags, waves, max_failures, health_timeout_s, concurrency, max_rel_err
    state TEXT NOT NULL,             -- planning, running, stopping, rolled_back, incomplete, done
    detail TEXT NOT NULL DEFAULT '', -- why it stopped, what is left
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS targets (
    rollout_id INTEGER NOT NULL REFERENCES rollouts(id),
    device TEXT NOT NULL,
    wave INTEGER NOT NULL,           -- 1-based; 0: not yet placed
    class TEXT NOT NULL DEFAULT '',  -- the device class label ('' while its class is unknown: never reached)
    bundle_digest TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (rollout_id, device)
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rollout_id INTEGER NOT NULL REFERENCES rollouts(id),
    device TEXT NOT NULL,
    wave INTEGER NOT NULL,
    step TEXT NOT NULL,              -- register, activate, rollback
    state TEXT NOT NULL,             -- started, done, failed, unreachable
    version INTEGER,                 -- the version registered / activated; for a rollback, the one left
    previous INTEGER,                -- the version active before the rollout's activation (NULL: none)
    detail TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 1,
    time REAL NOT NULL,
    UNIQUE (rollout_id, device, step)
);
CREATE INDEX IF NOT EXISTS rollouts_by_name ON rollouts (name, id);
"""


def default_path() -> Path:
    """`$DEPLOY_ROLLOUT_DB`, else `rollouts.sqlite3` in the user data dir (where the tests' XDG dirs point)."""
    env = os.environ.get("DEPLOY_ROLLOUT_DB")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("deploy")) / DB_NAME


@dataclass
class _Pending:
    """A write waiting for the group commit: done once its transaction committed (or failed: error)."""

    sql: str
    args: tuple[Any, ...]
    done: bool = False
    error: Optional[BaseException] = None


@dataclass
class RolloutRow:
    id: int
    name: str
    source: str
    bundles: dict[str, str]
    options: dict[str, Any]
    state: str
    detail: str
    created: float
    updated: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "source": self.source, "bundles": dict(self.bundles),
                "options": dict(self.options), "state": self.state, "detail": self.detail or None,
                "created": self.created, "updated": self.updated}


@dataclass
class Target:
    device: str
    wave: int
    device_class: str
    bundle_digest: str


@dataclass
class Step:
    id: int
    rollout_id: int
    device: str
    wave: int
    step: str
    state: str
    version: Optional[int]
    previous: Optional[int]
    detail: str
    attempts: int
    time: float

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "wave": self.wave, "step": self.step, "state": self.state,
                "version": self.version, "previous": self.previous, "detail": self.detail or None,
                "attempts": self.attempts, "time": self.time}


class RolloutDB:
    """One connection, shared by a rollout's worker threads under a lock; a write is durable when it returns, and
writes made at the same time share a transaction (group commit)."""

    def __init__(self, path: Optional[Path] = None) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cv = threading.Condition(threading.Lock())  # the group commit's queue (`_write`)
        self._queue: list[_Pending] = []
        self._committing = False
        self._conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "RolloutDB":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        """One statement, durable (committed and fsync'd) when this returns. Writes that threads make at the same
        time share one transaction and so one fsync (group commit): a wave of 8 devices queueing on the lock for
        an fsync each was the record's whole cost. A statement that fails fails only its own write."""
        entry = _Pending(sql, args)
        with self._cv:
            self._queue.append(entry)
            while not entry.done:
                if self._committing:
                    self._cv.wait()
                    continue
                self._committing = True
                batch, self._queue = self._queue, []
                self._cv.release()
                try:
                    self._commit(batch)
                finally:
                    self._cv.acquire()
                    self._committing = False
                    self._cv.notify_all()
        if entry.error is not None:
            raise entry.error

    def _commit(self, batch: "list[_Pending]") -> None:
        """Run `batch` in one transaction; each statement in a savepoint, so one that fails is undone alone."""
        try:
            with self._transaction() as conn:
                for entry in batch:
                    conn.execute("SAVEPOINT one")
                    try:
                        conn.execute(entry.sql, entry.args)
                    except sqlite3.Error as exc:
                        conn.execute("ROLLBACK TO one")
                        entry.error = exc
                    conn.execute("RELEASE one")
        except BaseException as exc:
            for entry in batch:
                entry.error = entry.error or exc
        finally:
            for entry in batch:
                entry.done = True

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT under the lock; anything raised inside rolls the whole transaction back."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return list(self._conn.execute(sql, args))

    @contextlib.contextmanager
    def running(self, rid: int) -> Iterator[None]:
        """Held while one process runs rollout `rid` (a first run or a resume): a second `--resume` of a rollout
        still being run is one line, not two hosts switching the same devices. The kernel drops it with the
        process, so a SIGKILLed host leaves nothing to clean."""
        path = self.path.parent / f"rollout-{int(rid)}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise PreconditionFailed(f"rollout {rid} is being run by another deploy process right now; wait "
                                         "for it (or stop it), then --resume") from None
            yield
        finally:
            os.close(fd)

    # ---------------------------------------------------------------- rollouts
    def create(self, name: str, source: str, options: dict[str, Any], devices: list[str]) -> int:
        """A new rollout in state `planning`, its devices not yet placed in waves."""
        now = time.time()
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO rollouts (name, source, bundles, options, state, detail, created, updated) "
                "VALUES (?, ?, '{}', ?, ?, '', ?, ?)", (name, source, json.dumps(options), PLANNING, now, now))
            rid = int(cur.lastrowid or 0)
            conn.executemany("INSERT INTO targets (rollout_id, device, wave) VALUES (?, ?, 0)",
                             [(rid, d) for d in devices])
        return rid

    def rollout(self, rid: int) -> RolloutRow:
        rows = self._read("SELECT * FROM rollouts WHERE id = ?", (int(rid),))
        if not rows:
            raise NotFound(f"no rollout {rid} in {self.path}; `deploy fleet status NAME --json` lists a name's "
                           "last rollout")
        return _rollout(rows[0])

    def rollouts(self, name: str) -> list[RolloutRow]:
        """NAME's rollouts, newest first."""
        return [_rollout(r) for r in self._read("SELECT * FROM rollouts WHERE name = ? ORDER BY id DESC", (name,))]

    def set_state(self, rid: int, state: str, detail: Optional[str] = None) -> None:
        if detail is None:
            self._write("UPDATE rollouts SET state = ?, updated = ? WHERE id = ?", (state, time.time(), rid))
        else:
            self._write("UPDATE rollouts SET state = ?, detail = ?, updated = ? WHERE id = ?",
                        (state, detail, time.time(), rid))

    def set_bundle(self, rid: int, class_label: str, digest: str) -> None:
        with self._transaction() as conn:
            row = conn.execute("SELECT bundles FROM rollouts WHERE id = ?", (rid,)).fetchone()
            bundles = json.loads(row["bundles"])
            bundles[class_label] = digest
            conn.execute("UPDATE rollouts SET bundles = ?, updated = ? WHERE id = ?",
                         (json.dumps(bundles, sort_keys=True), time.time(), rid))

    # ---------------------------------------------------------------- targets (the plan)
    def targets(self, rid: int) -> list[Target]:
        rows = self._read("SELECT * FROM targets WHERE rollout_id = ? ORDER BY wave, rowid", (rid,))
        return [Target(r["device"], r["wave"], r["class"], r["bundle_digest"]) for r in rows]

    def place_all(self, rid: int, rows: "list[tuple[str, int, str, str]]") -> None:
        """(device, wave, class label, bundle digest) of many devices in one transaction."""
        if not rows:
            return
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE targets SET wave = ?, class = ?, bundle_digest = ? WHERE rollout_id = ? AND device = ?",
                [(wave, label, digest, rid, device) for device, wave, label, digest in rows])

    # ---------------------------------------------------------------- steps
    def start_step(self, rid: int, device: str, wave: int, step: str, version: Optional[int] = None,
                   previous: Optional[int] = None, detail: str = "") -> None:
        """Written before the step is taken (a second try of a step updates its row and counts the attempt)."""
        self._write(
            "INSERT INTO steps (rollout_id, device, wave, step, state, version, previous, detail, time) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rollout_id, device, step) DO UPDATE SET "
            "state = excluded.state, wave = excluded.wave, version = excluded.version, "
            "previous = excluded.previous, detail = excluded.detail, time = excluded.time, attempts = attempts + 1",
            (rid, device, wave, step, STARTED, version, previous, detail, time.time()))

    def end_step(self, rid: int, device: str, step: str, state: str, version: Optional[int] = None,
                 detail: str = "") -> None:
        """The step's outcome; `version` (when given) replaces the recorded one (register learns it here)."""
        if version is None:
            self._write("UPDATE steps SET state = ?, detail = ?, time = ? WHERE rollout_id = ? AND device = ? "
                        "AND step = ?", (state, detail, time.time(), rid, device, step))
        else:
            self._write("UPDATE steps SET state = ?, version = ?, detail = ?, time = ? WHERE rollout_id = ? "
                        "AND device = ? AND step = ?", (state, version, detail, time.time(), rid, device, step))

    def steps(self, rid: int) -> list[Step]:
        return [_step(r) for r in self._read("SELECT * FROM steps WHERE rollout_id = ? ORDER BY id", (rid,))]

    def steps_of(self, rid: int, device: str) -> dict[str, Step]:
        """{step kind: its row} of one device (the UNIQUE index finds them: no scan of the rollout's steps)."""
        rows = self._read("SELECT * FROM steps WHERE rollout_id = ? AND device = ?", (rid, device))
        return {r["step"]: _step(r) for r in rows}

    def device_steps(self, rid: int) -> dict[str, dict[str, Step]]:
        """{device: {step kind: its row}}."""
        out: dict[str, dict[str, Step]] = {}
        for s in self.steps(rid):
            out.setdefault(s.device, {})[s.step] = s
        return out

    def last_steps(self, name: str) -> dict[str, tuple[int, Step]]:
        """Per device, the newest step of NAME's rollouts: (rollout id, step)."""
        rows = self._read("SELECT steps.* FROM steps JOIN rollouts ON rollouts.id = steps.rollout_id "
                          "WHERE rollouts.name = ? ORDER BY steps.time, steps.id", (name,))
        out: dict[str, tuple[int, Step]] = {}
        for r in rows:
            out[r["device"]] = (int(r["rollout_id"]), _step(r))
        return out

    def iter_names(self) -> Iterator[str]:
        for r in self._read("SELECT DISTINCT name FROM rollouts ORDER BY name"):
            yield r["name"]


def _rollout(r: sqlite3.Row) -> RolloutRow:
    return RolloutRow(int(r["id"]), r["name"], r["source"], json.loads(r["bundles"]), json.loads(r["options"]),
                      r["state"], r["detail"], float(r["created"]), float(r["updated"]))


def _step(r: sqlite3.Row) -> Step:
    return Step(int(r["id"]), int(r["rollout_id"]), r["device"], int(r["wave"]), r["step"], r["state"],
                r["version"], r["previous"], r["detail"], int(r["attempts"]), float(r["time"]))
