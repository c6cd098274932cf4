"""Image-quality metrics in the convention of super-resolution papers (BasicSR / MATLAB).

Images are (H, W, 3) RGB or (H, W) arrays, uint8 or float, with values on the [0, 255]
scale. PSNR and SSIM are usually reported on the luma (Y) channel of BT.601 YCbCr after
cropping ``crop_border`` pixels (the upscaling factor) from each side.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

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
