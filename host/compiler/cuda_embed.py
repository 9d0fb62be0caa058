"""Put compiled CUDA code (cubin for the profile's sm) into an exported TVM library.

On a host without a GPU, TVM 0.27 keeps CUDA kernels as *source* in the exported library and
compiles them when the library is loaded, which would need NVRTC on the device. We compile the
source here with NVRTC for the target sm (``cuda-bindings`` + ``nvidia-cuda-nvrtc-cu12``, headers
from ``nvidia-cuda-runtime-cu12`` / ``nvidia-cuda-cccl-cu12``) and rewrite the ``cuda`` entry of the
packed-imports blob from format ``cuda`` (source) to ``cubin``, the layout TVM's CUDA module
serializes: [fmt][fmap][code], each string/bytes as u64 length + data.
"""
from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path
from typing import List, Optional

from device_agent.errors import Unavailable

_U64 = struct.Struct("<Q")


def _nvidia_include(sub: str) -> Optional[Path]:
    try:
        import nvidia  # namespace package from the nvidia-* wheels
    except ImportError:
        return None
    for base in getattr(nvidia, "__path__", []):
        p = Path(base) / sub / "include"
        if p.is_dir():
            return p
    return None


def _toolkit_dir() -> Optional[str]:
    """An installed CUDA toolkit ($CUDA_PATH, $CUDA_HOME or /usr/local/cuda) with its runtime headers."""
    for candidate in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if candidate and (Path(candidate) / "include" / "cuda_runtime.h").is_file():
            return candidate
    return None


def _cuda_shim_dir() -> str:
    """A CUDA_PATH layout TVM's NVRTC wrapper understands: from the pip header wheels, else a local toolkit."""
    rt, cccl = _nvidia_include("cuda_runtime"), _nvidia_include("cuda_cccl")
    if rt is None or cccl is None or not (rt / "cuda_runtime.h").is_file():
        toolkit = _toolkit_dir()
        if toolkit is not None:
            return toolkit
        raise Unavailable("compiling CUDA kernels on this host needs the jetson-cross extra "
                          "(nvidia-cuda-runtime-cu12 and nvidia-cuda-cccl-cu12 headers) or a CUDA toolkit")
    import platform

    shim = Path(tempfile.gettempdir()) / f"jetson-deploy-cuda-shim-{os.getuid()}"
    arch_inc = shim / "targets" / f"{platform.machine()}-linux" / "include"
    arch_inc.mkdir(parents=True, exist_ok=True)
    for link, target in ((shim / "include", rt), (arch_inc / "cccl", cccl)):
        if link.is_symlink() and Path(os.readlink(link)) == target:
            continue
        tmp = link.with_name(link.name + f".{os.getpid()}")
        if tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(target)
        os.replace(tmp, link)
    return str(shim)


def compile_cubin(source: str, sm: str, fmt: str = "cubin") -> bytes:
    """cubin for exactly ``sm``, or PTX for ``compute_XY`` that newer GPUs' drivers JIT."""
    from tvm.support import nvcc

    old = os.environ.get("CUDA_PATH")
    os.environ["CUDA_PATH"] = _cuda_shim_dir()
    try:
        code = bytes(nvcc.compile_cuda(source, target_format=fmt, arch=sm, compiler="nvrtc"))
        if fmt == "ptx" and not code.endswith(b"\0"):
            code += b"\0"  # cuModuleLoadData reads PTX as a C string
        return code
    finally:
        if old is None:
            os.environ.pop("CUDA_PATH", None)
        else:
            os.environ["CUDA_PATH"] = old


def _find_cuda_modules(mod) -> List:
    found, stack = [], [mod]
    while stack:
        m = stack.pop()
        if m.kind == "cuda":
            found.append(m)
        stack.extend(m.imports)
    return found


