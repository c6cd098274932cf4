"""MATLAB-compatible bicubic resizing.

Super-resolution benchmarks define their low-resolution inputs as MATLAB
``imresize(modcrop(HR, s), 1/s, 'bicubic')``. :func:`imresize` re-implements that algorithm
(antialiased cubic kernel with a = -0.5, symmetric borders, one pass per axis) so that LR
images made here are bit-identical to the official benchmark files.

:func:`benchmark_pair` makes the test pair of an HR image at any scale ``s``, integer or
not, with the size rule of the official LIIF/LTE benchmark code:

* LR size ``h = floor(H / s)``, ``w = floor(W / s)`` (with the official ``+ 1e-9`` guard
  against float error);
* HR cropped (top-left) to ``round(h · s)`` × ``round(w · s)`` (Python ``round``);
* LR = ``imresize(HR_cropped, output_shape=(h, w))`` on the uint8 image, rounded after each
  pass as MATLAB does.

For an integer ``s`` this is exactly the classic rule, ``imresize(modcrop(HR, s), 1/s)``:
``floor(H / s) · s`` is the mod-crop, and the per-axis factor ``h / (h · s)`` is the same
double as ``1 / s`` (IEEE division rounds the same exact quotient), so the official
``LR_bicubic/X<s>`` files are reproduced bit-exactly.
"""

from __future__ import annotations

import math

import numpy as np

# Support of the cubic kernel before antialias widening (|x| <= 2).
_KERNEL_WIDTH = 4.0
# Absolute tolerance when turning a scale into an output size: 255 * (1/3) must give 85,
# not 86, although the product is a hair above 85 in floating point.
_SIZE_EPS = 1e-9
# The official LIIF/LTE code's guard in ``floor(H / s + 1e-9)``.
_FLOOR_EPS = 1e-9


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``'bicubic'``)."""
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    near = (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0) * ((absx > 1) & (absx <= 2))
    return near + far


def contributions(
    in_length: int, out_length: int, scale: float, antialias: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Weights and source indices of a 1-D MATLAB bicubic resize.

    Args:
        in_length: number of input samples along the axis.
        out_length: number of output samples along the axis.
        scale: output/input size ratio along the axis.
        antialias: widen the kernel by ``1/scale`` when downscaling, as MATLAB does.

    Returns:
        ``(weights, indices)``, both (out_length, taps): output ``i`` is
        ``sum_k weights[i, k] * input[indices[i, k]]``. Indices are 0-based and already
        mirrored into the input (symmetric border handling); weights of each row sum to 1.
    """
    widen = antialias and scale < 1
    kernel_width = _KERNEL_WIDTH / scale if widen else _KERNEL_WIDTH
    # 1-based output coordinates mapped into 1-based input coordinates (pixel centres align).
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * cubic(scale * distance) if widen else cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric padding: 1..n, n..1, repeated.
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    # Taps that are zero for every output carry no information; MATLAB drops them.
    used = np.any(weights != 0, axis=0)
    return weights[:, used], indices[:, used]


def _resize_axis(
    image: np.ndarray, axis: int, out_length: int, scale: float, antialias: bool
) -> np.ndarray:
    """One separable pass along ``axis``, accumulated tap by tap in float64."""
    weights, indices = contributions(image.shape[axis], out_length, scale, antialias)
    moved = np.moveaxis(image, axis, 0)
    source = moved.astype(np.float64, copy=False)
    trailing = (1,) * (moved.ndim - 1)
    out = np.zeros((out_length, *moved.shape[1:]), dtype=np.float64)
    # Summing tap by tap keeps MATLAB's accumulation order, which matters for bit-exactness
    # of values that land close to a rounding boundary.
    for k in range(weights.shape[1]):
        out += weights[:, k].reshape(-1, *trailing) * source[indices[:, k]]
    out = _cast_like(out, image.dtype)
    return np.moveaxis(out, 0, axis)


def _cast_like(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Integer images are rounded half away from zero and saturated, as MATLAB casts do."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        rounded = np.floor(np.clip(values, info.min, info.max) + 0.5)
        return rounded.astype(dtype)
    return values.astype(dtype, copy=False)


def imresize(
    image: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """Resize like MATLAB ``imresize(image, ..., 'bicubic')``.

    Height and width are resized in separate passes, the axis with the smaller scale first
    (height first for a uniform scale), as MATLAB does. Integer images (uint8, uint16) are
    rounded and saturated after *each* pass, which is what MATLAB does and what reproduces
    the official benchmark LR files bit-exactly; float images are not rounded.

    Args:
        image: (H, W) or (H, W, C) array, integer or float.
        scale: size factor applied to both axes (``0.25`` for ×4 downscaling). The output
            size is ``ceil(scale * size)``.
        output_shape: ``(height, width)`` of the result; give this or ``scale``.
        antialias: widen the kernel when downscaling (MATLAB's default).

    Returns:
        The resized image, same dtype and number of channels as ``image``.
    """
    if (scale is None) == (output_shape is None):
        raise ValueError("give exactly one of scale and output_shape")
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    in_shape = image.shape[:2]
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = tuple(math.ceil(n * scale - _SIZE_EPS) for n in in_shape)
    else:
        out_shape = (int(output_shape[0]), int(output_shape[1]))
        if min(out_shape) <= 0:
            raise ValueError(f"output_shape must be positive, got {output_shape}")
        scales = (out_shape[0] / in_shape[0], out_shape[1] / in_shape[1])
    # Stable sort: equal scales keep height before width.
    order = sorted(range(2), key=lambda axis: scales[axis])
    out = image
    for axis in order:
        out = _resize_axis(out, axis, out_shape[axis], scales[axis], antialias)
    return out


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop the bottom/right of ``image`` so height and width are multiples of ``scale``."""
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def benchmark_sizes(
    height: int, width: int, scale: float
) -> tuple[tuple[int, int], tuple[int, int]]:
    """LR size and cropped-HR size of a ``height`` × ``width`` HR image at ×``scale``.

    Returns ``((h, w), (round(h · scale), round(w · scale)))`` with
    ``h = floor(height / scale)``, ``w = floor(width / scale)``: the size rule of the
    official LIIF/LTE benchmark code (see the module docstring). For an integer ``scale``
    the HR size is the mod-crop.
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    lr = (math.floor(height / scale + _FLOOR_EPS), math.floor(width / scale + _FLOOR_EPS))
    return lr, (round(lr[0] * scale), round(lr[1] * scale))


def benchmark_pair(hr: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """The ×``scale`` test pair of an HR image: ``(hr_cropped, lr)``.

    ``hr_cropped`` is the top-left crop of ``hr`` to the size :func:`benchmark_sizes`
    gives, ``lr`` its MATLAB bicubic downscaling to the LR size (uint8 in, uint8 out,
    rounded after each pass). Any ``scale`` > 0; for integers it is
    ``imresize(mod_crop(hr, s), 1 / s)`` bit for bit.

    Raises:
        ValueError: the image is smaller than one LR pixel.
    """
    (lr_h, lr_w), (hr_h, hr_w) = benchmark_sizes(*hr.shape[:2], scale)
    if min(lr_h, lr_w) < 1:
        raise ValueError(f"a {hr.shape[1]}x{hr.shape[0]} image has no x{scale:g} LR pixels")
    cropped = hr[:hr_h, :hr_w]
    return cropped, imresize(cropped, output_shape=(lr_h, lr_w))
