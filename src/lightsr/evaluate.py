"""Benchmark evaluation: PSNR-Y / SSIM-Y and NIQE of a model (or bicubic) on an SR test set.

A test set is a folder with ``HR/`` images and, optionally, EDSR-style low-resolution
inputs ``LR_bicubic/X<s>/<name>x<s>.png``. Conventions follow BasicSR and the papers: HR is
mod-cropped to a multiple of the scale, missing LR inputs are made with MATLAB bicubic
downscaling, model outputs are clamped and rounded to uint8, and metrics are computed on
the Y channel with ``scale`` pixels cropped from each border.

Scales need not be integers (arbitrary-scale networks, bicubic, or a fixed-scale network
followed by bicubic resizing: ``outscale_from``). The LR size rule is then that of the
official LIIF/LTE benchmark code (``"liif"``, :func:`lightsr.imresize.benchmark_pair`):
LR ``floor(H/s)`` × ``floor(W/s)``, HR cropped to ``round(h·s)`` × ``round(w·s)``, LR made
by MATLAB bicubic from the uint8 HR. For integer scales that rule *is* the mod-crop rule
(``"modcrop"``), and official LR files are used where the set has them. The PSNR/SSIM
border of a non-integer scale is the scale rounded up (``ceil(s)`` pixels).

A folder without ``HR/`` (real-world sets such as RealSRSet) holds the low-resolution
inputs themselves; only the no-reference NIQE of the upscaled outputs can be reported
there. NIQE scores the whole output (no border cropped), as real-world SR papers report it
with BasicSR's ``scripts/metrics/calculate_niqe.py`` (``crop_border=0``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lightsr.errors import ImageError, UsageError
from lightsr.imresize import benchmark_pair, benchmark_sizes, imresize
from lightsr.io import from_float, image_to_tensor, read_rgb_uint8, tensor_to_image, to_float
from lightsr.metrics import NIQE_BLOCK, SSIM_WINDOW, niqe, psnr, ssim
from lightsr.models import SRModel
from lightsr.options import IMAGE_SUFFIXES, MAX_SCALE, MIN_SCALE
from lightsr.paths import shared_dir
from lightsr.progress import progress_bar

# Folder holding test sets by name (Set5/, Set14/, ...), searched before the shared one.
DATA_VARIABLE = "LIGHTSR_DATA"
# Smallest integer scale evaluated (×1 is not super-resolution); the largest is options'.
MIN_INTEGER_SCALE = 2
BICUBIC = "bicubic"
# LR size rules (EvalResult.lr_rule): HR cropped to a multiple of an integer scale, or the
# official LIIF/LTE rule for any scale (the same thing for integers).
MODCROP, LIIF = "modcrop", "liif"
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
    inputs). ``lr_rule`` is the size rule of the pair (``"modcrop"`` for integer scales,
    ``"liif"`` otherwise; ``None`` without ``HR/``). ``outscale_from`` is the network's own
    scale when its output was resized to ``scale`` by bicubic.
    """

    dataset: str
    scale: int | float
    model: str
    images: list[ImageScore] = field(default_factory=list)
    lr_source: str = "official"
    lr_rule: str | None = MODCROP
    outscale_from: int | float | None = None

    @property
    def lr_generated(self) -> bool:
        """Whether the LR inputs were made here by bicubic downscaling (no LR files)."""
        return self.lr_source == "generated"

    @property
    def border(self) -> int:
        """Pixels ignored at each border by PSNR and SSIM (:func:`crop_border`)."""
        return crop_border(self.scale)

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
        """The JSON form printed by ``lightsr eval --json``: what was evaluated, how the
        inputs were made (``lr_source``, ``lr_rule`` where there is HR), the PSNR/SSIM
        ``border`` where measured, and the measured metrics."""
        about: dict[str, Any] = {"dataset": self.dataset, "scale": self.scale, "model": self.model}
        if self.outscale_from is not None:
            about["outscale_from"] = self.outscale_from
        about["lr_source"] = self.lr_source
        if self.lr_rule is not None:
            about["lr_rule"] = self.lr_rule
        if self.psnr is not None:
            about["border"] = self.border
        return {**about, **_measured(self), "images": [image.to_dict() for image in self.images]}


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


