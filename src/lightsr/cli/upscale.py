"""``lightsr upscale``: super-resolve image files, folders and glob patterns."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from lightsr.cli import scaleout, upscale_video
from lightsr.cli.runtime_options import (
    add_precision_argument,
    print_precision_choice,
    print_precision_note,
    resolve_threads,
)
from lightsr.errors import UsageError
from lightsr.options import (
    AUTO_PRECISION,
    BACKENDS,
    DEFAULT_SCALE,
    DEVICE_HELP,
    MAX_SCALE,
    MIN_SCALE,
    parse_output_size,
)

if TYPE_CHECKING:
    from lightsr.api import Upscaler
    from lightsr.batch import BatchReport, Job, JobResult
    from lightsr.inference import ProgressCallback

EPILOG = """\
OUT is a file when INPUT is a single file and OUT has an image (or video) extension; else a
folder that mirrors the input tree, each output named <stem><suffix>.<ext>; images in it
are never taken as inputs. Large images are processed in tiles automatically; --tile forces
a tile size. Inputs are checked from their headers before the model loads: larger than
--max-pixels, unreadable, or not storable in the output format fail at once. Existing
outputs stop the command unless --overwrite (replace them) or --skip-existing (keep them).
EXIF, ICC profile and DPI are kept between PNG, JPEG, WebP and TIFF (WebP holds no DPI);
the orientation of JPEG/TIFF inputs is reset, as their pixels are turned upright.
Exit status: 0 all written or skipped, 1 some image failed, 2 nothing done (usage error),
3 Ray failed (--ray).

