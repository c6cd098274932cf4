"""Benchmark evaluation: PSNR-Y / SSIM-Y and NIQE of a model (or bicubic) on an SR test set.

A test set is a folder with ``HR/`` images and, optionally, EDSR-style low-resolution
inputs ``LR_bicubic/X<s>/<name>x<s>.png``. Conventions follow BasicSR and the papers: HR is
mod-cropped to a multiple of the scale, missing LR inputs are made with MATLAB bicubic
downscaling, model outputs are clamped and rounded to uint8, and metrics are computed on
the Y channel with ``scale`` pixels cropped from each border.

A folder without ``HR/`` (real-world sets such as RealSRSet) holds the low-resolution
inputs themselves; only the no-reference NIQE of the upscaled outputs can be reported
there. NIQE scores the whole output (no border cropped), as real-world SR papers report it
with BasicSR's ``scripts/metrics/calculate_niqe.py`` (``crop_border=0``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lightsr.errors import ImageError, UsageError
from lightsr.imresize import imresize, mod_crop
from lightsr.io import from_float, image_to_tensor, read_rgb_uint8, tensor_to_image, to_float
from lightsr.metrics import NIQE_BLOCK, SSIM_WINDOW, niqe, psnr, ssim
from lightsr.models import SRModel
from lightsr.options import IMAGE_SUFFIXES
from lightsr.paths import shared_dir
from lightsr.progress import progress_bar

# Folder holding test sets by name (Set5/, Set14/, ...), searched before the shared one.
DATA_VARIABLE = "LIGHTSR_DATA"
MIN_SCALE, MAX_SCALE = 2, 8
BICUBIC = "bicubic"
# ``psnr``: PSNR-Y and SSIM-Y against HR; ``niqe``: NIQE of the outputs, plus PSNR-Y and
# SSIM-Y where the set has HR images.
PSNR, NIQE = "psnr", "niqe"
METRICS = (PSNR, NIQE)
_SCORE_NAMES = ("psnr", "ssim", "niqe")


@dataclass
class ImageScore:
    """Metrics of one test image; ``None`` where not measured."""

    name: str
    psnr: float | None = None
    ssim: float | None = None
    niqe: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The name and the measured metrics."""
        return {"name": self.name, **_measured(self)}