def normalize_scale(scale: float) -> int | float:
    """``scale`` as an ``int`` when it is a whole number (``6.0`` → 6), else a ``float``."""
    if isinstance(scale, bool) or not isinstance(scale, int | float | np.integer | np.floating):
        raise UsageError(f"scale must be a number, got {scale!r}")
    if not math.isfinite(scale):
        raise UsageError(f"scale must be a finite number, got {scale}")
    return int(scale) if float(scale).is_integer() else float(scale)


def crop_border(scale: float) -> int:
    """PSNR/SSIM border (pixels) at ×``scale``: the scale, rounded up when not whole."""
    return math.ceil(scale)


def scale_label(scale: float) -> str:
    """``"4"``, ``"2.5"``: how reports print a scale."""
    return f"{normalize_scale(scale):g}"


def lr_rule(scale: float) -> str:
    """The LR size rule at ×``scale``: ``"modcrop"`` (integers) or ``"liif"``."""
    return MODCROP if isinstance(normalize_scale(scale), int) else LIIF


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Size of an ``height`` × ``width`` input upscaled by ``scale`` (rounded, as the
    official LTE test and ``lightsr upscale --outscale`` do)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def find_hr_images(data_dir: str | os.PathLike, scale: float) -> list[Path]:
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
    data_dir: str | os.PathLike, scale: float, metric: str = PSNR
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


def _check_scale(scale: float) -> None:
    scale = normalize_scale(scale)
    largest = int(MAX_SCALE)
    if not (isinstance(scale, int) and MIN_INTEGER_SCALE <= scale <= largest) and not (
        isinstance(scale, float) and MIN_SCALE < scale < MAX_SCALE
    ):
        raise UsageError(
            f"scale must be an integer from {MIN_INTEGER_SCALE} to {largest}, or a number "
            f"between {MIN_SCALE:g} and {largest} (arbitrary-scale models, bicubic), got {scale}"
        )


def _check_model(
    model: SRModel | None, scale: int | float, outscale_from: int | float | None
) -> None:
    """Refuse a fixed-scale ``model`` at a scale it does not run (see :func:`evaluate`)."""
    label = scale_label(scale)
    if outscale_from is not None:
        if model is None:
            raise UsageError("outscale_from (--outscale-from) needs a network, not bicubic")
        if not (isinstance(outscale_from, int) and outscale_from >= 1):
            raise UsageError(f"outscale_from must be a positive integer, got {outscale_from}")
        if not model.arbitrary_scale and model.scale != outscale_from:
            raise UsageError(f"the model upscales x{model.scale}, not x{outscale_from}")
    elif model is not None and not model.arbitrary_scale and model.scale != scale:
        raise UsageError(
            f"the model upscales x{model.scale}, not x{label}; to score it followed by "
            f"bicubic resizing to x{label}, add --outscale-from {model.scale}"
        )


