"""Photo metadata kept from input to output: EXIF (orientation reset), ICC profile, DPI.

A photo tool that drops the colour profile shifts colours on wide-gamut images, and one
that drops EXIF loses the camera, date and GPS data users expect to keep. OpenCV reads and
writes pixels only, so the metadata is read here from the input's PNG chunks or JPEG
segments, WebP RIFF chunks or TIFF tags and written into the encoded output file the
same way.

Supported both ways, any format to any other: PNG, JPEG, WebP and TIFF. BMP outputs are
written without metadata. WebP has no resolution field, so the DPI of WebP outputs is not
kept (and WebP inputs have none). TIFF inputs give their ICC profile (tag 34675),
resolution and orientation; their EXIF sub-IFD is not read. TIFF outputs get the ICC
profile, the resolution and the EXIF block's first-IFD tags (Make, Model, Orientation, ...,
with its EXIF and GPS sub-IFDs) when the EXIF block has the file's byte order, else only the
orientation.
The orientation of JPEG and TIFF inputs is reset to 1 (normal) because
:func:`lightsr.io.read_image` (OpenCV) has already turned their pixels upright. PNG and WebP
pixels are read as stored, so their EXIF orientation is kept as is: the output then shows
the way the input did in any viewer.
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
    """The metadata of a PNG, JPEG, WebP or TIFF file; empty for other formats or damaged
    blocks."""
    return parse_metadata(Path(path).read_bytes())


def parse_metadata(data: bytes) -> Metadata:
    """:func:`read_metadata` of a file's bytes held in memory."""
    try:
        if data.startswith(_PNG_SIGNATURE):
            return _png_metadata(data)
        if data.startswith(b"\xff\xd8"):
            return _jpeg_metadata(data)
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp_metadata(data)
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_metadata(data)
    except (struct.error, zlib.error, IndexError):  # damaged metadata is not worth failing
        pass
    return Metadata()


def embed_metadata(encoded: bytes, image_format: str, metadata: Metadata) -> bytes:
    """``encoded`` (a PNG, JPEG, WebP or TIFF file written by OpenCV) with ``metadata``
    added; other formats are returned unchanged."""
    if not metadata:
        return encoded
    if image_format == "PNG":
        return _png_with(encoded, metadata)
    if image_format == "JPEG":
        return _jpeg_with(encoded, metadata)
    if image_format == "WebP":
        return _webp_with(encoded, metadata)
    if image_format == "TIFF":
        return _tiff_with(encoded, metadata)
    return encoded


def upright_exif(exif: bytes) -> bytes:
    """``exif`` with its orientation tag (if any) set to 1, the pixels' new orientation."""
    if len(exif) < 8 or exif[:2] not in (b"II", b"MM"):
        return exif
    order = _tiff_order(exif)
    (first,) = struct.unpack_from(order + "I", exif, 4)
    patched = bytearray(exif)
    for tag, kind, _, at in _ifd_entries(exif, order, first):
        if tag == _TIFF_ORIENTATION and kind == _SHORT:
            struct.pack_into(order + "H", patched, at, 1)
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
            exif = body  # pixels read as stored: the orientation still applies
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


# ----------------------------------------------------------------------------- WebP

# VP8X feature flags (https://developers.google.com/speed/webp/docs/riff_container).
_VP8X_ICC = 0x20
_VP8X_ALPHA = 0x10
_VP8X_EXIF = 0x08


def _riff_chunks(data: bytes):
    """(fourcc, body) of each chunk after the ``RIFF....WEBP`` header."""
    offset = 12
    while offset + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, offset)
        yield kind, data[offset + 8 : offset + 8 + length]
        offset += 8 + length + (length & 1)  # bodies are padded to an even size


def _webp_metadata(data: bytes) -> Metadata:
    exif = icc = None
    for kind, body in _riff_chunks(data):
        if kind == b"EXIF":
            # The spec stores the TIFF block bare; some writers keep JPEG's "Exif" header.
            exif = body.removeprefix(_EXIF_HEADER)  # pixels read as stored (see PNG)
        elif kind == b"ICCP":
            icc = body
    return Metadata(exif, icc, None)


def _riff_chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + b"\x00" * (len(body) & 1)


