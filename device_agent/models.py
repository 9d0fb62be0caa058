"""Named model versions on the device: which bundle and engines each version is, which one is active.

The repository lives beside the store (``<data dir>/models``)::

    models/<name>/versions/<N>.json   one record per version, written once (bundle digest, engine keys, facts)
    models/<name>/state.json          the activation history and the last version number: the one commit point
    models/<name>/active/             symlinks ``<segment id>.plan`` to the active version's engine files
                                      (a stable path for DeepStream's nvinfer; derived from state.json)

Switching versions rewrites ``state.json`` through ``fileio.atomic_write`` (temp file, fsync, rename, fsync of the
directory), so after a SIGKILL or a power cut at any point a reader finds the old state or the new one, never a mix:
exactly one version is active. A switch under a health command is written as *pending* first (Mender's
install/commit): an agent that dies before the check passed comes back on the version it had before.

Version numbers only grow per name (``last_version`` is kept when old records are released), as Triton's and
TF Serving's do. Kept versions (the newest ``keep_versions``, plus the active and previous ones) pin their bundle
and engines against pruning.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Set

from device_agent.errors import DeadlineExceeded, InvalidInput, NotFound, PreconditionFailed
from device_agent.fileio import atomic_write, fsync_dir

log = logging.getLogger(__name__)

SCHEMA = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_KEEP_VERSIONS = 3
HISTORY_MAX = 32  # activations remembered per name (rollback goes back through them)
HEALTH_OUTPUT_MAX = 400  # characters of a failed health command's output kept in its message

# A version's state, from most to least usable. Only "verified" may be activated.
VERIFIED, BUILT, UNVERIFIED, FAILED_VERIFY, MISSING, STALE = (
    "verified", "built", "unverified", "failed_verify", "missing", "stale")


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise InvalidInput(f"bad model name {name[:80]!r}: use 1-64 letters, digits, '_', '.' or '-', "
                           "starting with a letter or digit")
    return name


@dataclass
class EngineRef:
    """One segment's engine: the cache key it was built under."""

    segment_id: str
    key: str


@dataclass
class VersionRecord:
    """What a version is, fixed when it was recorded. `build` holds the device-class facts the engines were built
    for (backend, backend_version, gpu, cc, l4t, arch) and the precision; `options` the build options (so the runtime
    derives the same engine keys); `verify` the agent's own verify on this device, or None when it was skipped."""

    name: str
    version: int
    bundle_digest: str
    engines: List[EngineRef]
    build: Dict[str, str]
    options: Dict[str, Any]
    verify: Optional[Dict[str, Any]]
    created: float
    schema: int = SCHEMA

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> "VersionRecord":
        engines = [EngineRef(**e) for e in doc.get("engines", [])]
        fields = {k: doc[k] for k in ("name", "version", "bundle_digest", "build", "options", "verify", "created")}
        return cls(engines=engines, schema=int(doc.get("schema", SCHEMA)), **fields)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class ModelState:
    """The commit point of one name: activations in order (the last is active), the newest version number, and an
    activation waiting for its health check (rolled back when the agent restarts before the check passed)."""

    history: List[int] = field(default_factory=list)
    last_version: int = 0
    pending: Optional[int] = None

    @property
    def active(self) -> Optional[int]:
        return self.history[-1] if self.history else None

    @property
    def previous(self) -> Optional[int]:
        return self.history[-2] if len(self.history) > 1 else None


@dataclass
class VersionView:
    """A version as `deploy models ls` shows it: the record, its state now, and why when it is not usable."""

    record: VersionRecord
    state: str
    why: str
    engine_paths: List[str]


@dataclass
class ModelView:
    name: str
    active: Optional[int]
    previous: Optional[int]
    versions: List[VersionView]


class HealthCheckFailed(PreconditionFailed):
    """The health command failed or hung after a switch; the repository is back on the version it had."""


#: (record) -> (state, why): the engine service decides whether a version's engines are there and current.
StateOf = Callable[[VersionRecord], "tuple[str, str]"]