@dataclass
class EvalResult:
    """Per-image and mean metrics of one model on one test set at one scale.

    ``lr_source`` says where the inputs came from:
    ``"official"`` (``LR_bicubic``), ``"degraded"`` (``LR_degraded``, written by ``lightsr
    degrade``), ``"generated"`` or ``"folder"`` (no ``HR/``: the folder's own images are the
    inputs). It is not part of :meth:`to_dict`.
    """

    dataset: str
    scale: int
    model: str
    images: list[ImageScore] = field(default_factory=list)
    lr_source: str = "official"

    @property
    def lr_generated(self) -> bool:
        """Whether the LR inputs were made here by bicubic downscaling (no LR files)."""
        return self.lr_source == "generated"

    @property
    def psnr(self) -> float | None:
        """Mean PSNR-Y over images (dB); ``None`` without HR images."""
        return self._mean("psnr")

    @property
    def ssim(self) -> float | None:
        """Mean SSIM-Y over images; ``None`` without HR images."""
        return self._mean("ssim")

    @property
    def niqe(self) -> float | None:
        """Mean NIQE of the outputs (lower is better); ``None`` unless asked for."""
        return self._mean("niqe")

    def _mean(self, metric: str) -> float | None:
        values = [getattr(image, metric) for image in self.images]
        if not values or values[0] is None:
            return None
        return float(np.mean(values))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``lightsr eval --json``: the measured metrics only."""
        return {
            "dataset": self.dataset,
            "scale": self.scale,
            "model": self.model,
            **_measured(self),
            "images": [image.to_dict() for image in self.images],
        }


def _measured(scores: ImageScore | EvalResult) -> dict[str, float]:
    """The metrics of ``scores`` that are not ``None``, in the order psnr, ssim, niqe."""
    values = {name: getattr(scores, name) for name in _SCORE_NAMES}
    return {name: value for name, value in values.items() if value is not None}


def resolve_data_dir(data: str | os.PathLike) -> Path:
    """The folder of a test set given as a path or as a bare name (``"Set5"``).

    A bare name that is not a folder here is looked up in ``$LIGHTSR_DATA`` and then in
    the ``data/`` folder of :func:`lightsr.paths.shared_dir`.

    Raises:
        UsageError: no such folder, naming every place looked in.
    """
    path = Path(data)
    if path.is_dir():
        return path
    candidates = [path]
    if len(path.parts) == 1:
        if os.environ.get(DATA_VARIABLE):
            candidates.append(Path(os.environ[DATA_VARIABLE]) / path)
        candidates.append(shared_dir() / "data" / path)
    for candidate in candidates[1:]:
        if candidate.is_dir():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise UsageError(f"data folder not found: {data} (looked in {looked}; see ${DATA_VARIABLE})")


def find_hr_images(data_dir: str | os.PathLike, scale: int) -> list[Path]:
    """Check a test-set folder (a path or a name, see :func:`resolve_data_dir`) and scale;
    return its HR images sorted by name.

    Raises:
        UsageError: bad scale, missing folder, no ``HR/`` folder or no images in it.
    """
    _check_scale(scale)
    data_dir = resolve_data_dir(data_dir)
    hr_dir = data_dir / "HR"
    if not hr_dir.is_dir():
        raise UsageError(f"{data_dir} has no HR/ folder of ground-truth images")
    images = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UsageError(f"no HR images in {hr_dir}")
    return images


def find_test_images(
    data_dir: str | os.PathLike, scale: int, metric: str = PSNR
) -> tuple[list[Path], bool]:
    """Check a test-set folder, scale and metric; return its images sorted by name and
    whether they are ground truth: the ``HR/`` images, else the images in the folder itself
    (low-resolution inputs, which only ``metric="niqe"`` can score).

    Raises:
        UsageError: bad metric or scale, missing folder, no images, or ``"psnr"`` without
            ``HR/``.
    """
    if metric not in METRICS:
        raise UsageError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    _check_scale(scale)
    folder = resolve_data_dir(data_dir)
    if (folder / "HR").is_dir():
        return find_hr_images(folder, scale), True
    images = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not images:
        raise UsageError(f"{folder} has no HR/ folder of ground-truth images and no images")
    if metric == PSNR:
        raise UsageError(
            f"{folder} has no HR/ folder of ground-truth images for PSNR/SSIM; use --metric "
            "niqe to score its upscaled images without ground truth"
        )
    return images, False


def _check_scale(scale: int) -> None:
    if not isinstance(scale, int) or not MIN_SCALE <= scale <= MAX_SCALE:
        raise UsageError(f"scale must be an integer from {MIN_SCALE} to {MAX_SCALE}, got {scale}")


def evaluate(
    data_dir: str | os.PathLike,
    scale: int,
    model: SRModel | None = None,
    progress: bool = True,
    metric: str = PSNR,
) -> EvalResult:
    """PSNR-Y and SSIM-Y, or NIQE, of ``model`` on the test set in ``data_dir``.

    Args:
        data_dir: folder with ``HR/`` and optionally ``LR_bicubic/X<scale>/``, or a folder of
            low-resolution images without ground truth, or the name of a set (see
            :func:`resolve_data_dir`).
        scale: upscaling factor; also the number of border pixels ignored by PSNR and SSIM.
        model: network to evaluate; ``None`` evaluates MATLAB bicubic upscaling.
        progress: show a progress bar on stderr.
        metric: ``"psnr"`` (PSNR-Y and SSIM-Y; needs ``HR/``) or ``"niqe"`` (NIQE of the
            whole outputs, with PSNR-Y and SSIM-Y too where there is ``HR/``).

    Raises:
        UsageError: bad folder, scale or metric, or ``model`` is for another scale.
        ImageError: an image is unreadable, too small, or an LR input has the wrong size.
    """
    paths, has_hr = find_test_images(data_dir, scale, metric)
    if model is not None and model.scale != scale:
        raise UsageError(f"the model upscales x{model.scale}, not x{scale}")
    data_dir = resolve_data_dir(data_dir)
    if not has_hr:
        return _evaluate_without_reference(data_dir, paths, scale, model, progress)
    lr_dir = lr_folder(data_dir, scale)
    result = EvalResult(
        dataset=data_dir.resolve().name,
        scale=scale,
        model=BICUBIC if model is None else model.variant,
        lr_source=_lr_source(lr_dir),
    )
    bar = progress_bar(
        paths, desc=f"{result.dataset} x{scale}", unit="img", enabled=progress, leave=False
    )
    for hr_path in bar:
        hr = mod_crop(read_rgb_uint8(hr_path), scale)
        _check_size(hr, hr_path, scale, model)
        if metric == NIQE:
            _check_niqe_size(*hr.shape[:2], hr_path)
        lr = _load_lr(hr, hr_path, lr_dir, scale) if lr_dir.is_dir() else imresize(hr, 1 / scale)
        sr = super_resolve(lr, scale, model)
        if sr.shape != hr.shape:
            raise ImageError(f"{hr_path.name}: output is {sr.shape[:2]}, HR is {hr.shape[:2]}")
        scores = replace(score(sr, hr, scale), name=hr_path.stem)
        if metric == NIQE:
            scores.niqe = niqe(sr)
        result.images.append(scores)
    return result


def _evaluate_without_reference(
    data_dir: Path, paths: list[Path], scale: int, model: SRModel | None, progress: bool
) -> EvalResult:
    """NIQE of the upscaled images of a folder that has no ground truth."""
    result = EvalResult(
        dataset=data_dir.resolve().name,
        scale=scale,
        model=BICUBIC if model is None else model.variant,
        lr_source="folder",
    )
    bar = progress_bar(
        paths, desc=f"{result.dataset} x{scale}", unit="img", enabled=progress, leave=False
    )
    for path in bar:
        lr = read_rgb_uint8(path)
        height, width = lr.shape[:2]
        if model is not None and min(height, width) < model.spec.min_size:
            raise ImageError(
                f"{path}: {width}x{height} is too small; {model.variant} needs at least "
                f"{model.spec.min_size}x{model.spec.min_size}"
            )
        _check_niqe_size(height * scale, width * scale, path)
        sr = super_resolve(lr, scale, model)
        result.images.append(ImageScore(name=path.stem, niqe=niqe(sr)))
    return result


def _check_niqe_size(height: int, width: int, path: Path) -> None:
    """Refuse outputs (``height`` x ``width``) with fewer than two NIQE blocks."""
    if (height // NIQE_BLOCK) * (width // NIQE_BLOCK) < 2:
        raise ImageError(
            f"{path}: its output, {width}x{height}, is too small for NIQE, which needs two "
            f"{NIQE_BLOCK}x{NIQE_BLOCK} blocks"
        )


def _check_size(hr: np.ndarray, hr_path: Path, scale: int, model: SRModel | None) -> None:
    """Refuse HR images too small for SSIM inside the cropped border, or whose LR input is
    too small for the network."""
    height, width = hr.shape[:2]
    smallest = SSIM_WINDOW + 2 * scale
    if min(height, width) < smallest:
        raise ImageError(
            f"{hr_path}: {width}x{height} (after cropping to a multiple of {scale}) is too "
            f"small: SSIM needs {SSIM_WINDOW}x{SSIM_WINDOW} pixels inside the {scale}-pixel "
            f"border, so at least {smallest}x{smallest}"
        )
    if model is not None and min(height, width) // scale < model.spec.min_size:
        raise ImageError(
            f"{hr_path}: its x{scale} LR input is {width // scale}x{height // scale}; "
            f"{model.variant} needs at least {model.spec.min_size}x{model.spec.min_size}"
        )


def lr_folder(data_dir: str | os.PathLike, scale: int) -> Path:
    """Where a test set keeps its ×``scale`` inputs: ``LR_bicubic/X<scale>`` (official), else
    ``LR_degraded/X<scale>`` (``lightsr degrade``) if that exists."""
    official = Path(data_dir) / "LR_bicubic" / f"X{scale}"
    degraded = Path(data_dir) / "LR_degraded" / f"X{scale}"
    return degraded if degraded.is_dir() and not official.is_dir() else official


def _lr_source(lr_dir: Path) -> str:
    """``"official"``, ``"degraded"`` or ``"generated"`` (no LR folder): see EvalResult."""
    if not lr_dir.is_dir():
        return "generated"
    return "degraded" if lr_dir.parent.name == "LR_degraded" else "official"


def find_lr_file(lr_dir: Path, hr_path: Path, scale: int) -> Path:
    """The LR file of ``hr_path`` in ``lr_dir``: ``<stem>x<s>.<ext>`` or ``<stem>.<ext>``."""
    for stem in (f"{hr_path.stem}x{scale}", hr_path.stem):
        for suffix in (hr_path.suffix, *sorted(IMAGE_SUFFIXES)):
            candidate = lr_dir / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    raise ImageError(f"{lr_dir}: LR image missing (expected for {hr_path.name})")


def _load_lr(hr: np.ndarray, hr_path: Path, lr_dir: Path, scale: int) -> np.ndarray:
    """The official LR input of ``hr``; every HR image needs one once the folder exists."""
    lr_path = find_lr_file(lr_dir, hr_path, scale)
    lr = read_rgb_uint8(lr_path)
    expected = (hr.shape[0] // scale, hr.shape[1] // scale)
    if lr.shape[:2] != expected:
        raise ImageError(f"{lr_path}: size {lr.shape[:2]} should be {expected} for x{scale}")
    return lr


def super_resolve(lr: np.ndarray, scale: int, model: SRModel | None) -> np.ndarray:
    """uint8 RGB upscaled by ``scale``: MATLAB bicubic, or the model clamped and rounded."""
    if model is None:
        return imresize(lr, scale)
    output = model.upscale(image_to_tensor(to_float(lr)))
    return from_float(tensor_to_image(output.float()), np.uint8)


def score(sr: np.ndarray, hr: np.ndarray, scale: int, with_ssim: bool = True) -> ImageScore:
    """PSNR-Y and SSIM-Y (``nan`` unless ``with_ssim``) of ``sr`` against ``hr``, with
    ``scale`` border pixels ignored: the one scoring rule of ``lightsr eval`` and training
    validation."""
    return ImageScore(
        name="",
        psnr=psnr(sr, hr, crop_border=scale),
        ssim=ssim(sr, hr, crop_border=scale) if with_ssim else float("nan"),
    )
