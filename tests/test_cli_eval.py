import json

import pytest

import lightsr.cli.eval
import lightsr.evaluate
import lightsr.models
from lightsr.cli import main
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


def test_weights_are_resolved_and_evaluated(capsys, set5, monkeypatch):
    calls = []

    def fake_resolve(model, weights, scale):
        calls.append((model, weights, scale))
        return _bicubic_model(scale)

    monkeypatch.setattr(lightsr.models, "resolve_model", fake_resolve)
    args = ["eval", "--weights", "w.safetensors", "--data", str(set5), "--scale", "3", "--json"]
    assert main([*args, "--device", "cpu"]) == 0
    assert calls == [(None, "w.safetensors", 3)]
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
    ],
)
def test_user_errors_print_one_line_and_exit_2(capsys, set5, args, reason):
    args = [a.replace("{set5}", str(set5)) for a in args]
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
