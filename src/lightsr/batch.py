"""Batch upscaling: find input images, name their outputs, run them one by one.

A failing image (unreadable, too small, existing output) is recorded and the batch goes
on; mistakes in the command itself (missing input, name clash) raise
:class:`~lightsr.errors.UsageError` before any work starts. Outputs are written
atomically, so an interrupted batch never leaves a partial file.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lightsr.api import Upscaler
from lightsr.errors import ImageError, UsageError
from lightsr.inference import ProgressCallback
from lightsr.io import read_image, write_image
from lightsr.options import IMAGE_SUFFIXES

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

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": str(self.job.source),
            "output": str(self.job.target),
            "ok": self.ok,
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
        return sum(result.ok for result in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.succeeded

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
            "failed": self.failed,
            "seconds": self.seconds,
            "images_per_s": self.images_per_second,
            "megapixels_per_s": self.megapixels_per_second,
            "results": [result.to_dict() for result in self.results],
        }


# ----------------------------------------------------------------------------- planning


def find_inputs(inputs: Sequence[str], recursive: bool = False) -> list[tuple[Path, Path]]:
    """Expand files, folders and glob patterns into ``(image, path relative to its root)``.

    Folders contribute the image files directly inside them (all levels with
    ``recursive``), glob patterns their matching files (``**`` needs ``recursive``); the
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
            images = _images_in(path, recursive)
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

    Raises:
        UsageError: bad inputs, an unknown format, two images mapped to one output, or an
            output that would replace its own input.
    """
    output = Path(output)
    if output_format is not None:
        output_format = "." + output_format.lower().lstrip(".")
        if output_format not in IMAGE_SUFFIXES:
            raise UsageError(f"unknown output format {output_format[1:]!r}")
    found = find_inputs(inputs, recursive)
    single = len(inputs) == 1 and Path(inputs[0]).is_file() and not output.is_dir()
    if single and output.suffix:
        if output.suffix.lower() not in IMAGE_SUFFIXES:
            raise UsageError(f"{output}: unknown image extension {output.suffix!r}")
        jobs = [Job(found[0][0], output)]
    else:
        jobs = [
            Job(image, output / relative.parent / _output_name(image, suffix, output_format))
            for image, relative in found
        ]
    _check_targets(jobs)
    return jobs


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    # Hidden files are skipped: they include other programs' partial writes.
    return sorted(
        path
        for path in candidates
        if path.is_file()
        and path.suffix.lower() in IMAGE_SUFFIXES
        and not path.name.startswith(".")
    )


def _glob_base(pattern: str) -> Path:
    """The folder part of ``pattern`` before its first wildcard: ``a/b/*/c.png`` → ``a/b``."""
    parts = Path(pattern).parts
    first_wild = next(i for i, part in enumerate(parts) if _GLOB_CHARS.intersection(part))
    return Path(*parts[:first_wild])


def _output_name(image: Path, suffix: str, output_format: str | None) -> str:
    return image.stem + suffix + (output_format or image.suffix)


def _check_targets(jobs: Sequence[Job]) -> None:
    seen: dict[Path, Path] = {}
    for job in jobs:
        key = job.target.resolve()
        if key == job.source.resolve():
            raise UsageError(f"{job.source}: the output would replace the input; use --suffix")
        if key in seen:
            raise UsageError(f"{seen[key]} and {job.source} would both be written to {job.target}")
        seen[key] = job.source


# ----------------------------------------------------------------------------- running


def run_jobs(
    upscaler: Upscaler,
    jobs: Sequence[Job],
    overwrite: bool = False,
    quality: int | None = None,
    on_result: Callable[[JobResult], None] | None = None,
    tile_progress: Callable[[Job], ProgressCallback | None] | None = None,
) -> BatchReport:
    """Upscale every job in turn; failures are recorded and the batch continues.

    Args:
        upscaler: the loaded model.
        jobs: from :func:`plan_jobs`.
        overwrite: replace existing outputs; without it an existing output fails that job.
        quality: JPEG/WebP quality passed to :func:`lightsr.io.write_image`.
        on_result: called after every job (progress display, error lines).
        tile_progress: gives the per-tile progress callback for a job.
    """
    report = BatchReport()
    start = time.perf_counter()
    for job in jobs:
        progress = tile_progress(job) if tile_progress is not None else None
        result = _run_job(upscaler, job, overwrite, quality, progress)
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
    progress: ProgressCallback | None,
) -> JobResult:
    result = JobResult(job)
    if job.target.exists() and not overwrite:
        result.error = f"{job.target}: output exists (use --overwrite to replace it)"
        return result
    try:
        image = read_image(job.source)
        result.input_size = (image.shape[1], image.shape[0])
        output = upscaler(image, progress)
        del image
        write_image(job.target, output, quality)
        result.output_size = (output.shape[1], output.shape[0])
    except ImageError as exc:
        result.error = str(exc) if str(job.source) in str(exc) else f"{job.source}: {exc}"
    except (MemoryError, torch.OutOfMemoryError):
        result.error = f"{job.source}: out of memory; try a smaller --tile or --max-memory"
    return result
