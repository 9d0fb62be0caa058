"""Typed option aliases shared by every command, so `--device` means the same thing everywhere."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable, Optional

import typer

if TYPE_CHECKING:
    from .output import Output

DeviceOpt = Annotated[str, typer.Option("--device", "-d", help="Inventory name, `local`, or HOST:PORT.")]
DevicesOpt = Annotated[list[str], typer.Option("--device", "-d", help="Device (repeat for several).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print only one JSON object on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show logs.")]
DetailOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show each failed device's whole reason.")]
TagOpt = Annotated[list[str], typer.Option("--tag", "-t", help="Only devices with this tag (repeat to AND).")]

# The fleet commands (`deploy fleet warm`, `rollout`, `status`; docs/fleet.md).
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", "-j", min=1, max=256,
                                             help="Devices worked on at once.")]
MaxFailuresOpt = Annotated[Optional[str], typer.Option(
    "--max-failures", metavar="N|P%", help="Start no new device once more than N devices (or P% of them) have "
    "failed; devices in flight finish.")]
ModelNameOpt = Annotated[Optional[str], typer.Option("--name", help="The model's name on the devices.")]
WavesOpt = Annotated[Optional[str], typer.Option(
    "--waves", metavar="N|P%,...", help="Cumulative devices after each wave, counts or percentages of the fleet, "
    "increasing, ending at 100% (default 1,10%,50%,100%).")]
HealthTimeoutOpt = Annotated[Optional[float], typer.Option(
    "--health-timeout", metavar="SECONDS", min=0.0, help="A device passes when its activation (load and the "
    "agent's --health-cmd) returned within this (default 120); keep it above the agents' --health-timeout-s.")]
ResumeOpt = Annotated[Optional[int], typer.Option(
    "--resume", metavar="ID", help="Go on with recorded rollout ID after a crash, Ctrl-C or unreachable devices: "
    "finish it or take it back; the model, name and options are the record's.")]
EventsOpt = Annotated[bool, typer.Option("--events", help="Each progress event as one JSON line on stderr.")]

# What shapes and sample inputs mean is the same for `compile`, `push`, `bench` and `run`.
ShapeOpt = Annotated[list[str], typer.Option("--input-shape", help="NAME=DxDx... for inputs with symbolic or -1 dims "
                                             "(repeat).")]
InputsOpt = Annotated[Optional[Path], typer.Option("--inputs", help="Sample inputs (.npz, one array per input name): "
                                                   "the reference and verify data; their shapes bind symbolic dims.")]
SampleOpt = Annotated[list[str], typer.Option("--input", "-i", help="NAME=FILE.npy, a sample input (repeat; wins "
                                              "over --inputs).")]
# Compile options (host.compiler.options.CompileOptions), the same for `compile`, `push`, `bench` and `run`.
ProfileOpt = Annotated[Optional[str], typer.Option(
    "--profile", "-p", help="Device profile to compile for: x86-cpu, generic-cuda, jetson-nano, jetson-xavier-nx, "
    "jetson-orin (default: `compile` x86-cpu; `push`, `bench`, `run` what the agent or the inventory says).")]
TrtOpt = Annotated[Optional[str], typer.Option("--trt-version", help="Compile for this TensorRT version instead "
                                               "of the device's (`compile`: the profile's).")]
Fp16Opt = Annotated[bool, typer.Option("--fp16", help="Build FP16 engines on the device.")]
_BATCH_RANGE_HELP = "Compile a symbolic batch dim as a dynamic range MIN:OPT:MAX, e.g. 1:8:32."
BatchRangeOpt = Annotated[Optional[str], typer.Option("--batch-range", help=_BATCH_RANGE_HELP)]
# `compile` also takes --batch (push, bench and run use --batch for the batch size to build and run)
CompileBatchRangeOpt = Annotated[Optional[str], typer.Option("--batch-range", "--batch", help=_BATCH_RANGE_HELP)]
# Optimization profiles (host/compiler/shape_ranges.py), the same for `compile`, `push`, `bench`, `run`, `fleet warm`.
ShapeRangeOpt = Annotated[list[str], typer.Option(
    "--shape-range", metavar="NAME=MIN:OPT:MAX", help="Keep an input's symbolic dims dynamic over a range of full "
    "shapes, e.g. x=1x3x48x10:1x3x48x320:1x3x48x2304 (repeat per input): one optimization profile.")]
ShapeProfilesOpt = Annotated[Optional[Path], typer.Option(
    "--shape-profiles", metavar="FILE", help="Several optimization profiles: a TOML file with one table per "
    'profile, each NAME = "MIN:OPT:MAX" (like trtexec\'s --profile groups).')]


def shape_profiles(shape_range: list[str], profiles_file: Optional[Path],
                   batch_range: Optional[str] = None) -> list:
    """The profiles `--shape-range` / `--shape-profiles` give (checked; none without either flag)."""
    if not shape_range and profiles_file is None:
        return []
    from host.compiler.shape_ranges import profiles_from_flags

    return profiles_from_flags(shape_range, profiles_file, batch_range)


RemainderDeviceOpt = Annotated[Optional[str], typer.Option("--remainder-device",
                                                           help="Run the TVM remainder on cpu or cuda.")]
ComputeCapabilityOpt = Annotated[Optional[str], typer.Option(
    "--compute-capability", help="Compile CUDA code for this GPU (e.g. 9.0) instead of the profile's; "
                                 "deploy push asks the agent.")]
ImplicitBatchOpt = Annotated[bool, typer.Option("--use-implicit-batch", help="TensorRT < 10 implicit-batch limits.")]
RemoveNoMacOpt = Annotated[bool, typer.Option("--remove-no-mac-subgraphs",
                                              help="Keep segments without conv/matmul in TVM.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the reference inputs.")]
NoHostCheckOpt = Annotated[bool, typer.Option("--no-host-check", help="Skip running a bundle with a TVM remainder "
                                              "on this host first.")]
# INT8 through explicit quantization (Q/DQ), the same for `compile` and `push` (docs/int8.md).
Int8Opt = Annotated[bool, typer.Option("--int8", help="Quantize the TensorRT segments to INT8 (Q/DQ) from "
                                       "--calibration samples; with --fp16, FP16 for layers without INT8 kernels.")]
CalibrationOpt = Annotated[Optional[Path], typer.Option("--calibration", help="INT8 calibration samples: .npz with "
                                                        "one array per input, shape [N, *input_shape], or a folder "
                                                        "of NAME.npy.")]
CalibratorOpt = Annotated[str, typer.Option("--calibrator", help="minmax, entropy or percentile.")]
ValidationOpt = Annotated[Optional[Path], typer.Option("--validation", help="Samples (like --calibration) for the "
                                                       "FP32-vs-INT8 accuracy report; default: the calibration set.")]
MinCosineOpt = Annotated[Optional[float], typer.Option("--min-cosine", help="Fail when an INT8 output's cosine "
                                                       "similarity to FP32 is below this.")]
WorkspaceOpt = Annotated[Optional[int], typer.Option(
    "--max-workspace-size", min=1, help="Builder workspace bytes (default: the bundle's, from its profile, e.g. "
    "256 MiB on a Nano).")]
NoOffloadOpt = Annotated[list[str], typer.Option("--no-offload", help="Keep this ONNX op in TVM (repeat).")]
RetryForOpt = Annotated[float, typer.Option(
    "--retry-for", min=0, max=86400, envvar="DEPLOY_RETRY_FOR", metavar="SECONDS",
    help="Keep retrying (backoff with jitter; uploads resume) for this long after an agent that answered went "
         "away: restarted, link down. 0: fail at once.")]


def retry_lines(out: "Output", prefix: str = "") -> "Callable[[str], None]":
    """How a command shows that it retries: one progress line on stderr (none with --json)."""
    def show(line: str) -> None:
        if out.json_mode:
            return
        from rich.markup import escape

        out.status(escape(f"{prefix}retrying: {line}"))

    return show
RegistryOpt = Annotated[Optional[str], typer.Option(
    "--registry", metavar="[https://]HOST[:PORT]/REPO", help="OCI registry to publish the bundle, engines and timing cache to "
    "(plain http on loopback only). Credentials: $DEPLOY_REGISTRY_TOKEN_FILE, or $DEPLOY_REGISTRY_USER with "
    "$DEPLOY_REGISTRY_PASSWORD_FILE; TLS CA: $DEPLOY_REGISTRY_CA.")]
ViaRegistryOpt = Annotated[bool, typer.Option(
    "--via-registry", help="Copy through --registry: devices pull the bundle and their class's engines themselves "
    "(agents started with --registry), so the host sends one upload per class, not per device.")]
