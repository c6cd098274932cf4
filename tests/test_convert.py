"""``lightsr convert``: canonical safetensors that load back to the same model."""

from __future__ import annotations

import torch
from safetensors import safe_open

import lightsr
from lightsr.cli import main
from lightsr.convert import convert_checkpoint
from tests.conftest import shared_file


def _same_outputs(a, b) -> None:
    x = torch.rand(1, 3, 20, 23)
    assert torch.equal(a.upscale(x), b.upscale(x))


def test_convert_official_emt_round_trip(tmp_path):
    source = shared_file("weights/official/EMT/EMT_LSR_x3.pth")
    out = tmp_path / "emt_x3.safetensors"
    original = convert_checkpoint(source, out)
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert len(list(f.keys())) == 476
    assert (meta["family"], meta["variant"], meta["scale"]) == ("emt", "emt", "3")
    assert (meta["form"], meta["config"], meta["source"]) == ("single", "{}", "EMT_LSR_x3.pth")
    assert meta["source_name"] == "emt_x3_official" and meta["licence"] == "MIT"
    assert meta["source_sha256"].startswith("04991327b0ea")
    assert meta["source_url"].startswith("https://github.com/Fried-Rice-Lab/EMT/raw/")
    reloaded = lightsr.load_model(out)
    assert (reloaded.variant, reloaded.scale) == ("emt", 3)
    _same_outputs(original, reloaded)


def test_convert_keeps_non_default_architecture(tmp_path):
    torch.manual_seed(0)
    module = lightsr.build_model("emt", 2, n_blocks=2, n_layers=4)
    source = tmp_path / "small.pth"
    torch.save({"params": module.state_dict()}, source)
    out = tmp_path / "small.safetensors"
    original = convert_checkpoint(source, out)
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["config"] == '{"n_blocks": 2, "n_layers": 4}'
    assert "source_name" not in meta and len(meta["source_sha256"]) == 64
    reloaded = lightsr.load_model(out)
    assert len(reloaded.module.body) == 2 and len(reloaded.module.body[0].sa_list) == 4
    _same_outputs(original, reloaded)


def test_cli_convert(tmp_path, capsys):
    source = shared_file("weights/official/EMT/EMT_LSR_x2.pth")
    out = tmp_path / "emt.safetensors"
    assert main(["convert", str(source), str(out), "--half"]) == 0
    assert "emt x2" in capsys.readouterr().out
    with safe_open(str(out), "pt") as f:
        assert f.get_tensor("head.weight").dtype == torch.float16
    assert lightsr.load_model(out).scale == 2
    assert main(["convert", str(source), str(tmp_path / "emt.pth")]) == 2
    assert ".safetensors" in capsys.readouterr().err


def test_cli_convert_missing_input_is_one_line_error(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "gone.pth"), str(tmp_path / "o.safetensors")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
