"""EXIF (orientation reset), ICC profile and DPI travel from input to output."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from lightsr.io import read_image, write_image
from lightsr.metadata import Metadata, read_metadata
from tests.hostile import corpus

# A fake but well-formed-enough profile: lightsr copies bytes, it never parses them.
ICC = b"\x00\x00\x02\x0clcms\x02\x10\x00\x00mntrRGB XYZ " + bytes(range(256)) * 300


def _exif(orientation: int) -> bytes:
    """A TIFF-structured EXIF block with Orientation and a Make tag."""
    entries = struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    entries += struct.pack("<HHII", 0x010F, 2, 4, 0x41424300)  # Make "ABC" inline
    return b"II*\x00" + struct.pack("<IH", 8, 2) + entries + struct.pack("<I", 0)


def _png_with_metadata(path, image, orientation):
    data = write_image(path, image).read_bytes()

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    extra = (
        chunk(b"iCCP", b"test\x00\x00" + zlib.compress(ICC))
        + chunk(b"pHYs", struct.pack(">IIB", 11811, 11811, 1))  # 300 dpi
        + chunk(b"eXIf", _exif(orientation))
    )
    path.write_bytes(data[:33] + extra + data[33:])
    return path


@pytest.mark.parametrize("output", ["out.png", "out.jpg"])
def test_png_metadata_is_kept(tmp_path, tiny, cli, output):
    source = _png_with_metadata(tmp_path / "in.png", corpus.photo(), orientation=1)
    assert cli("upscale", source, "-o", tmp_path / output)[0] == 0
    kept = read_metadata(tmp_path / output)
    assert kept.icc == ICC and kept.exif == _exif(1)
    assert kept.dpi == pytest.approx((300, 300), abs=0.5)
    assert read_image(tmp_path / output).shape == (160, 224, 3)


def test_jpeg_exif_orientation_is_reset(tmp_path, tiny, cli):
    # A JPEG whose EXIF says "rotate 90° clockwise" (written raw: read_metadata resets it).
    jpeg = write_image(
        tmp_path / "in.jpg", corpus.photo(40, 56), metadata=Metadata(_exif(6), ICC, (72.0, 72.0))
    )
    assert _exif(6) in jpeg.read_bytes()
    assert cli("upscale", jpeg, "-o", tmp_path / "out.jpg")[0] == 0
    out = tmp_path / "out.jpg"
    assert read_image(out).shape == (224, 160, 3)  # turned upright once, by the reader
    kept = read_metadata(out)
    assert kept.exif == _exif(1) and kept.icc == ICC and kept.dpi == (72.0, 72.0)


def test_damaged_metadata_is_dropped_not_fatal(tmp_path, tiny, cli):
    source = _png_with_metadata(tmp_path / "in.png", corpus.photo(), orientation=1)
    data = bytearray(source.read_bytes())
    start = data.index(b"iCCP") + 10
    data[start : start + 20] = bytes(20)  # the compressed profile no longer inflates
    source.write_bytes(bytes(data))
    assert read_metadata(source) == Metadata()


FORMATS = ["png", "jpg", "webp", "tif"]
MAKE = b"Canon EOS\x00"
DATE = b"2024:01:02 03:04:05\x00"


def _rich_exif(orientation: int) -> bytes:
    """EXIF whose Make string and EXIF sub-IFD (DateTimeOriginal) lie outside the entries:
    offsets that a TIFF output must move."""
    # Header (8), IFD0 at 8 (2 + 3 * 12 + 4 = 42), Make at 50, sub-IFD at 60 (18), date at 78.
    ifd0 = struct.pack("<H", 3)
    ifd0 += struct.pack("<HHII", 0x010F, 2, len(MAKE), 50)
    ifd0 += struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    ifd0 += struct.pack("<HHII", 34665, 4, 1, 60) + struct.pack("<I", 0)
    sub_ifd = struct.pack("<HHHII", 1, 36867, 2, len(DATE), 78) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd0 + MAKE + sub_ifd + DATE


def _tags(data: bytes, offset: int) -> dict[int, tuple[int, int, int]]:
    """tag -> (type, count, value or offset) of the little-endian IFD at ``offset``."""
    (count,) = struct.unpack_from("<H", data, offset)
    entries = (struct.unpack_from("<HHII", data, offset + 2 + 12 * i) for i in range(count))
    return {tag: (kind, number, value) for tag, kind, number, value in entries}


def _orientation(exif: bytes) -> int:
    _, _, value = _tags(exif, struct.unpack_from("<I", exif, 4)[0])[0x0112]
    return value & 0xFFFF


def _decoded(path) -> np.ndarray:
    return cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("source_ext", FORMATS)
@pytest.mark.parametrize("output_ext", FORMATS)
def test_metadata_kept_between_formats(tmp_path, tiny, cli, source_ext, output_ext):
    image = corpus.photo()
    source = write_image(
        tmp_path / f"in.{source_ext}", image, metadata=Metadata(_rich_exif(1), ICC, (300.0, 300.0))
    )
    plain = write_image(tmp_path / f"plain.{source_ext}", image)
    out, out_plain = tmp_path / f"out.{output_ext}", tmp_path / f"out_plain.{output_ext}"
    assert cli("upscale", source, "-o", out)[0] == 0
    assert cli("upscale", plain, "-o", out_plain)[0] == 0
    kept = read_metadata(out)
    assert kept.icc == ICC
    assert kept.exif is not None and _orientation(kept.exif) == 1
    if "tif" not in (source_ext, output_ext):  # TIFF inputs give only the orientation
        assert kept.exif == _rich_exif(1)
    if "webp" in (source_ext, output_ext):  # WebP has no resolution field
        assert kept.dpi is None
    else:
        assert kept.dpi == pytest.approx((300, 300), abs=0.5)
    assert np.array_equal(_decoded(out), _decoded(out_plain))  # the pixels are untouched


def test_tiff_output_moves_exif_offsets(tmp_path, tiny, cli):
    source = write_image(
        tmp_path / "in.png", corpus.photo(), metadata=Metadata(_rich_exif(1), ICC, (300.0, 300.0))
    )
    assert cli("upscale", source, "-o", tmp_path / "out.tif")[0] == 0
    data = (tmp_path / "out.tif").read_bytes()
    tags = _tags(data, struct.unpack_from("<I", data, 4)[0])
    assert list(tags) == sorted(tags)
    _, length, at = tags[0x010F]
    assert data[at : at + length] == MAKE
    _, length, at = tags[34675]
    assert data[at : at + length] == ICC
    _, _, sub_ifd = tags[34665]
    _, length, at = _tags(data, sub_ifd)[36867]
    assert data[at : at + length] == DATE
    assert tags[256][2] == 224 and tags[257][2] == 160  # the encoder's own tags are kept


def test_webp_output_is_extended_format(tmp_path, tiny, cli):
    rgba = corpus.photo(channels=4)
    source = write_image(tmp_path / "in.png", rgba, metadata=Metadata(_exif(1), ICC, None))
    assert cli("upscale", source, "-o", tmp_path / "out.webp")[0] == 0
    data = (tmp_path / "out.webp").read_bytes()
    assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
    chunks, offset = [], 12
    while offset < len(data):
        kind, length = struct.unpack_from("<4sI", data, offset)
        chunks.append((kind, data[offset + 8 : offset + 8 + length]))
        offset += 8 + length + (length & 1)
    assert [kind for kind, _ in chunks] == [b"VP8X", b"ICCP", b"VP8L", b"EXIF"]
    vp8x = chunks[0][1]
    assert vp8x[0] == 0x20 | 0x10 | 0x08  # ICC, alpha, EXIF
    assert int.from_bytes(vp8x[4:7], "little") + 1 == 224
    assert int.from_bytes(vp8x[7:10], "little") + 1 == 160
    assert _decoded(tmp_path / "out.webp").shape == (160, 224, 4)


@pytest.mark.parametrize(("ext", "turned"), [("tif", True), ("png", False), ("webp", False)])
def test_orientation_reset_only_where_pixels_are_turned(tmp_path, tiny, cli, ext, turned):
    # OpenCV turns TIFF pixels upright (as JPEG's); PNG and WebP pixels are read as stored.
    source = write_image(tmp_path / f"in.{ext}", corpus.photo(), metadata=Metadata(_exif(6)))
    assert cli("upscale", source, "-o", tmp_path / "out.png")[0] == 0
    kept = read_metadata(tmp_path / "out.png")
    assert read_image(tmp_path / "out.png").shape == ((224, 160, 3) if turned else (160, 224, 3))
    assert _orientation(kept.exif) == (1 if turned else 6)


def test_looping_exif_is_dropped_from_tiff_output(tmp_path):
    # IFD0's EXIF pointer points back at IFD0: relocating it must stop, not recurse forever.
    loop = b"II*\x00" + struct.pack("<IHHHII", 8, 1, 34665, 4, 1, 8) + struct.pack("<I", 0)
    image = corpus.photo()
    out = write_image(tmp_path / "out.tif", image, metadata=Metadata(loop, ICC, (72.0, 72.0)))
    assert read_metadata(out) == Metadata(None, ICC, (72.0, 72.0))
    assert np.array_equal(read_image(out), image)
