"""``lightsr export``: a network → one self-contained ONNX file with dynamic sizes, or an
NCNN ``.param``/``.bin`` pair for the apps (Upscayl, realesrgan-ncnn-vulkan, chaiNNer)."""

from __future__ import annotations

import argparse
import json

from lightsr.options import parse_size

EPILOG = """\
The exported model has one input 'input' (N, 3, H, W) float32 RGB in [0, 1] and one output
'output' (N, 3, sH, sW) float32 in [0, 1] (not clamped), whatever the network's own value
range. Batch, height and width are dynamic unless --static is given. --precision fp16
(or --fp16) stores fp16 weights and computes in fp16, with fp32 input and output.

--format ncnn (the default when -o ends in .param or is a folder) writes <name>-x<s>.param
and .bin as the NCNN apps expect: input blob 'data', output blob 'output', RGB in [0, 1],
any input size, fp16 weights unless --precision fp32. A folder output gets the name
<variant>-x<scale>; a .param name must carry the scale (x4). Needs pip install
'lightsr[ncnn]'. FMEN-S and DITN-Real export; EMT and ESC do not yet. See docs/deploy.md.

Examples:
  lightsr export --model emt --scale 4 -o emt_x4.onnx --verify
  lightsr export --weights fmen_train.pth -o fmen.onnx --precision fp16
  lightsr export --model ditn_real --scale 4 -o ditn_256.onnx --static 256x256
  lightsr export --model fmen_s --scale 4 -o models/           (models/fmen_s-x4.param, .bin)
  lightsr export --model ditn_real --scale 4 -o ditn_real-x4.param --precision fp32
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a network to ONNX or NCNN (dynamic sizes, verified)",
        description=(
            "Export a network to ONNX: re-parameterised where it has a deploy form, value "
            "range and padding inside the graph, metadata in metadata_props."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", metavar="NAME", help="network or published-checkpoint name")
    which.add_argument("--weights", metavar="PATH", help="checkpoint file")
    parser.add_argument("--scale", type=int, metavar="S", help="upscale factor (with --model)")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output: MODEL.onnx; NCNN: NAME-xS.param or a folder",
    )
    parser.add_argument(
        "--format",
        choices=("onnx", "ncnn"),
        help="onnx (default) or ncnn (default when OUT ends in .param or is a folder)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        help="weights (and ONNX compute) precision: default fp32 for onnx, fp16 for ncnn",
    )
    parser.add_argument("--fp16", action="store_true", help="same as --precision fp16")
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: 18)")
    parser.add_argument("--static", metavar="HxW", help="ONNX: fixed input height x width")
    parser.add_argument(
        "--verify", action="store_true", help="ONNX: compare ONNX Runtime with torch at 3 sizes"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `lightsr --help` does not pay for torch.
    from lightsr.errors import UsageError
    from lightsr.export import DEFAULT_OPSET, MIN_OPSET, export_onnx, verify_onnx
    from lightsr.paths import check_output_path
    from lightsr.progress import heartbeat

    output_format = _format(args)
    precision = _precision(args, output_format)
    if output_format == "ncnn":
        return _run_ncnn(args, precision)
    check_output_path(args.output, args.overwrite, ".onnx")
    static = None if args.static is None else parse_size(args.static, "--static")
    if args.model is not None and args.scale is None:
        raise UsageError("--model needs --scale")
    if args.scale is not None and args.scale < 1:
        raise UsageError(f"--scale must be a positive integer, got {args.scale}")
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    if opset < MIN_OPSET:
        raise UsageError(f"--opset must be at least {MIN_OPSET}, got {opset}")
    model = _model(args)
    half = precision == "fp16"
    with heartbeat(f"exporting {model.variant} x{model.scale} (1-3 min)", not args.json):
        result = export_onnx(model, args.output, opset=opset, half=half, static=static)
    with heartbeat("verifying with ONNX Runtime", args.verify and not args.json):
        diffs = verify_onnx(result.path, model, half=half) if args.verify else {}
    summary = {
        "output": str(result.path),
        "variant": model.variant,
        "scale": model.scale,
        "precision": result.metadata["precision"],
        "opset": opset,
        "min_side": result.min_side,
        "max_abs_diff": diffs,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    size = "static " + args.static if static else f"dynamic sizes >= {result.min_side} px"
    print(f"{result.path}: {model.variant} x{model.scale}, {summary['precision']}, {size}")
    for where, diff in diffs.items():
        print(f"verified {where}: max abs diff {diff:.2e}")
    return 0


def _format(args: argparse.Namespace) -> str:
    from pathlib import Path

    if args.format is not None:
        return args.format
    output = Path(args.output)
    return "ncnn" if output.suffix.lower() == ".param" or output.is_dir() else "onnx"


def _precision(args: argparse.Namespace, output_format: str) -> str:
    from lightsr.errors import UsageError

    if args.fp16 and args.precision == "fp32":
        raise UsageError("--fp16 contradicts --precision fp32")
    if args.fp16:
        return "fp16"
    return args.precision or ("fp16" if output_format == "ncnn" else "fp32")


def _model(args: argparse.Namespace):
    from lightsr.errors import UsageError
    from lightsr.models import load_model, resolve_model

    if args.model is not None and args.scale is None:
        raise UsageError("--model needs --scale")
    if args.scale is not None and args.scale < 1:
        raise UsageError(f"--scale must be a positive integer, got {args.scale}")
    if args.model:
        return resolve_model(args.model, args.weights, args.scale)
    model = load_model(args.weights)
    if args.scale is not None and args.scale != model.scale:
        raise UsageError(f"{args.weights} is a x{model.scale} model, not x{args.scale}")
    return model


def _run_ncnn(args: argparse.Namespace, precision: str) -> int:
    from lightsr.errors import UsageError
    from lightsr.export.ncnn import export_ncnn
    from lightsr.progress import heartbeat

    for flag, given in (("--opset", args.opset), ("--static", args.static)):
        if given is not None:
            raise UsageError(f"{flag} applies to ONNX export only")
    if args.verify:
        raise UsageError("--verify applies to ONNX export only (NCNN exports are always checked)")
    model = _model(args)
    with heartbeat(f"exporting {model.variant} x{model.scale} to NCNN", not args.json):
        result = export_ncnn(model, args.output, precision=precision, overwrite=args.overwrite)
    summary = {
        "param": str(result.param),
        "bin": str(result.bin),
        "variant": model.variant,
        "scale": model.scale,
        "precision": result.precision,
        "min_side": result.min_side,
        "max_abs_diff": result.max_abs_diff,
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print(
        f"{result.param} + {result.bin.name}: {model.variant} x{model.scale}, "
        f"{result.precision} weights, any size >= {result.min_side} px, "
        f"blobs data -> output (checked against torch: max abs diff {result.max_abs_diff:.2e})"
    )
    return 0
