"""Benchmark evaluation: PSNR-Y / SSIM-Y of a model (or bicubic) on an SR test set.

A test set is a folder with ``HR/`` images and, optionally, EDSR-style low-resolution
inputs ``LR_bicubic/X<s>/<name>x<s>.png``. Conventions follow BasicSR and the papers: HR is
mod-cropped to a multiple of the scale, missing LR inputs are made with MATLAB bicubic
downscaling, model outputs are clamped and rounded to uint8, and metrics are computed on
the Y channel with ``scale`` pixels cropped from each border.
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
from lightsr.metrics import SSIM_WINDOW, psnr, ssim
from lightsr.models import SRModel
from lightsr.options import IMAGE_SUFFIXES
from lightsr.paths import shared_dir
from lightsr.progress import progress_bar

# Folder holding test sets by name (Set5/, Set14/, ...), searched before the shared one.
DATA_VARIABLE = "LIGHTSR_DATA"
MIN_SCALE, MAX_SCALE = 2, 8
BICUBIC = "bicubic"


@dataclass
class ImageScore:
    """Metrics of one test image."""

    name: str
    psnr: float
    ssim: float


@dataclass
class EvalResult:
    """Per-image and mean metrics of one model on one test set at one scale.

    ``lr_generated`` tells whether the LR inputs were made here by bicubic downscaling
    (the folder had no LR files); ``lr_source`` says where the inputs came from:
    ``"official"`` (``LR_bicubic``), ``"degraded"`` (``LR_degraded``, written by ``lightsr
    degrade``) or ``"generated"``. Neither is part of :meth:`to_dict`.
    """

    dataset: str
    scale: int
    model: str
    images: list[ImageScore] = field(default_factory=list)
    lr_generated: bool = False
    lr_source: str = "official"

    @property
    def psnr(self) -> float:
        """Mean PSNR-Y over images (dB)."""
        return float(np.mean([image.psnr for image in self.images]))

    @property
    def ssim(self) -> float:
        """Mean SSIM-Y over images."""
        return float(np.mean([image.ssim for image in self.images]))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by ``lightsr eval --json``."""
        return {
            "dataset": self.dataset,
            "scale": self.scale,
            "model": self.model,
            "psnr": self.psnr,
            "ssim": self.ssim,
            "images": [{"name": i.name, "psnr": i.psnr, "ssim": i.ssim} for i in self.images],
        }


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
    if not isinstance(scale, int) or not MIN_SCALE <= scale <= MAX_SCALE:
        raise UsageError(f"scale must be an integer from {MIN_SCALE} to {MAX_SCALE}, got {scale}")
    data_dir = resolve_data_dir(data_dir)
    hr_dir = data_dir / "HR"
    if not hr_dir.is_dir():
        raise UsageError(f"{data_dir} has no HR/ folder of ground-truth images")
    images = sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UsageError(f"no HR images in {hr_dir}")
    return images


def evaluate(
    data_dir: str | os.PathLike,
    scale: int,
    model: SRModel | None = None,
    progress: bool = True,
) -> EvalResult:
    """PSNR-Y and SSIM-Y of ``model`` on the test set in ``data_dir``.

    Args:
        data_dir: folder with ``HR/`` and optionally ``LR_bicubic/X<scale>/``, or the name
            of a standard set (see :func:`resolve_data_dir`).
        scale: upscaling factor; also the number of border pixels ignored by the metrics.
        model: network to evaluate; ``None`` evaluates MATLAB bicubic upscaling.
        progress: show a progress bar on stderr.

    Raises:
        UsageError: bad folder or scale, or ``model`` is for another scale.
        ImageError: an image is unreadable or an LR input has the wrong size.
    """
    hr_paths = find_hr_images(data_dir, scale)
    if model is not None and model.scale != scale:
        raise UsageError(f"the model upscales x{model.scale}, not x{scale}")
    data_dir = resolve_data_dir(data_dir)
    lr_dir = lr_folder(data_dir, scale)
    result = EvalResult(
        dataset=data_dir.resolve().name,
        scale=scale,
        model=BICUBIC if model is None else model.variant,
        lr_generated=not lr_dir.is_dir(),
        lr_source=_lr_source(lr_dir),
    )
    bar = progress_bar(
        hr_paths, desc=f"{result.dataset} x{scale}", unit="img", enabled=progress, leave=False
    )
    for hr_path in bar:
        hr = mod_crop(read_rgb_uint8(hr_path), scale)
        _check_size(hr, hr_path, scale, model)
        lr = _load_lr(hr, hr_path, lr_dir, scale) if lr_dir.is_dir() else imresize(hr, 1 / scale)
        sr = super_resolve(lr, scale, model)
        if sr.shape != hr.shape:
            raise ImageError(f"{hr_path.name}: output is {sr.shape[:2]}, HR is {hr.shape[:2]}")
        result.images.append(replace(score(sr, hr, scale), name=hr_path.stem))
    return result


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
