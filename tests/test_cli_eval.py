import json

import pytest
import torch

import lightsr.cli.eval
import lightsr.evaluate
import lightsr.models
from lightsr.api import Upscaler
from lightsr.archs.registry import build_model
from lightsr.checkpoint import save_safetensors
from lightsr.cli import main
from lightsr.evaluate import evaluate
from lightsr.imresize import benchmark_pair
from lightsr.io import read_rgb_uint8, write_image
from lightsr.metrics import psnr
from lightsr.models import load_model
from tests.test_evaluate import _bicubic_model


def test_json_output_is_only_json(capsys, set5):
    assert main(["eval", "--model", "bicubic", "--data", str(set5), "--scale", "4", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["dataset"] == "Set5"
    assert summary["scale"] == 4
    assert summary["model"] == "bicubic"
    assert summary["psnr"] == pytest.approx(28.43, abs=0.01)
    assert summary["ssim"] == pytest.approx(0.8111, abs=0.0005)
    assert len(summary["images"]) == 5


def test_table_output(capsys, set5):
    assert main(["eval", "--model", "bicubic", "--data", str(set5), "--scale", "2"]) == 0
    out = capsys.readouterr().out
    assert "butterfly" in out
    assert "mean" in out
    assert "33.67" in out


def test_weights_are_loaded_and_evaluated(capsys, set5, monkeypatch):
    calls = []

    def fake_load(weights):
        calls.append(weights)
        return _bicubic_model(3)

    monkeypatch.setattr(lightsr.models, "load_model", fake_load)
    args = ["eval", "--weights", "w.safetensors", "--data", str(set5), "--scale", "3", "--json"]
    assert main([*args, "--device", "cpu"]) == 0
    assert calls == ["w.safetensors"]
    assert json.loads(capsys.readouterr().out)["model"] == "matlab_bicubic_test"


def assert_one_error_line(capsys, reason: str) -> None:
    """Nothing on stdout, one `lightsr eval: error:` line naming ``reason`` on stderr."""
    captured = capsys.readouterr()
    assert captured.out == ""
    error_lines = captured.err.splitlines()
    assert len(error_lines) == 1
    assert error_lines[0].startswith("lightsr eval: error:")
    assert reason in error_lines[0]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--data", "/nonexistent", "--scale", "4"], "not found"),
        (["--data", "{set5}", "--scale", "1", "--model", "bicubic"], "scale"),
        (["--data", "{set5}", "--scale", "4", "--model", "x", "--device", "tpu9"], "device"),
        (["--data", "{set5}", "--scale", "8.5", "--model", "bicubic"], "scale"),
        (["--data", "{set5}", "--scale", "6", "--outscale-from", "4"], "needs a network"),
        (["--data", "{set5}", "--scale", "2.5", "--model", "default"], "anyscale"),
        (["--data", "{set5}", "--scale", "6"], "no built-in default model for x6"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(capsys, set5, args, reason):
    args = [a.replace("{set5}", str(set5)) for a in args]
    if "--outscale-from" in args:
        args += ["--model", "bicubic"]
    assert main(["eval", *args]) == 2
    assert_one_error_line(capsys, reason)


def test_niqe_without_ground_truth_json(capsys, lr_folder_no_hr):
    args = ["eval", "--data", str(lr_folder_no_hr), "--metric", "niqe", "--model", "bicubic"]
    assert main([*args, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "bicubic"
    assert "psnr" not in summary
    assert [image["name"] for image in summary["images"]] == ["baby", "bird"]
    assert all(image["niqe"] > 0 for image in summary["images"])


def test_niqe_without_ground_truth_table(capsys, lr_folder_no_hr):
    args = ["eval", "--data", str(lr_folder_no_hr), "--metric", "niqe", "--model", "bicubic"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "NIQE" in out
    assert "PSNR" not in out
    assert "no ground truth" in out


def test_niqe_beside_psnr_with_ground_truth(capsys, set5):
    args = ["eval", "--data", str(set5), "--metric", "niqe", "--model", "bicubic", "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["psnr"] == pytest.approx(28.43, abs=0.01)
    assert set(summary["images"][0]) == {"name", "psnr", "ssim", "niqe"}


@pytest.mark.parametrize(
    ("folder", "args", "reason"),
    [
        ("no_hr", ["--model", "bicubic"], "use --metric niqe"),
        ("empty", ["--metric", "niqe"], "no HR/ folder of ground-truth images and no images"),
    ],
)
def test_metric_errors_print_one_line_and_exit_2(
    capsys, lr_folder_no_hr, tmp_path_factory, folder, args, reason
):
    data = lr_folder_no_hr if folder == "no_hr" else tmp_path_factory.mktemp("empty")
    assert main(["eval", "--data", str(data), *args]) == 2
    assert_one_error_line(capsys, reason)


def test_metric_choices_match_the_library():
    # The CLI keeps its own copy so that `lightsr --help` does not import torch.
    assert lightsr.cli.eval.METRICS == lightsr.evaluate.METRICS


# ---------------------------------------------------------------------------- any scale


@pytest.fixture(scope="module")
def lte_weights(tmp_path_factory):
    """A fmen_s_lte file with fresh (seeded) weights, read by shape like any checkpoint."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("lte") / "lte.safetensors"
    save_safetensors(build_model("fmen_s_lte").state_dict(), path)
    return path


@pytest.fixture
def small_set(tmp_path, set5):
    """Two real HR crops, small enough for a quick any-scale model run."""
    (tmp_path / "HR").mkdir()
    for name in ("bird", "woman"):
        hr = read_rgb_uint8(set5 / "HR" / f"{name}.png")[:120, :110]
        write_image(tmp_path / "HR" / f"{name}.png", hr)
    return tmp_path


@pytest.mark.parametrize(("scale", "rule", "border"), [("6", "modcrop", 6), ("2.5", "liif", 3)])
def test_arbitrary_scale_weights_at_any_scale(capsys, small_set, lte_weights, scale, rule, border):
    args = ["eval", "--weights", str(lte_weights), "--data", str(small_set), "--scale", scale]
    assert main([*args, "--device", "cpu", "--precision", "fp32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "fmen_s_lte" and summary["scale"] == float(scale)
    assert (summary["lr_source"], summary["lr_rule"], summary["border"]) == (
        "generated",
        rule,
        border,
    )
    expected = evaluate(small_set, float(scale), load_model(lte_weights), progress=False)
    assert summary["psnr"] == pytest.approx(expected.psnr, abs=1e-3)


def test_outscale_from_scores_the_x4_model_followed_by_bicubic(capsys, small_set):
    args = ["eval", "--data", str(small_set), "--scale", "6", "--outscale-from", "4"]
    assert main([*args, "--device", "cpu", "--precision", "fp32", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["model"], summary["outscale_from"], summary["lr_rule"]) == (
        "fmen_s",
        4,
        "modcrop",
    )
    # What `lightsr upscale --scale 4 --outscale 6` writes, scored by the x6 rule.
    upscaler = Upscaler(scale=4, outscale=6, device="cpu", precision="fp32")
    for image in summary["images"]:
        hr, lr = benchmark_pair(read_rgb_uint8(small_set / "HR" / f"{image['name']}.png"), 6)
        assert image["psnr"] == pytest.approx(psnr(upscaler(lr), hr, crop_border=6), abs=1e-9)
    bicubic = evaluate(small_set, 6, progress=False)
    assert summary["psnr"] > bicubic.psnr + 0.2  # the trained x4 model helps at x6 too


def test_table_names_the_size_rule_and_the_rounded_border(capsys, small_set):
    assert main(["eval", "--model", "bicubic", "--data", str(small_set), "--scale", "2.5"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "x2.5 — bicubic" in out
    assert "3-pixel border ignored (x2.5 rounded up)" in out
    assert "LR floor(H/2.5) x floor(W/2.5), HR cropped to round(h*2.5) x round(w*2.5)" in out


def test_builtin_anyscale_model(capsys, small_set):
    args = ["eval", "--model", "anyscale", "--data", str(small_set), "--scale", "6"]
    assert main([*args, "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["model"], summary["scale"], summary["lr_rule"]) == ("fmen_s_lte", 6, "modcrop")
