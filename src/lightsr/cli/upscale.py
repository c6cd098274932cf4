"""``lightsr upscale``: super-resolve image files, folders and glob patterns."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from lightsr.errors import UsageError
from lightsr.options import BACKENDS, DEVICE_HELP, PRECISIONS

if TYPE_CHECKING:
    from lightsr.batch import BatchReport, Job, JobResult
    from lightsr.inference import ProgressCallback

EPILOG = """\
OUT is a file when INPUT is a single file and OUT has an image extension; otherwise it is a
folder that mirrors the input tree, each output named <stem><suffix>.<ext>. Large images
are processed in tiles automatically; --tile forces a tile size. Existing outputs are kept
unless --overwrite is given. Exit status: 0 all written, 1 some image failed, 2 usage error.

Examples:
  lightsr upscale photo.jpg -o photo_x4.png
  lightsr upscale photo.jpg -o best_x4.png --quality best    # EMT, official weights
  lightsr upscale photos/ -o big/ --recursive --model emt --scale 2
  lightsr upscale 'scans/*.tif' -o out/ --tile 256 --precision bf16 --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upscale",
        help="super-resolve images (files, folders, globs)",
        description="Upscale images with a super-resolution network or bicubic.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, globs")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="file or folder")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--model",
        metavar="NAME",
        help="'bicubic', a network or published-checkpoint name (default: built-in model)",
    )
    which.add_argument(
        "--weights", metavar="PATH", help="checkpoint file (.onnx with --backend onnxruntime)"
    )
    parser.add_argument(
        "--scale", type=int, metavar="S", help="upscaling factor (default: 4, or the weights')"
    )
    parser.add_argument("--tile", type=int, metavar="N", help="force N×N-pixel input tiles")
    parser.add_argument(
        "--tile-overlap",
        type=int,
        metavar="P",
        help="context pixels around each tile (default: 64)",
    )
    parser.add_argument(
        "--max-memory", type=int, metavar="MiB", help="memory one tile may use (default: auto)"
    )
    parser.add_argument("--precision", default="fp32", choices=tuple(PRECISIONS))
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--backend", default="torch", choices=BACKENDS)
    parser.add_argument(
        "--suffix", metavar="TEXT", help="added to output file names (default: _x<S>)"
    )
    parser.add_argument(
        "--format", metavar="EXT", help="output format: png, jpg, webp, tif, bmp (default: input's)"
    )
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument(
        "--quality",
        action=_QualityAction,
        metavar="Q",
        help=(
            "'best': EMT with its official weights (downloaded once; about 20x slower, about "
            "+0.5 dB Set5 PSNR) instead of the fast built-in model; 'fast': the built-in "
            "model; or a number: JPEG/WebP quality 1-100 (101: lossless WebP). May be given "
            "twice"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `lightsr --help` does not pay for torch.
    from lightsr.api import DEFAULT_SCALE, Upscaler
    from lightsr.batch import run_jobs
    from lightsr.inference import DEFAULT_TILE_OVERLAP

    _check_numbers(args)
    _apply_preset(args)
    # Check inputs and outputs before loading the model, so that typos fail fast. The
    # default suffix names the scale, which --weights without --scale leaves to the file.
    jobs = _plan(args, args.scale or DEFAULT_SCALE)
    upscaler = Upscaler(
        model=args.model,
        scale=args.scale,
        weights=args.weights,
        tile=args.tile,
        tile_overlap=DEFAULT_TILE_OVERLAP if args.tile_overlap is None else args.tile_overlap,
        max_memory=None if args.max_memory is None else args.max_memory << 20,
        precision=args.precision,
        device=args.device,
        backend=args.backend,
    )
    if upscaler.scale != (args.scale or DEFAULT_SCALE):
        jobs = _plan(args, upscaler.scale)
    display = _Display(len(jobs), quiet=args.json)
    report = run_jobs(
        upscaler,
        jobs,
        overwrite=args.overwrite,
        quality=args.quality,
        on_result=display.on_result,
        tile_progress=display.tile_progress,
    )
    display.close()
    if args.json:
        summary = {
            "model": upscaler.name,
            "scale": upscaler.scale,
            "device": str(upscaler.device),
            "precision": upscaler.precision,
            **report.to_dict(),
        }
        print(json.dumps(summary))
    else:
        print(_summary_line(report))
    return 1 if report.failed else 0


# What `--quality best` runs: the most accurate network with official weights at x2-x4.
BEST_MODEL = "emt"


class _QualityAction(argparse.Action):
    """``--quality best|fast`` sets ``preset``; ``--quality N`` sets the file quality."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        if value in ("best", "fast"):
            namespace.preset = value
            return
        try:
            setattr(namespace, self.dest, int(value))
        except ValueError:
            parser.error(f"--quality: expected best, fast or a number, got {value!r}")


def _apply_preset(args: argparse.Namespace) -> None:
    """Turn ``--quality best`` into ``--model emt``, saying so on stderr."""
    if getattr(args, "preset", "fast") != "best":
        return
    if args.model is not None or args.weights is not None:
        raise UsageError("--quality best chooses the model; drop --model/--weights")
    args.model = BEST_MODEL
    print(
        f"--quality best: using {BEST_MODEL.upper()} with its official weights "
        "(slower than the default FMEN-S)",
        file=sys.stderr,
    )


def _plan(args: argparse.Namespace, scale: int) -> list[Job]:
    from lightsr.batch import plan_jobs

    suffix = f"_x{scale}" if args.suffix is None else args.suffix
    return plan_jobs(args.inputs, args.output, suffix, args.format, args.recursive)


def _check_numbers(args: argparse.Namespace) -> None:
    if args.tile is not None and args.tile < 1:
        raise UsageError(f"--tile must be positive, got {args.tile}")
    if args.tile_overlap is not None and args.tile_overlap < 0:
        raise UsageError(f"--tile-overlap must be >= 0, got {args.tile_overlap}")
    if args.max_memory is not None and args.max_memory < 1:
        raise UsageError(f"--max-memory must be positive, got {args.max_memory}")
    if args.quality is not None and not 1 <= args.quality <= 101:
        raise UsageError(f"--quality must be between 1 and 101, got {args.quality}")


def _summary_line(report: BatchReport) -> str:
    failed = f", {report.failed} failed" if report.failed else ""
    return (
        f"upscaled {report.succeeded} of {len(report.results)} images{failed} in "
        f"{report.seconds:.1f} s ({report.images_per_second:.2f} images/s, "
        f"{report.megapixels_per_second:.2f} output MP/s)"
    )


class _Display:
    """Progress bars on stderr (images, and tiles of big images) and one line per failure."""

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.quiet = quiet
        self.images = tqdm(total=total, unit="img", file=sys.stderr, disable=quiet or None)
        self.tiles = None

    def tile_progress(self, job: Job) -> ProgressCallback | None:
        if self.quiet:
            return None

        def update(done: int, total: int) -> None:
            if total <= 1:
                return
            if self.tiles is None:
                self.tiles = self._tqdm(
                    total=total,
                    desc=job.source.name,
                    unit="tile",
                    file=sys.stderr,
                    leave=False,
                    disable=None,
                )
            if done < self.tiles.n:  # RGBA: the alpha channel is a second pass
                self.tiles.reset(total=total)
            self.tiles.update(done - self.tiles.n)

        return update

    def on_result(self, result: JobResult) -> None:
        if self.tiles is not None:
            self.tiles.close()
            self.tiles = None
        self.images.update(1)
        if not result.ok and not self.quiet:
            self._tqdm.write(f"lightsr upscale: failed: {result.error}", file=sys.stderr)

    def close(self) -> None:
        self.images.close()
