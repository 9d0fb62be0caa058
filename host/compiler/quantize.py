"""INT8 through explicit quantization: the user's calibration samples, onnxruntime's static Q/DQ quantizer,
and a check that every Q/DQ node is one the target TensorRT parser takes.

Where: the prepared (folded) FP32 graph is partitioned once; only the Conv/ConvTranspose/Gemm/MatMul nodes
that land in TensorRT segments are quantized (``nodes_to_quantize``), so the TVM remainder never sees Q/DQ,
and the quantized graph is partitioned again (Q/DQ are in the op table, they join their segments).
Weights keep FP32 values behind a Q -> DQ pair (``AddQDQPairToWeight``), biases stay FP32
(``QuantizeBias`` off): that is the form NVIDIA's own Q/DQ exporters write and every TensorRT >= 8.0 parses.
onnxruntime's quantization is imported only here, lazily.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import onnx

from device_agent.errors import InvalidInput
from device_agent.manifest import TensorSpec

_log = logging.getLogger(__name__)
CALIBRATORS = ("minmax", "entropy", "percentile")
#: ops whose inputs get Q/DQ: what TensorRT runs in INT8 kernels (NVIDIA's Q/DQ placement recommendation)
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
MAX_SAMPLES = 4096
#: compute capabilities below 6.1 have no INT8 math (no DP4A); 6.2 (TX2) neither
NO_FAST_INT8 = {(5, 3), (6, 2)}


class CalibrationError(InvalidInput):
    """The calibration or validation samples do not fit the model."""


class QdqError(InvalidInput):
    """The quantized graph holds a Q/DQ node the target TensorRT parser does not take."""


@dataclass
class Int8Options:
    """What `--int8` asks for; the calibration arrays are read by `read_samples`."""

    calibration: Path
    calibrator: str = "minmax"
    validation: Optional[Path] = None
    max_rel_err: Optional[float] = None
    min_cosine: Optional[float] = None

    def __post_init__(self) -> None:
        if self.calibrator not in CALIBRATORS:
            raise CalibrationError(f"unknown calibrator {self.calibrator!r}; choose one of {', '.join(CALIBRATORS)}")


def read_samples(path: Path, specs: Sequence[TensorSpec], shapes: Dict[str, List[int]],
                 what: str = "calibration") -> Dict[str, np.ndarray]:
    """An .npz (one array per input, samples on a new leading axis) or a folder of NAME.npy; checked
    against the model's inputs: names, dtype, shape ``[N, *input_shape]``, N >= 1, same N for all."""
    path = Path(path)
    arrays: Dict[str, np.ndarray] = {}
    try:
        if path.is_dir():
            for f in sorted(path.glob("*.npy")):
                arrays[f.stem] = np.load(f, allow_pickle=False)
        elif path.is_file():
            with np.load(path, allow_pickle=False) as z:
                if not hasattr(z, "files"):
                    raise CalibrationError(f"{what} file {path} is one .npy array; give an .npz with one array "
                                           "per input name, or a folder of NAME.npy files")
                arrays = {k: z[k] for k in z.files}
        else:
            raise CalibrationError(f"{what} data {path} does not exist; give an .npz file or a folder of .npy files")
    except CalibrationError:
        raise
    except Exception as e:  # noqa: BLE001 - zip/npy format errors of every kind
        raise CalibrationError(f"{what} data {path} cannot be read as .npz/.npy ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:120] if str(e) else ''}); save it with numpy.savez") from None
    want = {s.name: s for s in specs}
    if not arrays:
        raise CalibrationError(f"{what} data {path} holds no arrays; it needs one per input: {sorted(want)}")
    unknown, missing = sorted(set(arrays) - set(want)), sorted(set(want) - set(arrays))
    if unknown or missing:
        raise CalibrationError(f"{what} data {path} has arrays {sorted(arrays)}, the model's inputs are "
                               f"{sorted(want)}; name one array per input")
    counts = set()
    out: Dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        spec, shape = want[name], list(shapes[name])
        if list(arr.shape[1:]) != shape or arr.ndim != len(shape) + 1:
            raise CalibrationError(f"{what} array {name!r} has shape {list(arr.shape)}, it needs [N, "
                                   f"{', '.join(map(str, shape))}] (N samples of input shape {shape})")
        if arr.shape[0] == 0:
            raise CalibrationError(f"{what} array {name!r} holds no samples (N = 0); give at least one")
        if arr.shape[0] > MAX_SAMPLES:
            raise CalibrationError(f"{what} array {name!r} holds {arr.shape[0]} samples; at most {MAX_SAMPLES}")
        dt = np.dtype(spec.dtype)
        if arr.dtype != dt and (arr.dtype.kind != dt.kind or not np.can_cast(arr.dtype, dt, casting="same_kind")):
            raise CalibrationError(f"{what} array {name!r} is {arr.dtype}, the model's input is {dt}")
        counts.add(arr.shape[0])
        out[name] = np.ascontiguousarray(arr, dtype=dt)
    if len(counts) > 1:
        raise CalibrationError(f"{what} arrays hold different sample counts {sorted(counts)}; give the same N "
                               "for every input")
    return out


