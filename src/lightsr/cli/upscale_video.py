"""The video part of ``lightsr upscale``: options, planning and running video jobs.

Not a subcommand of its own (no ``register``): :mod:`lightsr.cli.upscale` sends the
videos among its inputs here. Importing it loads neither PyAV nor torch.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lightsr.errors import UsageError
from lightsr.video.formats import CODECS, DEFAULT_CODEC, VIDEO_SUFFIXES, is_video

if TYPE_CHECKING:
    from lightsr.api import Upscaler
    from lightsr.batch import Job
    from lightsr.video.pipeline import VideoOptions

HELP = f"""\
Videos ({", ".join(s[1:] for s in VIDEO_SUFFIXES)}) are streamed: audio and subtitles are
copied untouched, timestamps, frame rate, rotation and colour tags kept. A video output
named in a folder run keeps its input's extension when that container can hold the codec,
else becomes .mkv (a GIF becomes .mp4)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the video options to ``lightsr upscale``'s parser."""
    group = parser.add_argument_group("video", HELP)
    group.add_argument(
        "--codec", default=DEFAULT_CODEC, choices=tuple(CODECS), help="video codec (default: h264)"
    )
    group.add_argument(
        "--crf", type=int, metavar="Q", help="constant quality, lower is better (codec default)"
    )
    group.add_argument("--preset", metavar="NAME", help="encoder speed preset (codec default)")
    group.add_argument(
        "--pix-fmt", metavar="FMT", help="output pixel format (default: the input's if possible)"
    )
    group.add_argument("--start", type=float, metavar="SEC", help="begin at this time")
    group.add_argument("--duration", type=float, metavar="SEC", help="upscale this many seconds")


def split_inputs(inputs: list[str], recursive: bool) -> tuple[list[str], list[str]]:
    """Sort the command's inputs into (video inputs, image inputs).

    Files go by extension, folders to both lists when they hold both kinds, glob patterns
    by what they match.

    Raises:
        UsageError: a pattern that matches both images and videos.
    """
    videos: list[str] = []
    images: list[str] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            members = path.rglob("*") if recursive else path.iterdir()
            kinds = {is_video(member) for member in members if member.is_file()}
        elif path.exists() or not set("*?[").intersection(text):
            kinds = {is_video(path)}
        else:
            kinds = {is_video(match) for match in glob.glob(text, recursive=recursive)}
            if len(kinds) > 1:
                raise UsageError(f"{text}: matches both images and videos; use two patterns")
        if True in kinds:
            videos.append(text)
        if False in kinds or not kinds:
            images.append(text)
    return videos, images


def plan(args: argparse.Namespace, inputs: list[str], scale: float) -> list[Job]:
    """Pair each video among ``inputs`` with its output, checking the video options first.

    ``args.output`` is the output file when the command's only input is one video and it
    has an extension; otherwise it is a folder mirroring the input tree.
    """
    from lightsr.batch import Job, _check_targets, find_inputs
    from lightsr.video.formats import check_output_suffix, output_suffix

    if not inputs:
        return []
    if getattr(args, "outscale", None):
        raise UsageError("--outscale applies to images, not videos")
    _options(args).check()
    output = Path(args.output)
    if args.suffix is not None:
        suffix = args.suffix
    elif getattr(args, "size", None) is not None:
        suffix = f"_{args.size[1]}x{args.size[0]}"
    else:
        suffix = f"_x{scale:g}"
    found = find_inputs(inputs, args.recursive, VIDEO_SUFFIXES)
    single = len(args.inputs) == 1 and Path(inputs[0]).is_file()
    if single and output.suffix and not output.is_dir():
        jobs = [Job(found[0][0], output)]
    else:
        jobs = [
            Job(path, output / rel.parent / (path.stem + suffix + output_suffix(path, args.codec)))
            for path, rel in found
            if is_video(path)
        ]
    for job in jobs:
        check_output_suffix(job.target, args.codec)
    _check_targets(jobs)
    return jobs


def _options(args: argparse.Namespace) -> VideoOptions:
    from lightsr.video.pipeline import VideoOptions

    return VideoOptions(
        codec=args.codec,
        crf=args.crf,
        preset=args.preset,
        pix_fmt=args.pix_fmt,
        start=args.start,
        duration=args.duration,
    )


def run(args: argparse.Namespace, upscaler: Upscaler, jobs: list[Job]) -> int:
    """Upscale every video job; return how many failed (each failure is one stderr line)."""
    from tqdm import tqdm

    from lightsr.errors import ImageError
    from lightsr.video.pipeline import transcode

    options = _options(args)
    results = []
    for job in jobs:
        result = {"input": str(job.source), "output": str(job.target), "ok": False}
        if job.target.exists() and not args.overwrite:  # --skip-existing; else refused earlier
            results.append({**result, "ok": True, "skipped": True})
            continue
        bar = tqdm(desc=job.source.name, unit="frame", file=sys.stderr, disable=args.json or None)

        def progress(done: int, total: int, bar: tqdm = bar) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            job.target.parent.mkdir(parents=True, exist_ok=True)
            report = transcode(upscaler, job.source, job.target, options, progress)
            result.update(report.to_dict(), ok=True)
        except ImageError as exc:
            result["error"] = str(exc)
        finally:
            bar.close()
        if not result["ok"] and not args.json:
            print(f"lightsr upscale: failed: {result['error']}", file=sys.stderr)
        results.append(result)
    failed = sum(not result["ok"] for result in results)
    if args.json:
        print(json.dumps({"model": upscaler.name, "scale": upscaler.scale, "videos": results}))
    else:
        frames = sum(result.get("frames", 0) for result in results)
        seconds = sum(result.get("seconds", 0.0) for result in results)
        rate = frames / seconds if seconds else 0.0
        skipped = sum(result.get("skipped", False) for result in results)
        others = (f", {skipped} skipped" if skipped else "") + (
            f", {failed} failed" if failed else ""
        )
        print(
            f"upscaled {len(results) - failed - skipped} of {len(results)} videos{others}: "
            f"{frames} frames in {seconds:.1f} s ({rate:.2f} frames/s)"
        )
    return failed
