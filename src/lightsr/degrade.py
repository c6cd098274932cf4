"""Second-order real-world degradations (the Real-ESRGAN recipe, also used by ESC-Real).

A clean HR image becomes a realistic low-resolution input by two rounds of
blur → random resize → noise → JPEG, then a resize to ``H/scale`` with an optional sinc
(ringing) filter before or after the last JPEG. The training target is the HR image
sharpened by unsharp masking (USM), and, as in the official ``x4plus`` recipes, the
degradations start from that sharpened image.

Differences from the official GPU code, chosen for a fast and deterministic CPU path:

* filtering and resizing use OpenCV (``cv2.filter2D`` with reflect-101 borders, like
  BasicSR's ``filter2D``; ``area``/``bilinear``/``bicubic`` map to ``INTER_AREA``/
  ``INTER_LINEAR``/``INTER_CUBIC``);
* JPEG goes through the real libjpeg codec (``cv2.imencode``) at an integer quality,
  instead of the differentiable DiffJPEG;
* blur kernels are applied at their own size (7 to 21) rather than zero-padded to 21, which
  gives the same result with less work.

Every random choice is drawn from the :class:`numpy.random.Generator` passed in, so one
seed gives byte-identical results in any process.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import cv2
import numpy as np

from lightsr.errors import ConfigError, ImageError, UsageError
from lightsr.imresize import mod_crop
from lightsr.io import read_rgb_uint8, write_image
from lightsr.options import IMAGE_SUFFIXES
from lightsr.progress import progress_bar

KERNEL_TYPES = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
RESIZE_MODES = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
# Where `lightsr degrade` writes its pairs inside OUT (EDSR-style names, read by `lightsr eval`).
HR_FOLDER = "HR"
LR_FOLDER = "LR_degraded"
# Rec. 601 luma weights (torchvision's rgb_to_grayscale), for gray Poisson noise.
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Sample points of Bessel's integral for J1; enough for machine precision up to x ≈ 60
# (the largest argument of a 21-pixel sinc kernel is π·10·√2 ≈ 44).
_BESSEL_POINTS = 128

Range = tuple[float, float]


@dataclass(frozen=True)
class DegradationConfig:
    """Every probability and range of the second-order degradation model.

    Field names follow the official Real-ESRGAN options; a ``2`` suffix marks the second
    stage. The defaults are those of ``train_realesrgan_x4plus.yml`` (also RealESRNet x4plus).

    Kernel probabilities are in the order of :data:`KERNEL_TYPES`; resize probabilities are
    (up, down, keep). Noise sigmas are in 8-bit levels (0-255). Kernel sizes are odd.
    """

    # First stage: blur (kernel type, size, shape), resize, noise, JPEG.
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    kernel_sizes: tuple[int, ...] = (7, 9, 11, 13, 15, 17, 19, 21)
    sinc_prob: float = 0.1
    blur_sigma: Range = (0.2, 3.0)
    betag_range: Range = (0.5, 4.0)
    betap_range: Range = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: Range = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: Range = (1.0, 30.0)
    poisson_scale_range: Range = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: Range = (30.0, 95.0)
    # Second stage: the blur itself is applied with probability second_blur_prob.
    second_blur_prob: float = 0.8
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: Range = (0.2, 1.5)
    betag_range2: Range = (0.5, 4.0)
    betap_range2: Range = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: Range = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: Range = (1.0, 25.0)
    poisson_scale_range2: Range = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: Range = (30.0, 95.0)
    # Last step: resize to H/scale plus a sinc filter (else none), before or after JPEG.
    final_sinc_prob: float = 0.8
    resize_modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    # Unsharp masking of the target: Gaussian blur of size 2·(radius//2)+1, sigma 0 = OpenCV's
    # default for that size; pixels whose residual exceeds threshold (8-bit levels) sharpen.
    usm_radius: int = 50
    usm_sigma: float = 0.0
    usm_weight: float = 0.5
    usm_threshold: float = 10.0
    # Degrade the sharpened target rather than the plain HR (official `gt_usm: True`).
    degrade_sharpened: bool = True

    def __post_init__(self) -> None:
        for name in ("kernel_prob", "kernel_prob2"):
            _check_probabilities(name, getattr(self, name), len(KERNEL_TYPES))
        for name in ("resize_prob", "resize_prob2"):
            _check_probabilities(name, getattr(self, name), 3)
        for item in fields(self):
            value = getattr(self, item.name)
            if "range" in item.name or item.name.startswith("blur_sigma"):
                if len(value) != 2 or not 0 <= value[0] <= value[1]:
                    raise ConfigError(f"{item.name} must be (low, high) with 0 <= low <= high")
            elif isinstance(value, float) and item.name.endswith(("_prob", "_prob2")):
                _check_probability(item.name, value)
        if not self.kernel_sizes or any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            raise ConfigError(f"kernel_sizes must be odd and positive, got {self.kernel_sizes}")
        unknown = set(self.resize_modes) - set(RESIZE_MODES)
        if not self.resize_modes or unknown:
            raise ConfigError(f"resize_modes must be among {', '.join(RESIZE_MODES)}")


def _check_probability(name: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise ConfigError(f"{name} must be a probability, got {value}")


def _check_probabilities(name: str, values: Sequence[float], count: int) -> None:
    if len(values) != count or min(values) < 0 or not math.isclose(sum(values), 1.0):
        raise ConfigError(f"{name} must be {count} non-negative probabilities summing to 1")


PRESETS: dict[str, DegradationConfig] = {
    "realesrgan": DegradationConfig(),
    # For clean sources (good camera photos, renders): blur about half as wide, a third
    # of the noise, JPEG quality 60-95, fewer second blurs and sinc filters.
    "mild": DegradationConfig(
        sinc_prob=0.05,
        blur_sigma=(0.2, 1.5),
        resize_range=(0.5, 1.2),
        noise_range=(1.0, 10.0),
        poisson_scale_range=(0.05, 1.0),
        jpeg_range=(60.0, 95.0),
        second_blur_prob=0.5,
        sinc_prob2=0.05,
        blur_sigma2=(0.2, 1.0),
        resize_range2=(0.6, 1.2),
        noise_range2=(1.0, 8.0),
        poisson_scale_range2=(0.05, 0.8),
        jpeg_range2=(60.0, 95.0),
        final_sinc_prob=0.5,
    ),
}


def degradation_preset(name: str, **overrides: object) -> DegradationConfig:
    """The preset ``name`` of :data:`PRESETS`, with some fields replaced.

    Raises:
        ConfigError: unknown preset or field, or an invalid value; the message names the
            valid choices.
    """
    if name not in PRESETS:
        choices = ", ".join(PRESETS)
        raise ConfigError(f"unknown degradation preset {name!r}; choose one of: {choices}")
    known = {item.name for item in fields(DegradationConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"unknown degradation option {unknown[0]!r}; choose among: {', '.join(sorted(known))}"
        )
    return replace(PRESETS[name], **overrides)


# ----------------------------------------------------------------------------- kernels


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets (x along columns, y along rows) from the centre of a size×size kernel."""
    axis = np.arange(size, dtype=np.float64) - (size - 1) / 2
    return np.meshgrid(axis, axis)