def _webp_canvas(chunks: list[tuple[bytes, bytes]]) -> tuple[int, int, bool]:
    """Width, height and whether there is alpha, from a VP8X, VP8L or VP8 chunk."""
    for kind, body in chunks:
        if kind == b"VP8X":
            width = int.from_bytes(body[4:7], "little") + 1
            height = int.from_bytes(body[7:10], "little") + 1
            return width, height, bool(body[0] & _VP8X_ALPHA)
        if kind == b"VP8L":  # signature byte, then 14 + 14 bits of size - 1 and an alpha bit
            bits = int.from_bytes(body[1:5], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, bool(bits >> 28 & 1)
        if kind == b"VP8 ":  # frame tag (3 bytes), start code (3), then 14-bit sizes
            width, height = struct.unpack_from("<HH", body, 6)
            return width & 0x3FFF, height & 0x3FFF, False
    raise struct.error("no WebP image chunk")


def _webp_with(encoded: bytes, metadata: Metadata) -> bytes:
    if not (metadata.exif or metadata.icc):
        return encoded  # nothing WebP can hold (no resolution field)
    chunks = list(_riff_chunks(encoded))
    width, height, alpha = _webp_canvas(chunks)
    flags = (
        (_VP8X_ALPHA if alpha else 0)
        | (_VP8X_ICC if metadata.icc else 0)
        | (_VP8X_EXIF if metadata.exif else 0)
    )
    vp8x = bytes((flags, 0, 0, 0)) + (width - 1).to_bytes(3, "little")
    vp8x += (height - 1).to_bytes(3, "little")
    # Order required by the spec: VP8X, ICCP, image data (ALPH, VP8/VP8L), EXIF.
    body = _riff_chunk(b"VP8X", vp8x)
    if metadata.icc:
        body += _riff_chunk(b"ICCP", metadata.icc)
    body += b"".join(
        _riff_chunk(kind, chunk)
        for kind, chunk in chunks
        if kind not in (b"VP8X", b"ICCP", b"EXIF")
    )
    if metadata.exif:
        body += _riff_chunk(b"EXIF", metadata.exif)
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


# ----------------------------------------------------------------------------- TIFF

_TIFF_ORIENTATION = 274
_TIFF_X_RESOLUTION = 282
_TIFF_Y_RESOLUTION = 283
_TIFF_RESOLUTION_UNIT = 296
_TIFF_ICC = 34675
_SHORT, _RATIONAL, _UNDEFINED = 3, 5, 7
# Bytes per value of each TIFF field type (BYTE, ASCII, SHORT, LONG, RATIONAL, ..., IFD).
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
# Tags whose value is the offset of another IFD: EXIF, GPS, interoperability.
_IFD_POINTERS = {34665, 34853, 40965}
# Tags describing the pixel data: an EXIF block's copies must not replace the encoder's.
_IMAGE_TAGS = {254, 256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 338, 339, 513, 514}


def _tiff_order(data: bytes) -> str:
    return "<" if data[:2] == b"II" else ">"


def _ifd_entries(data: bytes, order: str, offset: int) -> list[tuple[int, int, int, int]]:
    """(tag, type, count, offset of the value) of each entry of the IFD at ``offset``;
    values of up to 4 bytes sit in the entry itself."""
    (count,) = struct.unpack_from(order + "H", data, offset)
    entries = []
    for index in range(count):
        entry = offset + 2 + 12 * index
        tag, kind, number, pointer = struct.unpack_from(order + "HHII", data, entry)
        inline = _TYPE_SIZES.get(kind, 1) * number <= 4
        entries.append((tag, kind, number, entry + 8 if inline else pointer))
    return entries


def _tiff_metadata(data: bytes) -> Metadata:
    order = _tiff_order(data)
    (first,) = struct.unpack_from(order + "I", data, 4)
    icc = orientation = None
    resolution: dict[int, float] = {}
    unit = 2  # inches, the TIFF default
    for tag, kind, number, at in _ifd_entries(data, order, first):
        if tag == _TIFF_ICC:
            icc = data[at : at + number]
        elif tag == _TIFF_ORIENTATION and kind == _SHORT:
            (orientation,) = struct.unpack_from(order + "H", data, at)
        elif tag == _TIFF_RESOLUTION_UNIT and kind == _SHORT:
            (unit,) = struct.unpack_from(order + "H", data, at)
        elif tag in (_TIFF_X_RESOLUTION, _TIFF_Y_RESOLUTION) and kind == _RATIONAL:
            numerator, denominator = struct.unpack_from(order + "II", data, at)
            resolution[tag] = numerator / denominator if denominator else 0.0
    dpi = None
    scale = {2: 1.0, 3: 2.54}.get(unit)  # 1 means "no absolute unit"
    if scale and all(resolution.get(tag) for tag in (_TIFF_X_RESOLUTION, _TIFF_Y_RESOLUTION)):
        dpi = (resolution[_TIFF_X_RESOLUTION] * scale, resolution[_TIFF_Y_RESOLUTION] * scale)
    # OpenCV turns TIFF pixels upright (as it does JPEG's): the output's orientation is 1.
    exif = _orientation_exif(1) if orientation is not None else None
    return Metadata(exif, icc, dpi)


def _orientation_exif(orientation: int) -> bytes:
    """A minimal EXIF block holding only an orientation tag."""
    entry = struct.pack("<HHIHH", _TIFF_ORIENTATION, _SHORT, 1, orientation, 0)
    return b"II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)


def _tiff_entry(order: str, tag: int, kind: int, count: int, value: bytes) -> bytes:
    return struct.pack(order + "HHI", tag, kind, count) + value.ljust(4, b"\x00")


def _tiff_with(encoded: bytes, metadata: Metadata) -> bytes:
    # The encoder's first IFD is left where it is; a new one (its entries plus ours) is
    # appended with the new values and the header is pointed at it.
    added = len(metadata.exif or b"") + len(metadata.icc or b"") + 4096
    if encoded[:4] not in (b"II*\x00", b"MM\x00*") or len(encoded) + added > 0xFFFFFFFF:
        return encoded  # BigTIFF (64-bit offsets), written by OpenCV for huge images
    order = _tiff_order(encoded)
    (first,) = struct.unpack_from(order + "I", encoded, 4)
    (count,) = struct.unpack_from(order + "H", encoded, first)
    (next_ifd,) = struct.unpack_from(order + "I", encoded, first + 2 + 12 * count)
    entries = {
        tag: encoded[first + 2 + 12 * i : first + 14 + 12 * i]
        for i, (tag, *_) in enumerate(_ifd_entries(encoded, order, first))
    }
    out = bytearray(encoded)

    def aligned_end() -> int:
        out.extend(b"\x00" * (len(out) & 1))  # TIFF offsets point at word boundaries
        return len(out)

    def value_field(blob: bytes) -> bytes:
        """An entry's value field for ``blob``: itself if it fits in 4 bytes, else the
        offset where it is stored at the end."""
        if len(blob) <= 4:
            return blob
        offset = aligned_end()
        out.extend(blob)
        return struct.pack(order + "I", offset)

    if metadata.exif:
        block, found = _exif_relocated(metadata.exif, order, aligned_end())
        out.extend(block)
        for tag, entry in found.items():
            if tag not in entries and tag not in _IMAGE_TAGS:
                entries[tag] = entry
    if metadata.icc:
        icc = value_field(metadata.icc)
        entries[_TIFF_ICC] = _tiff_entry(order, _TIFF_ICC, _UNDEFINED, len(metadata.icc), icc)
    if metadata.dpi:
        for tag, value in zip((_TIFF_X_RESOLUTION, _TIFF_Y_RESOLUTION), metadata.dpi, strict=True):
            rational = value_field(struct.pack(order + "II", round(value * 1000), 1000))
            entries[tag] = _tiff_entry(order, tag, _RATIONAL, 1, rational)
        unit = struct.pack(order + "H", 2)  # inches
        entries[_TIFF_RESOLUTION_UNIT] = _tiff_entry(order, _TIFF_RESOLUTION_UNIT, _SHORT, 1, unit)
    ifd = struct.pack(order + "H", len(entries))
    ifd += b"".join(entries[tag] for tag in sorted(entries))  # TIFF wants ascending tags
    ifd += struct.pack(order + "I", next_ifd)
    out[4:8] = value_field(ifd)
    return bytes(out)


def _exif_relocated(exif: bytes, order: str, offset: int) -> tuple[bytes, dict[int, bytes]]:
    """``exif`` as stored at ``offset`` of a TIFF whose byte order is ``order`` (its offsets
    moved by ``offset``), and its first IFD's entries by tag. A block in the other byte
    order (or damaged) is not stored: only its orientation entry is given, if any."""
    if exif[:2] == (b"II" if order == "<" else b"MM"):
        block = bytearray(exif)
        try:
            (first,) = struct.unpack_from(order + "I", exif, 4)
            _relocate(exif, block, order, first, offset, depth=2)
            entries = _ifd_entries(exif, order, first)
        except struct.error:
            return b"", {}
        return bytes(block), {
            tag: bytes(block[first + 2 + 12 * i : first + 14 + 12 * i])
            for i, (tag, *_) in enumerate(entries)
        }
    try:
        orientation = _exif_orientation(exif)
    except struct.error:
        return b"", {}
    if orientation is None:
        return b"", {}
    value = struct.pack(order + "H", orientation)
    return b"", {_TIFF_ORIENTATION: _tiff_entry(order, _TIFF_ORIENTATION, _SHORT, 1, value)}


def _relocate(exif: bytes, block: bytearray, order: str, ifd: int, delta: int, depth: int) -> None:
    """Add ``delta`` to every offset in the IFD at ``ifd`` of ``exif`` (written into
    ``block``) and in the IFDs it points to, ``depth`` levels down at most."""
    if depth < 0:  # EXIF nests at most IFD0 -> EXIF -> interoperability; stops pointer loops
        raise struct.error("EXIF IFDs nested too deep")
    for index, (tag, _, _, at) in enumerate(_ifd_entries(exif, order, ifd)):
        entry = ifd + 2 + 12 * index
        if tag in _IFD_POINTERS:
            (target,) = struct.unpack_from(order + "I", exif, entry + 8)
            _relocate(exif, block, order, target, delta, depth - 1)
        elif at == entry + 8:
            continue  # the value sits in the entry
        (pointer,) = struct.unpack_from(order + "I", exif, entry + 8)
        struct.pack_into(order + "I", block, entry + 8, pointer + delta)


def _exif_orientation(exif: bytes) -> int | None:
    """The orientation tag's value in ``exif``, if it has one."""
    order = _tiff_order(exif)
    (first,) = struct.unpack_from(order + "I", exif, 4)
    for tag, kind, _, at in _ifd_entries(exif, order, first):
        if tag == _TIFF_ORIENTATION and kind == _SHORT:
            return struct.unpack_from(order + "H", exif, at)[0]
    return None
