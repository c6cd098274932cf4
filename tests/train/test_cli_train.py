from __future__ import annotations

from lightsr.cli import main
from tests.train.conftest import tiny_config, write_toml


def test_train_command_runs_and_reports(tiny_data, tmp_path, capsys):
    config = write_toml(tmp_path / "c.toml", tiny_config(tiny_data, tmp_path / "runs"))
    assert main(["train", str(config), "--set", "train.total_iters=10"]) == 0
    out = capsys.readouterr().out
    assert "iter 5 loss" in out and "it/s" in out
    assert "deploy PSNR-Y:" in out
    assert (tmp_path / "runs" / "tiny" / "deploy_fp16.safetensors").is_file()


def test_config_errors_are_one_line(tiny_data, tmp_path, capsys):
    config = write_toml(tmp_path / "c.toml", tiny_config(tiny_data, tmp_path / "runs"))
    assert main(["train", str(config), "--set", "train.bogus=1"]) == 2
    err = capsys.readouterr().err
    assert err == "lightsr train: error: unknown config key 'train.bogus'\n"
    assert main(["train", str(tmp_path / "missing.toml")]) == 2
    assert "no such config file" in capsys.readouterr().err


def test_unknown_network_is_a_clean_error(tiny_data, tmp_path, capsys):
    raw = tiny_config(tiny_data, tmp_path / "runs", model={"network": "nonet", "options": {}})
    assert main(["train", str(write_toml(tmp_path / "c.toml", raw))]) == 2
    assert "unknown model 'nonet'" in capsys.readouterr().err
