"""The few CUDA runtime calls our engines make: streams, device buffers, copies and event timing.

Through cuda-python (``cuda.bindings.runtime``, or the older ``cuda.cudart``), else pycuda; both
optional and imported only when a GPU engine is loaded. The runtime API keeps one primary context
per device, so a stream made here is one onnxruntime's CUDA provider and TensorRT can both use.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from device_agent.errors import BuildFailed


class CudaRt:
    """The few CUDA runtime calls the engine needs, through cuda-python or pycuda."""

    def __init__(self) -> None:
        self.kind = ""
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart  # older cuda-python
            except ImportError:
                cudart = None
        if cudart is not None:
            self.kind, self.rt = "cuda-python", cudart
            self.stream = self._ok(cudart.cudaStreamCreate())
        else:
            import pycuda.autoinit  # noqa: F401
            import pycuda.driver as cuda

            self.kind, self.drv = "pycuda", cuda
            self.stream_obj = cuda.Stream()
            self.stream = self.stream_obj.handle

    def _ok(self, result):
        err = result[0]
        if int(err) != 0:
            raise BuildFailed(f"CUDA call failed: {err}")
        return result[1] if len(result) == 2 else result[1:]

    def malloc(self, nbytes: int):
        if self.kind == "pycuda":
            mem = self.drv.mem_alloc(max(nbytes, 1))
            return int(mem), mem
        ptr = self._ok(self.rt.cudaMalloc(max(nbytes, 1)))
        return int(ptr), ptr

    def free(self, handle) -> None:
        if self.kind == "pycuda":
            handle.free()
        else:
            self.rt.cudaFree(handle)

    def h2d(self, dst: int, src: np.ndarray) -> None:
        if self.kind == "pycuda":
            self.drv.memcpy_htod_async(dst, src, self.stream_obj)
        else:
            self._ok(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes,
                                             self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream))

    def d2h(self, dst: np.ndarray, src: int) -> None:
        if self.kind == "pycuda":
            self.drv.memcpy_dtoh_async(dst, src, self.stream_obj)
        else:
            self._ok(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes,
                                             self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream))

    def event(self):
        if self.kind == "pycuda":
            return self.drv.Event()
        return self._ok(self.rt.cudaEventCreate())

    def record(self, ev, stream: Optional[int] = None) -> None:
        """On our stream, or (``stream=0``) on the legacy default stream, which waits for all blocking streams."""
        if self.kind == "pycuda":
            ev.record(self.stream_obj if stream is None else None)
        else:
            self._ok(self.rt.cudaEventRecord(ev, self.stream if stream is None else stream))

    def sync_event(self, ev) -> None:
        if self.kind == "pycuda":
            ev.synchronize()
        else:
            self._ok(self.rt.cudaEventSynchronize(ev))

    def elapsed_ms(self, start, end) -> float:
        if self.kind == "pycuda":
            return float(end.time_since(start))
        return float(self._ok(self.rt.cudaEventElapsedTime(start, end)))

    def sync(self) -> None:
        if self.kind == "pycuda":
            self.stream_obj.synchronize()
        else:
            self._ok(self.rt.cudaStreamSynchronize(self.stream))