def evaluate(
    data_dir: str | os.PathLike,
    scale: float,
    model: SRModel | None = None,
    progress: bool = True,
    metric: str = PSNR,
    outscale_from: int | None = None,
) -> EvalResult:
    """PSNR-Y and SSIM-Y, or NIQE, of ``model`` on the test set in ``data_dir``.

    Args:
        data_dir: folder with ``HR/`` and optionally ``LR_bicubic/X<scale>/``, or a folder of
            low-resolution images without ground truth, or the name of a set (see
            :func:`resolve_data_dir`).
        scale: upscaling factor: an integer from 2 to 8, or any number between 1 and 8 for
            bicubic, arbitrary-scale networks and ``outscale_from``. PSNR and SSIM ignore
            ``ceil(scale)`` border pixels. The LR size rule is in the module docstring.
        model: network to evaluate; ``None`` evaluates MATLAB bicubic upscaling. An
            arbitrary-scale network renders the exact HR size
            (:func:`lightsr.anyscale.upscale_array_to`, tiled).
        progress: show a progress bar on stderr.
        metric: ``"psnr"`` (PSNR-Y and SSIM-Y; needs ``HR/``) or ``"niqe"`` (NIQE of the
            whole outputs, with PSNR-Y and SSIM-Y too where there is ``HR/``).
        outscale_from: score ``model`` run at ×``outscale_from`` (its own scale), its
            output rounded to uint8 and resized by MATLAB bicubic to the ×``scale`` size, as
            ``lightsr upscale --scale N --outscale S`` does: the baseline at scales a
            fixed-scale network lacks. The inputs are still the ×``scale`` ones.

    Raises:
        UsageError: bad folder, scale or metric, or ``model`` is for another scale.
        ImageError: an image is unreadable, too small, or an LR input has the wrong size.
    """
    scale = normalize_scale(scale)
    if outscale_from is not None:
        outscale_from = normalize_scale(outscale_from)
    paths, has_hr = find_test_images(data_dir, scale, metric)
    _check_model(model, scale, outscale_from)
    data_dir = resolve_data_dir(data_dir)
    result = EvalResult(
        dataset=data_dir.resolve().name,
        scale=scale,
        model=BICUBIC if model is None else model.variant,
        lr_source="folder",
        lr_rule=None,
        outscale_from=outscale_from,
    )
    bar = progress_bar(
        paths,
        desc=f"{result.dataset} x{scale_label(scale)}",
        unit="img",
        enabled=progress,
        leave=False,
    )
    if not has_hr:
        for path in bar:
            result.images.append(_score_without_reference(path, scale, model, outscale_from))
        return result
    lr_dir = lr_folder(data_dir, scale) if isinstance(scale, int) else None
    result.lr_source = _lr_source(lr_dir)
    result.lr_rule = lr_rule(scale)
    for hr_path in bar:
        hr, lr = _test_pair(hr_path, lr_dir, scale, model, metric)
        sr = upscale_to_size(lr, hr.shape[:2], scale, model, outscale_from)
        if sr.shape != hr.shape:
            raise ImageError(f"{hr_path.name}: output is {sr.shape[:2]}, HR is {hr.shape[:2]}")
        scores = replace(score(sr, hr, scale), name=hr_path.stem)
        if metric == NIQE:
            scores.niqe = niqe(sr)
        result.images.append(scores)
    return result


