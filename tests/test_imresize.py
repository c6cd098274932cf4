import cv2
import numpy as np
import pytest

from lightsr.imresize import benchmark_pair, benchmark_sizes, contributions, imresize, mod_crop
from tests.conftest import shared_file

SETS = {
    "Set5": ["baby", "bird", "butterfly", "head", "woman"],
    "Set14": [
        "baboon", "barbara", "bridge", "coastguard", "comic", "face", "flowers",
        "foreman", "lenna", "man", "monarch", "pepper", "ppt3", "zebra",
    ],
}  # fmt: skip
OFFICIAL_LR = [
    (dataset, name, scale)
    for dataset, names in SETS.items()
    for name in names
    for scale in (2, 3, 4)
]


def _read_rgb(path) -> np.ndarray:
    """uint8 RGB, grayscale expanded to 3 channels (the BasicSR benchmark convention)."""
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


@pytest.mark.parametrize(("dataset", "name", "scale"), OFFICIAL_LR)
def test_reproduces_official_lr_bit_exactly(dataset, name, scale):
    hr = _read_rgb(shared_file(f"data/{dataset}/HR/{name}.png"))
    lr_path = shared_file(f"data/{dataset}/LR_bicubic/X{scale}/{name}x{scale}.png")
    official = cv2.imread(str(lr_path), cv2.IMREAD_UNCHANGED)

    ours = imresize(mod_crop(hr, scale), 1 / scale)
    # The any-scale benchmark rule is the same rule, bit for bit, at integer scales.
    cropped, lr = benchmark_pair(hr, scale)
    assert np.array_equal(cropped, mod_crop(hr, scale))
    assert np.array_equal(lr, ours)

    assert ours.dtype == np.uint8
    if official.ndim == 2:  # grayscale LR file (Set14 bridge): our 3 channels must agree
        assert np.array_equal(ours[..., 0], ours[..., 1])
        assert np.array_equal(ours[..., 0], ours[..., 2])
        ours = ours[..., 0]
    else:
        official = official[..., ::-1]
    assert ours.shape == official.shape
    assert np.count_nonzero(ours != official) == 0


def test_grayscale_2d_input_matches_official_lr(shared):
    hr = cv2.imread(str(shared("data/Set14/HR/bridge.png")), cv2.IMREAD_UNCHANGED)
    official = cv2.imread(str(shared("data/Set14/LR_bicubic/X3/bridgex3.png")), -1)
    assert hr.ndim == 2
    assert np.array_equal(imresize(mod_crop(hr, 3), 1 / 3), official)


def test_rounding_only_at_the_end_would_not_match(shared):
    """Guards the per-pass rounding: rounding once after both passes gives other pixels."""
    hr = _read_rgb(shared("data/Set5/HR/bird.png"))
    official = _read_rgb(shared("data/Set5/LR_bicubic/X4/birdx4.png"))
    end_rounded = np.floor(imresize(hr.astype(np.float64), 0.25) + 0.5).clip(0, 255)
    assert np.count_nonzero(end_rounded.astype(np.uint8) != official) > 0


def test_upscale_shapes_and_dtypes():
    rng = np.random.default_rng(0)
    image_u8 = rng.integers(0, 256, size=(13, 17, 3), dtype=np.uint8)
    up_u8 = imresize(image_u8, 3)
    assert up_u8.shape == (39, 51, 3)
    assert up_u8.dtype == np.uint8

    up_float = imresize(image_u8.astype(np.float32) / 255, 2)
    assert up_float.shape == (26, 34, 3)
    assert up_float.dtype == np.float32

    gray = imresize(image_u8[..., 0], output_shape=(20, 30))
    assert gray.shape == (20, 30)


