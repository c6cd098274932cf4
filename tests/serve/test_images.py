"""Image sizes from file headers: every format the server takes, and what is not one."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lightsr.io import encode_image
from lightsr.serve.images import header_size

# (extension, channels, dtype, OpenCV encoder parameters): the variants of each format that
# declare their size differently (JPEG baseline/progressive, WebP lossy/lossless/extended).
CASES = [
    (".png", 3, np.uint8, []),
    (".png", 1, np.uint16, []),
    (".jpg", 3, np.uint8, []),
    (".jpg", 1, np.uint8, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    (".webp", 3, np.uint8, [cv2.IMWRITE_WEBP_QUALITY, 80]),
    (".webp", 3, np.uint8, [cv2.IMWRITE_WEBP_QUALITY, 101]),
    (".webp", 4, np.uint8, [cv2.IMWRITE_WEBP_QUALITY, 80]),
    (".bmp", 3, np.uint8, []),
    (".tif", 3, np.uint8, []),
    (".tif", 1, np.uint16, []),
]


@pytest.mark.parametrize(("extension", "channels", "dtype", "params"), CASES)
@pytest.mark.parametrize(("width", "height"), [(37, 21), (300, 2)])
def test_header_size_of_every_format(extension, channels, dtype, params, width, height):
    shape = (height, width) if channels == 1 else (height, width, channels)
    image = np.random.default_rng(0).integers(0, 200, shape).astype(dtype)
    ok, data = cv2.imencode(extension, image, params)
    assert ok
    assert header_size(data.tobytes()) == (width, height)


def test_header_size_of_lightsr_output():
    data = encode_image(np.zeros((5, 7, 3), np.uint8), ".png").tobytes()
    assert header_size(data) == (7, 5)


def test_top_down_bmp_has_a_positive_height():
    data = bytearray(cv2.imencode(".bmp", np.zeros((6, 4, 3), np.uint8))[1].tobytes())
    data[22:26] = (-6).to_bytes(4, "little", signed=True)
    assert header_size(bytes(data)) == (4, 6)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"hello",
        b"\x89PNG\r\n\x1a\n",  # a signature and nothing else
        b"\xff\xd8\xff\xe0\x00\x10JFIF",  # a JPEG cut before its frame header
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"II*\x00\x08\x00\x00\x00",  # a TIFF whose directory is missing
        b"BM\x00",
    ],
)
def test_header_size_of_what_is_not_a_whole_header(data):
    assert header_size(data) is None