def _quadratic_form(size: int, sigma_x: float, sigma_y: float | None, theta: float) -> np.ndarray:
    """``p·Σ⁻¹·p`` at every offset p, Σ the covariance with standard deviations
    ``sigma_x``/``sigma_y`` along axes rotated by ``theta`` (isotropic if ``sigma_y`` is None)."""
    x, y = _grid(size)
    sigma_y = sigma_x if sigma_y is None else sigma_y
    cos, sin = math.cos(theta), math.sin(theta)
    along, across = cos * x + sin * y, -sin * x + cos * y
    return (along / sigma_x) ** 2 + (across / sigma_y) ** 2


def _normalised(kernel: np.ndarray) -> np.ndarray:
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0
) -> np.ndarray:
    """A 2-D Gaussian ``exp(-q/2)``, ``q = p·Σ⁻¹·p``, normalised to sum to 1.

    Args:
        size: odd side length.
        sigma_x: standard deviation along the first axis (pixels).
        sigma_y: along the second axis; ``None`` for an isotropic kernel.
        theta: rotation of the first axis from the x axis (radians, counter-clockwise with
            y pointing down the rows).

    Returns:
        float32 array of shape (size, size).
    """
    return _normalised(np.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> np.ndarray:
    """A generalised Gaussian ``exp(-q^β/2)``: β < 1 heavier tails, β > 1 flatter top.

    Arguments as :func:`gaussian_kernel`; ``beta=1`` is the Gaussian.
    """
    return _normalised(np.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta) ** beta))


