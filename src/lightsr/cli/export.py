"""``lightsr export``: a network → one self-contained ONNX file with dynamic sizes."""

from __future__ import annotations

import argparse
import json

from lightsr.options import parse_size

EPILOG = """\
The exported model has one input 'input' (N, 3, H, W) float32 RGB in [0, 1] and one output
'output' (N, 3, sH, sW) float32 in [0, 1] (not clamped), whatever the network's own value
range. Batch, height and width are dynamic unless --static is given. --fp16 stores fp16
weights and computes in fp16, with fp32 input and output.

Examples:
  lightsr export --model emt --scale 4 -o emt_x4.onnx --verify
  lightsr export --weights fmen_train.pth -o fmen.onnx --fp16
  lightsr export --model ditn_real --scale 4 -o ditn_256.onnx --static 256x256
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a network to ONNX (dynamic sizes, verified)",
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
    parser.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="output file")
    parser.add_argument("--opset", type=int, metavar="N", help="ONNX opset (default: 18)")
    parser.add_argument("--fp16", action="store_true", help="fp16 weights and compute")
    parser.add_argument("--static", metavar="HxW", help="fixed input height x width")
    parser.add_argument(
        "--verify", action="store_true", help="compare ONNX Runtime with torch at 3 sizes"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `lightsr --help` does not pay for torch.
    from lightsr.errors import UsageError
    from lightsr.export import DEFAULT_OPSET, MIN_OPSET, export_onnx, verify_onnx
    from lightsr.models import resolve_model
    from lightsr.paths import check_output_path
    from lightsr.progress import heartbeat

    check_output_path(args.output, args.overwrite, ".onnx")
    static = None if args.static is None else parse_size(args.static, "--static")
    if args.model is not None and args.scale is None:
        raise UsageError("--model needs --scale")
    if args.scale is not None and args.scale < 1:
        raise UsageError(f"--scale must be a positive integer, got {args.scale}")
    opset = DEFAULT_OPSET if args.opset is None else args.opset
    if opset < MIN_OPSET:
        raise UsageError(f"--opset must be at least {MIN_OPSET}, got {opset}")
    model = resolve_model(args.model, args.weights, args.scale) if args.model else None
    if model is None:
        from lightsr.models import load_model

        model = load_model(args.weights)
        if args.scale is not None and args.scale != model.scale:
            raise UsageError(f"{args.weights} is a x{model.scale} model, not x{args.scale}")
    with heartbeat(f"exporting {model.variant} x{model.scale} (1-3 min)", not args.json):
        result = export_onnx(model, args.output, opset=opset, half=args.fp16, static=static)
    with heartbeat("verifying with ONNX Runtime", args.verify and not args.json):
        diffs = verify_onnx(result.path, model, half=args.fp16) if args.verify else {}
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
