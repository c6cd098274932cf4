"""Image-quality metrics in the convention of super-resolution papers (BasicSR / MATLAB).

Images are (H, W, 3) RGB or (H, W) arrays, uint8 or float, with values on the [0, 255]
scale. PSNR and SSIM are usually reported on the luma (Y) channel of BT.601 YCbCr after
cropping ``crop_border`` pixels (the upscaling factor) from each side. NIQE is a
no-reference score (lower is better) computed as the MATLAB release of Mittal et al.
"""

from __future__ import annotations

import functools
import math
from importlib import resources

import cv2
import numpy as np

from lightsr.imresize import imresize

# BT.601 luma for [0, 255] RGB with studio swing (16-235), as MATLAB's rgb2ycbcr.
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966]) / 255.0
_Y_OFFSET = 16.0
SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
_PEAK = 255.0


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """Y channel of an RGB image on the [0, 255] scale, as float64 without rounding.

    ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255``.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    return image.astype(np.float64) @ _Y_WEIGHTS + _Y_OFFSET


def psnr(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """Peak signal-to-noise ratio in dB for a peak of 255; ``inf`` for identical images."""
    a, b = _prepare(sr, hr, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(_PEAK**2 / mse)


def ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool = True) -> float:
    """Structural similarity (Wang et al. 2004) as computed by MATLAB's ``ssim_index``.

    11x11 Gaussian window with sigma 1.5, statistics only where the window fits inside the
    image ("valid"), population (not sample) variances, C1 = (0.01·255)², C2 = (0.03·255)².
    RGB images (``y_channel=False``) average the per-channel SSIM.
    """
    a, b = _prepare(sr, hr, crop_border, y_channel)
    if a.ndim == 2:
        return _ssim_single(a, b)
    return float(np.mean([_ssim_single(a[..., c], b[..., c]) for c in range(a.shape[2])]))


def _prepare(
    sr: np.ndarray, hr: np.ndarray, crop_border: int, y_channel: bool
) -> tuple[np.ndarray, np.ndarray]:
    if sr.shape != hr.shape:
        raise ValueError(f"image shapes differ: {sr.shape} vs {hr.shape}")
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        sr = sr[crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel and sr.ndim == 3:
        return rgb_to_y(sr), rgb_to_y(hr)
    return sr.astype(np.float64), hr.astype(np.float64)


def _ssim_single(a: np.ndarray, b: np.ndarray) -> float:
    if min(a.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {a.shape}")
    c1 = (0.01 * _PEAK) ** 2
    c2 = (0.03 * _PEAK) ** 2
    mu_a, mu_b = _window_mean(a), _window_mean(b)
    var_a = _window_mean(a * a) - mu_a**2
    var_b = _window_mean(b * b) - mu_b**2
    cov = _window_mean(a * b) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    denominator = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(numerator / denominator))


def _window_mean(image: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local mean, kept only where the whole window lies in the image."""
    kernel = cv2.getGaussianKernel(SSIM_WINDOW, _SSIM_SIGMA, cv2.CV_64F)
    filtered = cv2.sepFilter2D(image, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_REFLECT)
    radius = SSIM_WINDOW // 2
    return filtered[radius:-radius, radius:-radius]


# NIQE, as the MATLAB release (computequality.m) with its recommended 96x96 blocks, no overlap.
NIQE_BLOCK = 96
_NIQE_WINDOW = 7
_NIQE_SIGMA = 7 / 6
# Neighbour offsets (rows, columns) of the four pairwise-product maps, as circshift there.
_NIQE_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
# Shape values searched by the AGGD fit: MATLAB's 0.2:0.001:10.
_AGGD_SHAPES = np.linspace(0.2, 10.0, 9801)