def test_upscale_reproduces_a_linear_ramp():
    """Keys' cubic reproduces linear functions exactly away from the borders."""
    ramp = np.tile(np.arange(32, dtype=np.float64), (4, 1))
    up = imresize(ramp, output_shape=(4, 128))
    # Output pixel centres map to input coordinate (j + 0.5) / 4 - 0.5.
    expected = (np.arange(128) + 0.5) / 4 - 0.5
    np.testing.assert_allclose(up[:, 12:-12], np.tile(expected, (4, 1))[:, 12:-12], atol=1e-12)


def test_constant_image_stays_constant():
    image = np.full((9, 11, 3), 77, dtype=np.uint8)
    assert np.all(imresize(image, 0.5) == 77)
    assert np.all(imresize(image, 2.5) == 77)


def test_float_and_uint8_agree(shared):
    hr = _read_rgb(shared("data/Set5/HR/butterfly.png"))
    for scale in (0.5, 2):
        as_float = imresize(hr.astype(np.float64), scale).clip(0, 255)
        as_uint8 = imresize(hr, scale)
        # uint8 is rounded (and saturated) after each pass, so it only approximates float:
        # errors stay around the rounding level, and rare ones near saturated edges.
        error = np.abs(as_float - as_uint8)
        assert error.mean() < 0.35
        assert np.mean(error > 1.5) < 1e-3
    # With a single active pass (height unchanged) rounding the float result is identical.
    one_pass = imresize(hr, output_shape=(256, 100))
    one_pass_float = imresize(hr.astype(np.float64), output_shape=(256, 100))
    assert np.array_equal(one_pass, np.floor(one_pass_float + 0.5).clip(0, 255).astype(np.uint8))


def test_weights_sum_to_one_and_indices_stay_inside():
    for in_len, out_len in [(10, 3), (7, 20), (100, 25)]:
        weights, indices = contributions(in_len, out_len, out_len / in_len)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0)
        assert indices.min() >= 0
        assert indices.max() < in_len


def test_mod_crop():
    image = np.zeros((13, 10, 3))
    assert mod_crop(image, 4).shape == (12, 8, 3)
    assert mod_crop(image[..., 0], 5).shape == (10, 10)


def test_requires_exactly_one_of_scale_and_shape():
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), 2, output_shape=(8, 8))


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [
        # floor(H/s) x floor(W/s), HR cropped to round(h*s) x round(w*s) (Python round).
        ((256, 255), 2.5, ((102, 102), (255, 255))),
        ((256, 256), 3.7, ((69, 69), (255, 255))),
        ((252, 251), 2.5, ((100, 100), (250, 250))),
        ((253, 10), 2.5, ((101, 4), (252, 10))),  # 252.5 rounds to even
        # 81 / 2.7 is 29.999999999999996 in floats: the official +1e-9 guard gives 30.
        ((81, 81), 2.7, ((30, 30), (81, 81))),
    ],
)
def test_benchmark_sizes_follow_the_liif_rule(size, scale, expected):
    assert benchmark_sizes(*size, scale) == expected


def test_benchmark_sizes_at_integer_scales_are_the_mod_crop():
    for scale in (2, 3, 4, 6, 8):
        for height in range(scale, 200):
            (lr, _), (hr, _) = benchmark_sizes(height, height, scale)
            assert (lr, hr) == (height // scale, height - height % scale)


def test_benchmark_pair_at_a_non_integer_scale(shared):
    hr = _read_rgb(shared("data/Set5/HR/bird.png"))  # 288x288
    cropped, lr = benchmark_pair(hr, 3.7)
    assert lr.shape == (77, 77, 3) and lr.dtype == np.uint8
    assert cropped.shape == (285, 285, 3)  # round(77 * 3.7) = 285: a top-left crop
    assert np.array_equal(cropped, hr[:285, :285])
    # MATLAB imresize to the LR size, rounded after each pass (uint8 in, uint8 out).
    assert np.array_equal(lr, imresize(cropped, output_shape=(77, 77)))
    with pytest.raises(ValueError, match=r"no x3\.7 LR pixels"):
        benchmark_pair(hr[:3], 3.7)
