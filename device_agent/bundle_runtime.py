"""Run a whole bundle given one runner per TensorRT segment.

With no remainder the single segment is the model. With a remainder the TVM library is loaded
into a Relax VM (cached per bundle), each segment id is registered as a global packed function
in destination-passing style, and ``main`` is called. tvm is imported lazily.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from device_agent.bundle import Bundle, sha256_file
from device_agent.errors import InvalidInput, Unavailable

Runner = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]

_LOCK = threading.RLock()
_VMS: "OrderedDict[Tuple[str, str, str], Any]" = OrderedDict()  # loaded VMs, least recently used first
MAX_CACHED_VMS = 8
_ACTIVE: Dict[str, Callable[..., None]] = {}  # segment id -> the DPS function of the run in progress


def _trampoline(seg_id: str) -> Callable[..., None]:
    def call(*args):
        _ACTIVE[seg_id](*args)

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


def _dps(seg_inputs, seg_outputs, runner: Runner, seg_id: str):
    n_in = len(seg_inputs)

    def packed(*args):
        ins = {name: a.numpy() for name, a in zip(seg_inputs, args[:n_in])}
        res = runner(ins)
        for name, dst in zip(seg_outputs, args[n_in:]):
            if name not in res:
                raise RuntimeError(f"segment {seg_id} runner returned no output {name!r}")
            dst.copyfrom(np.asarray(res[name], dtype=np.dtype(str(dst.dtype)), order="C"))

    return packed


def run_bundle(bundle: Bundle, runners: Dict[str, Runner], inputs: Dict[str, np.ndarray],
               device: str = "cpu", library: Optional[str] = None) -> Dict[str, np.ndarray]:
    """Model outputs by name for ``inputs`` by name. ``library``: another build of the remainder
    (the host checks a Jetson bundle with an x86 build of the same Relax module)."""
    m = bundle.manifest
    _check_inputs(bundle, inputs)
    missing = [s.id for s in m.segments if s.id not in runners]
    if missing:
        raise InvalidInput(f"no runner for segments {missing}")
    if m.remainder is None:
        seg = m.segments[0]
        res = runners[seg.id]({t.name: inputs[t.name] for t in seg.inputs})
        return {t.name: res[t.name] for t in m.outputs}
    try:
        import tvm
    except ImportError:
        raise Unavailable("this bundle has a TVM remainder but the tvm runtime is not installed") from None
    with _LOCK:
        # the VM resolves packed functions when it is created, so names are bound to trampolines
        # that dispatch to whichever runner the current call brought
        for seg in m.segments:
            _ACTIVE[seg.id] = _dps([t.name for t in seg.inputs], [t.name for t in seg.outputs], runners[seg.id], seg.id)
            tvm.register_global_func(seg.id, _trampoline(seg.id), override=True)
        vm, dev = _vm(bundle, device, library)
        args = [tvm.runtime.tensor(np.asarray(inputs[t.name], order="C"), dev) for t in m.inputs]
        res = vm[m.remainder.entry](*args)
        outs = [res[i] for i in range(len(m.outputs))] if not hasattr(res, "numpy") else [res]
        return {t.name: o.numpy() for t, o in zip(m.outputs, outs)}


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
