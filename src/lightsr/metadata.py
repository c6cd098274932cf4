"""Photo metadata kept from input to output: EXIF (orientation reset), ICC profile, DPI.

A photo tool that drops the colour profile shifts colours on wide-gamut images, and one
that drops EXIF loses the camera, date and GPS data users expect to keep. OpenCV reads and
writes pixels only, so the metadata is read here from the input's PNG chunks or JPEG
segments and written into the encoded output file as chunks or segments again.

Supported: PNG and JPEG, both ways (any of the two to any of the two). Other formats are
written without metadata. The EXIF orientation is reset to 1 (normal) because
:func:`lightsr.io.read_image` has already turned the pixels upright.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_HEADER = b"Exif\x00\x00"
_ICC_HEADER = b"ICC_PROFILE\x00"
# An APP2 segment holds at most 65535 - 2 (length) - 14 (header) profile bytes.
_ICC_CHUNK = 65519
_ORIENTATION_TAG = 0x0112
_INCHES_PER_METRE = 39.3701


@dataclass(frozen=True)
class Metadata:
    """What is carried over. ``exif`` is the TIFF-structured EXIF block (no ``Exif`` header),
    ``icc`` the ICC profile bytes, ``dpi`` the horizontal and vertical resolution."""

    exif: bytes | None = None
    icc: bytes | None = None
    dpi: tuple[float, float] | None = None

    def __bool__(self) -> bool:
        return bool(self.exif or self.icc or self.dpi)


def read_metadata(path: str | os.PathLike) -> Metadata:
    """The metadata of a PNG or JPEG file; empty for other formats or damaged blocks."""
    return parse_metadata(Path(path).read_bytes())


def parse_metadata(data: bytes) -> Metadata:
    """:func:`read_metadata` of a file's bytes held in memory."""
    try:
        if data.startswith(_PNG_SIGNATURE):
            return _png_metadata(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_metadata(data)
    except (struct.error, zlib.error, IndexError):  # damaged metadata is not worth failing
        pass
    return Metadata()


def embed_metadata(encoded: bytes, image_format: str, metadata: Metadata) -> bytes:
    """``encoded`` (a PNG or JPEG file written by OpenCV) with ``metadata`` added."""
    if not metadata:
        return encoded
    if image_format == "PNG":
        return _png_with(encoded, metadata)
    if image_format == "JPEG":
        return _jpeg_with(encoded, metadata)
    return encoded


def upright_exif(exif: bytes) -> bytes:
    """``exif`` with its orientation tag (if any) set to 1, the pixels' new orientation."""
    if len(exif) < 8 or exif[:2] not in (b"II", b"MM"):
        return exif
    order = "<" if exif[:2] == b"II" else ">"
    (offset,) = struct.unpack_from(order + "I", exif, 4)
    (count,) = struct.unpack_from(order + "H", exif, offset)
    patched = bytearray(exif)
    for index in range(count):
        entry = offset + 2 + 12 * index
        tag, kind = struct.unpack_from(order + "HH", exif, entry)
        if tag == _ORIENTATION_TAG and kind == 3:  # SHORT
            struct.pack_into(order + "H", patched, entry + 8, 1)
    return bytes(patched)


# ----------------------------------------------------------------------------- PNG


def _png_chunks(data: bytes):
    offset = len(_PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, offset)
        yield kind, data[offset + 8 : offset + 8 + length], offset
        offset += 12 + length
        if kind == b"IEND":
            return


def _png_metadata(data: bytes) -> Metadata:
    exif = icc = dpi = None
    for kind, body, _ in _png_chunks(data):
        if kind == b"eXIf":
            exif = upright_exif(body)
        elif kind == b"iCCP":
            name_end = body.index(b"\x00")
            icc = zlib.decompress(body[name_end + 2 :])
        elif kind == b"pHYs":
            x, y, unit = struct.unpack(">IIB", body)
            if unit == 1:
                dpi = (x / _INCHES_PER_METRE, y / _INCHES_PER_METRE)
    return Metadata(exif, icc, dpi)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_with(encoded: bytes, metadata: Metadata) -> bytes:
    # Everything goes right after IHDR: iCCP and pHYs must precede the image data.
    ihdr_end = len(_PNG_SIGNATURE) + 12 + struct.unpack_from(">I", encoded, 8)[0]
    skip = {b"iCCP", b"pHYs", b"eXIf", b"sRGB"} if metadata.icc else {b"pHYs", b"eXIf"}
    chunks = b""
    if metadata.icc:
        chunks += _png_chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(metadata.icc))
    if metadata.dpi:
        x, y = (round(value * _INCHES_PER_METRE) for value in metadata.dpi)
        chunks += _png_chunk(b"pHYs", struct.pack(">IIB", x, y, 1))
    if metadata.exif:
        chunks += _png_chunk(b"eXIf", metadata.exif)
    rest = b"".join(
        encoded[offset : offset + 12 + len(body)]
        for kind, body, offset in _png_chunks(encoded)
        if kind not in skip and kind != b"IHDR"
    )
    return encoded[:ihdr_end] + chunks + rest


