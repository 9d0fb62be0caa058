"""`deploy compile` and `deploy inspect`: thin adapters over host.compiler."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._options import (
    CalibrationOpt, CalibratorOpt, CompileBatchRangeOpt, ComputeCapabilityOpt, Fp16Opt, ImplicitBatchOpt, InputsOpt,
    Int8Opt, JsonOpt, MinCosineOpt, NoHostCheckOpt, NoOffloadOpt, ProfileOpt, RemainderDeviceOpt, RemoveNoMacOpt,
    SampleOpt, SeedOpt, ShapeOpt, ShapeProfilesOpt, ShapeRangeOpt, TrtOpt, ValidationOpt, VerboseOpt, WorkspaceOpt,
    shape_profiles,
)
from .output import Output


def compile_cmd(
    model: Annotated[Path, typer.Argument(help="ONNX model file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output directory (gets bundle/ and bundle.tar).")],
    profile: ProfileOpt = None,
    trt_version: TrtOpt = None,
    fp16: Fp16Opt = False,
    int8: Int8Opt = False,
    calibration: CalibrationOpt = None,
    calibrator: CalibratorOpt = "minmax",
    validation: ValidationOpt = None,
    max_rel_err: Annotated[Optional[float], typer.Option("--max-rel-err", help="With --int8: fail when an output's "
                                                         "max relative error against FP32 is above this.")] = None,
    min_cosine: MinCosineOpt = None,
    input_shape: ShapeOpt = [],
    inputs: InputsOpt = None,
    input: SampleOpt = [],
    batch: CompileBatchRangeOpt = None,
    shape_range: ShapeRangeOpt = [],
    profiles_file: ShapeProfilesOpt = None,
    no_offload: NoOffloadOpt = [],
    remainder_device: RemainderDeviceOpt = None,
    compute_capability: ComputeCapabilityOpt = None,
    implicit_batch: ImplicitBatchOpt = False,
    remove_no_mac: RemoveNoMacOpt = False,
    workspace: WorkspaceOpt = None,
    seed: SeedOpt = 0,
    no_host_check: NoHostCheckOpt = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Compile MODEL for a device profile into a bundle (TensorRT segments + TVM remainder)."""
    from host.compiler.shape_ranges import parse_input_shape

    shapes = dict(parse_input_shape(s) for s in input_shape)  # flag mistakes first, before the compiler loads
    ranges = shape_profiles(shape_range, profiles_file, batch)

    from host.compiler.api import compile_model
    from host.compiler.options import CompileOptions
    from host.pipeline.int8 import int8_options
    from host.pipeline.tensors import read_samples

    out = Output(json_mode=json_out, verbose=verbose)
    if max_rel_err is not None and not int8:
        from device_agent.errors import InvalidInput

        raise InvalidInput("--max-rel-err bounds INT8 against FP32; it only applies with --int8")
    quant = int8_options(int8, calibration, calibrator, validation, max_rel_err, min_cosine)
    samples = read_samples(inputs, input)
    opts = CompileOptions(profile=profile, trt_version=trt_version, fp16=fp16, input_shapes=shapes, batch=batch,
                          shape_profiles=ranges,
                          use_implicit_batch=implicit_batch, remove_no_mac_subgraphs=remove_no_mac,
                          max_workspace_size=workspace, exclude_ops=tuple(no_offload),
                          remainder_device=remainder_device, compute_capability=compute_capability, seed=seed,
                          host_check=not no_host_check, sample_inputs=samples, int8=quant)
    out.status(f"compiling {model} for {opts.profile_name} ...")
    result = compile_model(model, output, opts)
    data = result.to_json()
    from host.security.signing import metadata_for

    # with the host's keys (deploy keys init): the manifest is signed now, so the pushes that send it reuse that
    data["signed"] = metadata_for(Path(result.archive)) is not None

    def render(console) -> None:
        from host.compiler.inspect import describe, render_lines

        for line in render_lines(describe(result.manifest, result.digest)):
            console.print(line, markup=False)
        int8 = data.get("int8")
        if int8:
            acc = int8["accuracy"]
            console.print(f"INT8 ({int8['calibrator']}, {int8['calibration_samples']} calibration samples, "
                          f"{int8['qdq']['per_channel']} per-channel / {int8['qdq']['per_tensor']} per-tensor Q/DQ): "
                          f"vs FP32 on {acc['samples']} {acc['dataset']} sample(s) max rel err "
                          f"{acc['max_rel_err']:.3g}, min cosine {acc['min_cosine']:.5f}", markup=False)
            if int8.get("warning"):
                console.print(f"warning: {int8['warning']}", markup=False)
        console.print(f"bundle {result.bundle_dir}  archive {result.archive}  ({data['seconds']:.1f} s)"
                      + ("; manifest signed with the fleet's keys" if data["signed"] else ""), markup=False)

    out.result(data, render)


def inspect_cmd(
    bundle: Annotated[Path, typer.Argument(help="Compile output dir, bundle dir, or bundle .tar.")],
    json_out: JsonOpt = False,
) -> None:
    """Show each segment, where it runs, and every op that was not offloaded, with the reason."""
    from host.compiler.inspect import describe, load_manifest, render_lines

    out = Output(json_mode=json_out)
    manifest, digest = load_manifest(bundle)
    info = describe(manifest, digest)

    def render(console) -> None:
        for line in render_lines(info):
            console.print(line, markup=False)

    out.result(info, render)


def register(app: typer.Typer) -> None:
    app.command("compile")(compile_cmd)
    app.command("inspect")(inspect_cmd)