# What an observer hears (ModelEvent.kind, then .outcome).
ACTIVATION, ROLLBACK = "activation", "rollback"
OK, REFUSED, HEALTH_FAILED = "ok", "refused", "health_failed"  # activations: switched, gate failed, health failed
BY_REQUEST, BY_HEALTH, AT_RESTART, BY_DEACTIVATE = "request", "health", "restart", "deactivate"  # rollbacks


@dataclass(frozen=True)
class ModelEvent:
    """One switch of a name, or one refused switch, as an observer (the agent's metrics) hears it.

    kind ``activation``: outcome ``ok`` (the version is active now), ``refused`` (its engines are not there, not
    verified or stale: nothing changed) or ``health_failed`` (the health command failed: back where it was).
    kind ``rollback``: outcome ``request`` (Rollback), ``health`` (a failed health check switched back),
    ``restart`` (an activation still pending at start was rolled back) or ``deactivate`` (none active now).
    `version` is the version the event is about; `active` the one active after it (None: none)."""

    name: str
    kind: str
    outcome: str
    version: Optional[int]
    active: Optional[int]


Observer = Callable[[ModelEvent], None]


class ModelRepository:
    """Names, versions and the active pointer on disk; safe for one writer process with many reader processes."""

    def __init__(self, root: Path, keep_versions: int = DEFAULT_KEEP_VERSIONS,
                 health_cmd: str = "", health_timeout_s: float = 30.0,
                 engine_path: Optional[Callable[[str], Optional[Path]]] = None) -> None:
        self.root = Path(root)
        self.keep_versions = max(1, int(keep_versions))
        self.health_cmd = health_cmd
        self.health_timeout_s = float(health_timeout_s)
        self._engine_path = engine_path  # cache key -> the plan file, for the stable active/ links
        self._lock = threading.RLock()
        self._observers: List[Observer] = []
        self.root.mkdir(parents=True, exist_ok=True)

    # ---------------------------------------------------------------- observers
    def observe(self, observer: Observer) -> None:
        """Call `observer(event)` after each activation, refused activation and rollback (in the writer's thread,
        under the repository's lock: keep it quick). An observer that raises is logged and never fails a switch."""
        self._observers.append(observer)

    def unobserve(self, observer: Observer) -> None:
        with contextlib.suppress(ValueError):
            self._observers.remove(observer)

    def emit(self, event: ModelEvent) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:  # noqa: BLE001 - an observer's slip must never undo or fail a switch
                log.exception("model observer failed on %s", event)

    # ---------------------------------------------------------------- reading
    def _dir(self, name: str) -> Path:
        return self.root / check_name(name)

    def names(self) -> List[str]:
        return sorted(d.name for d in self.root.iterdir() if d.is_dir() and NAME_RE.match(d.name)
                      and (d / "state.json").exists())

    def state(self, name: str) -> ModelState:
        path = self._dir(name) / "state.json"
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return ModelState()
        except (OSError, ValueError) as exc:
            raise PreconditionFailed(f"model {name!r}: {path} is unreadable ({exc}); restore it or remove "
                                     f"{path.parent} and push again") from None
        return ModelState([int(v) for v in doc.get("history", [])], int(doc.get("last_version", 0)),
                          doc.get("pending"))

    def record(self, name: str, version: int) -> VersionRecord:
        path = self._dir(name) / "versions" / f"{int(version)}.json"
        try:
            return VersionRecord.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            known = self.versions(name)
            if not known and not (self._dir(name) / "state.json").exists():
                raise NotFound(f"no model named {name!r} on this device; push it with --name {name}") from None
            raise NotFound(f"model {name!r} has no version {version} on this device (kept versions: "
                           f"{', '.join(map(str, known)) or 'none'})") from None

    def versions(self, name: str) -> List[int]:
        vdir = self._dir(name) / "versions"
        if not vdir.is_dir():
            return []
        return sorted(int(p.stem) for p in vdir.glob("*.json") if p.stem.isdigit())

    def active_record(self, name: str) -> VersionRecord:
        """The active version's record, as the runtime and OIP serve it."""
        st = self.state(name)
        if st.active is None:
            if not (self._dir(name) / "state.json").exists():
                raise NotFound(f"no model named {name!r} on this device; push it with --name {name} --activate")
            raise PreconditionFailed(f"model {name!r} has no active version; deploy activate {name} --device D")
        return self.record(name, st.active)

    def view(self, name: str, state_of: StateOf) -> ModelView:
        st = self.state(name)
        views = []
        for v in self.versions(name):
            rec = self.record(name, v)
            state, why = state_of(rec)
            paths = [str(p) for p in (self.plan_path(e.key) for e in rec.engines) if p is not None]
            views.append(VersionView(rec, state, why, paths))
        return ModelView(name, st.active, st.previous, views)

    def pinned(self) -> "tuple[Set[str], Set[str]]":
        """(bundle digests, engine keys) of every kept version: prune and the size bounds leave them alone."""
        bundles: Set[str] = set()
        keys: Set[str] = set()
        for name in self.names():
            for v in self.versions(name):
                with _suppress_missing():
                    rec = self.record(name, v)
                    bundles.add(rec.bundle_digest)
                    keys.update(e.key for e in rec.engines)
        return bundles, keys

    def state_file(self, name: str) -> Path:
        """The file a reader in another process watches to follow activations (its inode changes on each)."""
        return self._dir(name) / "state.json"

    # ---------------------------------------------------------------- writing
    def _write_state(self, name: str, st: ModelState) -> None:
        doc = {"schema": SCHEMA, "history": st.history[-HISTORY_MAX:], "last_version": st.last_version,
               "pending": st.pending}
        atomic_write(self._dir(name) / "state.json", json.dumps(doc, sort_keys=True).encode())
        self._bump(name)

    def _bump(self, name: str) -> None:
        """Tell readers that state.json changed: an 8-byte counter written in place, which a runtime reads through
        a shared mapping on every run. Only a hint: state.json is the truth, so the counter needs no fsync."""
        fd = os.open(self.generation_file(name), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            old = os.pread(fd, 8, 0)
            value = int.from_bytes(old, "little") + 1 if len(old) == 8 else 1
            os.pwrite(fd, value.to_bytes(8, "little"), 0)
        finally:
            os.close(fd)

    def generation_file(self, name: str) -> Path:
        return self._dir(name) / "generation"

    def add_version(self, name: str, bundle_digest: str, engines: Sequence[EngineRef], build: Mapping[str, str],
                    options: Mapping[str, Any], verify: Optional[Mapping[str, Any]]) -> VersionRecord:
        """Record a new version (the next number); releases versions beyond `keep_versions` that are not in use."""
        with self._lock:
            d = self._dir(name)
            (d / "versions").mkdir(parents=True, exist_ok=True)
            st = self.state(name)
            number = max([st.last_version, *self.versions(name)]) + 1
            rec = VersionRecord(name, number, bundle_digest, list(engines), dict(build), dict(options),
                                None if verify is None else dict(verify), time.time())
            atomic_write(d / "versions" / f"{number}.json", json.dumps(rec.to_json(), sort_keys=True).encode())
            st.last_version = number
            self._write_state(name, st)  # the number is taken only once its record is durable
            self._release_old(name, st)
            return rec

    def _release_old(self, name: str, st: ModelState) -> None:
        in_use = {st.active, st.previous, st.pending}
        versions = self.versions(name)
        keep = set(versions[-self.keep_versions:]) | in_use
        for v in versions:
            if v not in keep:
                with _suppress_missing():
                    os.unlink(self._dir(name) / "versions" / f"{v}.json")
        fsync_dir(self._dir(name) / "versions")

    def activate(self, name: str, version: Optional[int], state_of: StateOf,
                 wanted: Callable[[], bool] = lambda: True) -> "tuple[VersionRecord, Optional[int]]":
        """Make `version` (default: the newest) active, gated on verified engines; with a health command, roll back
        by itself when it fails or hangs. Returns (the record now active, the version active before).

        `wanted` is asked once the switch is about to be written: an Activate whose caller gave up while it waited
        for this lock (a rollout past its deadline, which then puts the device back) must not switch it later."""
        with self._lock:
            versions = self.versions(name)
            if not versions:
                self.record(name, 0)  # raises the NotFound that names what is missing
            rec = self.record(name, versions[-1] if version is None else int(version))
            state, why = state_of(rec)
            st = self.state(name)
            if state != VERIFIED:
                self.emit(ModelEvent(name, ACTIVATION, REFUSED, rec.version, st.active))
                raise PreconditionFailed(f"model {name!r} version {rec.version} cannot be activated: {why}")
            before = st.active
            if before == rec.version and st.pending is None:
                return rec, before
            if not wanted():
                raise DeadlineExceeded(f"activation of {name!r} version {rec.version} not made: its caller gave up "
                                       "while it waited for another switch of this name; nothing changed")
            new = ModelState([*st.history, rec.version], st.last_version, rec.version if self.health_cmd else None)
            self._write_state(name, new)
            self._link_active(name, rec)
            if self.health_cmd:
                failure = self._health(name, rec.version)
                if failure:
                    self._write_state(name, st)
                    self._link_active(name, self._record_or_none(name, before))
                    self.emit(ModelEvent(name, ACTIVATION, HEALTH_FAILED, rec.version, before))
                    self.emit(ModelEvent(name, ROLLBACK, BY_HEALTH, rec.version, before))
                    back = f"rolled back to version {before}" if before is not None else "no version is active"
                    raise HealthCheckFailed(f"health check after activating {name!r} version {rec.version} "
                                            f"{failure}; {back}")
                new.pending = None
                self._write_state(name, new)
            self.emit(ModelEvent(name, ACTIVATION, OK, rec.version, rec.version))
            return rec, before

    def rollback(self, name: str, state_of: StateOf) -> "tuple[VersionRecord, int]":
        """Make the previous active version active again (no rebuild); its engines must still be there."""
        with self._lock:
            st = self.state(name)
            if st.active is None:
                self.active_record(name)  # raises: unknown name or nothing active
            if st.previous is None:
                raise PreconditionFailed(f"model {name!r} has no previous version to roll back to "
                                         f"(version {st.active} is the only one activated)")
            rec = self.record(name, st.previous)
            state, why = state_of(rec)
            if state != VERIFIED:
                raise PreconditionFailed(f"cannot roll {name!r} back to version {rec.version}: {why}")
            left = st.active
            self._write_state(name, ModelState(st.history[:-1], st.last_version, None))
            self._link_active(name, rec)
            self.emit(ModelEvent(name, ROLLBACK, BY_REQUEST, left, rec.version))
            return rec, left

    def deactivate(self, name: str) -> Optional[int]:
        """No version active any more (the history is cleared); returns the version that was. Kept versions stay."""
        with self._lock:
            st = self.state(name)
            if not st.history and not (self._dir(name) / "state.json").exists():
                self.record(name, 0)  # raises the NotFound that names the model
            if st.active is None:
                return None
            self._write_state(name, ModelState([], st.last_version, None))
            self._link_active(name, None)
            self.emit(ModelEvent(name, ROLLBACK, BY_DEACTIVATE, st.active, None))
            return st.active

    def recover(self) -> List[str]:
        """At start: an activation still pending (the agent died during its health check) is rolled back, and each
        name's active/ links are made to match state.json. Returns one line per rolled-back activation."""
        notes = []
        for name in self.names():
            with self._lock:
                st = self.state(name)
                if st.pending is not None and st.active == st.pending:
                    back = ModelState(st.history[:-1], st.last_version, None)
                    self._write_state(name, back)
                    notes.append(f"model {name!r}: version {st.pending}'s health check never finished; "
                                 f"back on version {back.active}")
                    self.emit(ModelEvent(name, ROLLBACK, AT_RESTART, st.pending, back.active))
                    st = back
                elif st.pending is not None:
                    st.pending = None
                    self._write_state(name, st)
                self._link_active(name, self._record_or_none(name, st.active))
        return notes

    # ---------------------------------------------------------------- helpers
    def _record_or_none(self, name: str, version: Optional[int]) -> Optional[VersionRecord]:
        if version is None:
            return None
        try:
            return self.record(name, version)
        except NotFound:
            return None

    def plan_path(self, key: str) -> Optional[Path]:
        return self._engine_path(key) if self._engine_path else None

    def _link_active(self, name: str, rec: Optional[VersionRecord]) -> None:
        """Point the symlink `<name>/active` at a fresh directory of links to `rec`'s plans. The switch is one
        rename of a new symlink over the old one, so a reader (DeepStream) never finds the path missing; the
        directory of the version before stays for readers that resolved it just now, older ones are removed."""
        d = self._dir(name)
        links = d / "links"
        links.mkdir(exist_ok=True)
        target = links / f"{rec.version if rec else 'none'}-{os.getpid()}-{time.monotonic_ns()}"
        target.mkdir()
        if rec is not None:
            for e in rec.engines:
                plan = self.plan_path(e.key)
                if plan is not None:
                    os.symlink(plan, target / f"{e.segment_id}.plan")
            (target / "VERSION").write_text(f"{rec.version}\n")
        fsync_dir(links)
        before = _link_target(d / "active")
        tmp = d / f".active.{os.getpid()}.{threading.get_ident()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(os.path.join("links", target.name), tmp)
        os.replace(tmp, d / "active")
        fsync_dir(d)
        self._sweep_links(d, keep={target.name, before})

    @staticmethod
    def _sweep_links(d: Path, keep: Set[Optional[str]]) -> None:
        """Link directories no symlink points at any more, and temp links a killed process left behind."""
        for p in (d / "links").iterdir() if (d / "links").is_dir() else ():
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
        for p in d.glob(".active.*"):
            with contextlib.suppress(OSError):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else os.unlink(p)

    def _health(self, name: str, version: int) -> str:
        """Run the health command; '' when it passed, else why (exit code and its last output, or the timeout).
        Only the last HEALTH_OUTPUT_MAX bytes of its output are kept: a chatty command cannot fill memory."""
        env = dict(os.environ, DEPLOY_MODEL_NAME=name, DEPLOY_MODEL_VERSION=str(version))
        try:
            proc = subprocess.Popen(self.health_cmd, shell=True, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            return f"`{self.health_cmd}` could not start ({exc})"
        tail = bytearray()

        def drain() -> None:
            assert proc.stdout is not None
            for block in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
                tail.extend(block)
                del tail[:-HEALTH_OUTPUT_MAX]

        reader = threading.Thread(target=drain, name="health-output", daemon=True)
        reader.start()
        try:
            proc.wait(timeout=self.health_timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        # the whole group in any case: a shell's children would otherwise hold the pipe open after it exits
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(timeout=5)
        if timed_out:
            return f"`{self.health_cmd}` did not finish within {self.health_timeout_s:g} s"
        if proc.returncode == 0:
            return ""
        lines = tail.decode("utf-8", "replace").strip().splitlines()
        said = f": {lines[-1][:HEALTH_OUTPUT_MAX]}" if lines else ""
        return f"`{self.health_cmd}` failed (exit {proc.returncode}){said}"


def _link_target(link: Path) -> Optional[str]:
    """The link directory's name `<name>/active` points at now, or None."""
    try:
        return os.path.basename(os.readlink(link))
    except OSError:
        return None


class _suppress_missing:
    """Skip a version whose record another writer just released."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        return kind is not None and issubclass(kind, (FileNotFoundError, NotFound))


def iter_views(repo: ModelRepository, state_of: StateOf, names: Sequence[str] = ()) -> Iterator[ModelView]:
    for name in names or repo.names():
        yield repo.view(name, state_of)
