"""Image files in and out (OpenCV based), and conversions between pixels and tensors.

Conventions: images in memory are numpy arrays in their native integer type (uint8 or
uint16), shaped (H, W) for grayscale, (H, W, 3) for RGB and (H, W, 4) for RGBA, channels in
RGB(A) order. Networks work on float RGB in [0, 1]; :func:`to_float`/:func:`from_float` and
:func:`image_to_tensor`/:func:`tensor_to_image` convert between the two.
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from lightsr.errors import ImageError
from lightsr.imageinfo import (
    ALPHA_FORMATS,
    SIXTEEN_BIT_FORMATS,
    check_pixel_limit,
    image_info,
    read_image_info,
)
from lightsr.metadata import Metadata, embed_metadata
from lightsr.options import IMAGE_FORMATS, pixel_max
from lightsr.paths import replaced_atomically
from lightsr.quiet import quiet_native_stderr

# ----------------------------------------------------------------------------- reading


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file in its native bit depth.

    JPEG EXIF orientation is applied, so the array is the image as viewers show it. The
    size declared in the header is checked against ``max_pixels`` before the rest of the
    file is read (see :mod:`lightsr.imageinfo`).

    Args:
        path: a PNG, JPEG, WebP, TIFF or BMP file.
        max_pixels: refuse larger images; ``None`` sizes the limit from available memory
            (:func:`lightsr.imageinfo.default_max_pixels`), 0 disables it.

    Returns:
        uint8 or uint16 array, (H, W) grayscale, (H, W, 3) RGB or (H, W, 4) RGBA.

    Raises:
        ImageError: the file is missing, empty, not a supported format, damaged, over the
            pixel limit, or holds samples that are not 8/16-bit unsigned integers.
    """
    path = Path(path)
    check_pixel_limit(read_image_info(path), path, max_pixels)
    return decode_image(_read_bytes(path), path, max_pixels=0)


def decode_image(
    data: bytes, name: str | os.PathLike = "image", max_pixels: int | None = None
) -> np.ndarray:
    """Decode an image file held in memory, as :func:`read_image` does (EXIF orientation
    applied, header checked against ``max_pixels`` first); ``name`` stands for it in error
    messages.

    Raises:
        ImageError: not a supported format, damaged, over the pixel limit, or not 8/16-bit
            samples.
    """
    info = image_info(data, name)
    check_pixel_limit(info, name, max_pixels)
    image_format = info.format
    if image_format == "PNG" and not _png_is_complete(data):
        raise ImageError(f"{name}: truncated or damaged PNG data")
    # IMREAD_UNCHANGED ignores EXIF orientation; for JPEG (never alpha) the ANYCOLOR|ANYDEPTH
    # flags keep gray as gray while letting OpenCV rotate/flip per the orientation tag.
    flags = (
        cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH
        if image_format == "JPEG"
        else cv2.IMREAD_UNCHANGED
    )
    try:
        with _quiet_opencv():
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    except cv2.error:  # OpenCV's own size limits, allocation failures
        image = None
    if image is None:
        raise ImageError(f"{name}: cannot decode {image_format} data (damaged or truncated)")
    if pixel_max(image.dtype) is None:
        raise ImageError(f"{name}: unsupported sample type {image.dtype} (need 8 or 16 bit)")
    return _to_rgb_order(image, name)


def read_rgb_uint8(path: str | os.PathLike) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB, the BasicSR convention for benchmarks.

    Grayscale becomes three equal channels, alpha is dropped, 16-bit is scaled to 8-bit.
    """
    image = read_image(path)
    if image.dtype == np.uint16:
        image = from_float(to_float(image), np.uint8)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from exc


def _png_is_complete(data: bytes) -> bool:
    """Walk the PNG chunk list up to IEND.

    libpng prints its own error on stderr for truncated files, which OpenCV cannot silence,
    so truncation is caught here first.
    """
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        offset += 12 + length  # length, type, data, CRC
        if offset > len(data):
            return False
        if kind == b"IEND":
            return True
    return False


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's log lines (and libpng's, libtiff's unless verbose) while coding;
    failures surface as ImageError instead."""
    logging = cv2.utils.logging
    previous = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        with quiet_native_stderr():
            yield
    finally:
        logging.setLogLevel(previous)


