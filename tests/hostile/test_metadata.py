"""EXIF (orientation reset), ICC profile and DPI travel from input to output."""

from __future__ import annotations

import struct
import zlib

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
