"""Run a whole bundle given one runner per TensorRT segment.

With no remainder the single segment is the model. With a remainder the TVM library is loaded
into a Relax VM (cached per bundle), each segment id is registered as a global packed function
in destination-passing style, and ``main`` is called. tvm is imported lazily.

On a GPU, a segment whose engine can take device pointers (``DeviceRunner``: onnxruntime-cuda's I/O
binding) reads the TVM part's tensors where they are and writes into the buffers the VM handed it, so
a hybrid bundle's tensors stay on the GPU from the first part to the last; other segments go through
host arrays.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from device_agent.bundle import Bundle
from device_agent.errors import InvalidInput, Unavailable
from device_agent.fileio import sha256_file
from device_agent.shape_profiles import check_feeds

Runner = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]


@dataclass(frozen=True)
class DeviceTensor:
    """A tensor in GPU memory that someone else owns (here: the TVM VM): where it is and what it holds."""

    name: str
    ptr: int
    shape: Tuple[int, ...]
    dtype: str


#: Runs one segment from GPU inputs into GPU outputs, both already allocated; returns when the outputs are ready.
DeviceRunner = Callable[[Sequence[DeviceTensor], Sequence[DeviceTensor]], None]
KDL_CUDA = 2  # DLPack's device type of CUDA memory

_LOCK = threading.RLock()
_VMS: "OrderedDict[Tuple[str, str, str], Any]" = OrderedDict()  # loaded VMs, least recently used first
MAX_CACHED_VMS = 8
_ACTIVE: Dict[str, Callable[..., None]] = {}  # segment id -> the DPS function of the run in progress
_REGISTERED: set = set()  # segment ids whose trampoline is registered (once: it looks _ACTIVE up per call)


def _trampoline(seg_id: str) -> Callable[..., None]:
    def call(*args):
        return _ACTIVE[seg_id](*args)  # DPS calls return None; ``<id>.alloc`` calls return their outputs

    return call


def _check_inputs(bundle: Bundle, inputs: Dict[str, np.ndarray]) -> None:
    want = [t.name for t in bundle.manifest.inputs]
    missing = [n for n in want if n not in inputs]
    if missing:
        raise InvalidInput(f"inputs {missing} are missing; the bundle takes {want}")
    for spec in bundle.manifest.inputs:
        arr = inputs[spec.name]
        if np.dtype(arr.dtype).name != spec.dtype:
            raise InvalidInput(f"input {spec.name!r} is {arr.dtype}, the bundle takes {spec.dtype}")
        if len(arr.shape) != len(spec.shape) or any(isinstance(d, int) and d != s for d, s in zip(spec.shape, arr.shape)):
            raise InvalidInput(f"input {spec.name!r} has shape {list(arr.shape)}, the bundle takes {spec.shape}")
        batch = bundle.manifest.options.get("batch")
        if batch and spec.shape and spec.shape[0] == "batch" and not batch[0] <= arr.shape[0] <= batch[2]:
            raise InvalidInput(f"input {spec.name!r} has batch {arr.shape[0]}, the bundle was compiled for "
                               f"{batch[0]}..{batch[2]}")
    check_feeds(bundle.manifest.options, inputs)


def _vm(bundle: Bundle, device: str, library: Optional[str] = None):
    import tvm
    from tvm import relax

    rem = bundle.manifest.remainder
    assert rem is not None
    path = library or str(bundle.remainder_path)
    key = (str(Path(path).resolve()), rem.digest if library is None else sha256_file(path), device)
    vm = _VMS.get(key)
    if vm is not None:
        _VMS.move_to_end(key)
    if vm is None:
        lib = tvm.runtime.load_module(path)
        dev = tvm.cuda(0) if device == "cuda" else tvm.cpu(0)
        vm = (relax.VirtualMachine(lib, dev), dev)
        _VMS[key] = vm
        while len(_VMS) > MAX_CACHED_VMS:
            _VMS.popitem(last=False)
    return vm


def _device_tensors(names, arrays) -> Optional[list]:
    """The TVM tensors as DeviceTensors when every one of them is in CUDA memory, else None."""
    out = []
    for name, a in zip(names, arrays):
        if a.__dlpack_device__()[0] != KDL_CUDA:
            return None
        out.append(DeviceTensor(name, int(a.data_ptr()), tuple(int(d) for d in a.shape), str(a.dtype)))
    return out


def _dps(seg_inputs, seg_outputs, runner: Runner, seg_id: str, device_runner: Optional[DeviceRunner] = None):
    n_in = len(seg_inputs)

    def packed(*args):
        if device_runner is not None:
            ins_d = _device_tensors(seg_inputs, args[:n_in])
            outs_d = _device_tensors(seg_outputs, args[n_in:]) if ins_d is not None else None
            if outs_d is not None:
                device_runner(ins_d, outs_d)
                return
        ins = {name: a.numpy() for name, a in zip(seg_inputs, args[:n_in])}
        res = runner(ins)
        for name, dst in zip(seg_outputs, args[n_in:]):
            if name not in res:
                raise RuntimeError(f"segment {seg_id} runner returned no output {name!r}")
            dst.copyfrom(np.asarray(res[name], dtype=np.dtype(str(dst.dtype)), order="C"))

    return packed


def _allocating(seg_inputs, seg_outputs, runner: Runner, seg_id: str):
    """A segment whose outputs the remainder cannot size before the call (a shape range's computed dims): called as
    ``<id>.alloc``, it returns its outputs as new tensors on the device of its first input."""
    import tvm

    def packed(*args):
        res = runner({name: a.numpy() for name, a in zip(seg_inputs, args)})
        missing = [n for n in seg_outputs if n not in res]
        if missing:
            raise RuntimeError(f"segment {seg_id} runner returned no outputs {missing}")
        dev = args[0].device if args else tvm.cpu(0)
        outs = [tvm.runtime.tensor(np.asarray(res[n], order="C"), dev) for n in seg_outputs]  # 0-d stays 0-d
        return outs[0] if len(outs) == 1 else tuple(outs)

    return packed


def _bind(bundle: Bundle, runners: Dict[str, Runner], device_runners: Optional[Dict[str, DeviceRunner]]):
    """The per-call DPS functions for this bundle's segments (call with _LOCK held)."""
    import tvm

    # the VM resolves packed functions when it is created, so names are bound to trampolines
    # that dispatch to whichever runner the current call brought
    active = {}
    for seg in bundle.manifest.segments:
        active[seg.id] = _dps([t.name for t in seg.inputs], [t.name for t in seg.outputs], runners[seg.id], seg.id,
                              (device_runners or {}).get(seg.id))
        active[seg.id + ".alloc"] = _allocating([t.name for t in seg.inputs], [t.name for t in seg.outputs],
                                                runners[seg.id], seg.id)
        for name in (seg.id, seg.id + ".alloc"):
            if name not in _REGISTERED:
                tvm.register_global_func(name, _trampoline(name), override=True)
                _REGISTERED.add(name)
    return active


def _check_runners(bundle: Bundle, runners: Dict[str, Runner]) -> None:
    missing = [s.id for s in bundle.manifest.segments if s.id not in runners]
    if missing:
        raise InvalidInput(f"no runner for segments {missing}")


def _tvm():
    try:
        import tvm
    except ImportError:
        raise Unavailable("this bundle has a TVM remainder but the tvm runtime is not installed") from None
    return tvm


def _results(m, res) -> list:
    return [res[i] for i in range(len(m.outputs))] if not hasattr(res, "numpy") else [res]


def run_bundle(bundle: Bundle, runners: Dict[str, Runner], inputs: Dict[str, np.ndarray],
               device: str = "cpu", library: Optional[str] = None,
               device_runners: Optional[Dict[str, DeviceRunner]] = None) -> Dict[str, np.ndarray]:
    """Model outputs by name for ``inputs`` by name. ``library``: another build of the remainder
    (the host checks a Jetson bundle with an x86 build of the same Relax module)."""
    m = bundle.manifest
    _check_inputs(bundle, inputs)
    _check_runners(bundle, runners)
    if m.remainder is None:
        seg = m.segments[0]
        res = runners[seg.id]({t.name: inputs[t.name] for t in seg.inputs})
        return {t.name: res[t.name] for t in m.outputs}
    tvm = _tvm()
    with _LOCK:
        _ACTIVE.update(_bind(bundle, runners, device_runners))
        vm, dev = _vm(bundle, device, library)
        args = [tvm.runtime.tensor(np.asarray(inputs[t.name], order="C"), dev) for t in m.inputs]
        res = vm[m.remainder.entry](*args)
        return {t.name: o.numpy() for t, o in zip(m.outputs, _results(m, res))}


def resident_call(bundle: Bundle, runners: Dict[str, Runner], inputs: Dict[str, np.ndarray], device: str = "cpu",
                  device_runners: Optional[Dict[str, DeviceRunner]] = None) -> Callable[[], list]:
    """One benchmark iteration of a hybrid bundle with its inputs copied to the VM's device once and its
    outputs left there (as onnxruntime-cuda's I/O binding does for a single engine). Run ``run_bundle``
    once first: it checks the inputs."""
    m = bundle.manifest
    assert m.remainder is not None
    _check_runners(bundle, runners)
    tvm = _tvm()
    with _LOCK:
        active = _bind(bundle, runners, device_runners)
        vm, dev = _vm(bundle, device)
        args = [tvm.runtime.tensor(np.asarray(inputs[t.name], order="C"), dev) for t in m.inputs]
    fn = vm[m.remainder.entry]

    def once() -> list:
        with _LOCK:
            _ACTIVE.update(active)
            outs = _results(m, fn(*args))
            dev.sync()  # the last part may be a TVM kernel still running
            return outs

    return once


def onnxruntime_runners(bundle: Bundle) -> Dict[str, Runner]:
    """One onnxruntime CPU session per segment (the agent's onnxruntime backend and tests use this)."""
    import onnxruntime as ort

    runners: Dict[str, Runner] = {}
    for seg in bundle.manifest.segments:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(bundle.segment_path(seg.id)), opts, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]

        def run(feed, sess=sess, names=names):
            return dict(zip(names, sess.run(names, feed)))

        runners[seg.id] = run
    return runners