def _to_rgb_order(image: np.ndarray, name: str | os.PathLike) -> np.ndarray:
    if image.ndim == 2:
        return image
    channels = image.shape[2]
    if channels == 1:
        return image[..., 0]
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    raise ImageError(f"{name}: unsupported number of channels ({channels})")


# ----------------------------------------------------------------------------- writing


def write_image(
    path: str | os.PathLike,
    image: np.ndarray,
    quality: int | None = None,
    metadata: Metadata | None = None,
) -> Path:
    """Write ``image`` atomically; the format comes from the file extension.

    The file is encoded in memory, written to a temporary file in the target folder and
    moved into place, so a failure never leaves a partial file. Parent folders are created.
    A writable RGB(A) ``image`` has its channels swapped in place while it is encoded and
    restored before this returns (no copy of a large output); do not read it meanwhile
    from another thread.
    16-bit images can only be written as PNG or TIFF (anything else raises rather than
    silently losing precision); alpha cannot be written as JPEG.

    Args:
        path: destination ending in .png, .jpg/.jpeg, .webp, .tif/.tiff or .bmp.
        image: uint8 or uint16 array, (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA.
        quality: 1-100 for JPEG and WebP (WebP above 100 is lossless); lossless formats
            ignore it. ``None`` uses OpenCV's defaults (JPEG 95, WebP lossless).
        metadata: EXIF, ICC profile and DPI to store (PNG, JPEG, WebP, TIFF; see
            :mod:`lightsr.metadata`).

    Returns:
        The path written.

    Raises:
        ImageError: unknown extension, unsupported dtype/channels for the format, or the
            file could not be encoded or written.
    """
    path = Path(path)
    encoded = _encode_for(path, image, quality)
    if metadata:
        image_format = IMAGE_FORMATS[path.suffix.lower()]
        encoded = embed_metadata(encoded.tobytes(), image_format, metadata)
    _write_atomically(path, encoded)
    return path


def encode_image(image: np.ndarray, extension: str, quality: int | None = None) -> np.ndarray:
    """Encode ``image`` in memory: the bytes :func:`write_image` writes to a file whose name
    ends in ``extension`` (``".png"``, ``".jpg"``, ``".webp"``, ...), with the same checks.

    Returns:
        The encoded file as a 1-D uint8 array.
    """
    return _encode_for(Path(f"image{extension}"), image, quality)


def _encode_for(path: Path, image: np.ndarray, quality: int | None) -> np.ndarray:
    image_format = IMAGE_FORMATS.get(path.suffix.lower())
    if image_format is None:
        known = ", ".join(sorted(IMAGE_FORMATS))
        raise ImageError(f"{path}: unknown image extension {path.suffix!r} (use one of {known})")
    return _encode(image, image_format, path, quality)


def _encode(image: np.ndarray, image_format: str, path: Path, quality: int | None) -> np.ndarray:
    if pixel_max(image.dtype) is None:
        raise ImageError(f"{path}: cannot write {image.dtype} pixels; convert to uint8/uint16")
    if image.dtype == np.uint16 and image_format not in SIXTEEN_BIT_FORMATS:
        raise ImageError(f"{path}: {image_format} cannot store 16-bit images; use PNG or TIFF")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    channels = 1 if image.ndim == 2 else image.shape[2]
    if image.ndim not in (2, 3) or channels not in (1, 3, 4):
        raise ImageError(f"{path}: cannot write an image of shape {image.shape}")
    if channels == 4 and image_format not in ALPHA_FORMATS:
        raise ImageError(f"{path}: {image_format} has no alpha channel; use PNG or WebP")
    swap = _CHANNEL_SWAPS.get(channels)
    if swap is None:
        return _imencode(image, image_format, path, quality)
    if not (image.flags.writeable and image.flags.c_contiguous):
        return _imencode(cv2.cvtColor(image, swap), image_format, path, quality)
    # A large upscale's output is the biggest array in the process: swap its channels to
    # OpenCV's order in place and back (the swap is its own inverse) rather than copy it.
    _swap_in_place(image, swap)
    try:
        return _imencode(image, image_format, path, quality)
    finally:
        _swap_in_place(image, swap)


