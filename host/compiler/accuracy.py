"""FP32 against INT8 on the host, before anything ships: both graphs under onnxruntime on the same samples."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import onnx

from device_agent.errors import BuildFailed


class AccuracyBelowFloor(BuildFailed):
    """The INT8 graph is further from FP32 than the user allowed (--max-rel-err, --min-cosine)."""


@dataclass
class OutputAccuracy:
    name: str
    max_rel_err: float       # max|int8 - fp32| / max|fp32|, the worst sample
    cosine: float            # cosine similarity of the flattened outputs, the worst sample
    top1_agreement: Optional[float] = None  # share of samples whose argmax agrees (classifier outputs only)


@dataclass
class AccuracyReport:
    dataset: str             # "calibration" | "validation"
    samples: int
    outputs: List[OutputAccuracy]

    def to_json(self) -> Dict[str, Any]:
        return {"dataset": self.dataset, "samples": self.samples, "outputs": [asdict(o) for o in self.outputs],
                "max_rel_err": max(o.max_rel_err for o in self.outputs),
                "min_cosine": min(o.cosine for o in self.outputs)}


def _is_classifier(shape: tuple) -> bool:
    """[C] or [1, C] with C > 1: one score per class."""
    dims = [d for d in shape if d != 1]
    return len(dims) == 1 and dims[0] > 1


def _session(model: onnx.ModelProto, fake_quant: bool = False):
    """`fake_quant`: run Q/DQ pairs as written (quantize, dequantize, the op in FP32), as TensorRT's math is
    defined, instead of letting onnxruntime fuse them into its x86 integer kernels: on CPUs without VNNI (AVX2
    only) those saturate their u8*s8 products and the report would measure the host's CPU, not the model
    (max rel err 0.39 on an AVX2-only EPYC where a VNNI host saw < 0.1 for the same graph)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    if fake_quant:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # no QDQ fusion (level 2)
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def compare(fp32: onnx.ModelProto, int8: onnx.ModelProto, samples: Dict[str, np.ndarray],
            dataset: str) -> AccuracyReport:
    """Run both models on every sample (arrays stacked on axis 0) and gather the per-output figures."""
    from host.compiler.quantize import iter_samples

    s32, s8 = _session(fp32), _session(int8, fake_quant=True)
    names = [o.name for o in s32.get_outputs()]
    rel: Dict[str, List[float]] = {n: [] for n in names}
    cos: Dict[str, List[float]] = {n: [] for n in names}
    agree: Dict[str, List[bool]] = {n: [] for n in names}
    count = 0
    for feed in iter_samples(samples):
        a_all, b_all = s32.run(names, feed), s8.run(names, feed)
        count += 1
        for n, a, b in zip(names, a_all, b_all):
            a64, b64 = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
            scale = float(np.abs(a64).max()) if a64.size else 0.0
            diff = float(np.abs(a64 - b64).max()) if a64.size else 0.0
            rel[n].append(diff / scale if scale > 0 else diff)
            na, nb = float(np.linalg.norm(a64)), float(np.linalg.norm(b64))
            cos[n].append(float(a64 @ b64 / (na * nb)) if na > 0 and nb > 0 else float(na == nb))
            if _is_classifier(np.shape(a)):
                agree[n].append(int(np.argmax(a64)) == int(np.argmax(b64)))
    outs = [OutputAccuracy(n, max(rel[n]), min(cos[n]),
                           (sum(agree[n]) / len(agree[n])) if agree[n] else None) for n in names]
    return AccuracyReport(dataset, count, outs)


def enforce(report: AccuracyReport, max_rel_err: Optional[float], min_cosine: Optional[float]) -> None:
    """One line naming the output, the figure and the bound; nothing is written when it fails."""
    for o in report.outputs:
        if max_rel_err is not None and o.max_rel_err > max_rel_err:
            raise AccuracyBelowFloor(f"INT8 output {o.name!r} has max relative error {o.max_rel_err:.3g} against "
                                     f"FP32 on the {report.dataset} set, above --max-rel-err {max_rel_err:g}; "
                                     "try another --calibrator, more calibration samples, or FP16")
        if min_cosine is not None and o.cosine < min_cosine:
            raise AccuracyBelowFloor(f"INT8 output {o.name!r} has cosine similarity {o.cosine:.4f} against FP32 "
                                     f"on the {report.dataset} set, below --min-cosine {min_cosine:g}; "
                                     "try another --calibrator, more calibration samples, or FP16")
