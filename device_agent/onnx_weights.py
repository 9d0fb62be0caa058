"""A segment's graph with its weight files put back inline, for backends that take the model as bytes.

Bundles keep each large weight tensor of a segment in ``weights/<sha256 hex>`` beside the graph (host/compiler/
weights.py), so a tensor is stored and sent once. The backends build from bytes (TensorRT's parser, onnxruntime,
trtexec's file), and onnxruntime keeps external references in the optimised model it writes, which is the plan
the cache keeps; so the builder hands them the graph with the weights inline again, as bundles of schema 1 held
them. Only the onnx fields this needs are parsed (protos/onnx_graph.proto); every other field passes through.
Each file is checked against the digest its name carries before a byte of it is used.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import DataLoss, InvalidInput
from .fileio import sha256_bytes

EXTERNAL = 1  # onnx TensorProto.DataLocation.EXTERNAL
_LOCATION = re.compile(r"^weights/([0-9a-f]{64})$")


def inline_weights(graph: bytes, base_dir: Path) -> bytes:
    """`graph` with every top-level initializer stored in ``base_dir/weights/<hex>`` inline; unchanged if none."""
    from protos import onnx_graph_pb2

    model = onnx_graph_pb2.ModelProto.FromString(graph)
    external = [t for t in model.graph.initializer if t.data_location == EXTERNAL]
    if not external:
        return graph
    for tensor in external:
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        m = _LOCATION.match(location)
        if m is None or "offset" in info or "length" in info:
            raise InvalidInput(f"segment tensor {tensor.name!r} names external data {location!r}; bundles keep "
                               "each weight in weights/<sha256 hex>, whole (recompile with this host)")
        try:
            data = (base_dir / location).read_bytes()
        except OSError as exc:
            raise DataLoss(f"weight file {location} of tensor {tensor.name!r} cannot be read: {exc}") from None
        got = sha256_bytes(data)
        if got != "sha256:" + m.group(1):
            raise DataLoss(f"weight file {location} of tensor {tensor.name!r} changed on this device's disk "
                           f"(its sha256 is now {got[:19]}...)")
        tensor.raw_data = data
        del tensor.external_data[:]
        tensor.data_location = 0
    return model.SerializeToString()