def _test_pair(
    hr_path: Path, lr_dir: Path | None, scale: int | float, model: SRModel | None, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The cropped HR image and its LR input: the official file where ``lr_dir`` exists,
    else made by :func:`lightsr.imresize.benchmark_pair`."""
    original = read_rgb_uint8(hr_path)
    lr_size, hr_size = benchmark_sizes(*original.shape[:2], scale)
    _check_size(hr_size, lr_size, hr_path, scale, model)
    if metric == NIQE:
        _check_niqe_size(*hr_size, hr_path)
    if lr_dir is not None and lr_dir.is_dir():
        hr = original[: hr_size[0], : hr_size[1]]
        return hr, _load_lr(lr_size, hr_path, lr_dir, scale)
    return benchmark_pair(original, scale)


def _score_without_reference(
    path: Path, scale: int | float, model: SRModel | None, outscale_from: int | float | None
) -> ImageScore:
    """NIQE of one upscaled image of a folder that has no ground truth."""
    lr = read_rgb_uint8(path)
    height, width = lr.shape[:2]
    if model is not None and min(height, width) < model.spec.min_size:
        raise ImageError(
            f"{path}: {width}x{height} is too small; {model.variant} needs at least "
            f"{model.spec.min_size}x{model.spec.min_size}"
        )
    size = output_size(height, width, scale)
    _check_niqe_size(*size, path)
    sr = upscale_to_size(lr, size, scale, model, outscale_from)
    return ImageScore(name=path.stem, niqe=niqe(sr))


def _check_niqe_size(height: int, width: int, path: Path) -> None:
    """Refuse outputs (``height`` x ``width``) with fewer than two NIQE blocks."""
    if (height // NIQE_BLOCK) * (width // NIQE_BLOCK) < 2:
        raise ImageError(
            f"{path}: its output, {width}x{height}, is too small for NIQE, which needs two "
            f"{NIQE_BLOCK}x{NIQE_BLOCK} blocks"
        )


def _check_size(
    hr_size: tuple[int, int],
    lr_size: tuple[int, int],
    hr_path: Path,
    scale: int | float,
    model: SRModel | None,
) -> None:
    """Refuse HR images too small for SSIM inside the cropped border, or whose LR input is
    too small for the network."""
    (height, width), (lr_h, lr_w), border = hr_size, lr_size, crop_border(scale)
    smallest = SSIM_WINDOW + 2 * border
    if min(height, width) < smallest:
        cropped = f"a multiple of {scale}" if isinstance(scale, int) else f"the x{scale:g} rule"
        raise ImageError(
            f"{hr_path}: {width}x{height} (after cropping to {cropped}) is too "
            f"small: SSIM needs {SSIM_WINDOW}x{SSIM_WINDOW} pixels inside the {border}-pixel "
            f"border, so at least {smallest}x{smallest}"
        )
    if model is not None and min(lr_h, lr_w) < model.spec.min_size:
        raise ImageError(
            f"{hr_path}: its x{scale_label(scale)} LR input is {lr_w}x{lr_h}; "
            f"{model.variant} needs at least {model.spec.min_size}x{model.spec.min_size}"
        )


def lr_folder(data_dir: str | os.PathLike, scale: int) -> Path:
    """Where a test set keeps its ×``scale`` inputs: ``LR_bicubic/X<scale>`` (official), else
    ``LR_degraded/X<scale>`` (``lightsr degrade``) if that exists."""
    official = Path(data_dir) / "LR_bicubic" / f"X{scale}"
    degraded = Path(data_dir) / "LR_degraded" / f"X{scale}"
    return degraded if degraded.is_dir() and not official.is_dir() else official


def _lr_source(lr_dir: Path | None) -> str:
    """``"official"``, ``"degraded"`` or ``"generated"`` (no LR folder): see EvalResult."""
    if lr_dir is None or not lr_dir.is_dir():
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


def _load_lr(expected: tuple[int, int], hr_path: Path, lr_dir: Path, scale: int) -> np.ndarray:
    """The official LR input of ``hr_path``, of size ``expected``; every HR image needs one
    once the folder exists."""
    lr_path = find_lr_file(lr_dir, hr_path, scale)
    lr = read_rgb_uint8(lr_path)
    if lr.shape[:2] != expected:
        raise ImageError(f"{lr_path}: size {lr.shape[:2]} should be {expected} for x{scale}")
    return lr


def super_resolve(
    lr: np.ndarray,
    scale: float,
    model: SRModel | None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """uint8 RGB upscaled by ``scale``: MATLAB bicubic, or the model clamped and rounded.

    ``size`` (default: :func:`output_size`) is the output size for bicubic and
    arbitrary-scale networks, which render it exactly (tiled,
    :func:`lightsr.anyscale.upscale_array_to`, nominal scale ``scale`` for the head's cell);
    a fixed-scale network upscales by its own scale.
    """
    if size is None:
        size = output_size(*lr.shape[:2], scale)
    if model is None:
        if isinstance(scale, int) and size == (lr.shape[0] * scale, lr.shape[1] * scale):
            return imresize(lr, scale)
        return imresize(lr, output_shape=size)
    if model.arbitrary_scale:
        from lightsr.anyscale import upscale_array_to

        nominal = (float(scale), float(scale))
        output = upscale_array_to(model, to_float(lr), size, nominal)
        return from_float(output, np.uint8)
    output = model.upscale(image_to_tensor(to_float(lr)))
    return from_float(tensor_to_image(output.float()), np.uint8)


def upscale_to_size(
    lr: np.ndarray,
    size: tuple[int, int],
    scale: float,
    model: SRModel | None,
    outscale_from: int | float | None = None,
) -> np.ndarray:
    """uint8 ``lr`` upscaled to ``size`` at ×``scale``: :func:`super_resolve`, or with
    ``outscale_from``, the network at ×``outscale_from`` and its uint8 output resized to
    ``size`` by MATLAB bicubic (:class:`lightsr.api.Upscaler` with ``outscale``)."""
    if outscale_from is None:
        return super_resolve(lr, scale, model, size)
    network_size = output_size(*lr.shape[:2], outscale_from)
    output = super_resolve(lr, outscale_from, model, network_size)
    if output.shape[:2] == tuple(size):
        return output
    return imresize(output, output_shape=tuple(size))


def score(sr: np.ndarray, hr: np.ndarray, scale: float, with_ssim: bool = True) -> ImageScore:
    """PSNR-Y and SSIM-Y (``nan`` unless ``with_ssim``) of ``sr`` against ``hr``, with
    :func:`crop_border` pixels (the scale, rounded up) ignored: the one scoring rule of
    ``lightsr eval`` and training validation."""
    border = crop_border(scale)
    return ImageScore(
        name="",
        psnr=psnr(sr, hr, crop_border=border),
        ssim=ssim(sr, hr, crop_border=border) if with_ssim else float("nan"),
    )