# ----------------------------------------------------------------------------- JPEG


def _jpeg_segments(data: bytes):
    """(marker, body, offset) of each segment before the image data (start of scan)."""
    offset = 2
    while offset + 4 <= len(data) and data[offset] == 0xFF:
        marker = data[offset + 1]
        if marker == 0xDA:
            return
        (length,) = struct.unpack_from(">H", data, offset + 2)
        yield marker, data[offset + 4 : offset + 2 + length], offset
        offset += 2 + length


def _jpeg_metadata(data: bytes) -> Metadata:
    exif = dpi = None
    icc_parts: dict[int, bytes] = {}
    for marker, body, _ in _jpeg_segments(data):
        if marker == 0xE1 and body.startswith(_EXIF_HEADER):
            exif = upright_exif(body[len(_EXIF_HEADER) :])
        elif marker == 0xE2 and body.startswith(_ICC_HEADER):
            icc_parts[body[12]] = body[14:]
        elif marker == 0xE0 and body.startswith(b"JFIF\x00"):
            unit, x, y = struct.unpack_from(">BHH", body, 7)
            if unit == 1 and x and y:
                dpi = (float(x), float(y))
            elif unit == 2 and x and y:  # dots per centimetre
                dpi = (x * 2.54, y * 2.54)
    icc = b"".join(icc_parts[key] for key in sorted(icc_parts)) or None
    return Metadata(exif, icc, dpi)


def _jpeg_segment(marker: int, body: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body


def _jpeg_with(encoded: bytes, metadata: Metadata) -> bytes:
    kept = b""
    for marker, body, _ in _jpeg_segments(encoded):
        if marker == 0xE0 and body.startswith(b"JFIF\x00") and metadata.dpi:
            x, y = (min(round(value), 65535) for value in metadata.dpi)
            body = body[:7] + struct.pack(">BHH", 1, x, y) + body[12:]
        if marker in (0xE1, 0xE2) and body.startswith((_EXIF_HEADER, _ICC_HEADER)):
            continue
        kept += _jpeg_segment(marker, body)
    added = b""
    if metadata.exif and len(metadata.exif) + len(_EXIF_HEADER) <= 65533:
        added += _jpeg_segment(0xE1, _EXIF_HEADER + metadata.exif)
    if metadata.icc:
        parts = [metadata.icc[i : i + _ICC_CHUNK] for i in range(0, len(metadata.icc), _ICC_CHUNK)]
        for number, part in enumerate(parts, start=1):
            header = _ICC_HEADER + bytes((number, len(parts)))
            added += _jpeg_segment(0xE2, header + part)
    # JFIF (APP0) must come first; EXIF and ICC follow it.
    return encoded[:2] + _app0_first(kept, added) + encoded[_scan_offset(encoded) :]


def _scan_offset(data: bytes) -> int:
    """Where the segments end: the start-of-scan marker (or the end of the data)."""
    end = 2
    for _, body, offset in _jpeg_segments(data):
        end = offset + 4 + len(body)
    return end


def _app0_first(segments: bytes, added: bytes) -> bytes:
    """``segments`` with ``added`` inserted after a leading APP0 (JFIF) segment."""
    if segments[:2] == b"\xff\xe0":
        end = 2 + struct.unpack_from(">H", segments, 2)[0]
        return segments[:end] + added + segments[end:]
    return added + segments
