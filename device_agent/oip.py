"""The Open Inference Protocol (KServe v2 gRPC) for the device's active models, on the agent's own port.

Triton, KServe and MLServer speak it, so an application written against ``tritonclient.grpc`` talks to the agent
unchanged. Every call is served by the same runtime the application could import (``device_agent/runtime``):
a model is its active version, followed across activations; a request naming another version is refused.
Only what the agent has is offered: no model load/unload (that is ``deploy activate``), no shared memory, no
streaming. Errors are our own exceptions, turned into status codes by the service edge like every other call.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from device_agent.edge import Activity, unary_edge
from device_agent.errors import InvalidInput, NotFound, PreconditionFailed
from protos import oip_pb2

#: KServe v2 datatypes and the numpy dtype each is (BYTES is not a tensor our bundles take).
DATATYPES: Dict[str, str] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}
DTYPE_TO_DATATYPE = {v: k for k, v in DATATYPES.items()}
#: InferTensorContents field that carries each datatype when the client does not send raw bytes.
_CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
             "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
             "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
             "FP64": "fp64_contents"}
MAX_INFER_BYTES = 512 * 1024 * 1024
SERVER_NAME = "deploy-agent"
PLATFORM = "jetson-deploy"
#: The service name clients call (the protocol's); our messages live in package deploy.oip (protos/oip.proto).
SERVICE_NAME = "inference.GRPCInferenceService"


def datatype_of(dtype: str) -> str:
    return DTYPE_TO_DATATYPE.get(dtype, dtype.upper())


def _shape(shape: Sequence[Any]) -> List[int]:
    return [d if isinstance(d, int) else -1 for d in shape]


def _input_array(t: Any, raw: Optional[bytes]) -> np.ndarray:
    dtype = DATATYPES.get(t.datatype)
    if dtype is None:
        raise InvalidInput(f"input {t.name!r} has datatype {t.datatype!r}; this server takes "
                           f"{', '.join(DATATYPES)}")
    shape = [int(d) for d in t.shape]
    if any(d < 0 for d in shape) or len(shape) > 16:
        raise InvalidInput(f"input {t.name!r} has shape {shape}: at most 16 non-negative dims")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    nbytes = count * np.dtype(dtype).itemsize
    if nbytes > MAX_INFER_BYTES:
        raise InvalidInput(f"input {t.name!r} would take {nbytes} bytes, above the limit of {MAX_INFER_BYTES}")
    if raw is not None:
        if len(raw) != nbytes:
            raise InvalidInput(f"input {t.name!r} carries {len(raw)} raw bytes but {t.datatype}{shape} "
                               f"needs {nbytes}")
        return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
    field = _CONTENTS.get(t.datatype)
    values = list(getattr(t.contents, field)) if field else []
    if len(values) != count:
        raise InvalidInput(f"input {t.name!r} carries {len(values)} values in contents but {t.datatype}{shape} "
                           f"needs {count}")
    return np.asarray(values, dtype=dtype).reshape(shape)


class InferenceService:
    """OIP calls over a model host: ``host.model(name)`` gives a runtime model (``version``, ``inputs``,
    ``outputs``, ``run``), ``host.index()`` (name, version or None, reason) for every name on the device."""

    def __init__(self, host: Any, activity: Activity, agent_version: str = "") -> None:
        self.host = host
        self.activity = activity  # the agent's: OIP calls keep an idle local agent alive too
        self.agent_version = agent_version

    def _model(self, name: str, version: str = "") -> Any:
        if not name:
            raise InvalidInput("the request names no model; give model_name")
        model = self.host.model(name)
        if version and version != str(model.version):
            raise NotFound(f"model {name!r} serves version {model.version}, not {version}; "
                           f"deploy activate {name} {version} --device D to serve it")
        return model

    @unary_edge
    def ServerLive(self, request: Any, context: Any) -> Any:
        return oip_pb2.ServerLiveResponse(live=True)

    @unary_edge
    def ServerReady(self, request: Any, context: Any) -> Any:
        return oip_pb2.ServerReadyResponse(ready=True)

    @unary_edge
    def ServerMetadata(self, request: Any, context: Any) -> Any:
        return oip_pb2.ServerMetadataResponse(name=SERVER_NAME, version=self.agent_version, extensions=[])

    @unary_edge
    def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            self._model(request.name, request.version)
        except (NotFound, PreconditionFailed):
            return oip_pb2.ModelReadyResponse(ready=False)
        return oip_pb2.ModelReadyResponse(ready=True)

    @unary_edge
    def ModelMetadata(self, request: Any, context: Any) -> Any:
        model = self._model(request.name, request.version)
        reply = oip_pb2.ModelMetadataResponse(name=request.name, versions=[str(model.version)],
                                                    platform=PLATFORM)
        for spec in model.inputs:
            reply.inputs.add(name=spec.name, datatype=datatype_of(spec.dtype), shape=_shape(spec.shape))
        for spec in model.outputs:
            reply.outputs.add(name=spec.name, datatype=datatype_of(spec.dtype), shape=_shape(spec.shape))
        return reply

    @unary_edge
    def ModelInfer(self, request: Any, context: Any) -> Any:
        model = self._model(request.model_name, request.model_version)
        raw = list(request.raw_input_contents)
        if raw and len(raw) != len(request.inputs):
            raise InvalidInput(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; send one per "
                               "input or none")
        feeds: Dict[str, np.ndarray] = {}
        for i, t in enumerate(request.inputs):
            if t.name in feeds:
                raise InvalidInput(f"input {t.name!r} given twice")
            feeds[t.name] = _input_array(t, raw[i] if raw else None)
        result = model.run_versioned(feeds)
        wanted = [o.name for o in request.outputs] or [o.name for o in model.outputs]
        unknown = [n for n in wanted if n not in result.outputs]
        if unknown:
            raise InvalidInput(f"model {request.model_name!r} has no output {unknown[0]!r}; it has "
                               f"{[o.name for o in model.outputs]}")
        reply = oip_pb2.ModelInferResponse(model_name=request.model_name, model_version=str(result.version),
                                                 id=request.id)
        for name in wanted:
            arr = np.ascontiguousarray(result.outputs[name])
            reply.outputs.add(name=name, datatype=datatype_of(arr.dtype.name), shape=list(arr.shape))
            reply.raw_output_contents.append(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        return reply

    @unary_edge
    def RepositoryIndex(self, request: Any, context: Any) -> Any:
        reply = oip_pb2.RepositoryIndexResponse()
        for name, version, reason in self.host.index():
            if request.ready and version is None:
                continue
            reply.models.add(name=name, version="" if version is None else str(version),
                             state="READY" if version is not None else "UNAVAILABLE", reason=reason)
        return reply


def metadata_of(model: Any) -> Mapping[str, Any]:
    """Inputs and outputs as plain data (for `deploy models ls --json`)."""
    return {"inputs": [{"name": s.name, "datatype": datatype_of(s.dtype), "shape": _shape(s.shape)}
                       for s in model.inputs],
            "outputs": [{"name": s.name, "datatype": datatype_of(s.dtype), "shape": _shape(s.shape)}
                        for s in model.outputs]}


_METHODS = {  # method -> (request, reply) of the protocol
    "ServerLive": (oip_pb2.ServerLiveRequest, oip_pb2.ServerLiveResponse),
    "ServerReady": (oip_pb2.ServerReadyRequest, oip_pb2.ServerReadyResponse),
    "ServerMetadata": (oip_pb2.ServerMetadataRequest, oip_pb2.ServerMetadataResponse),
    "ModelReady": (oip_pb2.ModelReadyRequest, oip_pb2.ModelReadyResponse),
    "ModelMetadata": (oip_pb2.ModelMetadataRequest, oip_pb2.ModelMetadataResponse),
    "ModelInfer": (oip_pb2.ModelInferRequest, oip_pb2.ModelInferResponse),
    "RepositoryIndex": (oip_pb2.RepositoryIndexRequest, oip_pb2.RepositoryIndexResponse),
}


def add_to_server(service: InferenceService, server: Any) -> None:
    """Serve `service` as `inference.GRPCInferenceService`, the name every OIP client calls."""
    import grpc

    handlers = {name: grpc.unary_unary_rpc_method_handler(getattr(service, name),
                                                          request_deserializer=req.FromString,
                                                          response_serializer=rep.SerializeToString)
                for name, (req, rep) in _METHODS.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