def plateau_kernel(
    size: int, sigma_x: float, sigma_y: float | None = None, theta: float = 0.0, beta: float = 1.0
) -> np.ndarray:
    """A plateau-shaped kernel ``1 / (1 + q^β)``. Arguments as :func:`gaussian_kernel`."""
    return _normalised(1.0 / (1.0 + _quadratic_form(size, sigma_x, sigma_y, theta) ** beta))


def _bessel_j1(x: np.ndarray) -> np.ndarray:
    """J1 by Bessel's integral ``(1/2π)∫cos(τ - x·sin τ)dτ`` over a period: the rectangle rule
    on a periodic integrand converges exponentially, so a fixed number of points is exact."""
    tau = np.linspace(0.0, 2 * np.pi, _BESSEL_POINTS, endpoint=False)
    return np.cos(tau - x[..., None] * np.sin(tau)).mean(axis=-1)


def sinc_kernel(size: int, cutoff: float) -> np.ndarray:
    """The circular low-pass (2-D sinc) filter ``ω·J1(ω·r) / (2π·r)``, normalised.

    Args:
        size: odd side length.
        cutoff: cutoff frequency ω in radians per pixel (π keeps everything).
    """
    x, y = _grid(size)
    radius = np.hypot(x, y)
    centre = radius == 0
    safe = np.where(centre, 1.0, radius)
    kernel = cutoff * _bessel_j1(cutoff * safe) / (2 * np.pi * safe)
    # The limit at r = 0: J1(z) ≈ z/2.
    kernel[centre] = cutoff**2 / (4 * np.pi)
    return _normalised(kernel)


def random_blur_kernel(
    rng: np.random.Generator, config: DegradationConfig, stage: int = 1
) -> np.ndarray:
    """A blur kernel of the first or second stage, drawn as in the official recipe.

    The size is uniform over ``config.kernel_sizes``. With probability ``sinc_prob`` it is a
    sinc filter (cutoff uniform in [π/3, π], or [π/5, π] for sizes of 13 and more); else a
    kernel type is drawn by ``kernel_prob``, sigmas uniformly from ``blur_sigma``, the
    rotation from [-π, π], and β half of the time below 1 and half above.

    Returns:
        float32 (size, size) kernel summing to 1.
    """
    second = stage == 2
    size = int(rng.choice(config.kernel_sizes))
    if rng.random() < (config.sinc_prob2 if second else config.sinc_prob):
        low = math.pi / 3 if size < 13 else math.pi / 5
        return sinc_kernel(size, rng.uniform(low, math.pi))
    probs = config.kernel_prob2 if second else config.kernel_prob
    kind = KERNEL_TYPES[rng.choice(len(KERNEL_TYPES), p=probs)]
    sigma_range = config.blur_sigma2 if second else config.blur_sigma
    sigma_x = rng.uniform(*sigma_range)
    sigma_y, theta = None, 0.0
    if kind.endswith("aniso"):
        sigma_y, theta = rng.uniform(*sigma_range), rng.uniform(-math.pi, math.pi)
    if kind in ("iso", "aniso"):
        return gaussian_kernel(size, sigma_x, sigma_y, theta)
    if kind.startswith("generalized"):
        beta = _draw_beta(rng, config.betag_range2 if second else config.betag_range)
        return generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, beta)
    beta = _draw_beta(rng, config.betap_range2 if second else config.betap_range)
    return plateau_kernel(size, sigma_x, sigma_y, theta, beta)