def _rewrite_blob(blob: bytes, source: str, cubin: bytes, fmt: str = "cubin") -> Optional[bytes]:
    """The blob with the CUDA module's source replaced by `cubin`; None when no module holds source (on a host
    with a GPU, TVM compiles the kernels itself with nvcc for the target and stores the binary)."""
    src = source.encode("utf-8")
    key = _U64.pack(4) + b"cuda"
    start = 0
    while True:
        i = blob.find(key, start)
        if i < 0:
            return None
        start = i + 1
        body = i + len(key)
        (n,) = _U64.unpack_from(blob, body)
        payload = body + 8
        end = payload + n
        if end > len(blob) or blob[payload:payload + 12] != key:
            continue  # the kind key, not followed by a module whose fmt is "cuda"
        code_at = end - len(src) - 8
        if blob[code_at + 8:end] != src or _U64.unpack_from(blob, code_at)[0] != len(src):
            continue
        fmap = blob[payload + 12:code_at]
        new_payload = _U64.pack(len(fmt)) + fmt.encode() + fmap + _U64.pack(len(cubin)) + cubin
        out = blob[:body] + _U64.pack(len(new_payload)) + new_payload + blob[end:]
        (total,) = _U64.unpack_from(out, 0)
        if total != len(blob) - 8:
            raise RuntimeError("unexpected packed-imports layout (size header)")
        return _U64.pack(len(out) - 8) + out[8:]


def pack_imports_as_c():
    """An ``fpack_imports`` hook that writes the imports blob as C source, which the cross compiler builds.

    TVM's own packing emits an object for the target it finds on the module and falls back to the host's
    (x86) when it finds none, which the aarch64 linker refuses ("devc.o is incompatible")."""
    return pack_imports_with_cubin(None)


def pack_imports_with_cubin(sm: Optional[str], fmt: str = "cubin"):
    """An ``fpack_imports`` hook for ``export_library``: imports blob with cubin/PTX instead of source
    (``sm`` None: the blob as it is)."""

    def fpack(module, is_system_lib: bool, prefix: str, workspace_dir: str) -> str:
        import tvm

        blob = bytes(tvm.get_global_func("runtime.ModulePackImportsToTensor")(module).numpy().tobytes())
        for cm in (_find_cuda_modules(module) if sm is not None else []):
            source = cm.inspect_source("cuda")
            if source and _rewrite_blob(blob, source, b"", fmt) is not None:  # still source: compile it here
                blob = _rewrite_blob(blob, source, compile_cubin(source, sm, fmt), fmt) or blob
        symbol = prefix + tvm.get_global_func("runtime.ModuleImportsBlobName")()
        path = os.path.join(workspace_dir, f"{prefix}devc.c")
        with open(path, "w") as f:
            f.write('#ifdef __cplusplus\nextern "C" {\n#endif\n')
            f.write(f"__attribute__((visibility(\"default\"))) extern const unsigned char {symbol}[];\n")
            f.write(f"__attribute__((visibility(\"default\"))) const unsigned char {symbol}[{len(blob)}] = {{\n")
            for k in range(0, len(blob), 32):
                f.write(",".join(str(b) for b in blob[k:k + 32]) + ",\n")
            f.write("};\n#ifdef __cplusplus\n}\n#endif\n")
        return path

    return fpack


def embedded_ptx_targets(library: bytes) -> List[str]:
    """The ``.target sm_XY`` lines of PTX embedded in a library's bytes."""
    import re

    return [m.decode() for m in re.findall(rb"\.target\s+(sm_\d+[a-z]?)", library)]


def embedded_cubin_arches(library: bytes) -> List[int]:
    """sm numbers of the CUDA ELF images (e_machine 190) embedded in a library's bytes."""
    arches = []
    at = 0
    while True:
        at = library.find(b"\x7fELF", at + 1)
        if at < 0:
            return arches
        if at + 52 > len(library):
            continue
        machine = struct.unpack_from("<H", library, at + 18)[0]
        if machine == 190:  # EM_CUDA
            flags = struct.unpack_from("<I", library, at + 48)[0]
            # CUDA ELF e_flags: SM number in the low byte (older ABI) or bits 8..15 (newer ABI)
            sm = flags & 0xFF if (flags & 0xFF) >= 20 else (flags >> 8) & 0xFF
            arches.append(sm)
