import math

import cv2
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from lightsr.io import read_rgb_uint8
from lightsr.metrics import niqe, psnr, rgb_to_y, ssim


@pytest.fixture
def pair(shared) -> tuple[np.ndarray, np.ndarray]:
    """A real HR image and its JPEG-degraded copy, both uint8 RGB."""
    bgr = cv2.imread(str(shared("data/Set5/HR/butterfly.png")), cv2.IMREAD_COLOR)
    _, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 30])
    degraded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return degraded[..., ::-1].copy(), bgr[..., ::-1].copy()


def _skimage_ssim(a: np.ndarray, b: np.ndarray, channel_axis: int | None = None) -> float:
    # skimage filters with reflected borders and then drops (win_size - 1) // 2 = 5 pixels on
    # each side, which leaves exactly the "valid" region of the 11x11 window.
    return structural_similarity(
        a,
        b,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=channel_axis,
    )


def test_rgb_to_y_known_colours():
    colours = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 0, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(rgb_to_y(colours)[0], [16.0, 235.0, 81.481, 40.966])


def test_rgb_to_y_does_not_round(pair):
    y = rgb_to_y(pair[0])
    assert y.dtype == np.float64
    assert np.any(y != np.round(y))


def test_psnr_matches_direct_formula(pair):
    sr, hr = pair
    border = 4
    y_sr = rgb_to_y(sr)[border:-border, border:-border]
    y_hr = rgb_to_y(hr)[border:-border, border:-border]
    expected = 10 * math.log10(255**2 / np.mean((y_sr - y_hr) ** 2))
    assert psnr(sr, hr, crop_border=border) == pytest.approx(expected, abs=1e-10)

    diff = sr[border:-border, border:-border].astype(float) - hr[border:-border, border:-border]
    expected_rgb = 10 * math.log10(255**2 / np.mean(diff**2))
    assert psnr(sr, hr, border, y_channel=False) == pytest.approx(expected_rgb, abs=1e-10)


def test_psnr_identical_is_infinite(pair):
    assert psnr(pair[1], pair[1], crop_border=2) == math.inf


def test_psnr_float_and_uint8_inputs_agree(pair):
    sr, hr = pair
    assert psnr(sr.astype(np.float32), hr, 3) == pytest.approx(psnr(sr, hr, 3), abs=1e-4)


@pytest.mark.parametrize("border", [0, 4])
def test_ssim_y_matches_skimage(pair, border):
    sr, hr = pair
    y_sr = rgb_to_y(sr)
    y_hr = rgb_to_y(hr)
    if border:
        y_sr = y_sr[border:-border, border:-border]
        y_hr = y_hr[border:-border, border:-border]
    expected = _skimage_ssim(y_sr, y_hr)
    assert ssim(sr, hr, crop_border=border) == pytest.approx(expected, abs=1e-6)


def test_ssim_rgb_matches_skimage_channel_mean(pair):
    sr, hr = pair
    expected = _skimage_ssim(sr[3:-3, 3:-3], hr[3:-3, 3:-3], channel_axis=2)
    assert ssim(sr, hr, crop_border=3, y_channel=False) == pytest.approx(expected, abs=1e-6)


def test_ssim_matches_explicit_window_loop():
    """An independent, loop-based SSIM over every fully-inside 11x11 window."""
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 255, size=(16, 14))
    b = np.clip(a + rng.normal(0, 20, size=a.shape), 0, 255)
    x = np.arange(11) - 5
    g = np.exp(-(x**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i : i + 11, j : j + 11], b[i : i + 11, j : j + 11]
            ma, mb = (window * pa).sum(), (window * pb).sum()
            va = (window * (pa - ma) ** 2).sum()
            vb = (window * (pb - mb) ** 2).sum()
            cov = (window * (pa - ma) * (pb - mb)).sum()
            values.append(
                ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    assert ssim(a, b, crop_border=0) == pytest.approx(np.mean(values), abs=1e-9)


def test_ssim_identical_is_one(pair):
    assert ssim(pair[1], pair[1], crop_border=4) == pytest.approx(1.0, abs=1e-12)


def test_shape_mismatch_is_an_error(pair):
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(pair[0][:-1], pair[1], 0)
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(pair[0], pair[1][:, :-1], 0)


@pytest.fixture
def baboon(shared) -> np.ndarray:
    return read_rgb_uint8(shared("data/Set14/HR/baboon.png"))


def test_niqe_matches_the_matlab_release(baboon):
    # MATLAB R2021a, niqe_release on the Y channel (value published with BasicSR).
    assert niqe(baboon) == pytest.approx(5.72957338, abs=5e-4)


def test_niqe_rises_with_noise(shared):
    clean = read_rgb_uint8(shared("data/Set5/HR/baby.png"))
    noise = np.random.default_rng(0).normal(0, 15, clean.shape)
    noisy = np.clip(clean + noise, 0, 255).round().astype(np.uint8)
    assert niqe(noisy) > niqe(clean) + 1


def test_niqe_input_forms_agree(baboon):
    expected = niqe(baboon)
    assert niqe(baboon.astype(np.float32)) == expected
    # A gray image is scored as is: the rounded Y channel gives the RGB score.
    assert niqe(np.floor(rgb_to_y(baboon) + 0.5)) == pytest.approx(expected, abs=1e-12)


def test_niqe_crop_and_partial_blocks(baboon):
    # 480x500: only the top-left 480x480 (5x5 blocks of 96) is scored.
    assert niqe(baboon[:, :480]) == pytest.approx(niqe(baboon), abs=1e-12)
    assert niqe(baboon, crop_border=4) == pytest.approx(niqe(baboon[4:-4, 4:-4]), abs=1e-12)


def test_niqe_of_a_flat_image_is_nan():
    # No block has both signs of MSCN coefficients, so no block has finite features.
    assert math.isnan(niqe(np.full((192, 192), 128, dtype=np.uint8)))


@pytest.mark.parametrize(
    ("image", "crop_border", "message"),
    [
        (np.zeros((96, 191), dtype=np.uint8), 0, "two 96x96 blocks"),
        (np.zeros((200, 200), dtype=np.uint8), 5, "two 96x96 blocks"),
        (np.zeros((192, 192, 4), dtype=np.uint8), 0, "RGB"),
        (np.zeros((192, 192), dtype=np.uint8), -1, "crop_border"),
    ],
)
def test_niqe_rejects_bad_input(image, crop_border, message):
    with pytest.raises(ValueError, match=message):
        niqe(image, crop_border)
