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
    from lightsr.models import SRModel

EPILOG = """\
DIR holds HR/ images and optionally LR_bicubic/X<S>/<name>x<S>.png (EDSR naming); without
LR files the inputs are made by MATLAB-bicubic downscaling of the mod-cropped HR images.
A DIR without HR/ holds low-resolution images (real-world photos): they are upscaled and
only NIQE (--metric niqe) can score them. NIQE (lower is better) is that of the MATLAB
release on the Y channel of the whole output (no border cropped, as BasicSR's NIQE script
and real-world SR papers); PSNR/SSIM ignore an S-pixel border.

Any scale: S may be any number between 1 and 8 (2.5, 6) for bicubic, arbitrary-scale
models (--model anyscale, LTE weights) and --outscale-from. The LR size rule is then the
official LIIF/LTE one: LR floor(H/S) x floor(W/S), HR cropped (top-left) to round(h*S) x
round(w*S), LR = MATLAB bicubic of that crop (uint8); for integer S it is the mod-crop rule
above, and official LR files are used where present. A non-integer S ignores a ceil(S)-pixel
border. --outscale-from N scores a xN network followed by MATLAB bicubic resizing of its
uint8 output to the xS size (what `lightsr upscale --scale N --outscale S` gives).

Examples:
  lightsr eval --data Set5 --scale 4 --model bicubic
  lightsr eval --data Set14 --scale 2 --weights runs/fmen_x2/best.safetensors --json
  lightsr eval --data Set5 --model fmen_s --backend onnxruntime --precision int8
  lightsr eval --data Set5 --model ditn_real --backend ncnn --precision fp32
  lightsr eval --data RealSRSet --scale 4 --metric niqe
  lightsr eval --data Set14 --scale 6 --model anyscale
  lightsr eval --data Set14 --scale 6 --model default --outscale-from 4
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
    parser.add_argument(
        "--scale",
        type=parse_scale,
        default=4,
        metavar="S",
        help="upscaling factor (default 4); non-integers for arbitrary-scale models",
    )
    parser.add_argument(
        "--outscale-from",
        type=int,
        metavar="N",
        help="run the network at xN and resize its output to xS with MATLAB bicubic "
        "(baseline for scales it lacks)",
    )
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
    which.add_argument(
        "--weights",
        metavar="PATH",
        help="checkpoint file to evaluate (.onnx with --backend onnxruntime, .param with "
        "--backend ncnn)",
    )
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_precision_argument(parser)
    parser.add_argument("--backend", default="torch", choices=BACKENDS)
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: free)")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    parser.set_defaults(func=run)


def parse_scale(text: str) -> int | float:
    """``--scale``: ``"4"`` → 4, ``"2.5"`` → 2.5 (range checked by lightsr.evaluate)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    return int(value) if value.is_integer() else value


def run(args: argparse.Namespace) -> int:
    # Imported here so that `lightsr --help` does not pay for torch.
    from lightsr.api import BICUBIC, Upscaler
    from lightsr.backends import file_backend, get_backend
    from lightsr.errors import UsageError
    from lightsr.evaluate import evaluate, find_test_images

    # Check the folder first so a typo is reported before any model is loaded.
    find_test_images(args.data, args.scale, args.metric)
    if args.outscale_from is not None and args.model == BICUBIC and args.weights is None:
        raise UsageError("--outscale-from needs a network, not bicubic")
    threads = resolve_threads(args.threads)
    # Without --model, a non-integer scale is the built-in anyscale model (as upscale).
    network_scale = args.scale if args.outscale_from is None else args.outscale_from
    # The deploy form in its inference layout (torch), or the (quantised) export: see
    # lightsr.backends.
    options = {
        "precision": args.precision,
        "device": args.device,
        "backend": args.backend,
        "threads": threads,
    }
    bicubic = args.model == BICUBIC and args.weights is None
    if not bicubic and file_backend(args.weights) is None:
        # Loaded here, not by Upscaler: arbitrary-scale weights serve every scale. A bad
        # backend, device or precision is reported before any model is loaded.
        backend = get_backend(args.backend)
        backend.check_options(args.device, args.precision)
        backend.data_device(args.device)
        network = _load_network(args.model, args.weights, network_scale)
        upscaler = Upscaler(model=network, **options)
    else:
        upscaler = Upscaler(model=args.model, scale=network_scale, weights=args.weights, **options)
    print_precision_note("eval", args.precision, upscaler.device.type)
    result = evaluate(
        args.data,
        args.scale,
        upscaler.network,
        progress=True,
        metric=args.metric,
        outscale_from=args.outscale_from,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        _print_table(result)
    return 0


def _load_network(model: str | None, weights: str | None, scale: float) -> SRModel:
    """``--weights`` as they are (the scale is checked by lightsr.evaluate, so that
    arbitrary-scale weights serve any scale), else ``--model`` resolved at ``scale``."""
    from lightsr import models

    if weights is not None:
        return models.load_model(weights)
    return models.resolve_model(model, None, scale)


def _print_table(result: EvalResult) -> None:
    from rich.console import Console
    from rich.table import Table

    from lightsr.evaluate import scale_label

    columns = [column for column in _COLUMNS if getattr(result, column[0]) is not None]
    label = scale_label(result.scale)
    model = result.model
    if result.outscale_from is not None:
        model += f" x{scale_label(result.outscale_from)} + bicubic"
    table = Table(title=f"{result.dataset} x{label} — {model}")
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
        rounded = "" if isinstance(result.scale, int) else f" (x{label} rounded up)"
        notes.append(f"PSNR/SSIM on the Y channel, {result.border}-pixel border ignored{rounded}")
    if result.niqe is not None:
        notes.append("NIQE on the whole Y channel")
    notes.append(_SOURCES[result.lr_source])
    if result.lr_rule is not None:
        notes.append(_RULES[result.lr_rule].format(s=label))
    if result.outscale_from is not None:
        notes.append(
            f"x{scale_label(result.outscale_from)} output resized to x{label} by MATLAB bicubic"
        )
    console.print(f"[dim]{'; '.join(notes)}[/dim]")


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

# Footer words for EvalResult.lr_rule ({s}: the scale).
_RULES = {
    "modcrop": "HR cropped to a multiple of {s}",
    "liif": "LIIF/LTE size rule: LR floor(H/{s}) x floor(W/{s}), HR cropped to "
    "round(h*{s}) x round(w*{s})",
}
