"""Exact colour conversion between decoded video frames and RGB images.

Y'CbCr frames become R'G'B' with the stream's own matrix (BT.601, BT.709, BT.2020, ...)
and range (limited or full), in float32, and the network's RGB output goes back with the
same matrix and range, so a flat grey stays the same grey. This avoids swscale's
fixed-point paths, which are off by up to two levels for some formats (limited range to
16-bit RGB ignores the range). Chroma is sited as in MPEG-2, H.264, HEVC, VP9 and AV1's
default: co-sited with the left luma sample horizontally, centred vertically.

Formats that are not planar-compatible Y'CbCr (RGB, palette, grey) are repacked by
swscale, where no matrix is involved.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from lightsr.errors import VideoError
from lightsr.video.formats import YuvLayout, yuv_layout

# FFmpeg's AVColorSpace, AVColorRange, AVColorPrimaries and AVColorTransferCharacteristic.
RGB, BT709, UNSPECIFIED, BT601 = 0, 1, 2, 6
LIMITED, FULL = 1, 2
# (Kr, Kb) luma coefficients of each matrix (ITU-T H.273).
_LUMA = {
    BT709: (0.2126, 0.0722),
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470 BG (BT.601 625-line)
    BT601: (0.299, 0.114),  # SMPTE 170M (BT.601 525-line)
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
}
# Players take an untagged picture this large as HD (BT.709), smaller ones as SD (BT.601).
HD_WIDTH, HD_HEIGHT = 1280, 576


@dataclass(frozen=True)
class ColorTags:
    """What a video stream says about its colour (FFmpeg's enumeration values).

    ``matrix`` is never :data:`UNSPECIFIED`: an untagged stream gets the matrix players
    assume for its size, which the output then states, because the output's larger size
    would make players assume another one.
    """

    matrix: int
    full_range: bool
    primaries: int
    transfer: int

    @classmethod
    def of(cls, frame: av.VideoFrame) -> ColorTags:
        """The tags of a decoded frame, an unspecified matrix resolved by its size.

        Raises:
            VideoError: a matrix lightsr cannot convert (YCgCo, constant luminance, ICtCp).
        """
        matrix = int(frame.colorspace)
        if matrix == UNSPECIFIED:
            hd = frame.width >= HD_WIDTH or frame.height > HD_HEIGHT
            matrix = BT709 if hd else BT601
        if matrix not in _LUMA and yuv_layout(frame.format) is not None:
            raise VideoError(f"colour matrix {matrix} (H.273 numbering) is not supported")
        full = int(frame.color_range) == FULL or frame.format.name.startswith("yuvj")
        return cls(matrix, full, int(frame.color_primaries), int(frame.color_trc))

    @property
    def range(self) -> int:
        return FULL if self.full_range else LIMITED


def _ycc_to_rgb_matrix(matrix: int) -> np.ndarray:
    """3×3 matrix taking normalised (Y', Cb, Cr) (Y' in [0, 1], C in ±0.5) to R'G'B'."""
    kr, kb = _LUMA[matrix]
    kg = 1.0 - kr - kb
    return np.array(
        [
            [1.0, 0.0, 2 * (1 - kr)],
            [1.0, -2 * (1 - kb) * kb / kg, -2 * (1 - kr) * kr / kg],
            [1.0, 2 * (1 - kb), 0.0],
        ]
    )


def _code_range(bits: int, full: bool) -> tuple[float, float, float, float]:
    """(luma offset, luma scale, chroma offset, chroma scale) of ``bits``-bit codes."""
    if full:
        peak = float((1 << bits) - 1)
        return 0.0, peak, float(1 << (bits - 1)), peak
    unit = float(1 << (bits - 8))
    return 16 * unit, 219 * unit, 128 * unit, 224 * unit


def _plane(frame: av.VideoFrame, index: int, layout: YuvLayout) -> np.ndarray:
    """A writable (height, width) view of one plane of ``frame``."""
    plane = frame.planes[index]
    dtype = np.uint8 if layout.dtype_size == 1 else np.dtype("<u2")
    rows = np.frombuffer(plane, dtype).reshape(plane.height, -1)
    return rows[:, : plane.width]


def _take(array: np.ndarray, axis: int, index: slice) -> np.ndarray:
    return array[index] if axis == 0 else array[:, index]


def _neighbours(array: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """``array`` shifted by one sample along ``axis`` both ways, edges repeated."""
    first, last = _take(array, axis, slice(0, 1)), _take(array, axis, slice(-1, None))
    before = np.concatenate([first, _take(array, axis, slice(None, -1))], axis=axis)
    after = np.concatenate([_take(array, axis, slice(1, None)), last], axis=axis)
    return before, after


def _upsample(chroma: np.ndarray, axis: int, size: int, cosited: bool) -> np.ndarray:
    """Double ``chroma`` along ``axis`` by linear interpolation; keep ``size`` samples."""
    before, after = _neighbours(chroma, axis)
    shape = list(chroma.shape)
    shape[axis] *= 2
    out = np.empty(shape, dtype=np.float32)
    if cosited:  # samples sit on the even positions
        even, odd = chroma, 0.5 * (chroma + after)
    else:  # samples sit between two positions
        even, odd = 0.75 * chroma + 0.25 * before, 0.75 * chroma + 0.25 * after
    out[(slice(None),) * axis + (slice(0, None, 2),)] = even
    out[(slice(None),) * axis + (slice(1, None, 2),)] = odd
    return _take(out, axis, slice(0, size))


def _subsample(pixels: np.ndarray, layout: YuvLayout) -> np.ndarray:
    """Chroma-resolution float32 (h, w, 3) of full-resolution ``pixels`` for ``layout``.

    Vertically, chroma sits between two rows (the pair's mean); horizontally, on the even
    columns (a [1, 2, 1] / 4 filter centred on each, mirrored at the start). A length that
    does not halve is padded by repeating its last row or column.
    """
    if layout.shift_y:
        if pixels.shape[0] % 2:
            pixels = np.concatenate([pixels, pixels[-1:]])
        pixels = np.add(pixels[0::2], pixels[1::2], dtype=np.float32) * np.float32(0.5)
    else:
        pixels = pixels.astype(np.float32)
    if layout.shift_x:
        if pixels.shape[1] % 2:
            pixels = np.concatenate([pixels, pixels[:, -1:]], axis=1)
        even, odd = pixels[:, 0::2], pixels[:, 1::2]
        before, _ = _neighbours(odd, axis=1)
        pixels = (before + odd) * np.float32(0.25) + even * np.float32(0.5)
    return pixels


def _resample(chroma: np.ndarray, layout: YuvLayout, shape: tuple[int, int]) -> np.ndarray:
    if layout.shift_y:
        chroma = _upsample(chroma, 0, shape[0], cosited=False)
    if layout.shift_x:
        chroma = _upsample(chroma, 1, shape[1], cosited=True)
    return chroma


def frame_to_rgb(frame: av.VideoFrame, tags: ColorTags, dtype: np.dtype) -> np.ndarray:
    """Decode ``frame`` into an (H, W, 3) R'G'B' image of ``dtype`` (uint8 or uint16).

    Y'CbCr is converted with ``tags``' matrix and range; other formats are repacked.
    """
    eight_bit = np.dtype(dtype) == np.uint8
    layout = yuv_layout(frame.format)
    if layout is None:
        return frame.to_ndarray(format="rgb24" if eight_bit else "rgb48le")
    if layout.name != frame.format.name:
        frame = frame.reformat(format=layout.name)
    y_off, y_scale, c_off, c_scale = _code_range(layout.bits, tags.full_range)
    shape = (frame.height, frame.width)
    ycc = np.empty((*shape, 3), dtype=np.float32)
    ycc[..., 0] = (_plane(frame, 0, layout) - np.float32(y_off)) / np.float32(y_scale)
    for channel in (1, 2):
        chroma = (_plane(frame, channel, layout) - np.float32(c_off)) / np.float32(c_scale)
        ycc[..., channel] = _resample(chroma, layout, shape)
    rgb = np.stack(_affine(ycc, _ycc_to_rgb_matrix(tags.matrix), 0.0), axis=-1)
    peak = 255.0 if eight_bit else 65535.0
    return np.rint(np.clip(rgb, 0.0, 1.0) * np.float32(peak)).astype(dtype)


def rgb_to_frame(rgb: np.ndarray, pix_fmt: str, tags: ColorTags) -> av.VideoFrame:
    """Encode an (H, W, 3) uint8/uint16 R'G'B' image as a ``pix_fmt`` frame tagged ``tags``."""
    layout = yuv_layout(av.VideoFormat(pix_fmt))
    eight_bit = rgb.dtype == np.uint8
    if layout is None:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24" if eight_bit else "rgb48le")
        return frame.reformat(format=pix_fmt)
    to_ycc = np.linalg.inv(_ycc_to_rgb_matrix(tags.matrix)) / (255.0 if eight_bit else 65535.0)
    y_off, y_scale, c_off, c_scale = _code_range(layout.bits, tags.full_range)
    height, width = rgb.shape[:2]
    frame = av.VideoFrame(width, height, layout.name)
    peak = np.float32((1 << layout.bits) - 1)
    (luma,) = _affine(rgb, to_ycc[:1] * y_scale, y_off)
    _store(_plane(frame, 0, layout), luma, peak)
    # Codes are affine in R'G'B', so chroma is sub-sampled in R'G'B' before it is
    # converted: the same codes for a quarter of the arithmetic at 4:2:0.
    for channel, codes in enumerate(_affine(_subsample(rgb, layout), to_ycc[1:] * c_scale, c_off)):
        _store(_plane(frame, channel + 1, layout), codes, peak)
    frame.colorspace = tags.matrix
    frame.color_range = tags.range
    if layout.name != pix_fmt:
        frame = frame.reformat(format=pix_fmt)
    return frame


def _affine(pixels: np.ndarray, matrix: np.ndarray, offset: float) -> list[np.ndarray]:
    """float32 planes ``matrix @ pixel + offset`` of (h, w, 3) ``pixels``, one per row.

    Element-wise NumPy on one thread: BLAS's or OpenCV's thread pools would compete with
    the network's threads for the same cores.
    """
    planes = []
    for row in matrix.astype(np.float32):
        plane = np.multiply(pixels[..., 0], row[0], dtype=np.float32)
        plane += pixels[..., 1] * row[1]
        plane += pixels[..., 2] * row[2]
        plane += np.float32(offset)
        planes.append(plane)
    return planes


def _store(target: np.ndarray, codes: np.ndarray, peak: np.float32) -> None:
    target[...] = np.rint(np.clip(codes, 0.0, peak))
