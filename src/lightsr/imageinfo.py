"""Image sizes read from file headers, and the pixel limit checked before decoding.

A small file can declare an image of any size (a "decompression bomb": a 1 MB PNG of
20000x20000 decodes to 1.2 GB). :func:`read_image_info` reads only the header of a PNG,
JPEG, WebP, TIFF or BMP file, so :func:`check_pixel_limit` can refuse such an image before
any pixel is decoded. This module uses the standard library only: the CLI checks its
inputs before it imports numpy, OpenCV or torch.
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from lightsr.errors import ImageError
from lightsr.options import IMAGE_FORMATS

# The default limit is sized for a x4 upscale of 8-bit RGB: input, output and the encoded
# output (2 x 16 x 3 bytes) plus the input and its float copy, per input pixel.
BYTES_PER_INPUT_PIXEL = 112
# Whatever the memory, the default never exceeds 16384x16384 (the largest WebP): larger
# inputs take hours on a CPU and are almost always bombs; --max-pixels lifts it.
DEFAULT_PIXEL_CEILING = 16384 * 16384
# What each output format can store.
SIXTEEN_BIT_FORMATS = frozenset(("PNG", "TIFF"))
ALPHA_FORMATS = frozenset(("PNG", "WebP", "TIFF", "BMP"))
MAX_SIDES = {"JPEG": 65535, "WebP": 16383}
# JPEG start-of-frame markers: every 0xCn except DHT (C4), JPG (C8) and DAC (CC).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field (TEM, restart markers).
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


@dataclass(frozen=True)
class ImageInfo:
    """What an image header declares.

    Attributes:
        format: ``"PNG"``, ``"JPEG"``, ``"WebP"``, ``"TIFF"`` or ``"BMP"``.
        width, height: size in pixels (before any EXIF rotation).
        alpha: whether the image has an alpha channel.
        bits: bits per sample (8 or 16 for the images lightsr reads).
    """

    format: str
    width: int
    height: int
    alpha: bool = False
    bits: int = 8

    @property
    def pixels(self) -> int:
        return self.width * self.height


def default_max_pixels() -> int:
    """The pixel limit when none is given: what available memory holds for a x4 upscale of
    8-bit RGB, at most :data:`DEFAULT_PIXEL_CEILING`."""
    import psutil

    return min(psutil.virtual_memory().available // BYTES_PER_INPUT_PIXEL, DEFAULT_PIXEL_CEILING)


def check_pixel_limit(info: ImageInfo, path: str | os.PathLike, max_pixels: int | None) -> None:
    """Raise :class:`ImageError` if ``info`` declares more than ``max_pixels`` pixels.

    Args:
        max_pixels: the limit; ``None`` uses :func:`default_max_pixels`, 0 disables it.
    """
    limit = default_max_pixels() if max_pixels is None else max_pixels
    if limit and info.pixels > limit:
        raise ImageError(
            f"{path}: {info.width}x{info.height} {info.format} ({info.pixels / 1e6:.1f} MP) is "
            f"over the pixel limit of {limit / 1e6:.1f} MP (raise it with --max-pixels)"
        )


def check_output_format(info: ImageInfo, source: os.PathLike, target: Path, scale: float) -> None:
    """Raise :class:`ImageError` if ``target``'s format cannot store ``source`` upscaled by
    ``scale`` (alpha or 16-bit samples to JPEG, sides over the format's maximum), so that
    the problem is found before the upscale rather than after it."""
    image_format = IMAGE_FORMATS.get(target.suffix.lower())
    if image_format is None:
        return  # the caller checks extensions when it plans the outputs
    if info.alpha and image_format not in ALPHA_FORMATS:
        raise ImageError(f"{source}: has alpha, which {image_format} cannot store ({target})")
    if info.bits > 8 and image_format not in SIXTEEN_BIT_FORMATS:
        raise ImageError(
            f"{source}: is {info.bits}-bit, which {image_format} cannot store ({target}); "
            "use PNG or TIFF"
        )
    width, height = round(info.width * scale), round(info.height * scale)
    largest = MAX_SIDES.get(image_format)
    if largest is not None and max(width, height) > largest:
        raise ImageError(
            f"{source}: the {width}x{height} output is over {image_format}'s maximum side "
            f"of {largest} ({target}); use PNG or TIFF"
        )


def read_image_info(path: str | os.PathLike) -> ImageInfo:
    """The format, size, alpha and bit depth an image file declares, read from its header.

    Raises:
        ImageError: missing or unreadable file, not a supported format, or a damaged or
            truncated header.
    """
    path = Path(path)
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image file")
    try:
        with open(path, "rb") as file:
            return _parse(file, path)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None


def image_info(data: bytes, name: str | os.PathLike = "image") -> ImageInfo:
    """:func:`read_image_info` of an image file held in memory; ``name`` stands for it in
    error messages."""
    return _parse(io.BytesIO(data), name)


def _parse(file: BinaryIO, name: str | os.PathLike) -> ImageInfo:
    head = file.read(32)
    if not head:
        raise ImageError(f"{name}: empty file (0 bytes)")
    image_format = sniff_format(head)
    if image_format is None:
        raise ImageError(f"{name}: not a supported image (PNG, JPEG, WebP, TIFF or BMP)")
    file.seek(0)
    try:
        info = _PARSERS[image_format](file)
    except (struct.error, _Truncated):
        raise ImageError(f"{name}: truncated or damaged {image_format} header") from None
    if info.width < 1 or info.height < 1:
        raise ImageError(f"{name}: {image_format} header declares {info.width}x{info.height}")
    return info


_SIGNATURES: tuple[tuple[str, bytes, int], ...] = (
    ("PNG", b"\x89PNG\r\n\x1a\n", 0),
    ("JPEG", b"\xff\xd8\xff", 0),
    ("WebP", b"WEBP", 8),
    ("TIFF", b"II*\x00", 0),
    ("TIFF", b"MM\x00*", 0),
    ("BMP", b"BM", 0),
)


def sniff_format(data: bytes) -> str | None:
    """The format whose signature starts ``data`` (at least 12 bytes), or ``None``."""
    for name, magic, offset in _SIGNATURES:
        if data[offset : offset + len(magic)] == magic:
            if name == "WebP" and data[:4] != b"RIFF":
                continue
            return name
    return None


class _Truncated(Exception):
    """The file ends inside its header."""


def _read(file: BinaryIO, size: int) -> bytes:
    data = file.read(size)
    if len(data) < size:
        raise _Truncated
    return data


def _png(file: BinaryIO) -> ImageInfo:
    data = _read(file, 33)
    if data[12:16] != b"IHDR":
        raise _Truncated
    width, height, bits, color = struct.unpack(">IIBB", data[16:26])
    channels = _PNG_CHANNELS.get(color, 3)
    return ImageInfo("PNG", width, height, alpha=channels in (2, 4), bits=max(bits, 8))


def _jpeg(file: BinaryIO) -> ImageInfo:
    file.seek(2)
    while True:
        marker = _read(file, 2)
        while marker[1] == 0xFF:  # fill bytes before a marker
            marker = marker[1:] + _read(file, 1)
        if marker[0] != 0xFF or marker[1] in (0xD9, 0xDA):  # end of image, start of scan
            raise _Truncated
        if marker[1] in _JPEG_STANDALONE:
            continue
        (length,) = struct.unpack(">H", _read(file, 2))
        if marker[1] in _JPEG_SOF:
            bits, height, width = struct.unpack(">BHH", _read(file, 5))
            return ImageInfo("JPEG", width, height, bits=max(bits, 8))
        if length < 2:
            raise _Truncated
        file.seek(length - 2, os.SEEK_CUR)


def _webp(file: BinaryIO) -> ImageInfo:
    data = _read(file, 30)
    kind, payload = data[12:16], data[20:30]
    if kind == b"VP8X":
        width = int.from_bytes(payload[4:7], "little") + 1
        height = int.from_bytes(payload[7:10], "little") + 1
        return ImageInfo("WebP", width, height, alpha=bool(payload[0] & 0x10))
    if kind == b"VP8L":
        if payload[0] != 0x2F:
            raise _Truncated
        bits = int.from_bytes(payload[1:5], "little")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        return ImageInfo("WebP", width, height, alpha=bool(bits >> 28 & 1))
    if kind == b"VP8 ":
        if payload[3:6] != b"\x9d\x01\x2a":
            raise _Truncated
        width, height = struct.unpack("<HH", payload[6:10])
        return ImageInfo("WebP", width & 0x3FFF, height & 0x3FFF)
    raise _Truncated


_TIFF_TYPES = {3: ("H", 2), 4: ("I", 4)}  # SHORT, LONG
_TIFF_TAGS = {256: "width", 257: "height", 258: "bits", 277: "samples", 338: "extra"}


def _tiff(file: BinaryIO) -> ImageInfo:
    order = "<" if _read(file, 2) == b"II" else ">"
    file.seek(4)
    (offset,) = struct.unpack(order + "I", _read(file, 4))
    file.seek(offset)
    (count,) = struct.unpack(order + "H", _read(file, 2))
    entries = _read(file, 12 * count)
    tags: dict[str, int] = {}
    for index in range(count):
        entry = entries[12 * index : 12 * index + 12]
        tag, kind, n = struct.unpack(order + "HHI", entry[:8])
        if kind in _TIFF_TYPES and tag in _TIFF_TAGS:
            code, size = _TIFF_TYPES[kind]
            value = entry[8 : 8 + size]
            if n * size > 4:  # the values live elsewhere; every sample has the same depth
                file.seek(struct.unpack(order + "I", entry[8:12])[0])
                value = _read(file, size)
            tags[_TIFF_TAGS[tag]] = struct.unpack(order + code, value)[0]
    if "width" not in tags or "height" not in tags:
        raise _Truncated
    alpha = tags.get("samples", 1) in (2, 4) or "extra" in tags
    return ImageInfo("TIFF", tags["width"], tags["height"], alpha, max(tags.get("bits", 8), 8))


def _bmp(file: BinaryIO) -> ImageInfo:
    data = _read(file, 30)
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
        bits = struct.unpack("<H", data[24:26])[0]
    else:
        width, height, _, bits = struct.unpack("<iiHH", data[18:30])
    return ImageInfo("BMP", width, abs(height), alpha=bits == 32)


_PARSERS = {"PNG": _png, "JPEG": _jpeg, "WebP": _webp, "TIFF": _tiff, "BMP": _bmp}
