"""``lightsr eval``: PSNR-Y / SSIM-Y or NIQE of a model or of bicubic on a benchmark folder."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from lightsr.cli.runtime_options import (
    add_precision_argument,
    print_precision_note,
    resolve_threads,
)
from lightsr.options import BACKENDS, DEVICE_HELP

# Same values as lightsr.evaluate.METRICS, which imports torch.
METRICS = ("psnr", "niqe")

if TYPE_CHECKING:
    from lightsr.evaluate import EvalResult

EPILOG = """\
DIR holds HR/ images and optionally LR_bicubic/X<S>/<name>x<S>.png (EDSR naming); without
LR files the inputs are made by MATLAB-bicubic downscaling of the mod-cropped HR images.
A DIR without HR/ holds low-resolution images (real-world photos): they are upscaled and
only NIQE (--metric niqe) can score them. NIQE (lower is better) is that of the MATLAB
release on the Y channel of the whole output (no border cropped, as BasicSR's NIQE script
and real-world SR papers); PSNR/SSIM ignore an S-pixel border.

Examples:
  lightsr eval --data Set5 --scale 4 --model bicubic
  lightsr eval --data Set14 --scale 2 --weights runs/fmen_x2/best.safetensors --json
  lightsr eval --data Set5 --model fmen_s --backend onnxruntime --precision int8
  lightsr eval --data RealSRSet --scale 4 --metric niqe
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="PSNR/SSIM or NIQE on a benchmark set (Set5, Set14, B100, RealSRSet, ...)",
        description=(
            "Measure PSNR-Y and SSIM-Y, or NIQE (BasicSR/MATLAB conventions) on a test set."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="test-set folder")
    parser.add_argument("--scale", type=int, default=4, metavar="S", help="upscaling factor")
    parser.add_argument(
        "--metric",
        default="psnr",
        choices=METRICS,
        help="psnr: PSNR-Y and SSIM-Y against HR/ (default); niqe: NIQE of the outputs, "
        "with PSNR-Y and SSIM-Y too where DIR has HR/",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--model",
        metavar="NAME",
        help="'bicubic', a network or published-checkpoint name (default: built-in model)",
    )
    which.add_argument("--weights", metavar="PATH", help="checkpoint file to evaluate")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_precision_argument(parser)
    parser.add_argument("--backend", default="torch", choices=BACKENDS)
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: free)")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `lightsr --help` does not pay for torch.
    from lightsr.api import Upscaler
    from lightsr.evaluate import evaluate, find_test_images

    # Check the folder first so a typo is reported before any model is loaded.
    find_test_images(args.data, args.scale, args.metric)
    threads = resolve_threads(args.threads)
    # The deploy form in its inference layout (torch), or the (quantised) export.
    upscaler = Upscaler(
        model=args.model,
        scale=args.scale,
        weights=args.weights,
        precision=args.precision,
        device=args.device,
        backend=args.backend,
        threads=threads,
    )
    print_precision_note("eval", args.precision, upscaler.device.type)
    result = evaluate(args.data, args.scale, upscaler.network, progress=True, metric=args.metric)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        _print_table(result)
    return 0


def _print_table(result: EvalResult) -> None:
    from rich.console import Console
    from rich.table import Table

    columns = [column for column in _COLUMNS if getattr(result, column[0]) is not None]
    table = Table(title=f"{result.dataset} x{result.scale} — {result.model}")
    table.add_column("image")
    for _, heading, _ in columns:
        table.add_column(heading, justify="right")
    for image in result.images:
        table.add_row(image.name, *(format(getattr(image, n), f) for n, _, f in columns))
    table.add_section()
    means = (format(getattr(result, n), f) for n, _, f in columns)
    table.add_row("mean", *means, style="bold")
    console = Console()
    console.print(table)
    notes = []
    if result.psnr is not None:
        notes.append(f"PSNR/SSIM on the Y channel, {result.scale}-pixel border ignored")
    if result.niqe is not None:
        notes.append("NIQE on the whole Y channel")
    console.print(f"[dim]{'; '.join([*notes, _SOURCES[result.lr_source]])}[/dim]")


# Result attribute, column heading and number format of each metric, in table order.
_COLUMNS = (
    ("psnr", "PSNR-Y (dB)", ".2f"),
    ("ssim", "SSIM-Y", ".4f"),
    ("niqe", "NIQE", ".4f"),
)

# Footer words for EvalResult.lr_source.
_SOURCES = {
    "official": "official LR files",
    "degraded": "degraded LR files (LR_degraded)",
    "generated": "LR made by bicubic downscaling",
    "folder": "no ground truth: the folder's images are the inputs",
}