def niqe(image: np.ndarray, crop_border: int = 0) -> float:
    """Natural Image Quality Evaluator (Mittal et al. 2013): lower is more natural.

    Reproduces the MATLAB release (``computequality.m`` with 96x96 blocks and its published
    pristine model) on the luma channel, as BasicSR reports it: RGB images are turned into
    MATLAB's uint8 ``rgb2ycbcr`` Y (rounded half away from zero); gray images are rounded
    likewise, so the score is that of the 8-bit image. The image is cropped to whole
    96x96 blocks from the top left; features are taken at full size and after MATLAB bicubic
    halving (in float, unrounded).

    Args:
        image: (H, W, 3) RGB or (H, W) gray, uint8 or float on the [0, 255] scale.
        crop_border: pixels ignored on each side first; real-world SR results are reported
            on the whole image (0, the default of BasicSR's NIQE script).

    Returns:
        The NIQE score; ``nan`` if fewer than two blocks have finite features.

    Raises:
        ValueError: bad shape or ``crop_border``, or fewer than two 96x96 blocks remain.
    """
    if crop_border < 0:
        raise ValueError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        image = image[crop_border:-crop_border, crop_border:-crop_border]
    luma = rgb_to_y(image) if image.ndim == 3 else image.astype(np.float64)
    if luma.ndim != 2:
        raise ValueError(f"expected an (H, W, 3) or (H, W) image, got shape {image.shape}")
    rows, cols = luma.shape[0] // NIQE_BLOCK, luma.shape[1] // NIQE_BLOCK
    if rows * cols < 2:
        raise ValueError(
            f"NIQE needs at least two {NIQE_BLOCK}x{NIQE_BLOCK} blocks, got an image of "
            f"{luma.shape[1]}x{luma.shape[0]} (after cropping the border)"
        )
    # floor(x + 0.5), not np.round: MATLAB rounds halves away from zero.
    luma = np.floor(luma[: rows * NIQE_BLOCK, : cols * NIQE_BLOCK] + 0.5)
    half = imresize(luma, 0.5)
    features = np.concatenate(
        [_niqe_features(luma, NIQE_BLOCK), _niqe_features(half, NIQE_BLOCK // 2)], axis=1
    )
    return _niqe_distance(features)


def _niqe_features(luma: np.ndarray, block: int) -> np.ndarray:
    """The 18 NIQE features (``computefeature.m``) of each ``block``-sized tile, (N, 18)."""
    mscn = _mscn(luma)
    rows, cols = luma.shape[0] // block, luma.shape[1] // block
    tiles = mscn.reshape(rows, block, cols, block).swapaxes(1, 2).reshape(-1, block, block)
    shape, left, right = _fit_aggd(tiles.reshape(len(tiles), -1))
    columns = [shape, (left + right) / 2]
    for shift in _NIQE_SHIFTS:
        # The shift wraps around inside each tile, as circshift on a blkproc block does.
        pairs = tiles * np.roll(tiles, shift, axis=(1, 2))
        shape, left, right = _fit_aggd(pairs.reshape(len(tiles), -1))
        mean = (right - left) * _gamma(2 / shape) / _gamma(1 / shape)
        columns += [shape, mean, left, right]
    return np.stack(columns, axis=1)


def _mscn(luma: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients: 7x7 Gaussian (sigma 7/6) local
    statistics with replicated borders, as ``imfilter(..., 'replicate')``."""
    kernel = cv2.getGaussianKernel(_NIQE_WINDOW, _NIQE_SIGMA, cv2.CV_64F)

    def local_mean(values: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(values, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_REPLICATE)

    mu = local_mean(luma)
    sigma = np.sqrt(np.abs(local_mean(luma * luma) - mu * mu))
    return (luma - mu) / (sigma + 1)


def _fit_aggd(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matching AGGD fit of each row (``estimateaggdparam.m``).

    Returns:
        ``(shape, left_scale, right_scale)``, each (N,). A row with no negative (or no
        positive) samples has a ``nan`` scale and the first shape of the grid, as MATLAB.
    """
    negative, positive = samples < 0, samples > 0
    squares = samples * samples
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt((squares * negative).sum(axis=1) / negative.sum(axis=1))
        right_std = np.sqrt((squares * positive).sum(axis=1) / positive.sum(axis=1))
        gamma_hat = left_std / right_std
        r_hat = np.abs(samples).mean(axis=1) ** 2 / squares.mean(axis=1)
        r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    shape = _AGGD_SHAPES[_nearest_shape(r_hat_norm)]
    scale = np.sqrt(_gamma(1 / shape) / _gamma(3 / shape))
    return shape, left_std * scale, right_std * scale


def _nearest_shape(r_hat_norm: np.ndarray) -> np.ndarray:
    """Index of the grid shape whose ratio is nearest to each ``r_hat_norm``: MATLAB's
    ``min((r_gam - r).^2)``, first index on ties and for ``nan``. The ratio grows with the
    shape, so a sorted search replaces the (N, 9801) table of differences."""
    ratios = _aggd_ratios()
    upper = np.clip(np.searchsorted(ratios, r_hat_norm), 1, len(ratios) - 1)
    lower = upper - 1
    with np.errstate(invalid="ignore"):
        take_upper = (ratios[upper] - r_hat_norm) ** 2 < (ratios[lower] - r_hat_norm) ** 2
    return np.where(np.isnan(r_hat_norm), 0, np.where(take_upper, upper, lower))


@functools.cache
def _aggd_ratios() -> np.ndarray:
    """``Γ(2/α)² / (Γ(1/α) Γ(3/α))`` over the shape grid (increasing in α)."""
    return _gamma(2 / _AGGD_SHAPES) ** 2 / (_gamma(1 / _AGGD_SHAPES) * _gamma(3 / _AGGD_SHAPES))


def _gamma(values: np.ndarray) -> np.ndarray:
    """Element-wise Γ without a SciPy dependency (a few thousand values at most)."""
    return np.array([math.gamma(v) for v in np.ravel(values)]).reshape(np.shape(values))


def _niqe_distance(features: np.ndarray) -> float:
    """Distance between the MVG fit of the block features and the pristine model (Eq. 10),
    with MATLAB's ``nanmean`` (per column) and ``nancov`` (complete rows only)."""
    complete = features[~np.isnan(features).any(axis=1)]
    if len(complete) < 2:
        return math.nan
    mu_pristine, cov_pristine = _pristine_model()
    diff = mu_pristine - np.nanmean(features, axis=0)
    pooled = (cov_pristine + np.cov(complete, rowvar=False)) / 2
    # Pseudo-inverse with MATLAB pinv's cut-off, max(size) * eps(norm), on singular values.
    u, singular, vt = np.linalg.svd(pooled)
    keep = singular > max(pooled.shape) * np.spacing(singular[0])
    inverse = (vt[keep].T / singular[keep]) @ u[:, keep].T
    return float(np.sqrt(diff @ inverse @ diff))


@functools.cache
def _pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """Mean (36,) and covariance (36, 36) of the published pristine model; see
    ``lightsr/assets/README.md`` for their origin."""
    with resources.files("lightsr").joinpath("assets/niqe_pristine.npz").open("rb") as file:
        data = np.load(file)
        return data["mu"], data["cov"]
