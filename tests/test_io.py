import os
import struct

import cv2
import numpy as np
import pytest
import torch

from lightsr.errors import ImageError
from lightsr.io import (
    from_float,
    image_to_tensor,
    read_image,
    read_rgb_uint8,
    tensor_to_image,
    to_float,
    write_image,
)


@pytest.fixture
def bird(shared) -> np.ndarray:
    """A real RGB photo (288x288) read with plain OpenCV, in RGB order."""
    bgr = cv2.imread(str(shared("data/Set5/HR/bird.png")), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(bgr[..., ::-1])


@pytest.fixture
def woman(shared) -> np.ndarray:
    """A non-square RGB photo (344x228), to see rotations."""
    return read_image(shared("data/Set5/HR/woman.png"))


def _exif_orientation_segment(orientation: int) -> bytes:
    """A JPEG APP1 segment holding a little-endian EXIF IFD0 with only the Orientation tag."""
    ifd_entry = struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)  # tag, SHORT, count, value
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + ifd_entry + b"\0" * 4
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def _no_temp_files(folder) -> bool:
    return not [p for p in os.listdir(folder) if p.endswith(".tmp")]


def test_read_png_is_rgb_uint8(shared, bird):
    image = read_image(shared("data/Set5/HR/bird.png"))
    assert image.dtype == np.uint8
    assert image.shape == (288, 288, 3)
    assert np.array_equal(image, bird)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".bmp", ".webp"])
def test_lossless_round_trip_8bit(tmp_path, bird, suffix):
    path = write_image(tmp_path / f"bird{suffix}", bird)
    assert np.array_equal(read_image(path), bird)


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_round_trip_16bit_keeps_values_above_255(tmp_path, bird, suffix):
    deep = bird.astype(np.uint16) * 257 + 3
    assert deep.max() > 255
    back = read_image(write_image(tmp_path / f"deep{suffix}", deep))
    assert back.dtype == np.uint16
    assert np.array_equal(back, deep)


@pytest.mark.parametrize("channels", [3, 4])
@pytest.mark.parametrize("writeable", [True, False])
def test_write_leaves_the_callers_array_unchanged(tmp_path, bird, channels, writeable):
    image = np.ascontiguousarray(np.dstack([bird, bird[..., :1]])[..., :channels])
    original = image.copy()
    image.flags.writeable = writeable
    back = read_image(write_image(tmp_path / "out.png", image))
    assert np.array_equal(image, original)
    assert np.array_equal(back, original)
    # Also when encoding fails after the in-place channel swap.
    with pytest.raises(ImageError):
        write_image(tmp_path / "out.webp", image, quality=0)
    assert np.array_equal(image, original)


def test_16bit_to_8bit_only_format_is_an_error(tmp_path, bird):
    with pytest.raises(ImageError, match="16-bit"):
        write_image(tmp_path / "deep.jpg", bird.astype(np.uint16))
    assert list(tmp_path.iterdir()) == []


def test_gray_round_trip(tmp_path, bird):
    gray = bird[..., 1].copy()
    back = read_image(write_image(tmp_path / "gray.png", gray))
    assert back.shape == gray.shape
    assert np.array_equal(back, gray)
    # A (H, W, 1) array is written as gray too.
    assert read_image(write_image(tmp_path / "gray1.png", gray[..., None])).ndim == 2


@pytest.mark.parametrize("suffix", [".png", ".webp"])
def test_rgba_round_trip(tmp_path, bird, suffix):
    # No fully transparent pixels: lossless WebP may drop the colour of those.
    alpha = np.linspace(1, 255, bird.shape[1]).astype(np.uint8)[None, :].repeat(288, axis=0)
    rgba = np.dstack([bird, alpha])
    back = read_image(write_image(tmp_path / f"rgba{suffix}", rgba))
    assert back.shape == (288, 288, 4)
    assert np.array_equal(back, rgba)


def test_rgba_as_jpeg_is_an_error(tmp_path, bird):
    with pytest.raises(ImageError, match="alpha"):
        write_image(tmp_path / "rgba.jpg", np.dstack([bird, bird[..., :1]]))


def test_jpeg_quality_and_channel_order(tmp_path, bird):
    good = read_image(write_image(tmp_path / "q95.jpg", bird, quality=95))
    poor = read_image(write_image(tmp_path / "q20.jpeg", bird, quality=20))
    good_error = np.abs(good.astype(float) - bird).mean()
    poor_error = np.abs(poor.astype(float) - bird).mean()
    assert good_error < 3  # close to the original, so channels were not swapped
    assert poor_error > good_error


