"""The sizes the server checks uploads against before decoding them: the header of every
format variant OpenCV writes (:func:`lightsr.imageinfo.image_info`), and what is not one."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lightsr.errors import ImageError
from lightsr.imageinfo import image_info
from lightsr.io import encode_image

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
def test_size_of_every_format(extension, channels, dtype, params, width, height):
    shape = (height, width) if channels == 1 else (height, width, channels)
    image = np.random.default_rng(0).integers(0, 200, shape).astype(dtype)
    ok, data = cv2.imencode(extension, image, params)
    assert ok
    info = image_info(data.tobytes())
    assert (info.width, info.height) == (width, height)


def test_size_of_lightsr_output():
    data = encode_image(np.zeros((5, 7, 3), np.uint8), ".png").tobytes()
    assert (image_info(data).width, image_info(data).height) == (7, 5)


def test_top_down_bmp_has_a_positive_height():
    data = bytearray(cv2.imencode(".bmp", np.zeros((6, 4, 3), np.uint8))[1].tobytes())
    data[22:26] = (-6).to_bytes(4, "little", signed=True)
    info = image_info(bytes(data))
    assert (info.width, info.height) == (4, 6)


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
def test_what_is_not_a_whole_header_is_refused(data):
    with pytest.raises(ImageError):
        image_info(data)
