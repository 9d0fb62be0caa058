"""Whether a bundle fits this device: the TensorRT it was partitioned for and the GPU it was compiled for.

Kept apart from the engine service and light on purpose (stdlib only; our error type is imported where a bundle is
refused), so the host may import it to reason about targets without importing the agent's backends, numpy or gRPC.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Tuple

if TYPE_CHECKING:  # for the annotations only
    from .bundle import Bundle
    from .engines.base import Backend

#: Backends that build plans with TensorRT: bundles must be partitioned for their TensorRT version.
TENSORRT_FAMILY = ("tensorrt", "trtexec")
#: TensorRT-RTX (1.x) carries the TensorRT 10 API and ONNX parser: it takes bundles partitioned for TensorRT 10.
RTX_PARTITION_MAJOR = "10"


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _cc_tuple(cc: str) -> Tuple[int, ...]:
    return tuple(int(x) for x in cc.split(".") if x.isdigit())


def _refuse(message: str) -> None:
    from .errors import PreconditionFailed  # errors imports grpc: only paid when a bundle is refused

    raise PreconditionFailed(message)


def check_target(bundle: "Bundle", backend: "Backend", gpu_cc: Optional[str]) -> None:
    """`check_target_facts` for a bundle and the backend that would build or load its engines."""
    probe = backend.probe()
    module = "trtexec" if backend.name == "trtexec" else getattr(backend, "module", "")
    check_target_facts(bundle.manifest.target, bundle.manifest.remainder is not None, backend.name, module,
                       probe.version, gpu_cc)


def check_target_facts(target: Any, has_remainder: bool, backend: str, module: str, version: str,
                       gpu_cc: Optional[str]) -> None:
    """Refuse a bundle partitioned for another TensorRT, or compiled for another GPU, naming both sides."""
    if backend in TENSORRT_FAMILY:
        if module == "tensorrt_rtx":
            ok = target.trt_version.split(".")[0] == RTX_PARTITION_MAJOR
            wants = f"TensorRT {RTX_PARTITION_MAJOR}.x (the line TensorRT-RTX {version} reads)"
        else:
            ok = _major_minor(target.trt_version) == _major_minor(version)
            wants = f"TensorRT {_major_minor(version)}"
        if not ok:
            _refuse(f"bundle was partitioned for TensorRT {target.trt_version} (profile {target.profile}); this "
                    f"device has {module or backend} {version}; recompile for {wants}")
    cc = target.compute_capability
    if not cc or not gpu_cc:
        return
    cuda_remainder = has_remainder and target.device == "cuda"
    if target.profile == "generic-cuda":
        # its TensorRT segments are plain ONNX, built here for this GPU; only a CUDA remainder's cubin
        # binds it to a GPU: a cubin runs on the same major compute capability, same or higher minor
        want, have = _cc_tuple(cc), _cc_tuple(gpu_cc)
        ok = not cuda_remainder or (have[:1] == want[:1] and have >= want)
    else:  # a device profile names exactly one GPU
        ok = not (cuda_remainder or backend in TENSORRT_FAMILY) or gpu_cc == cc
    if not ok:
        _refuse(f"bundle was compiled for compute capability {cc} (profile {target.profile}); this device's GPU "
                f"has compute capability {gpu_cc}; recompile for this device")