Examples:
  lightsr upscale photo.jpg -o photo_x4.png
  lightsr upscale photo.jpg -o photo_x2.5.png --scale 2.5    # built-in anyscale model
  lightsr upscale photo.jpg -o wallpaper.png --size 3840x2160  # width x height
  lightsr upscale photo.jpg -o best_x4.png --quality best    # EMT, official weights
  lightsr upscale old.jpg -o old_x4.png --quality real       # noisy/JPEG photos: GAN model
  lightsr upscale photos/ -o big/ --recursive --model emt --scale 2
  lightsr upscale 'scans/*.tif' -o out/ --tile 256 --precision bf16 --json
  lightsr upscale photo.jpg -o photo_x4.png --backend ncnn    # NCNN export, fp16 weights
  lightsr upscale photo.jpg -o photo_x4.png --backend ncnn --weights fmen_s-x4.param
  lightsr upscale clip.mp4 -o clip_x4.mp4 --codec h265 --crf 22
  lightsr upscale s3://bucket/frames -o /mnt/shared/frames_x4 --ray auto
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "upscale",
        help="super-resolve images and videos (files, folders, globs)",
        description="Upscale images and videos with a super-resolution network or bicubic.",
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
        "--weights",
        metavar="PATH",
        help="checkpoint file (.onnx with --backend onnxruntime, .param with --backend ncnn)",
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--scale",
        type=float,
        metavar="S",
        help=(
            "upscaling factor, 1 to 8 (default: 4, or the weights'); a non-integer one "
            "(2.5) uses the built-in arbitrary-scale model 'anyscale' when no --model is "
            "given. Output: round(height*S) x round(width*S)"
        ),
    )
    size.add_argument(
        "--size",
        metavar="WxH",
        help=(
            "output size, width x height (1920x1080; one number: a square), whatever the "
            "input's; uses the built-in 'anyscale' model unless --model/--weights name "
            "another arbitrary-scale one"
        ),
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
    add_precision_argument(parser, default=AUTO_PRECISION)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--backend",
        default="torch",
        choices=BACKENDS,
        help="torch (default); onnxruntime or ncnn: the model's ONNX or NCNN export, made "
        "once and cached (ncnn: on a Vulkan GPU where ncnn finds one, else the CPU)",
    )
    parser.add_argument(
        "--suffix", metavar="TEXT", help="added to output file names (default: _x<S>)"
    )
    parser.add_argument(
        "--format", metavar="EXT", help="output format: png, jpg, webp, tif, bmp (default: input's)"
    )
    parser.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    existing.add_argument(
        "--skip-existing", action="store_true", help="keep existing outputs, do the rest"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help="refuse inputs of more pixels (default: what memory holds, at most 16384²; 0: none)",
    )
    parser.add_argument(
        "--outscale",
        type=float,
        metavar="F",
        help="final size factor: the network's scale, then MATLAB bicubic to F (e.g. 3.5)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="CPU threads (default: $LIGHTSR_THREADS, else the cores other processes leave free)",
    )
    parser.add_argument(
        "--quality",
        action=_QualityAction,
        metavar="Q",
        help=(
            "'real': for real photos and frames (noise, blur, JPEG artefacts): the built-in "
            "real-world GAN model, x4; 'best': EMT with its official weights (downloaded "
            "once; about 20x slower, about +0.5 dB Set5 PSNR) for clean images; 'fast': the "
            "built-in model; or a number: JPEG/WebP quality 1-100 (101: lossless WebP). May "
            "be given twice (--quality real --quality 90)"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    upscale_video.add_arguments(parser)
    scaleout.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Inputs are planned and checked from their headers before torch is imported, so that
    # typos, bombs and unwritable formats fail fast and cheaply.
    from lightsr.batch import BatchReport, check_existing, check_jobs

    _check_numbers(args)
    _apply_preset(args)
    _check_scale_and_size(args)
    scaleout.check_arguments(args)
    if args.ray is not None:
        return scaleout.run_on_ray(args, _upscaler_options(args))
    videos, images = upscale_video.split_inputs(args.inputs, args.recursive)
    jobs = _plan(args, images, args.scale or DEFAULT_SCALE)
    video_jobs = upscale_video.plan(args, videos, args.scale or DEFAULT_SCALE)
    upscaler = None
    if args.scale is None and args.weights is not None:  # the scale is the weights'
        upscaler = _upscaler(args)
        jobs = _plan(args, images, upscaler.scale)
        video_jobs = upscale_video.plan(args, videos, upscaler.scale)
    scale = upscaler.scale if upscaler is not None else args.scale or DEFAULT_SCALE
    check_existing([*jobs, *video_jobs], args.overwrite, args.skip_existing)
    factor = 1.0 if args.size is not None else args.outscale or scale  # --size: at write
    todo, decided = check_jobs(jobs, factor, args.max_pixels, args.skip_existing)
    failed_videos = 0
    if video_jobs:
        upscaler = upscaler or _upscaler(args)
        failed_videos = upscale_video.run(args, upscaler, video_jobs)
    if not jobs:
        return 1 if failed_videos else 0
    display = _Display(len(jobs), quiet=args.json)
    for result in decided:
        display.on_result(result)
    report = BatchReport(results=decided)
    if todo:
        from lightsr.batch import run_jobs

        upscaler = upscaler or _upscaler(args)
        done = run_jobs(
            upscaler,
            todo,
            overwrite=args.overwrite,
            quality=args.quality,
            max_pixels=args.max_pixels,
            on_result=display.on_result,
            tile_progress=display.tile_progress,
        )
        report.results += done.results
        report.seconds = done.seconds
    display.close()
    if args.json:
        summary = {
            "model": upscaler.name if upscaler else None,
            "backend": args.backend,
            "scale": scale,
            "device": str(upscaler.device) if upscaler else None,
            "precision": upscaler.precision if upscaler else None,
            **report.to_dict(),
        }
        print(json.dumps(summary))
    else:
        print(_summary_line(report))
    return 1 if report.failed or failed_videos else 0


# The models `--quality` presets choose: a name as --model takes it, and what to tell the user.
QUALITY_PRESETS = {
    "best": ("emt", "EMT with its official weights (slower than the default FMEN-S)"),
    "real": (
        "real",
        "the built-in real-photo model (DITN-Real GAN, x4): removes noise, blur and JPEG "
        "artefacts instead of enlarging them",
    ),
}


class _QualityAction(argparse.Action):
    """``--quality best|real|fast`` sets ``quality_preset``; ``--quality N`` the file quality."""

    def __call__(self, parser, namespace, value, option_string=None) -> None:
        if value in (*QUALITY_PRESETS, "fast"):
            namespace.quality_preset = value
            return
        try:
            setattr(namespace, self.dest, int(value))
        except ValueError:
            choices = ", ".join((*QUALITY_PRESETS, "fast"))
            parser.error(f"--quality: expected {choices} or a number, got {value!r}")


def _apply_preset(args: argparse.Namespace) -> None:
    """Turn ``--quality best|real`` into the ``--model`` it stands for, saying so on stderr."""
    preset = getattr(args, "quality_preset", "fast")
    if preset not in QUALITY_PRESETS:
        return
    model, description = QUALITY_PRESETS[preset]
    if args.model is not None or args.weights is not None:
        raise UsageError(f"--quality {preset} chooses the model; drop --model/--weights")
    if preset == "real" and args.scale not in (None, DEFAULT_SCALE):
        raise UsageError(
            f"--quality real has a x{DEFAULT_SCALE} model only; for another size use "
            f"--outscale {args.scale} (x{DEFAULT_SCALE}, then bicubic to x{args.scale})"
        )
    args.model = model
    print(f"--quality {preset}: using {description}", file=sys.stderr)


def _upscaler(args: argparse.Namespace) -> Upscaler:
    from lightsr.api import Upscaler

    options = _upscaler_options(args)
    options["threads"] = resolve_threads(args.threads)
    upscaler = Upscaler(**options)
    print_precision_choice("upscale", upscaler, args.verbose)
    print_precision_note("upscale", upscaler.precision, upscaler.device.type)
    if upscaler.hint:
        print(f"lightsr upscale: note: {upscaler.hint}", file=sys.stderr)
    return upscaler


def _plan(args: argparse.Namespace, inputs: list[str], scale: float) -> list[Job]:
    from lightsr.batch import plan_jobs

    if not inputs:
        return []
    suffix = _default_suffix(args, scale) if args.suffix is None else args.suffix
    return plan_jobs(inputs, args.output, suffix, args.format, args.recursive)


def _default_suffix(args: argparse.Namespace, scale: float) -> str:
    """``_x4``, ``_x2.5`` (the outscale when given), or ``_1920x1080`` for ``--size``."""
    if args.size is not None:
        height, width = args.size
        return f"_{width}x{height}"
    return f"_x{args.outscale or scale:g}"


def _upscaler_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :class:`~lightsr.api.Upscaler` that ``args`` give."""
    options = {
        "model": args.model,
        "scale": args.scale,
        "weights": args.weights,
        "tile": args.tile,
        "tile_overlap": args.tile_overlap,
        "max_memory": None if args.max_memory is None else args.max_memory << 20,
        "precision": args.precision,
        "device": args.device,
        "backend": args.backend,
        "outscale": args.outscale,
        "threads": args.threads,
    }
    if args.size is not None:
        options["size"] = args.size
    return options


def _check_scale_and_size(args: argparse.Namespace) -> None:
    """Parse ``--size`` (to (height, width)) and check what goes with ``--scale``/``--size``."""
    if args.scale is not None:
        if not MIN_SCALE <= args.scale <= MAX_SCALE:
            raise UsageError(
                f"--scale must be between {MIN_SCALE:g} and {MAX_SCALE:g}, got {args.scale:g}"
            )
        if args.scale == int(args.scale):
            args.scale = int(args.scale)
        elif args.outscale is not None:
            raise UsageError("give a non-integer --scale or --outscale, not both")
    if args.size is None:
        return
    args.size = parse_output_size(args.size, "--size")
    if args.outscale is not None:
        raise UsageError("give --size or --outscale, not both")
    if args.ray is not None:
        raise UsageError("--size does not run on Ray (--ray) yet; use --scale")
    if args.model not in (None, "anyscale", "bicubic") and args.weights is None:
        raise UsageError(
            f"--size needs an arbitrary-scale model, and --model {args.model} upscales by a "
            "fixed factor: leave --model out (the built-in 'anyscale' model) or use "
            "--outscale F for the network's scale, then bicubic to F"
        )


def _check_numbers(args: argparse.Namespace) -> None:
    positive = {
        "--tile": args.tile,
        "--max-memory": args.max_memory,
        "--threads": args.threads,
        "--outscale": args.outscale,
    }
    for option, value in positive.items():
        if value is not None and not value > 0:
            raise UsageError(f"{option} must be positive, got {value:g}")
    if args.tile_overlap is not None and args.tile_overlap < 0:
        raise UsageError(f"--tile-overlap must be >= 0, got {args.tile_overlap}")
    if args.max_pixels is not None and args.max_pixels < 0:
        raise UsageError(f"--max-pixels must be >= 0 (0: no limit), got {args.max_pixels}")
    if args.quality is not None and not 1 <= args.quality <= 101:
        raise UsageError(f"--quality must be between 1 and 101, got {args.quality}")


def _summary_line(report: BatchReport) -> str:
    failed = f", {report.failed} failed" if report.failed else ""
    skipped = f", {report.skipped} skipped (output exists)" if report.skipped else ""
    return (
        f"upscaled {report.succeeded} of {len(report.results)} images{skipped}{failed} in "
        f"{report.seconds:.1f} s ({report.images_per_second:.2f} images/s, "
        f"{report.megapixels_per_second:.2f} output MP/s)"
    )


class _Display:
    """Progress bars on stderr (images, and tiles of big images) and one line per failure."""

    def __init__(self, total: int, quiet: bool) -> None:
        from tqdm import tqdm

        from lightsr.progress import progress_bar

        self._tqdm = tqdm
        self._bar = progress_bar
        self.quiet = quiet
        self.images = progress_bar(total=total, unit="img", enabled=not quiet)
        self.tiles = None

    def tile_progress(self, job: Job) -> ProgressCallback | None:
        if self.quiet:
            return None

        def update(done: int, total: int) -> None:
            if total <= 1:
                return
            if self.tiles is None:
                self.tiles = self._bar(total=total, desc=job.source.name, unit="tile", leave=False)
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
