import math
import shutil

import numpy as np
import pytest
import torch
from torch import nn

from lightsr.archs.registry import ArchSpec, build_model
from lightsr.errors import ImageError, UsageError
from lightsr.evaluate import evaluate
from lightsr.imresize import benchmark_pair, imresize
from lightsr.io import from_float, read_rgb_uint8, to_float, write_image
from lightsr.metrics import niqe, psnr, ssim
from lightsr.models import SRModel, load_model


class MatlabBicubicNet(nn.Module):
    """A "network" that upscales with float MATLAB bicubic, to test the model path end to end."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale
        self.unused = nn.Parameter(torch.zeros(1))  # SRModel reads the device from a parameter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x[0].permute(1, 2, 0).numpy().astype(np.float64)
        up = imresize(image, self.scale)
        return torch.from_numpy(up).permute(2, 0, 1).unsqueeze(0).to(x.dtype)


def _bicubic_model(scale: int) -> SRModel:
    spec = ArchSpec(name="matlab_bicubic_test", family="test", builder=MatlabBicubicNet)
    return SRModel(module=MatlabBicubicNet(scale), spec=spec, scale=scale)


@pytest.mark.parametrize(
    ("dataset", "scale", "expected_psnr", "expected_ssim"),
    [
        ("Set5", 4, 28.43, 0.8111),
        ("Set5", 2, 33.67, 0.9303),
        ("Set14", 4, 26.09, 0.7048),
        ("B100", 4, 25.96, 0.6681),
        ("Set5", 8, 24.40, 0.6580),  # no LR files: made by the rule, as published
    ],
)
def test_bicubic_matches_published_baselines(shared, dataset, scale, expected_psnr, expected_ssim):
    result = evaluate(shared(f"data/{dataset}/HR").parent, scale, progress=False)
    assert result.dataset == dataset
    assert result.model == "bicubic"
    assert result.lr_generated == (scale == 8)
    assert result.lr_rule == "modcrop" and result.border == scale
    assert result.psnr == pytest.approx(expected_psnr, abs=0.01)
    assert result.ssim == pytest.approx(expected_ssim, abs=0.0005)


def test_to_dict_has_exactly_the_documented_keys(set5):
    result = evaluate(set5, 4, progress=False)
    summary = result.to_dict()
    assert list(summary) == [
        "dataset",
        "scale",
        "model",
        "lr_source",
        "lr_rule",
        "border",
        "psnr",
        "ssim",
        "images",
    ]
    assert (summary["lr_source"], summary["lr_rule"], summary["border"]) == (
        "official",
        "modcrop",
        4,
    )
    assert [image["name"] for image in summary["images"]] == [
        "baby",
        "bird",
        "butterfly",
        "head",
        "woman",
    ]
    assert set(summary["images"][0]) == {"name", "psnr", "ssim"}
    assert summary["psnr"] == pytest.approx(np.mean([i["psnr"] for i in summary["images"]]))


def test_missing_lr_folder_is_generated_bit_exactly(tmp_path, set5):
    data = tmp_path / "mini"
    (data / "HR").mkdir(parents=True)
    for name in ("bird", "woman"):
        shutil.copy(set5 / "HR" / f"{name}.png", data / "HR")
    generated = evaluate(data, 3, progress=False)

    (data / "LR_bicubic").mkdir()
    shutil.copytree(set5 / "LR_bicubic" / "X3", data / "LR_bicubic" / "X3")
    official = evaluate(data, 3, progress=False)

    assert generated.lr_generated
    assert not official.lr_generated
    assert (generated.lr_source, official.lr_source) == ("generated", "official")
    assert {**generated.to_dict(), "lr_source": ""} == {**official.to_dict(), "lr_source": ""}


def test_missing_or_wrong_size_lr_file_is_an_error(tmp_path, set5):
    data = tmp_path / "mini"
    (data / "HR").mkdir(parents=True)
    shutil.copy(set5 / "HR" / "bird.png", data / "HR")
    lr_dir = data / "LR_bicubic" / "X4"
    lr_dir.mkdir(parents=True)
    with pytest.raises(ImageError, match="LR image missing"):
        evaluate(data, 4, progress=False)

    lr = read_rgb_uint8(set5 / "LR_bicubic" / "X4" / "birdx4.png")
    write_image(lr_dir / "birdx4.png", lr[:-1])
    with pytest.raises(ImageError, match="should be"):
        evaluate(data, 4, progress=False)


def test_model_path_matches_bicubic_baseline(set5):
    """MATLAB bicubic run as a float "network" lands on the uint8 bicubic baseline."""
    as_model = evaluate(set5, 4, model=_bicubic_model(4), progress=False)
    baseline = evaluate(set5, 4, progress=False)
    assert as_model.model == "matlab_bicubic_test"
    # Only the intermediate rounding differs, which moves PSNR by about a thousandth of a dB.
    assert as_model.psnr == pytest.approx(baseline.psnr, abs=0.01)
    assert as_model.ssim == pytest.approx(baseline.ssim, abs=0.0005)


def test_model_for_another_scale_is_an_error(set5):
    with pytest.raises(UsageError, match="x2, not x4"):
        evaluate(set5, 4, model=_bicubic_model(2), progress=False)


def test_folder_and_scale_errors(tmp_path, set5):
    with pytest.raises(UsageError, match="not found"):
        evaluate(tmp_path / "nope", 4)
    with pytest.raises(UsageError, match="no HR/ folder"):
        evaluate(tmp_path, 4)
    (tmp_path / "HR").mkdir()
    (tmp_path / "HR" / "notes.txt").write_text("no images here")
    with pytest.raises(UsageError, match="no HR images"):
        evaluate(tmp_path, 4)
    for bad_scale in (1, 0, 9, 1.0, 8.5, float("nan")):
        with pytest.raises(UsageError, match="scale"):
            evaluate(set5, bad_scale)


def test_niqe_without_ground_truth_scores_the_upscaled_inputs(lr_folder_no_hr):
    result = evaluate(lr_folder_no_hr, 4, metric="niqe", progress=False)
    assert result.lr_source == "folder"
    assert result.psnr is None and result.ssim is None
    summary = result.to_dict()
    assert list(summary) == ["dataset", "scale", "model", "lr_source", "niqe", "images"]
    assert summary["lr_source"] == "folder"
    assert [set(image) for image in summary["images"]] == [{"name", "niqe"}] * 2
    lr = read_rgb_uint8(lr_folder_no_hr / "bird.png")
    # The whole output is scored, as BasicSR's NIQE script does (crop_border=0).
    assert summary["images"][1] == {"name": "bird", "niqe": niqe(imresize(lr, 4))}
    assert summary["niqe"] == pytest.approx(np.mean([i["niqe"] for i in summary["images"]]))


def test_niqe_with_ground_truth_adds_to_psnr_and_ssim(set5):
    plain = evaluate(set5, 4, progress=False)
    with_niqe = evaluate(set5, 4, metric="niqe", progress=False)
    summary = with_niqe.to_dict()
    assert list(summary)[:6] == ["dataset", "scale", "model", "lr_source", "lr_rule", "border"]
    assert list(summary)[6:] == ["psnr", "ssim", "niqe", "images"]
    assert (summary["psnr"], summary["ssim"]) == (plain.psnr, plain.ssim)
    assert plain.niqe is None
    assert all(5 < image["niqe"] < 12 for image in summary["images"])


def test_metric_errors(tmp_path, lr_folder_no_hr, set5):
    with pytest.raises(UsageError, match="use --metric niqe"):
        evaluate(lr_folder_no_hr, 4)
    with pytest.raises(UsageError, match="metric must be one of psnr, niqe"):
        evaluate(set5, 4, metric="lpips")
    # The x2 output of the 72x72 bird is 144x144: not two 96x96 NIQE blocks.
    with pytest.raises(ImageError, match="too small for NIQE"):
        evaluate(lr_folder_no_hr, 2, metric="niqe", progress=False)


# ---------------------------------------------------------------------------- any scale


@pytest.fixture
def mini_set(tmp_path, set5):
    """Two real HR crops (no LR files) whose sides are not multiples of the scales used;
    their x6 LR inputs are at least 16 pixels wide (smaller ones are padded for encoding)."""
    data = tmp_path / "mini"
    (data / "HR").mkdir(parents=True)
    for name, (height, width) in (("bird", (121, 111)), ("woman", (115, 106))):
        write_image(
            data / "HR" / f"{name}.png",
            read_rgb_uint8(set5 / "HR" / f"{name}.png")[:height, :width],
        )
    return data


@pytest.fixture(scope="module")
def lte_model():
    """fmen_s_lte with fresh weights (seeded): the any-scale path end to end."""
    torch.manual_seed(0)
    return load_model(build_model("fmen_s_lte").eval().state_dict())


def _expected_scores(data, scale, upscale):
    """Per-image PSNR-Y/SSIM-Y by the documented rule, with ``upscale(lr, size)``."""
    scores = []
    for path in sorted((data / "HR").iterdir()):
        hr, lr = benchmark_pair(read_rgb_uint8(path), scale)
        sr = upscale(lr, hr.shape[:2])
        assert sr.shape == hr.shape
        border = math.ceil(scale)
        scores.append((psnr(sr, hr, crop_border=border), ssim(sr, hr, crop_border=border)))
    return scores


@pytest.mark.parametrize("scale", [2.5, 3.7, 6])
def test_bicubic_at_any_scale_follows_the_documented_rule(mini_set, scale):
    result = evaluate(mini_set, scale, progress=False)
    assert result.lr_source == "generated"
    assert result.lr_rule == ("modcrop" if scale == 6 else "liif")
    assert result.border == math.ceil(scale)
    expected = _expected_scores(mini_set, scale, lambda lr, size: imresize(lr, output_shape=size))
    assert [(i.psnr, i.ssim) for i in result.images] == expected
    summary = result.to_dict()
    assert summary["scale"] == scale and summary["border"] == math.ceil(scale)


def test_integer_scale_given_as_float_is_the_integer_scale(set5):
    assert (
        evaluate(set5, 4.0, progress=False).to_dict() == evaluate(set5, 4, progress=False).to_dict()
    )


@pytest.mark.parametrize("scale", [2.5, 3, 6])
def test_arbitrary_scale_model_renders_the_exact_hr_size(mini_set, lte_model, scale):
    result = evaluate(mini_set, scale, model=lte_model, progress=False)
    assert result.model == "fmen_s_lte"
    assert result.lr_rule == ("liif" if scale == 2.5 else "modcrop")

    def whole(lr, size):  # one piece, no tiles: SRModel.upscale_to
        x = torch.from_numpy(to_float(lr)).permute(2, 0, 1)
        out = lte_model.upscale_to(x, size, (float(scale), float(scale)))
        return from_float(out.permute(1, 2, 0).numpy(), np.uint8)

    expected = _expected_scores(mini_set, scale, whole)
    for image, (psnr_value, ssim_value) in zip(result.images, expected, strict=True):
        # Tiled and whole differ by float noise, which may flip a rounded pixel.
        assert image.psnr == pytest.approx(psnr_value, abs=1e-3)
        assert image.ssim == pytest.approx(ssim_value, abs=1e-4)


def test_fixed_scale_model_at_another_scale_points_to_outscale_from(mini_set):
    with pytest.raises(UsageError, match=r"x4, not x2\.5; .* --outscale-from 4"):
        evaluate(mini_set, 2.5, model=_bicubic_model(4), progress=False)
    with pytest.raises(UsageError, match="x4, not x3"):
        evaluate(mini_set, 6, model=_bicubic_model(4), outscale_from=3, progress=False)
    with pytest.raises(UsageError, match="needs a network"):
        evaluate(mini_set, 6, outscale_from=4, progress=False)


@pytest.mark.parametrize("scale", [6, 5.5])
def test_outscale_from_resizes_the_network_output_with_bicubic(mini_set, scale):
    model = _bicubic_model(4)
    result = evaluate(mini_set, scale, model=model, outscale_from=4, progress=False)
    assert result.outscale_from == 4 and result.to_dict()["outscale_from"] == 4

    def network_then_bicubic(lr, size):
        x4 = imresize(to_float(lr).astype(np.float64), 4).astype(np.float32)
        x4 = from_float(x4, np.uint8)
        return imresize(x4, output_shape=size)  # the uint8 output, as Upscaler(outscale=)

    expected = _expected_scores(mini_set, scale, network_then_bicubic)
    actual = [value for image in result.images for value in (image.psnr, image.ssim)]
    assert actual == pytest.approx([value for pair in expected for value in pair], abs=1e-9)
