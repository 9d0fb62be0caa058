"""The device runtime: the application on the device opens a model by name and runs its active version.

    from device_agent.runtime import open_model
    m = open_model("detector")          # store and engine cache found as the agent finds them; store= to say
    out = m.run({"images": x})          # a dict of numpy arrays, by output name
    m.version, m.inputs, m.outputs      # what is loaded now

No gRPC and nothing from the host: the same bundle runtime the agent's Run uses (``device_agent/loaded.py``),
fed only from engines already in the cache, so opening a model never builds (a missing engine is one clear
error: push or activate first). Calls are safe from many threads. The model follows activations by itself: each
``run`` reads the counter the agent bumps after each commit of the name's state (a shared mapping, no system call),
and the first call after ``deploy activate`` loads the new version, swaps it in and answers with it; calls already
running finish on the old one, which is released when the last of them returns (``policy="availability"``, TF
Serving's default). ``policy="resource"`` releases the old version before loading the new one, for devices where
two versions do not fit (a Jetson Nano); calls wait while it loads.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import numpy as np

from device_agent.errors import InvalidInput
from device_agent.manifest import TensorSpec
from device_agent.models import ModelRepository, VersionRecord

log = logging.getLogger(__name__)
POLICIES = ("availability", "resource")
PathLike = Union[str, "os.PathLike[str]"]
#: A call counts itself on its version with a list append and pop, which the GIL makes atomic and orders with the
#: swapper's flag: a call appends, then reads `retired`; a swap sets `retired`, then reads the count, so either the
#: call sees the flag and goes to the new version or the swap sees the call and leaves the release to it. Without a
#: GIL (a free-threaded build) calls count themselves under the model's lock instead.
_LOCK_FREE = getattr(sys, "_is_gil_enabled", lambda: True)()


@dataclass
class Loaded:
    """One version in memory: its record, what it takes and gives, and the function that runs it."""

    record: VersionRecord
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    run: Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]
    close: Callable[[], None]


@dataclass
class Result:
    """Outputs and the version that computed them (OIP answers name it)."""

    version: int
    outputs: Dict[str, np.ndarray]


#: record -> Loaded; raises when an engine is missing (never builds).
Loader = Callable[[VersionRecord], Loaded]


class _Watch:
    """Whether the name's state changed since a stamp was taken: the repository bumps an 8-byte counter after each
    commit of state.json, read here through a shared mapping as one integer (`counter[0]`: no system call per run,
    and no call at all); where the counter file is missing, state.json's inode and mtime (one stat per run)."""

    def __init__(self, counter: Path, state: Path) -> None:
        import mmap

        self._state = state
        self._map: Optional[Any] = None
        self.counter: Optional[memoryview] = None
        try:
            with open(counter, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 8, access=mmap.ACCESS_READ)
        except (OSError, ValueError):
            self._map = None
        if self._map is not None:
            self.counter = memoryview(self._map).cast("Q")  # only compared for a change: byte order is moot

    def stamp(self) -> Any:
        if self.counter is not None:
            return self.counter[0]
        try:
            st = os.stat(self._state)
        except FileNotFoundError:
            return (0, 0)
        return (st.st_ino, st.st_mtime_ns)  # every commit renames a new file in: a new inode

    def close(self) -> None:
        if self.counter is not None:
            self.counter.release()
            self.counter = None
        if self._map is not None:
            self._map.close()
            self._map = None


class _Slot:
    """A loaded version with a count of the calls using it; released when replaced and no call holds it."""

    def __init__(self, loaded: Loaded, stamp: Any) -> None:
        self.loaded = loaded
        self.run = loaded.run  # the engines' own call: they check every feed (device_agent/engines/base.py)
        self.version = loaded.record.version
        self.stamp = stamp
        self.calls: List[None] = []  # one entry per call running on this version (see _LOCK_FREE)
        self.retired = False
        self.closing = False  # claimed by the one thread that releases it (under the model's lock)
        self.closed = False  # released: its memory is free

    def refusal(self, model: str, feeds: Mapping[str, np.ndarray]) -> Optional[InvalidInput]:
        """After the engines refused `feeds`: a wrong name, dtype or shape as one line naming the model, its version
        and what it takes; None when the inputs fit the version (the engines' own refusal then stands)."""
        try:
            _check_feeds(model, self.loaded, feeds)
        except InvalidInput as exc:
            return exc
        return None


