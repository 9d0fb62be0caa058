"""The INT8 step of `compile_model`: quantize the nodes that land in TensorRT segments, check the Q/DQ for the
target parser, and report FP32 against INT8 before anything is written."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import numpy as np
import onnx

from device_agent.errors import InvalidInput
from host.compiler import accuracy, frontend, quantize
from host.compiler.partition import partition
from host.compiler.patterns import Context
from host.compiler.profiles import Profile, format_version

log = logging.getLogger(__name__)


@dataclass
class Int8Result:
    loaded: frontend.LoadedModel      # the quantized model in place of the FP32 one
    digest: str                       # of the calibration samples
    first_sample: Dict[str, np.ndarray]
    info: Dict[str, Any]              # what the manifest records under options.int8


def apply(loaded: frontend.LoadedModel, ctx: Context, profile: Profile, opts: quantize.Int8Options,
          exclude: Sequence[str], remove_no_mac: bool) -> Int8Result:
    """Quantize with the user's samples, restricted to nodes that a first partition puts in TensorRT."""
    calib = quantize.read_samples(opts.calibration, loaded.inputs, loaded.concrete_inputs, "calibration")
    val = (quantize.read_samples(opts.validation, loaded.inputs, loaded.concrete_inputs, "validation")
           if opts.validation is not None else None)
    taken = {n.name for n in loaded.model.graph.node}
    for i, n in enumerate(loaded.model.graph.node):  # nodes_to_quantize goes by name: give unnamed nodes one
        if not n.name:
            n.name = next(f"{n.op_type}_{i}_{k}" for k in range(len(taken) + 1) if f"{n.op_type}_{i}_{k}" not in taken)
            taken.add(n.name)
    first = partition(loaded.model, ctx, exclude=exclude, remove_no_mac_subgraphs=remove_no_mac)
    nodes = [n.name for seg in first.segments for n in seg.nodes if n.op_type in quantize.QUANTIZED_OPS]
    if not nodes:
        raise InvalidInput("--int8: no Conv, ConvTranspose, Gemm or MatMul lands in a TensorRT segment, so there is "
                           "nothing to quantize; build without --int8")
    per_channel = min(loaded.opset, ctx.parser_opset) >= 13 and ctx.trt >= (8, 0, 0)
    q = quantize.quantize(loaded.model, calib, nodes, opts.calibrator, per_channel)
    q = onnx.shape_inference.infer_shapes(q, strict_mode=True)
    opset = frontend.model_opset(q)
    opset = max(loaded.opset, opset)
    counts = quantize.check_qdq(q, ctx.trt, min(opset, ctx.parser_opset))
    report = accuracy.compare(loaded.model, q, val if val is not None else calib,
                              "validation" if val is not None else "calibration")
    accuracy.enforce(report, opts.max_rel_err, opts.min_cosine)
    types = dict(loaded.value_types)
    types.update(frontend.tensor_types(q))
    digest = quantize.samples_digest(calib)
    warning = quantize.int8_warning(profile.compute_capability)
    if warning:
        log.warning("%s", warning)
    info = {
        "calibrator": opts.calibrator, "calibration_digest": digest,
        "calibration_samples": int(next(iter(calib.values())).shape[0]),
        "validation_digest": quantize.samples_digest(val) if val is not None else None,
        "per_channel_weights": per_channel, "quantized_nodes": len(nodes), "qdq": counts,
        "tool": f"onnxruntime.quantization.quantize_static (QDQ, int8 symmetric, {opts.calibrator})",
        "trt_version": format_version(ctx.trt), "accuracy": report.to_json(), "warning": warning,
    }
    new = dataclasses.replace(loaded, model=q, opset=opset, value_types=types)
    return Int8Result(new, digest, {k: v[0] for k, v in calib.items()}, info)