def samples_digest(arrays: Dict[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and bytes: what the engine cache key and the manifest record."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{list(a.shape)}\n".encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


def iter_samples(arrays: Dict[str, np.ndarray]) -> Iterator[Dict[str, np.ndarray]]:
    n = next(iter(arrays.values())).shape[0]
    for i in range(n):
        yield {k: v[i] for k, v in arrays.items()}


def _reader(arrays: Dict[str, np.ndarray]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter_samples(arrays)

        def get_next(self):
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter_samples(arrays)

    return Reader()


def quantize(model: onnx.ModelProto, calibration: Dict[str, np.ndarray], nodes: Sequence[str],
             calibrator: str, per_channel: bool) -> onnx.ModelProto:
    """onnxruntime's ``quantize_static`` to QDQ: int8 symmetric activations and weights, zero points 0."""
    from onnxruntime.quantization import CalibrationMethod

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibrator]
    root = logging.getLogger()
    quiet = logging.NullHandler()
    added = not root.handlers  # onnxruntime's quantizer calls logging.warning(), which would configure the root
    if added:
        root.addHandler(quiet)
    printed = io.StringIO()  # its histogram calibrators print() progress, which would break `--json` on stdout
    try:
        with tempfile.TemporaryDirectory(prefix="deploy-int8-") as tmp, contextlib.redirect_stdout(printed):
            return _quantize_in(Path(tmp), model, calibration, nodes, method, per_channel)
    finally:
        if added:
            root.removeHandler(quiet)
        if printed.getvalue():
            _log.debug("onnxruntime.quantization: %s", printed.getvalue().strip())


def _quantize_in(tmp: Path, model: onnx.ModelProto, calibration: Dict[str, np.ndarray], nodes: Sequence[str],
                 method: Any, per_channel: bool) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    src, out = tmp / "fp32.onnx", tmp / "int8.onnx"
    onnx.save(model, str(src))  # a path, not the proto: quantize_static would move our proto's weights out
    quantize_static(str(src), str(out), _reader(calibration), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANTIZED_OPS), nodes_to_quantize=list(nodes),
                    per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=method,
                    extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                   "AddQDQPairToWeight": True, "QuantizeBias": False,
                                   "CalibTensorRangeSymmetric": True})
    return onnx.load(str(out))


def qdq_nodes(model: onnx.ModelProto) -> List[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


def check_qdq(model: onnx.ModelProto, trt: Tuple[int, ...], opset: int) -> Dict[str, int]:
    """Every Q/DQ is int8 with zero point 0; per-channel (1-d scale) only on constant weights, at opset >= 13
    and TensorRT >= 8.0; activations per-tensor. Returns counts by kind."""
    inits = {i.name: i for i in model.graph.initializer}
    produced_by = {o: n for n in model.graph.node for o in n.output}
    counts = {"per_tensor": 0, "per_channel": 0}
    for n in qdq_nodes(model):
        scale = inits.get(n.input[1])
        if scale is None:
            raise QdqError(f"{n.op_type} {n.name!r} has a scale computed at run time; TensorRT needs a constant")
        if len(n.input) > 2 and n.input[2]:
            zp = inits.get(n.input[2])
            if zp is None or zp.data_type != onnx.TensorProto.INT8:
                raise QdqError(f"{n.op_type} {n.name!r} is not int8 (TensorRT's Q/DQ is int8 only); "
                               "quantize with activation and weight type QInt8")
            if np.any(onnx.numpy_helper.to_array(zp) != 0):
                raise QdqError(f"{n.op_type} {n.name!r} has a non-zero zero point; TensorRT takes symmetric "
                               "quantization only")
        if len(scale.dims) == 0 or int(np.prod(scale.dims)) == 1:
            counts["per_tensor"] += 1
            continue
        src = n.input[0]
        weight = src in inits or (src in produced_by and produced_by[src].op_type == "QuantizeLinear"
                                  and produced_by[src].input[0] in inits)
        if not weight:
            raise QdqError(f"{n.op_type} {n.name!r} quantizes an activation per channel; TensorRT takes "
                           "per-tensor scales for activations")
        if opset < 13:
            raise QdqError(f"{n.op_type} {n.name!r} is per-channel, which needs opset >= 13 (its axis); the "
                           f"segments are at opset {opset}: use a newer --trt-version or a model at opset 13")
        if trt < (8, 0, 0):
            raise QdqError(f"{n.op_type} {n.name!r} is per-channel; TensorRT {'.'.join(map(str, trt))} "
                           "takes per-channel Q/DQ from 8.0")
        counts["per_channel"] += 1
    return counts


def int8_warning(compute_capability: Optional[str]) -> Optional[str]:
    """A GPU without INT8 math runs Q/DQ layers in FP32/FP16 kernels: INT8 gains nothing there."""
    if not compute_capability:
        return None
    try:
        cc = tuple(int(x) for x in compute_capability.split(".")[:2])
    except ValueError:
        return None
    if cc in NO_FAST_INT8 or cc < (6, 1):
        return (f"compute capability {compute_capability} has no fast INT8 path (no DP4A or INT8 tensor cores): "
                "TensorRT runs Q/DQ layers in FP32/FP16 kernels there, so --int8 costs accuracy and gains no speed")
    return None
