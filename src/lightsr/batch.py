"""Batch upscaling: find input images, name their outputs, check them, run them one by one.

A failing image (unreadable, too large, too small) is recorded and the batch goes on;
mistakes in the command itself (missing input, name clash, existing outputs) raise
:class:`~lightsr.errors.UsageError` before any work starts. :func:`check_jobs` reads only
image headers, so bad inputs are found before a model is loaded. Outputs are written
atomically, so an interrupted batch never leaves a partial file. Planning and checking use
the standard library only (no numpy, OpenCV or torch).
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from lightsr.errors import ImageError, UsageError
from lightsr.imageinfo import (
    check_output_format,
    check_pixel_limit,
    default_max_pixels,
    read_image_info,
)
from lightsr.options import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from lightsr.api import Upscaler
    from lightsr.inference import ProgressCallback

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Job:
    """One image to upscale: read ``source``, write ``target``."""

    source: Path
    target: Path


@dataclass
class JobResult:
    """What happened to one :class:`Job`; ``error`` is ``None`` on success."""

    job: Job
    error: str | None = None
    input_size: tuple[int, int] | None = None
    output_size: tuple[int, int] | None = None
    skipped: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": str(self.job.source),
            "output": str(self.job.target),
            "ok": self.ok,
            "skipped": self.skipped,
            "error": self.error,
            "input_size": self.input_size,
            "output_size": self.output_size,
        }


@dataclass
class BatchReport:
    """Results of a batch and its throughput (images/s, output megapixels/s)."""

    results: list[JobResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def succeeded(self) -> int:
        """Images written (skipped ones not included)."""
        return sum(result.ok and not result.skipped for result in self.results)

    @property
    def skipped(self) -> int:
        """Images whose existing output was kept (``--skip-existing``)."""
        return sum(result.skipped for result in self.results)

    @property
    def failed(self) -> int:
        return sum(not result.ok for result in self.results)

    @property
    def images_per_second(self) -> float:
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0

    @property
    def megapixels_per_second(self) -> float:
        """Output megapixels written per second."""
        pixels = sum(w * h for r in self.results if r.output_size for w, h in [r.output_size])
        return pixels / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "images": len(self.results),
            "succeeded": self.succeeded,
            "skipped": self.skipped,
            "failed": self.failed,
            "seconds": self.seconds,
            "images_per_s": self.images_per_second,
            "megapixels_per_s": self.megapixels_per_second,
            "results": [result.to_dict() for result in self.results],
        }


# ----------------------------------------------------------------------------- planning


def find_inputs(
    inputs: Sequence[str], recursive: bool = False, suffixes: Sequence[str] = IMAGE_SUFFIXES
) -> list[tuple[Path, Path]]:
    """Expand files, folders and glob patterns into ``(image, path relative to its root)``.

    Folders contribute the files with one of ``suffixes`` directly inside them (all levels
    with ``recursive``), glob patterns their matching files (``**`` needs ``recursive``); the
    relative path is what the output tree mirrors. Explicit files are taken as they are,
    whatever their extension, so that a wrong file is reported rather than ignored.

    Raises:
        UsageError: an input does not exist, or a folder or pattern yields no image.
    """
    found: list[tuple[Path, Path]] = []
    for text in inputs:
        path = Path(text)
        if path.is_file():
            found.append((path, Path(path.name)))
        elif path.is_dir():
            images = _images_in(path, recursive, suffixes)
            if not images:
                raise UsageError(f"{path}: no images in this folder (use --recursive?)")
            found.extend((image, image.relative_to(path)) for image in images)
        elif _GLOB_CHARS.intersection(text):
            base = _glob_base(text)
            matches = sorted(Path(m) for m in glob.glob(text, recursive=recursive))
            images = [m for m in matches if m.is_file()]
            if not images:
                raise UsageError(f"{text}: no file matches this pattern")
            found.extend((image, image.relative_to(base)) for image in images)
        else:
            raise UsageError(f"{path}: no such file or folder")
    return found


def plan_jobs(
    inputs: Sequence[str],
    output: str | Path,
    suffix: str,
    output_format: str | None = None,
    recursive: bool = False,
) -> list[Job]:
    """Pair every input image with its output path.

    A single input file with an ``output`` that has an image extension (and is not an
    existing folder) is written to exactly ``output``. Otherwise ``output`` is a folder
    that mirrors the input tree, each image named ``stem + suffix + extension``; the
    extension is ``output_format`` (``"png"``) or the input's own.

    Outputs are never read back as inputs: images inside ``output`` (when it is a folder
    below an input folder) and images that another input's output would replace (the
    outputs of an earlier run into the input folder) are left out.

    Raises:
        UsageError: bad inputs, an unknown format, a suffix that is a path, a folder output
            that is a file, two images mapped to one output, or an output that would
            replace its own input.
    """
    output = Path(output)
    output_format = format_suffix(output_format)
    if any(separator in suffix for separator in (os.sep, "/", "\0")) or suffix in (".", ".."):
        raise UsageError(f"--suffix must be part of a file name, not a path: {suffix!r}")
    found = find_inputs(inputs, recursive)
    single = len(inputs) == 1 and Path(inputs[0]).is_file() and not output.is_dir()
    if single and output.suffix:
        if output.suffix.lower() not in IMAGE_SUFFIXES:
            raise UsageError(f"{output}: unknown image extension {output.suffix!r}")
        jobs = [Job(found[0][0], output)]
    else:
        if output.exists() and not output.is_dir():
            raise UsageError(f"{output}: is a file, but the output of these inputs is a folder")
        found = [
            (image, relative)
            for image, relative in found
            if not _in_output(image, relative, output)
        ]
        jobs = [
            Job(image, output / relative.parent / output_name(image, suffix, output_format))
            for image, relative in found
        ]
        jobs = _without_earlier_outputs(jobs)
    _check_targets(jobs)
    return jobs


def _in_output(image: Path, relative: Path, output: Path) -> bool:
    """Whether ``image`` lies in ``output`` and ``output`` is a sub-folder of the folder it
    was found in (its outputs would be found again by the next ``--recursive`` run)."""
    root = Path(*image.parts[: len(image.parts) - len(relative.parts)] or ".").resolve()
    output = output.resolve()
    return output != root and output.is_relative_to(root) and image.resolve().is_relative_to(output)


def _without_earlier_outputs(jobs: list[Job]) -> list[Job]:
    """Drop the jobs whose input is another job's output (an earlier run's result)."""
    made_from = {job.target.resolve(): job.source.resolve() for job in jobs}
    kept = []
    for job in jobs:
        source = job.source.resolve()
        if made_from.get(source, source) == source:
            kept.append(job)
    return kept


def _images_in(
    folder: Path, recursive: bool, suffixes: Sequence[str] = IMAGE_SUFFIXES
) -> list[Path]:
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    # Hidden files are skipped: they include other programs' partial writes.
    return sorted(
        path
        for path in candidates
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith(".")
    )


def _glob_base(pattern: str) -> Path:
    """The folder part of ``pattern`` before its first wildcard: ``a/b/*/c.png`` → ``a/b``."""
    parts = Path(pattern).parts
    first_wild = next(i for i, part in enumerate(parts) if _GLOB_CHARS.intersection(part))
    return Path(*parts[:first_wild])


def format_suffix(output_format: str | None) -> str | None:
    """The file extension for an output format: ``"PNG"`` → ``".png"``; ``None`` stays.

    Raises:
        UsageError: not a format lightsr writes.
    """
    if output_format is None:
        return None
    suffix = "." + output_format.lower().lstrip(".")
    if suffix not in IMAGE_SUFFIXES:
        raise UsageError(f"unknown output format {suffix[1:]!r}")
    return suffix


def output_name(image: PurePath, suffix: str, output_format: str | None) -> str:
    """An output's file name: ``image``'s stem, ``suffix``, then ``output_format`` (from
    :func:`format_suffix`) or ``image``'s own extension."""
    return image.stem + suffix + (output_format or image.suffix)


def _check_targets(jobs: Sequence[Job]) -> None:
    if not jobs:
        raise UsageError("no input images left: every image found is an output of this command")
    seen: dict[Path, Path] = {}
    for job in jobs:
        key = job.target.resolve()
        if key == job.source.resolve():
            raise UsageError(f"{job.source}: the output would replace the input; use --suffix")
        if key in seen:
            raise UsageError(f"{seen[key]} and {job.source} would both be written to {job.target}")
        seen[key] = job.source


# ----------------------------------------------------------------------------- checking


def check_existing(jobs: Sequence[Job], overwrite: bool, skip_existing: bool) -> None:
    """Refuse to start when outputs exist and neither ``overwrite`` nor ``skip_existing``.

    Raises:
        UsageError: naming the first existing output and how many there are.
    """
    if overwrite or skip_existing:
        return
    existing = [job.target for job in jobs if job.target.exists()]
    if existing:
        many = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise UsageError(
            f"{existing[0]}{many}: output exists; use --overwrite to replace"
            + (" or --skip-existing to keep existing outputs" if len(jobs) > 1 else " it")
        )


def check_jobs(
    jobs: Sequence[Job], scale: float, max_pixels: int | None = None, skip_existing: bool = False
) -> tuple[list[Job], list[JobResult]]:
    """Split ``jobs`` into those to run and those decided from headers alone.

    Decided without decoding: images whose header is unreadable, over ``max_pixels``, or
    whose output format cannot store the upscaled image (failed), and jobs whose output
    exists when ``skip_existing`` (skipped).

    Returns:
        The jobs to run, and the results of the others.
    """
    runnable: list[Job] = []
    decided: list[JobResult] = []
    limit = default_max_pixels() if max_pixels is None else max_pixels
    for job in jobs:
        if skip_existing and job.target.exists():
            decided.append(JobResult(job, skipped=True))
            continue
        try:
            info = read_image_info(job.source)
            check_pixel_limit(info, job.source, limit)
            check_output_format(info, job.source, job.target, scale)
        except ImageError as exc:
            decided.append(JobResult(job, error=str(exc)))
            continue
        runnable.append(job)
    return runnable, decided


# ----------------------------------------------------------------------------- running


def run_jobs(
    upscaler: Upscaler,
    jobs: Sequence[Job],
    overwrite: bool = False,
    quality: int | None = None,
    max_pixels: int | None = None,
    on_result: Callable[[JobResult], None] | None = None,
    tile_progress: Callable[[Job], ProgressCallback | None] | None = None,
) -> BatchReport:
    """Upscale every job in turn; failures are recorded and the batch continues.

    Args:
        upscaler: the loaded model.
        jobs: from :func:`plan_jobs`.
        overwrite: replace existing outputs; without it an existing output fails that job.
        quality: JPEG/WebP quality passed to :func:`lightsr.io.write_image`.
        max_pixels: pixel limit of :func:`lightsr.io.read_image`.
        on_result: called after every job (progress display, error lines).
        tile_progress: gives the per-tile progress callback for a job.
    """
    report = BatchReport()
    start = time.perf_counter()
    for job in jobs:
        progress = tile_progress(job) if tile_progress is not None else None
        result = _run_job(upscaler, job, overwrite, quality, max_pixels, progress)
        report.results.append(result)
        if on_result is not None:
            on_result(result)
    report.seconds = time.perf_counter() - start
    return report


def _run_job(
    upscaler: Upscaler,
    job: Job,
    overwrite: bool,
    quality: int | None,
    max_pixels: int | None,
    progress: ProgressCallback | None,
) -> JobResult:
    import torch

    from lightsr.io import read_image, write_image
    from lightsr.metadata import read_metadata

    result = JobResult(job)
    if job.target.exists() and not overwrite:
        result.error = f"{job.target}: output exists (use --overwrite to replace it)"
        return result
    try:
        image = read_image(job.source, max_pixels)
        result.input_size = (image.shape[1], image.shape[0])
        output = upscaler(image, progress)
        del image
        write_image(job.target, output, quality, read_metadata(job.source))
        result.output_size = (output.shape[1], output.shape[0])
    except ImageError as exc:
        result.error = str(exc) if str(job.source) in str(exc) else f"{job.source}: {exc}"
    except (MemoryError, torch.OutOfMemoryError):
        result.error = f"{job.source}: out of memory; try a smaller --tile or --max-memory"
    return result
