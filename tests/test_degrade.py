import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lightsr.cli import main
from lightsr.degrade import (
    KERNEL_TYPES,
    PRESETS,
    DegradationConfig,
    degradation_preset,
    degrade,
    filter_image,
    gaussian_kernel,
    generalized_gaussian_kernel,
    plateau_kernel,
    random_blur_kernel,
    sinc_kernel,
)
from lightsr.errors import ConfigError, ImageError
from lightsr.train.degraded import DegradedBatches

SET5_NAMES = ("baby.png", "bird.png", "butterfly.png")


def _offsets(size):
    """(x, y) offsets from the kernel centre, x along columns."""
    half = size // 2
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    return x, y


def _quadratic(size, sigma_x, sigma_y, theta):
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    covariance = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
    x, y = _offsets(size)
    points = np.stack([x, y], axis=-1)
    return np.einsum("...i,ij,...j->...", points, np.linalg.inv(covariance), points)


@pytest.mark.parametrize(
    ("make", "formula"),
    [
        (
            lambda: gaussian_kernel(11, 2.0, 0.7, 0.6),
            lambda: np.exp(-_quadratic(11, 2, 0.7, 0.6) / 2),
        ),
        (lambda: gaussian_kernel(7, 1.3), lambda: np.exp(-_quadratic(7, 1.3, 1.3, 0) / 2)),
        (
            lambda: generalized_gaussian_kernel(13, 1.5, 3.0, -1.0, beta=0.6),
            lambda: np.exp(-0.5 * _quadratic(13, 1.5, 3.0, -1.0) ** 0.6),
        ),
        (
            lambda: plateau_kernel(9, 2.5, 1.0, 2.0, beta=1.7),
            lambda: 1 / (1 + _quadratic(9, 2.5, 1.0, 2.0) ** 1.7),
        ),
    ],
)
def test_shaped_kernels_match_their_formula(make, formula):
    kernel, expected = make(), formula()
    assert kernel.dtype == np.float32
    assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(kernel, expected / expected.sum(), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(("size", "cutoff"), [(7, math.pi / 2), (21, math.pi / 5), (15, 2.9)])
def test_sinc_kernel_matches_the_bessel_formula(size, cutoff):
    x, y = _offsets(size)
    radius = torch.from_numpy(np.hypot(x, y))
    expected = cutoff * torch.special.bessel_j1(cutoff * radius) / (2 * math.pi * radius)
    expected[size // 2, size // 2] = cutoff**2 / (4 * math.pi)
    expected = (expected / expected.sum()).numpy()
    kernel = sinc_kernel(size, cutoff)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(kernel, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", [*KERNEL_TYPES, "sinc"])
def test_random_kernels_of_every_type_sum_to_one(kind):
    probs = tuple(float(kind == k) for k in KERNEL_TYPES) if kind != "sinc" else None
    config = DegradationConfig(
        kernel_prob=probs or PRESETS["realesrgan"].kernel_prob,
        sinc_prob=1.0 if kind == "sinc" else 0.0,
    )
    rng = np.random.default_rng(0)
    for _ in range(20):
        kernel = random_blur_kernel(rng, config, stage=1)
        assert kernel.shape[0] == kernel.shape[1] and kernel.shape[0] in config.kernel_sizes
        assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.isfinite(kernel).all()


@pytest.mark.parametrize(
    "kernel",
    [gaussian_kernel(21, 2.5), gaussian_kernel(7, 0.2), gaussian_kernel(15, 3, 1, 0.5)],
    ids=["iso-separable", "narrow-separable", "aniso"],
)
def test_filter_image_is_a_reflect_101_correlation(kernel):
    image = np.random.default_rng(0).random((40, 50, 3), dtype=np.float32)
    half = kernel.shape[0] // 2
    padded = np.pad(image, ((half, half), (half, half), (0, 0)), mode="reflect")
    expected = np.zeros_like(image, dtype=np.float64)
    for dy, dx in np.ndindex(kernel.shape):
        expected += kernel[dy, dx] * padded[dy : dy + 40, dx : dx + 50]
    np.testing.assert_allclose(filter_image(image, kernel), expected, atol=2e-6)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_degraded_pair_shapes_dtypes_and_range(preset):
    rng = np.random.default_rng(3)
    hr = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    for _ in range(4):
        pair = degrade(hr, 4, PRESETS[preset], rng)
        assert pair.lr.shape == (24, 32, 3)
        assert pair.gt.shape == pair.gt_usm.shape == (96, 128, 3)
        for image in (pair.lr, pair.gt, pair.gt_usm):
            assert image.dtype == np.float32
            assert image.min() >= 0 and image.max() <= 1
        np.testing.assert_array_equal(pair.lr * 255, np.rint(pair.lr * 255))  # 8-bit levels
        np.testing.assert_allclose(pair.gt, hr / 255, atol=1e-6)


def test_degrade_is_independent_of_opencv_threads():
    hr = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    threads = cv2.getNumThreads()
    try:
        cv2.setNumThreads(1)
        one = degrade(hr, 4, PRESETS["realesrgan"], np.random.default_rng(5))
        cv2.setNumThreads(4)
        four = degrade(hr, 4, PRESETS["realesrgan"], np.random.default_rng(5))
    finally:
        cv2.setNumThreads(threads)
    assert one.lr.tobytes() == four.lr.tobytes()
    assert one.gt_usm.tobytes() == four.gt_usm.tobytes()


def test_degrade_refuses_bad_images():
    rng = np.random.default_rng(0)
    with pytest.raises(ImageError, match="multiple of x4"):
        degrade(np.zeros((10, 12, 3), np.uint8), 4, PRESETS["mild"], rng)
    with pytest.raises(ImageError, match="RGB"):
        degrade(np.zeros((8, 8), np.uint8), 4, PRESETS["mild"], rng)


def test_presets_and_overrides():
    assert PRESETS["realesrgan"] == DegradationConfig()
    assert degradation_preset("mild", jpeg_range=(80, 90)).jpeg_range == (80, 90)
    with pytest.raises(ConfigError, match="realesrgan, mild"):
        degradation_preset("heavy")
    with pytest.raises(ConfigError, match="unknown degradation option 'noise'"):
        degradation_preset("realesrgan", noise=3)
    with pytest.raises(ConfigError, match="resize_prob"):
        degradation_preset("realesrgan", resize_prob=(0.5, 0.5, 0.5))
    with pytest.raises(ConfigError, match="noise_range"):
        degradation_preset("realesrgan", noise_range=(5, 1))


def test_degraded_batches_shapes_and_determinism(shared):
    images = [cv2.imread(str(shared(f"data/Set5/HR/{name}")))[..., ::-1] for name in SET5_NAMES]

    def batches(seed):
        with DegradedBatches(images, 4, 16, 3, PRESETS["realesrgan"], seed=seed) as source:
            return [source.next_batch() for _ in range(2)]

    first, again, other = batches(7), batches(7), batches(8)
    lr, gt, gt_usm = first[0]
    assert lr.shape == (3, 3, 16, 16) and gt.shape == gt_usm.shape == (3, 3, 64, 64)
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in (lr, gt, gt_usm))
    assert torch.equal(lr * 255, torch.round(lr * 255))
    for batch, repeat in zip(first, again, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(batch, repeat, strict=True))
    assert not torch.equal(first[0][0], other[0][0])


def test_degraded_batches_close_stops_the_worker():
    images = [np.zeros((40, 40, 3), np.uint8)]
    source = DegradedBatches(images, 2, 8, 2, PRESETS["mild"], seed=0, crop=32)
    assert source.next_batch()[1].shape == (2, 3, 16, 16)
    source.close()
    source.close()
    assert not source._thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        source.next_batch()
    with pytest.raises(ConfigError, match="crop"):
        DegradedBatches(images, 4, 64, 2, PRESETS["mild"], seed=0, crop=128)


@pytest.fixture
def hr_dir(tmp_path, shared):
    folder = tmp_path / "hr"
    folder.mkdir()
    for name in SET5_NAMES:
        shutil.copy(shared(f"data/Set5/HR/{name}"), folder / name)
    return folder


def _degrade_in_subprocess(hr_dir, output, seed):
    command = [sys.executable, "-m", "lightsr", "degrade", str(hr_dir), "-o", str(output)]
    subprocess.run([*command, "--seed", str(seed), "--json"], check=True, capture_output=True)
    return {p.relative_to(output): p.read_bytes() for p in sorted(output.rglob("*.png"))}


def test_same_seed_is_byte_identical_across_processes(tmp_path, hr_dir):
    first = _degrade_in_subprocess(hr_dir, tmp_path / "a", seed=0)
    second = _degrade_in_subprocess(hr_dir, tmp_path / "b", seed=0)
    assert sorted(str(p) for p in first) == [
        "HR/baby.png",
        "HR/bird.png",
        "HR/butterfly.png",
        "LR_degraded/X4/babyx4.png",
        "LR_degraded/X4/birdx4.png",
        "LR_degraded/X4/butterflyx4.png",
    ]
    assert first == second
    # An image's result depends on its name and the seed only, not on the other images.
    (hr_dir / "bird.png").unlink()
    assert main(["degrade", str(hr_dir), "-o", str(tmp_path / "c"), "--json"]) == 0
    baby = Path("LR_degraded/X4/babyx4.png")
    assert (tmp_path / "c" / baby).read_bytes() == first[baby]


def test_other_seed_gives_other_inputs_and_eval_reads_them(tmp_path, hr_dir, capsys):
    for seed, name in ((0, "a"), (1, "b")):
        assert main(["degrade", str(hr_dir), "-o", str(tmp_path / name), "--seed", str(seed)]) == 0
    lr_a = (tmp_path / "a/LR_degraded/X4/birdx4.png").read_bytes()
    assert lr_a != (tmp_path / "b/LR_degraded/X4/birdx4.png").read_bytes()
    assert (tmp_path / "a/HR/bird.png").read_bytes() == (tmp_path / "b/HR/bird.png").read_bytes()
    capsys.readouterr()
    data = str(tmp_path / "a")
    assert main(["eval", "--data", data, "--scale", "4", "--model", "bicubic", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [image["name"] for image in summary["images"]] == ["baby", "bird", "butterfly"]
    # Degraded inputs score far below the bicubic ones of the same images (Set5 x4: 28 dB).
    assert 15 < summary["psnr"] < 27


def test_errors_are_one_line(tmp_path, hr_dir, capsys):
    assert main(["degrade", str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().endswith("missing: no such folder")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep")
    assert main(["degrade", str(hr_dir), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "use --overwrite" in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "HR").exists()
    assert main(["degrade", str(hr_dir), "-o", str(tmp_path / "out"), "--overwrite"]) == 0
    assert (tmp_path / "out/LR_degraded/X4/babyx4.png").is_file()
