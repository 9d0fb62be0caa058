"""`CompileOptions`: every option of the host compiler, declared once.

`deploy compile`, `deploy push/bench/run` (`PushOptions.compile`), `host.api`, the manifest's ``options`` and the
host compile-cache key (`host.pipeline.bundle_cache.options_key`) all read this one dataclass, so a new flag is
added here and nowhere else. Standard library only at import (no numpy, onnx or TVM), so the CLI and the pipeline
can import it without paying for the compiler.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

if TYPE_CHECKING:
    import numpy as np

    from host.compiler.quantize import Int8Options

#: the profile `deploy compile` uses when none is given (`deploy push` asks the device instead)
DEFAULT_PROFILE = "x86-cpu"


@dataclass
class CompileOptions:
    """What the host compiler is asked to do; everything here may change the bundle."""

    profile: Optional[str] = None               # None: DEFAULT_PROFILE (compile), the device's (push)
    trt_version: Optional[str] = None           # None: the profile's (compile), the device's (push)
    fp16: bool = False
    input_shapes: Dict[str, List[int]] = field(default_factory=dict)
    batch: Optional[str] = None                 # "MIN:OPT:MAX" (`--batch-range`)
    #: optimization profiles (`--shape-range`, `--shape-profiles`): per profile, input -> [min, opt, max] shapes
    shape_profiles: List[Dict[str, List[List[int]]]] = field(default_factory=list)
    use_implicit_batch: bool = False
    remove_no_mac_subgraphs: bool = False
    max_workspace_size: Optional[int] = None    # None: the profile's default_workspace_bytes
    exclude_ops: Sequence[str] = ()             # ops kept in TVM on request (`--no-offload`)
    remainder_device: Optional[str] = None      # override the profile's choice ("cpu" | "cuda")
    compute_capability: Optional[str] = None    # override the profile's GPU ("9.0"), e.g. the device's own
    seed: int = 0
    host_check: bool = True                     # run a host-runnable remainder bundle against the reference
    sample_inputs: Dict[str, "np.ndarray"] = field(default_factory=dict)  # reference/verify inputs (--inputs)
    fold: bool = True                           # fold constants and shape subgraphs first (simplify.py)
    int8: Optional["Int8Options"] = None        # explicit INT8 (Q/DQ) from calibration samples (int8.py)

    @property
    def profile_name(self) -> str:
        return self.profile or DEFAULT_PROFILE

    @property
    def precision(self) -> str:
        if self.int8 is not None:
            return "int8+fp16" if self.fp16 else "int8"
        return "fp16" if self.fp16 else "fp32"

    def manifest_part(self, default_workspace_bytes: int, batch: Optional[List[int]]) -> Dict[str, Any]:
        """The options' share of the manifest's ``options``: what the device reads back from the bundle.

        ``batch`` is the parsed `batch` range; the compiler adds what it found (segment opset, INT8, parts...)."""
        workspace = self.max_workspace_size if self.max_workspace_size is not None else default_workspace_bytes
        ranges = {"shape_profiles": profiles_json(self.shape_profiles)} if self.shape_profiles else {}
        return {**ranges,"fp16": bool(self.fp16), "precision": self.precision,
                "use_implicit_batch": bool(self.use_implicit_batch),
                "remove_no_mac_subgraphs": bool(self.remove_no_mac_subgraphs),
                "max_workspace_size": int(workspace), "batch": batch,
                "input_shapes": {k: list(v) for k, v in sorted(self.input_shapes.items())},
                "exclude_ops": sorted(self.exclude_ops)}


def profiles_json(profiles: Sequence[Dict[str, List[List[int]]]]) -> List[Dict[str, Dict[str, List[int]]]]:
    """Profiles as the manifest and the compile-cache key write them: input -> {min, opt, max}."""
    return [{name: {"min": list(r[0]), "opt": list(r[1]), "max": list(r[2])} for name, r in sorted(p.items())}
            for p in profiles]


__all__ = ["CompileOptions", "DEFAULT_PROFILE", "profiles_json"]