# RGB(A) ↔ BGR(A): each conversion is its own inverse.
_CHANNEL_SWAPS = {3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}
# Rows per band of an in-place channel swap: OpenCV copies a source that is also the
# destination, so bands bound that copy.
_SWAP_BAND_ROWS = 256


def _swap_in_place(image: np.ndarray, conversion: int) -> None:
    for start in range(0, image.shape[0], _SWAP_BAND_ROWS):
        band = image[start : start + _SWAP_BAND_ROWS]
        cv2.cvtColor(band, conversion, dst=band)


def _imencode(image: np.ndarray, image_format: str, path: Path, quality: int | None) -> np.ndarray:
    """The encoded file as a 1-D uint8 array (written as is: no copy into ``bytes``)."""
    with _quiet_opencv():
        ok, buffer = cv2.imencode(path.suffix.lower(), image, _encode_params(image_format, quality))
    if not ok:
        raise ImageError(f"{path}: OpenCV could not encode the image as {image_format}")
    return buffer


def _encode_params(image_format: str, quality: int | None) -> list[int]:
    if quality is None:
        return []
    if not 1 <= quality <= 101:
        raise ImageError(f"quality must be between 1 and 100 (101 = lossless WebP), got {quality}")
    if image_format == "JPEG":
        return [cv2.IMWRITE_JPEG_QUALITY, min(quality, 100)]
    if image_format == "WebP":
        return [cv2.IMWRITE_WEBP_QUALITY, quality]
    return []


def _write_atomically(path: Path, data: bytes | np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(path) as temporary, open(temporary, "wb") as file:
            file.write(data)
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror or exc})") from exc


# ----------------------------------------------------------------------------- conversions


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8/uint16 pixels → float32 in [0, 1] (÷255 or ÷65535)."""
    max_value = pixel_max(image.dtype)
    if max_value is None:
        raise ImageError(f"expected uint8 or uint16 pixels, got {image.dtype}")
    return image.astype(np.float32) / np.float32(max_value)


def from_float(image: np.ndarray, dtype: np.dtype | type = np.uint8) -> np.ndarray:
    """Float pixels in [0, 1] → ``dtype`` (uint8/uint16): clamp, scale, round, cast."""
    dtype = np.dtype(dtype)
    max_value = pixel_max(dtype)
    if max_value is None:
        raise ImageError(f"can only convert to uint8 or uint16, not {dtype}")
    scaled = np.clip(image, 0.0, 1.0) * max_value
    return np.rint(scaled).astype(dtype)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, C) or (H, W) float image → float32 tensor (1, C, H, W)."""
    if image.ndim == 2:
        image = image[..., None]
    array = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
    return torch.from_numpy(array).unsqueeze(0)


def tensor_to_image(tensor: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) or (C, H, W) tensor → float32 (H, W, C) numpy array (values unchanged)."""
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"expected a batch of one image, got shape {tuple(tensor.shape)}")
        tensor = tensor[0]
    if tensor.dim() != 3:
        raise ValueError(f"expected (C, H, W) or (1, C, H, W), got shape {tuple(tensor.shape)}")
    return tensor.detach().to(device="cpu", dtype=torch.float32).permute(1, 2, 0).numpy()
