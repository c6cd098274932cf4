"""Image sizes read from file headers, so that oversized uploads are refused before decoding.

A few hundred bytes of a PNG can declare 20000×20000 pixels; decoding it would allocate
1.2 GB and upscaling it far more. The width and height are read here from the header of
each format that :func:`lightsr.io.decode_image` accepts, without decoding anything.
"""

from __future__ import annotations

import struct

# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...): every 0xCn
# except DHT (C4), JPG (C8) and DAC (CC), which are not frames.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field.
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xDA)))
_TIFF_WIDTH, _TIFF_HEIGHT = 256, 257
_TIFF_SHORT, _TIFF_LONG = 3, 4


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a PNG, JPEG, WebP, BMP or TIFF header.

    Returns:
        ``None`` when ``data`` is not one of these formats or its header is cut short or
        malformed.
    """
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            width, height = struct.unpack_from(">II", data, 16)
            return width, height
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data.startswith(b"BM"):
            return _bmp_size(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
    except struct.error:  # the header ends early
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _JPEG_STANDALONE:
            offset += 2
            continue
        if marker in _JPEG_FRAMES:
            height, width = struct.unpack_from(">HH", data, offset + 5)
            return width, height
        (length,) = struct.unpack_from(">H", data, offset + 2)
        offset += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the key-frame start code
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: 14-bit sizes minus one, packed after a signature byte
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: 24-bit canvas sizes minus one
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None


def _bmp_size(data: bytes) -> tuple[int, int]:
    (header,) = struct.unpack_from("<I", data, 14)
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
        return width, height
    width, height = struct.unpack_from("<ii", data, 18)
    return abs(width), abs(height)  # a negative height means top-down rows


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """Sizes from the first image file directory (the page that OpenCV decodes)."""
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    (count,) = struct.unpack_from(order + "H", data, ifd)
    sizes: dict[int, int] = {}
    for index in range(count):
        tag, kind = struct.unpack_from(order + "HH", data, ifd + 2 + 12 * index)
        if tag in (_TIFF_WIDTH, _TIFF_HEIGHT):
            if kind not in (_TIFF_SHORT, _TIFF_LONG):
                return None
            value_format = order + ("H" if kind == _TIFF_SHORT else "I")
            (sizes[tag],) = struct.unpack_from(value_format, data, ifd + 2 + 12 * index + 8)
    if _TIFF_WIDTH not in sizes or _TIFF_HEIGHT not in sizes:
        return None
    return sizes[_TIFF_WIDTH], sizes[_TIFF_HEIGHT]
