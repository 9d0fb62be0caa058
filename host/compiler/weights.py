"""A segment's ONNX written as a small graph plus one file per weight tensor, each named by its content.

A bundle travels and is stored as parts, one per file (device_agent/parts.py). With the weights inline, any change
to any tensor (a re-trained head) makes the whole segment a new part; written this way an unchanged tensor keeps
its file and its digest, so a fine-tuned model sends only the tensors that changed, and the graph file, which names
each tensor's file, is small. The graph's digest pins every weight's digest (the file names), so the engine cache
key (graph digest + build facts) still covers the weights.

The tensors written out are the top-level initializers holding at least `SIZE_THRESHOLD` bytes of raw data, the
same rule as onnx's `save_model(save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=...)`,
but each file is named by its sha256 instead of the tensor's name, so two segments or two versions that hold the
same tensor hold the same file. Subgraph initializers stay inline (the agent inlines top-level ones for backends
that read bytes: device_agent/onnx_weights.py).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
from onnx.external_data_helper import set_external_data

#: Tensors at least this large get a file of their own; smaller ones (biases, scales, shapes) stay in the graph,
#: where they cost no round trip of their own. 16 KiB keeps ResNet-50 at 56 weight files.
SIZE_THRESHOLD = 16 * 1024
WEIGHTS_DIR = "weights"  # beside the segment's graph: segments/weights/<hex>


def write_segment(model: onnx.ModelProto, path: Path, size_threshold: int = SIZE_THRESHOLD) -> list[Path]:
    """Write `model` to `path` with its large top-level initializers in ``weights/<sha256 hex>`` beside it; return
    the weight files it names (shared files are written once)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's model stays inline
    folder = path.parent / WEIGHTS_DIR
    written: list[Path] = []
    for tensor in model.graph.initializer:
        if not tensor.HasField("raw_data") or len(tensor.raw_data) < size_threshold:
            continue
        data = tensor.raw_data
        hex_digest = hashlib.sha256(data).hexdigest()
        target = folder / hex_digest
        if not target.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        written.append(target)
        del tensor.external_data[:]
        set_external_data(tensor, f"{WEIGHTS_DIR}/{hex_digest}")
        tensor.ClearField("raw_data")
    path.write_bytes(model.SerializeToString(deterministic=True))
    return written
