from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BackendInfo(_message.Message):
    __slots__ = ("name", "available", "version", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    available: bool
    version: str
    detail: str
    def __init__(self, name: _Optional[str] = ..., available: _Optional[bool] = ..., version: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class GpuInfo(_message.Message):
    __slots__ = ("name", "compute_capability", "memory_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    compute_capability: str
    memory_bytes: int
    def __init__(self, name: _Optional[str] = ..., compute_capability: _Optional[str] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class DeviceInfo(_message.Message):
    __slots__ = ("hostname", "os", "arch", "cpu_count", "memory_total_bytes", "memory_available_bytes", "store_free_bytes", "python_version", "agent_version", "jetson_model", "l4t_release", "gpus", "cuda_version", "trt_version", "trt_module", "backends", "tvm_runtime", "default_backend", "store_dir", "max_upload_bytes", "profile", "settings", "signing")
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORE_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    JETSON_MODEL_FIELD_NUMBER: _ClassVar[int]
    L4T_RELEASE_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    CUDA_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRT_MODULE_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    TVM_RUNTIME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_BACKEND_FIELD_NUMBER: _ClassVar[int]
    STORE_DIR_FIELD_NUMBER: _ClassVar[int]
    MAX_UPLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    SIGNING_FIELD_NUMBER: _ClassVar[int]
    hostname: str
    os: str
    arch: str
    cpu_count: int
    memory_total_bytes: int
    memory_available_bytes: int
    store_free_bytes: int
    python_version: str
    agent_version: str
    jetson_model: str
    l4t_release: str
    gpus: _containers.RepeatedCompositeFieldContainer[GpuInfo]
    cuda_version: str
    trt_version: str
    trt_module: str
    backends: _containers.RepeatedCompositeFieldContainer[BackendInfo]
    tvm_runtime: bool
    default_backend: str
    store_dir: str
    max_upload_bytes: int
    profile: str
    settings: AgentSettingsInfo
    signing: SigningInfo
    def __init__(self, hostname: _Optional[str] = ..., os: _Optional[str] = ..., arch: _Optional[str] = ..., cpu_count: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., memory_available_bytes: _Optional[int] = ..., store_free_bytes: _Optional[int] = ..., python_version: _Optional[str] = ..., agent_version: _Optional[str] = ..., jetson_model: _Optional[str] = ..., l4t_release: _Optional[str] = ..., gpus: _Optional[_Iterable[_Union[GpuInfo, _Mapping]]] = ..., cuda_version: _Optional[str] = ..., trt_version: _Optional[str] = ..., trt_module: _Optional[str] = ..., backends: _Optional[_Iterable[_Union[BackendInfo, _Mapping]]] = ..., tvm_runtime: _Optional[bool] = ..., default_backend: _Optional[str] = ..., store_dir: _Optional[str] = ..., max_upload_bytes: _Optional[int] = ..., profile: _Optional[str] = ..., settings: _Optional[_Union[AgentSettingsInfo, _Mapping]] = ..., signing: _Optional[_Union[SigningInfo, _Mapping]] = ...) -> None: ...

class SigningInfo(_message.Message):
    __slots__ = ("enabled", "root_version", "targets_version", "timestamp_version")
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    ROOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGETS_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_VERSION_FIELD_NUMBER: _ClassVar[int]
    enabled: bool
    root_version: int
    targets_version: int
    timestamp_version: int
    def __init__(self, enabled: _Optional[bool] = ..., root_version: _Optional[int] = ..., targets_version: _Optional[int] = ..., timestamp_version: _Optional[int] = ...) -> None: ...

class AgentSettingsInfo(_message.Message):
    __slots__ = ("fp16", "cache_dir", "max_workspace_bytes", "multi_engine_mode", "sources")
    class SourcesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FP16_FIELD_NUMBER: _ClassVar[int]
    CACHE_DIR_FIELD_NUMBER: _ClassVar[int]
    MAX_WORKSPACE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MULTI_ENGINE_MODE_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    fp16: bool
    cache_dir: str
    max_workspace_bytes: int
    multi_engine_mode: int
    sources: _containers.ScalarMap[str, str]
    def __init__(self, fp16: _Optional[bool] = ..., cache_dir: _Optional[str] = ..., max_workspace_bytes: _Optional[int] = ..., multi_engine_mode: _Optional[int] = ..., sources: _Optional[_Mapping[str, str]] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("digest", "size", "offset", "kind", "trust_metadata")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TRUST_METADATA_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    offset: int
    kind: str
    trust_metadata: bytes
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., offset: _Optional[int] = ..., kind: _Optional[str] = ..., trust_metadata: _Optional[bytes] = ...) -> None: ...

class UploadReply(_message.Message):
    __slots__ = ("digest", "size", "bytes_received", "already_present")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    bytes_received: int
    already_present: bool
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., bytes_received: _Optional[int] = ..., already_present: _Optional[bool] = ...) -> None: ...

class QueryUploadRequest(_message.Message):
    __slots__ = ("digest",)
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    digest: str
    def __init__(self, digest: _Optional[str] = ...) -> None: ...

class QueryUploadReply(_message.Message):
    __slots__ = ("digest", "complete", "committed_offset", "size")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    digest: str
    complete: bool
    committed_offset: int
    size: int
    def __init__(self, digest: _Optional[str] = ..., complete: _Optional[bool] = ..., committed_offset: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...

class FindMissingBlobsRequest(_message.Message):
    __slots__ = ("digests",)
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    digests: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, digests: _Optional[_Iterable[str]] = ...) -> None: ...

class FindMissingBlobsReply(_message.Message):
    __slots__ = ("missing",)
    MISSING_FIELD_NUMBER: _ClassVar[int]
    missing: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, missing: _Optional[_Iterable[str]] = ...) -> None: ...

class BuildOptions(_message.Message):
    __slots__ = ("backend", "fp16", "max_workspace_bytes", "multi_engine_mode", "batch", "force_rebuild")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    FP16_FIELD_NUMBER: _ClassVar[int]
    MAX_WORKSPACE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MULTI_ENGINE_MODE_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    FORCE_REBUILD_FIELD_NUMBER: _ClassVar[int]
    backend: str
    fp16: bool
    max_workspace_bytes: int
    multi_engine_mode: int
    batch: int
    force_rebuild: bool
    def __init__(self, backend: _Optional[str] = ..., fp16: _Optional[bool] = ..., max_workspace_bytes: _Optional[int] = ..., multi_engine_mode: _Optional[int] = ..., batch: _Optional[int] = ..., force_rebuild: _Optional[bool] = ...) -> None: ...

class BuildRequest(_message.Message):
    __slots__ = ("bundle_digest", "options")
    BUNDLE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    bundle_digest: str
    options: BuildOptions
    def __init__(self, bundle_digest: _Optional[str] = ..., options: _Optional[_Union[BuildOptions, _Mapping]] = ...) -> None: ...

class SegmentEvent(_message.Message):
    __slots__ = ("segment_id", "stage", "parse_s", "build_s", "engine_bytes", "cache_key", "error", "messages", "backend", "index", "total", "lookup_s", "profile", "timing_cache", "progress_kind", "progress_phase", "progress_step", "progress_steps", "elapsed_s")
    class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STAGE_UNSPECIFIED: _ClassVar[SegmentEvent.Stage]
        STARTED: _ClassVar[SegmentEvent.Stage]
        CACHE_HIT: _ClassVar[SegmentEvent.Stage]
        CACHE_MISS: _ClassVar[SegmentEvent.Stage]
        PARSED: _ClassVar[SegmentEvent.Stage]
        BUILT: _ClassVar[SegmentEvent.Stage]
        FAILED: _ClassVar[SegmentEvent.Stage]
        PROGRESS: _ClassVar[SegmentEvent.Stage]
    STAGE_UNSPECIFIED: SegmentEvent.Stage
    STARTED: SegmentEvent.Stage
    CACHE_HIT: SegmentEvent.Stage
    CACHE_MISS: SegmentEvent.Stage
    PARSED: SegmentEvent.Stage
    BUILT: SegmentEvent.Stage
    FAILED: SegmentEvent.Stage
    PROGRESS: SegmentEvent.Stage
    SEGMENT_ID_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PARSE_S_FIELD_NUMBER: _ClassVar[int]
    BUILD_S_FIELD_NUMBER: _ClassVar[int]
    ENGINE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CACHE_KEY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_S_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    TIMING_CACHE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_KIND_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PHASE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_STEP_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_STEPS_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    segment_id: str
    stage: SegmentEvent.Stage
    parse_s: float
    build_s: float
    engine_bytes: int
    cache_key: str
    error: str
    messages: _containers.RepeatedScalarFieldContainer[str]
    backend: str
    index: int
    total: int
    lookup_s: float
    profile: str
    timing_cache: str
    progress_kind: str
    progress_phase: str
    progress_step: int
    progress_steps: int
    elapsed_s: float
    def __init__(self, segment_id: _Optional[str] = ..., stage: _Optional[_Union[SegmentEvent.Stage, str]] = ..., parse_s: _Optional[float] = ..., build_s: _Optional[float] = ..., engine_bytes: _Optional[int] = ..., cache_key: _Optional[str] = ..., error: _Optional[str] = ..., messages: _Optional[_Iterable[str]] = ..., backend: _Optional[str] = ..., index: _Optional[int] = ..., total: _Optional[int] = ..., lookup_s: _Optional[float] = ..., profile: _Optional[str] = ..., timing_cache: _Optional[str] = ..., progress_kind: _Optional[str] = ..., progress_phase: _Optional[str] = ..., progress_step: _Optional[int] = ..., progress_steps: _Optional[int] = ..., elapsed_s: _Optional[float] = ...) -> None: ...

class BuildSummary(_message.Message):
    __slots__ = ("bundle_digest", "segments", "cache_hits", "built", "failed", "total_s", "backend", "backend_version")
    BUNDLE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    BUILT_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_S_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_VERSION_FIELD_NUMBER: _ClassVar[int]
    bundle_digest: str
    segments: int
    cache_hits: int
    built: int
    failed: int
    total_s: float
    backend: str
    backend_version: str
    def __init__(self, bundle_digest: _Optional[str] = ..., segments: _Optional[int] = ..., cache_hits: _Optional[int] = ..., built: _Optional[int] = ..., failed: _Optional[int] = ..., total_s: _Optional[float] = ..., backend: _Optional[str] = ..., backend_version: _Optional[str] = ...) -> None: ...

class BuildEvent(_message.Message):
    __slots__ = ("segment", "summary", "log")
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    LOG_FIELD_NUMBER: _ClassVar[int]
    segment: SegmentEvent
    summary: BuildSummary
    log: str
    def __init__(self, segment: _Optional[_Union[SegmentEvent, _Mapping]] = ..., summary: _Optional[_Union[BuildSummary, _Mapping]] = ..., log: _Optional[str] = ...) -> None: ...

class Tensor(_message.Message):
    __slots__ = ("name", "dtype", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("bundle_digest", "options", "inputs", "verify")
    BUNDLE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    bundle_digest: str
    options: BuildOptions
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    verify: bool
    def __init__(self, bundle_digest: _Optional[str] = ..., options: _Optional[_Union[BuildOptions, _Mapping]] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., verify: _Optional[bool] = ...) -> None: ...

class RunReply(_message.Message):
    __slots__ = ("outputs", "latency_ms", "max_rel_err", "max_abs_err", "backend")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_REL_ERR_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_ERR_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    latency_ms: float
    max_rel_err: float
    max_abs_err: float
    backend: str
    def __init__(self, outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., latency_ms: _Optional[float] = ..., max_rel_err: _Optional[float] = ..., max_abs_err: _Optional[float] = ..., backend: _Optional[str] = ...) -> None: ...

class BenchmarkRequest(_message.Message):
    __slots__ = ("bundle_digest", "options", "warmup", "iterations", "duration_s", "batch", "inputs", "layers")
    BUNDLE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    DURATION_S_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    bundle_digest: str
    options: BuildOptions
    warmup: int
    iterations: int
    duration_s: float
    batch: int
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    layers: bool
    def __init__(self, bundle_digest: _Optional[str] = ..., options: _Optional[_Union[BuildOptions, _Mapping]] = ..., warmup: _Optional[int] = ..., iterations: _Optional[int] = ..., duration_s: _Optional[float] = ..., batch: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., layers: _Optional[bool] = ...) -> None: ...

class BenchmarkProgress(_message.Message):
    __slots__ = ("done", "total", "elapsed_s", "last_ms")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_S_FIELD_NUMBER: _ClassVar[int]
    LAST_MS_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    elapsed_s: float
    last_ms: float
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., elapsed_s: _Optional[float] = ..., last_ms: _Optional[float] = ...) -> None: ...

class LatencyStats(_message.Message):
    __slots__ = ("min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms", "throughput", "iterations", "samples_ms")
    MIN_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P90_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_MS_FIELD_NUMBER: _ClassVar[int]
    min_ms: float
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    throughput: float
    iterations: int
    samples_ms: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, min_ms: _Optional[float] = ..., mean_ms: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p90_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., max_ms: _Optional[float] = ..., throughput: _Optional[float] = ..., iterations: _Optional[int] = ..., samples_ms: _Optional[_Iterable[float]] = ...) -> None: ...

class LayerTime(_message.Message):
    __slots__ = ("name", "op", "mean_ms", "share", "segment", "calls")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    name: str
    op: str
    mean_ms: float
    share: float
    segment: str
    calls: int
    def __init__(self, name: _Optional[str] = ..., op: _Optional[str] = ..., mean_ms: _Optional[float] = ..., share: _Optional[float] = ..., segment: _Optional[str] = ..., calls: _Optional[int] = ...) -> None: ...

class BenchmarkResult(_message.Message):
    __slots__ = ("latency", "backend_timings_ms", "backend", "batch", "layers", "layers_total_ms", "layers_wall_ms", "layers_runs")
    class BackendTimingsMsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    BACKEND_TIMINGS_MS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_WALL_MS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_RUNS_FIELD_NUMBER: _ClassVar[int]
    latency: LatencyStats
    backend_timings_ms: _containers.ScalarMap[str, float]
    backend: str
    batch: int
    layers: _containers.RepeatedCompositeFieldContainer[LayerTime]
    layers_total_ms: float
    layers_wall_ms: float
    layers_runs: int
    def __init__(self, latency: _Optional[_Union[LatencyStats, _Mapping]] = ..., backend_timings_ms: _Optional[_Mapping[str, float]] = ..., backend: _Optional[str] = ..., batch: _Optional[int] = ..., layers: _Optional[_Iterable[_Union[LayerTime, _Mapping]]] = ..., layers_total_ms: _Optional[float] = ..., layers_wall_ms: _Optional[float] = ..., layers_runs: _Optional[int] = ...) -> None: ...

class BenchmarkEvent(_message.Message):
    __slots__ = ("progress", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: BenchmarkProgress
    result: BenchmarkResult
    def __init__(self, progress: _Optional[_Union[BenchmarkProgress, _Mapping]] = ..., result: _Optional[_Union[BenchmarkResult, _Mapping]] = ...) -> None: ...

class EngineEntry(_message.Message):
    __slots__ = ("key", "segment_digest", "backend", "backend_version", "size", "digest", "created", "last_used", "device_class", "attributes", "builder_record")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KEY_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_VERSION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    BUILDER_RECORD_FIELD_NUMBER: _ClassVar[int]
    key: str
    segment_digest: str
    backend: str
    backend_version: str
    size: int
    digest: str
    created: float
    last_used: float
    device_class: str
    attributes: _containers.ScalarMap[str, str]
    builder_record: bytes
    def __init__(self, key: _Optional[str] = ..., segment_digest: _Optional[str] = ..., backend: _Optional[str] = ..., backend_version: _Optional[str] = ..., size: _Optional[int] = ..., digest: _Optional[str] = ..., created: _Optional[float] = ..., last_used: _Optional[float] = ..., device_class: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., builder_record: _Optional[bytes] = ...) -> None: ...

class ListEnginesRequest(_message.Message):
    __slots__ = ("segment_digest",)
    SEGMENT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    segment_digest: str
    def __init__(self, segment_digest: _Optional[str] = ...) -> None: ...

class ListEnginesReply(_message.Message):
    __slots__ = ("engines", "total_bytes", "limit_bytes", "timing_caches")
    ENGINES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_BYTES_FIELD_NUMBER: _ClassVar[int]
    TIMING_CACHES_FIELD_NUMBER: _ClassVar[int]
    engines: _containers.RepeatedCompositeFieldContainer[EngineEntry]
    total_bytes: int
    limit_bytes: int
    timing_caches: _containers.RepeatedCompositeFieldContainer[TimingCacheInfo]
    def __init__(self, engines: _Optional[_Iterable[_Union[EngineEntry, _Mapping]]] = ..., total_bytes: _Optional[int] = ..., limit_bytes: _Optional[int] = ..., timing_caches: _Optional[_Iterable[_Union[TimingCacheInfo, _Mapping]]] = ...) -> None: ...

class TimingCacheInfo(_message.Message):
    __slots__ = ("facts", "device_class", "class_digest", "size", "digest", "updated")
    class FactsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FACTS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_CLASS_FIELD_NUMBER: _ClassVar[int]
    CLASS_DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    facts: _containers.ScalarMap[str, str]
    device_class: str
    class_digest: str
    size: int
    digest: str
    updated: float
    def __init__(self, facts: _Optional[_Mapping[str, str]] = ..., device_class: _Optional[str] = ..., class_digest: _Optional[str] = ..., size: _Optional[int] = ..., digest: _Optional[str] = ..., updated: _Optional[float] = ...) -> None: ...

class TimingCacheFetchRequest(_message.Message):
    __slots__ = ("backend",)
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    backend: str
    def __init__(self, backend: _Optional[str] = ...) -> None: ...

class TimingCacheChunk(_message.Message):
    __slots__ = ("info", "chunk")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    info: TimingCacheInfo
    chunk: bytes
    def __init__(self, info: _Optional[_Union[TimingCacheInfo, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class TimingCachePutReply(_message.Message):
    __slots__ = ("digest", "already_present", "bytes_received")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    digest: str
    already_present: bool
    bytes_received: int
    def __init__(self, digest: _Optional[str] = ..., already_present: _Optional[bool] = ..., bytes_received: _Optional[int] = ...) -> None: ...

class FetchEngineRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class EngineChunk(_message.Message):
    __slots__ = ("entry", "chunk")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    entry: EngineEntry
    chunk: bytes
    def __init__(self, entry: _Optional[_Union[EngineEntry, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class PutEngineReply(_message.Message):
    __slots__ = ("key", "already_present", "bytes_received")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    key: str
    already_present: bool
    bytes_received: int
    def __init__(self, key: _Optional[str] = ..., already_present: _Optional[bool] = ..., bytes_received: _Optional[int] = ...) -> None: ...

class PruneRequest(_message.Message):
    __slots__ = ("max_bytes", "keys", "all")
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    max_bytes: int
    keys: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, max_bytes: _Optional[int] = ..., keys: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ...) -> None: ...

class PruneReply(_message.Message):
    __slots__ = ("removed", "freed_bytes", "total_bytes", "kept")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    removed: _containers.RepeatedScalarFieldContainer[str]
    freed_bytes: int
    total_bytes: int
    kept: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, removed: _Optional[_Iterable[str]] = ..., freed_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., kept: _Optional[_Iterable[str]] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("bundle_digest", "engines_reference")
    BUNDLE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ENGINES_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    bundle_digest: str
    engines_reference: str
    def __init__(self, bundle_digest: _Optional[str] = ..., engines_reference: _Optional[str] = ...) -> None: ...

class PullReply(_message.Message):
    __slots__ = ("bundle_digest", "bundle_present", "engine_keys", "engines_pulled", "engines_present", "bytes_pulled", "retries", "timing_cache_pulled", "timing_cache_digest", "timing_cache_refused")
    BUNDLE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_PRESENT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_KEYS_FIELD_NUMBER: _ClassVar[int]
    ENGINES_PULLED_FIELD_NUMBER: _ClassVar[int]
    ENGINES_PRESENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_PULLED_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMING_CACHE_PULLED_FIELD_NUMBER: _ClassVar[int]
    TIMING_CACHE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    TIMING_CACHE_REFUSED_FIELD_NUMBER: _ClassVar[int]
    bundle_digest: str
    bundle_present: bool
    engine_keys: _containers.RepeatedScalarFieldContainer[str]
    engines_pulled: int
    engines_present: int
    bytes_pulled: int
    retries: int
    timing_cache_pulled: bool
    timing_cache_digest: str
    timing_cache_refused: str
    def __init__(self, bundle_digest: _Optional[str] = ..., bundle_present: _Optional[bool] = ..., engine_keys: _Optional[_Iterable[str]] = ..., engines_pulled: _Optional[int] = ..., engines_present: _Optional[int] = ..., bytes_pulled: _Optional[int] = ..., retries: _Optional[int] = ..., timing_cache_pulled: _Optional[bool] = ..., timing_cache_digest: _Optional[str] = ..., timing_cache_refused: _Optional[str] = ...) -> None: ...

class ListStoreRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StoreEntry(_message.Message):
    __slots__ = ("digest", "size", "complete", "last_used", "unpacked_bytes", "parts")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    LAST_USED_FIELD_NUMBER: _ClassVar[int]
    UNPACKED_BYTES_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    digest: str
    size: int
    complete: bool
    last_used: float
    unpacked_bytes: int
    parts: int
    def __init__(self, digest: _Optional[str] = ..., size: _Optional[int] = ..., complete: _Optional[bool] = ..., last_used: _Optional[float] = ..., unpacked_bytes: _Optional[int] = ..., parts: _Optional[int] = ...) -> None: ...

class ListStoreReply(_message.Message):
    __slots__ = ("entries", "total_bytes", "free_bytes")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[StoreEntry]
    total_bytes: int
    free_bytes: int
    def __init__(self, entries: _Optional[_Iterable[_Union[StoreEntry, _Mapping]]] = ..., total_bytes: _Optional[int] = ..., free_bytes: _Optional[int] = ...) -> None: ...

class PruneStoreRequest(_message.Message):
    __slots__ = ("max_bytes", "digests", "all")
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    max_bytes: int
    digests: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, max_bytes: _Optional[int] = ..., digests: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ...) -> None: ...

class PruneStoreReply(_message.Message):
    __slots__ = ("removed", "freed_bytes", "total_bytes", "busy", "kept")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    FREED_BYTES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUSY_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    removed: _containers.RepeatedScalarFieldContainer[str]
    freed_bytes: int
    total_bytes: int
    busy: _containers.RepeatedScalarFieldContainer[str]
    kept: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, removed: _Optional[_Iterable[str]] = ..., freed_bytes: _Optional[int] = ..., total_bytes: _Optional[int] = ..., busy: _Optional[_Iterable[str]] = ..., kept: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("name", "version", "bundle_digest", "state", "why", "engine_keys", "segment_ids", "engine_paths", "build", "verify_passed", "max_rel_err", "tolerance", "created", "options")
    class BuildEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    ENGINE_KEYS_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_PATHS_FIELD_NUMBER: _ClassVar[int]
    BUILD_FIELD_NUMBER: _ClassVar[int]
    VERIFY_PASSED_FIELD_NUMBER: _ClassVar[int]
    MAX_REL_ERR_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    bundle_digest: str
    state: str
    why: str
    engine_keys: _containers.RepeatedScalarFieldContainer[str]
    segment_ids: _containers.RepeatedScalarFieldContainer[str]
    engine_paths: _containers.RepeatedScalarFieldContainer[str]
    build: _containers.ScalarMap[str, str]
    verify_passed: bool
    max_rel_err: float
    tolerance: float
    created: float
    options: BuildOptions
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., bundle_digest: _Optional[str] = ..., state: _Optional[str] = ..., why: _Optional[str] = ..., engine_keys: _Optional[_Iterable[str]] = ..., segment_ids: _Optional[_Iterable[str]] = ..., engine_paths: _Optional[_Iterable[str]] = ..., build: _Optional[_Mapping[str, str]] = ..., verify_passed: _Optional[bool] = ..., max_rel_err: _Optional[float] = ..., tolerance: _Optional[float] = ..., created: _Optional[float] = ..., options: _Optional[_Union[BuildOptions, _Mapping]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "active", "previous", "versions", "active_path")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_PATH_FIELD_NUMBER: _ClassVar[int]
    name: str
    active: int
    previous: int
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    active_path: str
    def __init__(self, name: _Optional[str] = ..., active: _Optional[int] = ..., previous: _Optional[int] = ..., versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., active_path: _Optional[str] = ...) -> None: ...

class RegisterVersionRequest(_message.Message):
    __slots__ = ("name", "bundle_digest", "options", "tolerance", "skip_verify")
    NAME_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    SKIP_VERIFY_FIELD_NUMBER: _ClassVar[int]
    name: str
    bundle_digest: str
    options: BuildOptions
    tolerance: float
    skip_verify: bool
    def __init__(self, name: _Optional[str] = ..., bundle_digest: _Optional[str] = ..., options: _Optional[_Union[BuildOptions, _Mapping]] = ..., tolerance: _Optional[float] = ..., skip_verify: _Optional[bool] = ...) -> None: ...

class RegisterVersionReply(_message.Message):
    __slots__ = ("version", "created")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    version: ModelVersion
    created: bool
    def __init__(self, version: _Optional[_Union[ModelVersion, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListModelsReply(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class ActivateRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ActivateReply(_message.Message):
    __slots__ = ("active", "previous", "seconds")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    active: ModelVersion
    previous: int
    seconds: float
    def __init__(self, active: _Optional[_Union[ModelVersion, _Mapping]] = ..., previous: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeactivateRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...