def _draw_beta(rng: np.random.Generator, beta_range: Range) -> float:
    """β uniform in [low, 1] or [1, high], each half of the time (as officially), so that
    sharper and flatter shapes are equally likely whatever the range's asymmetry."""
    low, high = beta_range
    return rng.uniform(low, 1.0) if rng.random() < 0.5 else rng.uniform(1.0, high)


def random_final_kernel(rng: np.random.Generator, config: DegradationConfig) -> np.ndarray | None:
    """The last sinc filter (cutoff uniform in [π/3, π]) with probability
    ``final_sinc_prob``, else ``None`` (no filtering)."""
    if rng.random() >= config.final_sinc_prob:
        return None
    return sinc_kernel(int(rng.choice(config.kernel_sizes)), rng.uniform(math.pi / 3, math.pi))


# ----------------------------------------------------------------------------- operations


def filter_image(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlate each channel with ``kernel``, borders reflected (reflect-101).

    A separable kernel (isotropic Gaussian: about half of all blurs) takes two 1-D passes,
    about 10x faster than OpenCV's 2-D (DFT) path for sizes of 11 and more.
    """
    centre = kernel.shape[0] // 2
    column, row = kernel[:, centre], kernel[centre]
    # A rank-1 kernel is the outer product of its centre column and row over their common
    # element; read off directly rather than by SVD, whose LAPACK may depend on threads.
    separable = column / kernel[centre, centre]
    if np.allclose(np.outer(separable, row), kernel, rtol=0, atol=1e-7 * kernel.max()):
        return cv2.sepFilter2D(image, -1, row, separable, borderType=cv2.BORDER_REFLECT_101)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def usm_sharpen(image: np.ndarray, config: DegradationConfig) -> np.ndarray:
    """Unsharp masking: ``image + weight·(image - blur)`` where the residual exceeds the
    threshold, blended by a blurred mask so that flat areas stay untouched."""
    size = config.usm_radius + 1 - config.usm_radius % 2  # odd, as OpenCV needs
    residual = image - _gaussian_blur(image, size, config.usm_sigma)
    mask = (np.abs(residual) * 255 > config.usm_threshold).astype(np.float32)
    mask = _gaussian_blur(mask, size, config.usm_sigma)
    sharp = np.clip(image + config.usm_weight * residual, 0, 1)
    return image + mask * (sharp - image)


def _gaussian_blur(image: np.ndarray, size: int, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (size, size), sigma, borderType=cv2.BORDER_REFLECT_101)


def _resize(image: np.ndarray, height: int, width: int, mode: str) -> np.ndarray:
    height, width = max(height, 1), max(width, 1)
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=RESIZE_MODES[mode])


def _random_factor(rng: np.random.Generator, probs: Sequence[float], factors: Range) -> float:
    """A resize factor: up (uniform in [1, high]), down ([low, 1]) or keep (1)."""
    direction = rng.choice(3, p=probs)
    if direction == 0:
        return rng.uniform(1.0, factors[1])
    if direction == 1:
        return rng.uniform(factors[0], 1.0)
    return 1.0


def _add_noise(
    image: np.ndarray,
    rng: np.random.Generator,
    gaussian_prob: float,
    sigma_range: Range,
    poisson_range: Range,
    gray_prob: float,
) -> np.ndarray:
    """Gaussian or Poisson noise, the same on every channel with probability ``gray_prob``;
    the result is clipped to [0, 1]."""
    gray = rng.random() < gray_prob
    if rng.random() < gaussian_prob:
        shape = (*image.shape[:2], 1) if gray else image.shape
        sigma = rng.uniform(*sigma_range) / 255
        noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma)
    else:
        source = (image @ _GRAY_WEIGHTS)[..., None] if gray else image
        noise = _poisson_noise(source, rng) * np.float32(rng.uniform(*poisson_range))
    return np.clip(image + noise, 0, 1)


def _poisson_noise(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shot noise of ``image`` seen as photon counts: with n distinct 8-bit levels in it,
    counts go up to the next power of two of n (skimage's rule, as officially)."""
    levels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    distinct = np.count_nonzero(np.bincount(levels.ravel(), minlength=256))
    peak = float(2 ** math.ceil(math.log2(distinct)))
    rounded = levels.astype(np.float32) / 255
    counts = rng.poisson(rounded * peak).astype(np.float32)
    return counts / np.float32(peak) - rounded


def jpeg_compress(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode float RGB ``image`` as a JPEG (libjpeg, 4:2:0) of ``quality``."""
    pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    ok, data = cv2.imencode(
        ".jpg", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ImageError("OpenCV could not encode a JPEG")
    decoded = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return decoded.astype(np.float32) / 255


def _random_jpeg(image: np.ndarray, rng: np.random.Generator, quality_range: Range) -> np.ndarray:
    return jpeg_compress(image, round(rng.uniform(*quality_range)))


# ----------------------------------------------------------------------------- pairs


@dataclass
class DegradedPair:
    """A degraded input and its targets: float32 HWC RGB in [0, 1].

    ``lr`` is (H/scale, W/scale) on 8-bit levels; ``gt`` the HR image; ``gt_usm`` the HR
    sharpened by unsharp masking (the official L1 and perceptual target).
    """

    lr: np.ndarray
    gt: np.ndarray
    gt_usm: np.ndarray


def degrade(
    hr: np.ndarray, scale: int, config: DegradationConfig, rng: np.random.Generator
) -> DegradedPair:
    """Synthesise a realistic low-resolution input of ``hr`` by the second-order model.

    Args:
        hr: uint8 or float32 (H, W, 3) RGB (float in [0, 1]); H and W multiples of ``scale``.
        scale: downscaling factor of the result.
        config: probabilities and ranges of every step (see :data:`PRESETS`).
        rng: the only source of randomness.

    Raises:
        ImageError: ``hr`` has the wrong shape, dtype or size.
    """
    gt = _check_hr(hr, scale)
    height, width = gt.shape[:2]
    gt_usm = usm_sharpen(gt, config)
    out = gt_usm if config.degrade_sharpened else gt
    # First stage, at HR size.
    out = filter_image(out, random_blur_kernel(rng, config, stage=1))
    factor = _random_factor(rng, config.resize_prob, config.resize_range)
    out = _resize(out, int(height * factor), int(width * factor), _random_mode(rng, config))
    out = _add_noise(
        out,
        rng,
        config.gaussian_noise_prob,
        config.noise_range,
        config.poisson_scale_range,
        config.gray_noise_prob,
    )
    out = _random_jpeg(out, rng, config.jpeg_range)
    # Second stage, around LR size.
    if rng.random() < config.second_blur_prob:
        out = filter_image(out, random_blur_kernel(rng, config, stage=2))
    factor = _random_factor(rng, config.resize_prob2, config.resize_range2)
    size = int(height / scale * factor), int(width / scale * factor)
    out = _resize(out, *size, _random_mode(rng, config))
    out = _add_noise(
        out,
        rng,
        config.gaussian_noise_prob2,
        config.noise_range2,
        config.poisson_scale_range2,
        config.gray_noise_prob2,
    )
    # [resize back + sinc] and JPEG in either order: other orders give twisted lines.
    if rng.random() < 0.5:
        out = _final_resize(out, rng, config, height // scale, width // scale)
        out = _random_jpeg(out, rng, config.jpeg_range2)
    else:
        out = _random_jpeg(out, rng, config.jpeg_range2)
        out = _final_resize(out, rng, config, height // scale, width // scale)
    lr = np.clip(np.rint(out * 255), 0, 255) / np.float32(255)
    return DegradedPair(lr=lr.astype(np.float32), gt=gt, gt_usm=gt_usm)


def _random_mode(rng: np.random.Generator, config: DegradationConfig) -> str:
    return config.resize_modes[rng.integers(len(config.resize_modes))]


def _final_resize(
    image: np.ndarray, rng: np.random.Generator, config: DegradationConfig, height: int, width: int
) -> np.ndarray:
    image = _resize(image, height, width, _random_mode(rng, config))
    kernel = random_final_kernel(rng, config)
    return image if kernel is None else filter_image(image, kernel)


def _check_hr(hr: np.ndarray, scale: int) -> np.ndarray:
    """``hr`` as float32 in [0, 1], after checking its layout."""
    if hr.ndim != 3 or hr.shape[2] != 3 or hr.dtype not in (np.uint8, np.float32):
        layout = f"{hr.dtype} {hr.shape}"
        raise ImageError(f"expected a uint8 or float32 (H, W, 3) RGB image, got {layout}")
    if scale < 1 or min(hr.shape[:2]) < scale or any(n % scale for n in hr.shape[:2]):
        raise ImageError(f"image size {hr.shape[:2]} is not a positive multiple of x{scale}")
    if hr.dtype == np.uint8:
        return hr.astype(np.float32) / np.float32(255)
    return np.ascontiguousarray(hr)


# ----------------------------------------------------------------------------- folders


@dataclass
class DegradeSummary:
    """What :func:`degrade_folder` wrote."""

    output: Path
    scale: int
    seed: int
    images: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """The JSON form printed by ``lightsr degrade --json``."""
        return {
            "output": str(self.output),
            "scale": self.scale,
            "seed": self.seed,
            "images": len(self.images),
            "seconds": round(self.seconds, 3),
        }


def image_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of one image: from ``seed`` and its file name only, so results do not
    depend on which other images are processed, or in what order."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest, dtype="<u4").tolist()])


def find_images(folder: str | os.PathLike) -> list[Path]:
    """The images directly in ``folder``, sorted by name.

    Raises:
        UsageError: no such folder, no images in it, or two images with the same stem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UsageError(f"no images in {folder}")
    stems = [p.stem for p in images]
    twins = sorted({stem for stem in stems if stems.count(stem) > 1})
    if twins:
        raise UsageError(f"{folder}: several images are named {twins[0]!r} (outputs would clash)")
    return images


def check_output_folder(output: str | os.PathLike, overwrite: bool) -> Path:
    """Check, before any work, that OUT may be written: a folder that is new, empty, or
    whose files may be replaced (``overwrite``).

    Raises:
        UsageError: OUT is a file, or a non-empty folder and ``overwrite`` is false.
    """
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UsageError(f"{output}: is a file; give an output folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UsageError(f"{output}: folder is not empty; use --overwrite to replace its files")
    return output


def degrade_folder(
    hr_dir: str | os.PathLike,
    output: str | os.PathLike,
    scale: int,
    config: DegradationConfig,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> DegradeSummary:
    """Make a test set of degraded inputs from the HR images in ``hr_dir``.

    Writes ``output/HR/<name>.png`` (each image mod-cropped to a multiple of ``scale``) and
    ``output/LR_degraded/X<scale>/<name>x<scale>.png``, the layout ``lightsr eval`` reads.
    Whole images are degraded (no crop); files are written atomically.

    Args:
        seed: with each file name, the seed of that image's degradation.
        overwrite: allow an ``output`` folder that already holds files.
        progress: show progress on stderr.

    Raises:
        UsageError: bad ``hr_dir``, ``output``, ``scale`` or ``seed``.
        ImageError: an image is unreadable, too small, or cannot be written.
    """
    if not isinstance(scale, int) or scale < 1:
        raise UsageError(f"scale must be a positive integer, got {scale}")
    if not isinstance(seed, int) or seed < 0:
        raise UsageError(f"seed must be a non-negative integer, got {seed}")
    paths = find_images(hr_dir)
    output = check_output_folder(output, overwrite)
    lr_dir = output / LR_FOLDER / f"X{scale}"
    summary = DegradeSummary(output=output, scale=scale, seed=seed)
    start = time.perf_counter()
    for path in progress_bar(paths, desc="degrade", unit="img", enabled=progress):
        hr = mod_crop(read_rgb_uint8(path), scale)
        if min(hr.shape[:2]) < scale:
            raise ImageError(f"{path}: smaller than {scale}x{scale} pixels")
        pair = degrade(hr, scale, config, image_rng(seed, path.name))
        write_image(output / HR_FOLDER / f"{path.stem}.png", hr)
        lr = np.rint(pair.lr * 255).astype(np.uint8)
        write_image(lr_dir / f"{path.stem}x{scale}.png", lr)
        summary.images.append(path.stem)
    summary.seconds = time.perf_counter() - start
    return summary