class Model:
    """A name's active version, kept current. Create with `open_model`."""

    def __init__(self, name: str, repo: ModelRepository, loader: Loader, policy: str = "availability") -> None:
        if policy not in POLICIES:
            raise InvalidInput(f"policy {policy!r} is not one of {', '.join(POLICIES)}")
        self.name = name
        self.policy = policy
        self._repo = repo
        self._loader = loader
        self._watch = _Watch(repo.generation_file(name), repo.state_file(name))
        self._counter = self._watch.counter  # read inline on every run (None: the watch stats state.json)
        self._mutex = threading.Lock()  # guards _slot, and the call counts where there is no GIL
        self._changed = threading.Condition(self._mutex)  # signalled when either changes
        self._swap = threading.Lock()  # one load at a time
        self._slot: Optional[_Slot] = None
        self._closed = False
        self.load_error = ""  # why the last activation could not be followed (the old version kept serving)
        self._follow(force=True)

    # ---------------------------------------------------------------- what is loaded
    @property
    def version(self) -> int:
        return self._current().loaded.record.version

    @property
    def record(self) -> VersionRecord:
        return self._current().loaded.record

    @property
    def inputs(self) -> List[TensorSpec]:
        return list(self._current().loaded.inputs)

    @property
    def outputs(self) -> List[TensorSpec]:
        return list(self._current().loaded.outputs)

    def _current(self) -> _Slot:
        """The loaded version; during a swap under policy "resource" (none loaded for a moment), the next one."""
        slot = self._slot
        if slot is not None:
            return slot
        with self._mutex:
            return self._wait_for_slot()

    def _wait_for_slot(self) -> _Slot:
        """(With _mutex held.)"""
        while self._slot is None and not self._closed:
            self._changed.wait()
        if self._slot is None:
            raise InvalidInput(f"model {self.name!r} is closed")
        return self._slot

    # ---------------------------------------------------------------- running
    def run(self, feeds: Mapping[str, Any]) -> Dict[str, np.ndarray]:
        """Outputs by name, from the version active when the call began (or the one activated just before)."""
        return self._call(feeds)[1]

    def run_versioned(self, feeds: Mapping[str, Any]) -> Result:
        """`run`, with the version that answered."""
        version, outputs = self._call(feeds)
        return Result(version, outputs)

    def _call(self, feeds: Mapping[str, Any]) -> "tuple[int, Dict[str, np.ndarray]]":
        """The per-call path, kept to what it must do: follow an activation (one read of the mapped counter), count
        the call on its version (a list append and pop), and run. Inputs are checked once, by the engines
        (device_agent/engines/base.py); a refusal is put in the model's terms only when one happens."""
        slot = self._slot
        counter = self._counter
        if slot is None or slot.stamp != (counter[0] if counter is not None else self._watch.stamp()):
            self._follow()
            slot = self._slot
        if _LOCK_FREE and slot is not None:
            slot.calls.append(None)
            if slot.retired:  # replaced since it was read: count the call on the new version
                self._leave(slot)
                slot = self._enter()
        else:
            slot = self._enter()
        try:
            try:
                return slot.version, slot.run(feeds)  # type: ignore[arg-type]
            except (InvalidInput, KeyError, AttributeError, TypeError, ValueError):
                arrays = {k: v if type(v) is np.ndarray else np.asarray(v) for k, v in feeds.items()}
                refusal = slot.refusal(self.name, arrays)
                if refusal is not None:
                    raise refusal from None
                if any(arrays[k] is not v for k, v in feeds.items()):  # lists or scalars: as arrays, once
                    return slot.version, slot.run(arrays)
                raise
        finally:
            if _LOCK_FREE:
                slot.calls.pop()
                if slot.retired and not slot.calls:
                    self._release_if_idle(slot)
            else:
                self._leave(slot)

    def _enter(self) -> _Slot:
        """Count a call on the current version (waiting for one during a policy "resource" swap), under the lock."""
        with self._mutex:
            slot = self._slot if self._slot is not None else self._wait_for_slot()
            slot.calls.append(None)
            return slot

    def _leave(self, slot: _Slot) -> None:
        with self._mutex:
            slot.calls.pop()
            idle = slot.retired and not slot.calls
        if idle:
            self._release_if_idle(slot)

    def _release_if_idle(self, slot: _Slot) -> None:
        """Release a replaced version once no call uses it; exactly one thread does it."""
        with self._mutex:
            if not slot.retired or slot.calls or slot.closing:
                return
            slot.closing = True
        slot.loaded.close()
        with self._mutex:
            slot.closed = True
            self._changed.notify_all()

    # ---------------------------------------------------------------- following activations
    def _follow(self, force: bool = False) -> None:
        if self._closed:
            raise InvalidInput(f"model {self.name!r} is closed")
        with self._swap:
            slot = self._slot
            stamp = self._watch.stamp()
            if not force and slot is not None and slot.stamp == stamp:
                return  # another thread swapped while this one waited
            record = self._repo.active_record(self.name)
            if slot is not None and slot.loaded.record.version == record.version:
                slot.stamp = stamp  # a write that kept the version (a record added, a pending check passed)
                return
            if slot is not None and self.policy == "resource":
                with self._mutex:
                    self._slot = None  # new calls wait in _wait_for_slot until the new version is in
                self._retire(slot)
                with self._mutex:
                    while not slot.closed:  # the calls still on it finish first
                        self._changed.wait()
            try:
                new = _Slot(self._loader(record), stamp)
            except Exception as exc:  # noqa: BLE001 - a failed load leaves the version that served serving
                if slot is None:
                    raise
                self.load_error = f"version {record.version}: {exc}"
                log.warning("model %r: could not load version %s, version %s keeps serving: %s", self.name,
                            record.version, slot.loaded.record.version, exc)
                if self.policy == "resource":
                    slot = _Slot(self._loader(slot.loaded.record), slot.stamp)
                slot.stamp = stamp  # not tried again on every call; the next activation is
                with self._mutex:
                    self._slot = slot
                    self._changed.notify_all()
                return
            with self._mutex:
                old, self._slot = self._slot, new
                self._changed.notify_all()
            if old is not None:
                self._retire(old)

    def _retire(self, slot: _Slot) -> None:
        with self._mutex:
            slot.retired = True
        self._release_if_idle(slot)

    def close(self) -> None:
        with self._swap:
            with self._mutex:
                self._closed = True
                slot, self._slot = self._slot, None
                self._changed.notify_all()
            self._counter = None
            self._watch.close()
            if slot is not None:
                self._retire(slot)

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _check_feeds(name: str, loaded: Loaded, feeds: Mapping[str, np.ndarray]) -> None:
    """Wrong name, dtype or shape is one line naming what the version takes (asked once an engine refused)."""
    want = {s.name: s for s in loaded.inputs}
    unknown = [k for k in feeds if k not in want]
    if unknown:
        raise InvalidInput(f"model {name!r} version {loaded.record.version} has no input {unknown[0]!r}; it takes "
                           f"{sorted(want)}")
    missing = [k for k in want if k not in feeds]
    if missing:
        raise InvalidInput(f"model {name!r} version {loaded.record.version} needs input {missing[0]!r}")
    for k, arr in feeds.items():
        spec = want[k]
        if arr.dtype.name != spec.dtype:
            raise InvalidInput(f"input {k!r} of model {name!r} is {spec.dtype}, not {arr.dtype.name}")
        if arr.ndim != len(spec.shape) or any(isinstance(d, int) and d != n for d, n in zip(spec.shape, arr.shape)):
            shape = [d if isinstance(d, int) else -1 for d in spec.shape]
            raise InvalidInput(f"input {k!r} of model {name!r} has shape {list(arr.shape)}; it takes {shape} "
                               "(-1: any size)")


def open_model(name: str, store: Optional[PathLike] = None, cache_dir: Optional[PathLike] = None,
               policy: str = "availability", backend: Optional[str] = None) -> Model:
    """Open NAME's active version from this device's store and engine cache (the agent's, unless told)."""
    from device_agent.runtime.load import settings_for, version_loader

    settings = settings_for(store, cache_dir, backend)
    repo = ModelRepository(Path(settings.data_dir) / "models")
    return Model(name, repo, version_loader(settings), policy)


__all__ = ["Loaded", "Model", "Result", "open_model", "POLICIES"]