def test_jpeg_exif_orientation_is_applied(tmp_path, woman):
    plain_path = write_image(tmp_path / "plain.jpg", woman, quality=90)
    plain = read_image(plain_path)
    data = plain_path.read_bytes()
    rotated_path = tmp_path / "rotated.jpg"
    # APP1 goes right after the SOI marker.
    rotated_path.write_bytes(data[:2] + _exif_orientation_segment(6) + data[2:])

    rotated = read_image(rotated_path)
    assert rotated.shape == (228, 344, 3)
    # Orientation 6: the stored image must be turned 90° clockwise for display.
    assert np.array_equal(rotated, np.rot90(plain, k=-1))


def test_gray_jpeg_stays_gray(tmp_path, bird):
    back = read_image(write_image(tmp_path / "gray.jpg", bird[..., 0].copy()))
    assert back.shape == (288, 288)


def test_read_rgb_uint8_conventions(tmp_path, bird):
    gray = read_rgb_uint8(write_image(tmp_path / "g.png", bird[..., 0].copy()))
    assert gray.shape == (288, 288, 3)
    assert np.array_equal(gray[..., 0], gray[..., 2])
    rgba = read_rgb_uint8(write_image(tmp_path / "a.png", np.dstack([bird, bird[..., :1]])))
    assert np.array_equal(rgba, bird)
    deep = read_rgb_uint8(write_image(tmp_path / "d.png", bird.astype(np.uint16) * 257))
    assert deep.dtype == np.uint8
    assert np.array_equal(deep, bird)


def _assert_clean_image_error(capfd, path, reason):
    with pytest.raises(ImageError) as info:
        read_image(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert reason in message
    assert capfd.readouterr().err == ""


def test_missing_file(capfd, tmp_path):
    _assert_clean_image_error(capfd, tmp_path / "nope.png", "not found")


def test_empty_file(capfd, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    _assert_clean_image_error(capfd, tmp_path / "empty.png", "empty")


def test_folder(capfd, tmp_path):
    _assert_clean_image_error(capfd, tmp_path, "folder")


def test_text_renamed_png(capfd, tmp_path):
    (tmp_path / "notes.png").write_text("just some text, not pixels\n")
    _assert_clean_image_error(capfd, tmp_path / "notes.png", "not a supported image")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".webp", ".bmp"])
def test_truncated_files(capfd, tmp_path, bird, suffix):
    data = write_image(tmp_path / f"full{suffix}", bird).read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    _assert_clean_image_error(capfd, path, "truncated")


def test_write_creates_parents_and_leaves_no_temp_files(tmp_path, bird):
    path = write_image(tmp_path / "a" / "b" / "out.png", bird)
    assert path.is_file()
    assert os.listdir(path.parent) == ["out.png"]


def test_failed_write_keeps_old_file_and_no_temp(tmp_path, bird, monkeypatch):
    path = write_image(tmp_path / "out.png", bird)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ImageError, match="No space left"):
        write_image(path, bird[::2, ::2])
    assert path.read_bytes() == before
    assert _no_temp_files(tmp_path)


def test_unknown_extension_and_dtype(tmp_path, bird):
    with pytest.raises(ImageError, match="extension"):
        write_image(tmp_path / "x.gif", bird)
    with pytest.raises(ImageError, match="float32"):
        write_image(tmp_path / "x.png", bird.astype(np.float32))
    assert list(tmp_path.iterdir()) == []


def test_float_conversions(bird):
    as_float = to_float(bird)
    assert as_float.dtype == np.float32
    assert as_float.max() <= 1.0
    assert np.array_equal(from_float(as_float, np.uint8), bird)

    deep = bird.astype(np.uint16) * 257
    assert np.array_equal(from_float(to_float(deep), np.uint16), deep)

    out_of_range = np.array([-0.2, 0.5, 1.7, 0.2 / 255], dtype=np.float32)
    assert from_float(out_of_range, np.uint8).tolist() == [0, 128, 255, 0]


def test_tensor_conversions(bird):
    image = to_float(bird)
    tensor = image_to_tensor(image)
    assert tensor.shape == (1, 3, 288, 288)
    assert tensor.dtype == torch.float32
    assert torch.equal(tensor[0, 0], torch.from_numpy(image[..., 0]))
    assert np.array_equal(tensor_to_image(tensor), image)
    assert tensor_to_image(tensor[0]).shape == (288, 288, 3)
    assert image_to_tensor(image[..., 0]).shape == (1, 1, 288, 288)
