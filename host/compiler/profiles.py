"""Device profiles: what TensorRT a device class has and where TVM code for it must run."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Dict, Optional, Tuple

from device_agent.errors import InvalidInput

Version = Tuple[int, int, int]


def parse_version(text: str) -> Version:
    """'8.5' -> (8, 5, 0); refuses anything that is not 1-3 dot-separated integers."""
    if not isinstance(text, str) or not re.fullmatch(r"\d{1,3}(\.\d{1,3}){0,3}", text.strip()):
        raise InvalidInput(f"TensorRT version {text!r} is not like 8.5 or 10.3.0; pass --trt-version MAJOR.MINOR[.PATCH]")
    parts = [int(p) for p in text.strip().split(".")][:3]
    while len(parts) < 3:
        parts.append(0)
    return (parts[0], parts[1], parts[2])


def format_version(v: Version) -> str:
    return ".".join(str(p) for p in v)


# Highest ONNX opset each TensorRT release's ONNX parser documents (onnx-tensorrt docs/operators.md per release branch).
_PARSER_OPSET = [
    ((5, 0, 0), 9),
    ((6, 0, 0), 10),
    ((7, 0, 0), 11),
    ((8, 0, 0), 13),
    ((8, 4, 0), 17),
    ((8, 5, 0), 17),
    ((8, 6, 0), 17),
    ((10, 0, 0), 20),
]
MIN_SOURCE_OPSET = 7
MAX_SOURCE_OPSET = 25  # the newest opset onnx 1.23 defines


def max_parser_opset(trt: Version) -> int:
    best = 9
    for v, opset in _PARSER_OPSET:
        if trt >= v:
            best = opset
    return best


@dataclass(frozen=True)
class Profile:
    name: str
    trt_version: str
    compute_capability: Optional[str]  # "7.2"; None for no GPU
    device: str                        # where the TVM remainder runs: "cpu" | "cuda"
    arch: str                          # host CPU: "x86_64" | "aarch64"
    cuda_driver: Optional[str] = None  # CUDA version of the device's driver, when known
    remainder_note: str = ""           # why the remainder runs where it does
    cuda_code: str = "cubin"           # "cubin" for exactly this sm, "ptx" for this sm and newer GPUs
    #: builder workspace when the user gives none; Jetsons share RAM with the GPU, so it must leave room
    #: for the weights, the OS and the build itself (device_agent/memory_guard.py): Nano 4 GB -> 256 MiB,
    #: Xavier NX 8 GB -> 512 MiB, Orin (8 GB and up) -> 1 GiB
    default_workspace_bytes: int = 1 << 30

    @property
    def trt(self) -> Version:
        return parse_version(self.trt_version)

    @property
    def sm(self) -> Optional[str]:
        return None if self.compute_capability is None else "sm_" + self.compute_capability.replace(".", "")

    def tvm_target(self) -> Tuple[dict, dict]:
        """(target, host) as TVM 0.27 JSON-dict targets."""
        host: Dict[str, str] = {"kind": "llvm"}
        if self.arch == "aarch64":
            host["mtriple"] = "aarch64-linux-gnu"
        if self.device == "cuda":
            assert self.sm is not None
            return {"kind": "cuda", "arch": self.sm}, host
        return dict(host), host

    @property
    def cross(self) -> bool:
        import platform

        return self.arch != platform.machine()


# CUDA driver of JetPack 4.x is 10.2: code from today's NVRTC (12.x) does not load there, so the
# Nano's remainder goes to its CPU.
PROFILES: Dict[str, Profile] = {
    p.name: p
    for p in [
        Profile("x86-cpu", "10.3.0", None, "cpu", "x86_64",
                remainder_note="no GPU: the TVM remainder runs on the CPU (llvm)"),
        Profile("generic-cuda", "10.3.0", "8.0", "cuda", "x86_64", cuda_driver="12.0", cuda_code="ptx",
                remainder_note="the TVM remainder runs on the GPU (CUDA PTX for sm_80, JIT-compiled by the "
                               "driver for the GPU it meets)"),
        Profile("jetson-nano", "8.2.1", "5.3", "cpu", "aarch64", cuda_driver="10.2", default_workspace_bytes=256 << 20,
                remainder_note="JetPack 4.6 has a CUDA 10.2 driver, which cannot load code from this "
                               "host's NVRTC 12.9, so the TVM remainder runs on the device CPU "
                               "(llvm, aarch64)"),
        Profile("jetson-xavier-nx", "8.5.2", "7.2", "cuda", "aarch64", cuda_driver="11.4",
                default_workspace_bytes=512 << 20,
                remainder_note="the TVM remainder runs on the GPU (CUDA sm_72, aarch64 host code)"),
        Profile("jetson-orin", "10.3.0", "8.7", "cuda", "aarch64", cuda_driver="12.6",
                remainder_note="the TVM remainder runs on the GPU (CUDA sm_87, aarch64 host code)"),
    ]
}


def get_profile(name: str, trt_version: Optional[str] = None, remainder_device: Optional[str] = None,
                compute_capability: Optional[str] = None) -> Profile:
    """The named profile, with the TensorRT version, remainder device and GPU overridden if given."""
    if name not in PROFILES:
        raise InvalidInput(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    p = PROFILES[name]
    if compute_capability is not None:
        p = _with_compute_capability(p, compute_capability)
    if trt_version is not None:
        p = replace(p, trt_version=format_version(parse_version(trt_version)))
    if remainder_device is not None:
        if remainder_device not in ("cpu", "cuda"):
            raise InvalidInput(f"remainder device {remainder_device!r} must be 'cpu' or 'cuda'")
        if remainder_device == "cuda" and p.compute_capability is None:
            raise InvalidInput(f"profile {name} has no GPU; the remainder cannot run on cuda")
        if remainder_device != p.device:
            note = (f"the TVM remainder runs on the device {'GPU' if remainder_device == 'cuda' else 'CPU'} "
                    "because it was asked for (--remainder-device)")
            p = replace(p, device=remainder_device, remainder_note=note)
    return p


def _with_compute_capability(p: Profile, cc: str) -> Profile:
    """The profile for another GPU (``--compute-capability``, or the GPU the agent reports for generic-cuda)."""
    import re

    cc = cc.strip()
    if not re.fullmatch(r"\d{1,2}\.\d", cc):
        raise InvalidInput(f"compute capability {cc!r} is not MAJOR.MINOR; give it as the GPU reports it, e.g. 9.0")
    if p.compute_capability is None:
        raise InvalidInput(f"profile {p.name} has no GPU, so --compute-capability does not apply; "
                           "use generic-cuda for a GPU")
    if cc == p.compute_capability:
        return p
    note = p.remainder_note
    if p.device == "cuda":
        code = "PTX" if p.cuda_code == "ptx" else "cubin"
        note = f"the TVM remainder runs on the GPU (CUDA {code} for sm_{cc.replace('.', '')}, the GPU it was given)"
    return replace(p, compute_capability=cc, remainder_note=note)
