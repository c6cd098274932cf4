from __future__ import annotations

import pytest

from lightsr.errors import ConfigError
from lightsr.paths import shared_dir
from lightsr.train.config import (
    apply_override,
    config_from_dict,
    config_to_toml,
    expand_path,
    load_config,
)
from tests.train.conftest import tiny_config


@pytest.fixture
def raw(tmp_path):
    return tiny_config(tmp_path, tmp_path / "runs")


@pytest.mark.parametrize(
    ("section", "key", "shown"),
    [
        (None, "nmae", "'nmae'"),
        ("data", "batchsize", "'data.batchsize'"),
        ("train", "max_minute", "'train.max_minute'"),
    ],
)
def test_unknown_key_is_named(raw, section, key, shown):
    (raw[section] if section else raw)[key] = 1
    with pytest.raises(ConfigError, match=f"unknown config key {shown}"):
        config_from_dict(raw)


def test_unknown_section_is_named(raw):
    raw["optimizer"] = {"lr": 1.0}
    with pytest.raises(ConfigError, match="unknown config key 'optimizer'"):
        config_from_dict(raw)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("data", "batch_size", "8", "'data.batch_size' must be int"),
        ("data", "batch_size", True, "'data.batch_size' must be an integer"),
        ("data", "hr_dirs", "a", "'data.hr_dirs' must be a list"),
        ("optim", "name", "sgd", "'optim.name' must be one of adam, adamw"),
        ("optim", "betas", [0.9], "'optim.betas' must hold two numbers"),
        ("schedule", "milestones", [5, 3], "'schedule.milestones' must be increasing"),
        ("train", "precision", "fp8", "'train.precision' must be one of"),
        ("train", "ema_decay", 1.0, "'train.ema_decay' must be in"),
    ],
)
def test_invalid_values(raw, section, key, value, message):
    raw[section][key] = value
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_section_must_be_a_table(raw):
    raw["train"] = 3
    with pytest.raises(ConfigError, match="train must be a table"):
        config_from_dict(raw)


def test_a_budget_is_required(raw):
    raw["train"]["total_iters"] = 0
    with pytest.raises(ConfigError, match="max_minutes must be set"):
        config_from_dict(raw)


def test_network_is_required(raw):
    del raw["model"]["network"]
    with pytest.raises(ConfigError, match=r"'model\.network' is required"):
        config_from_dict(raw)


def test_ints_are_accepted_for_floats(raw):
    raw["optim"]["lr"] = 1
    assert config_from_dict(raw).optim.lr == 1.0


def test_overrides_parse_toml_values():
    raw = {"train": {"total_iters": 5}}
    apply_override(raw, "train.total_iters=7")
    apply_override(raw, "model.options={ deploy = true }")
    apply_override(raw, "name=plain text")
    assert raw == {
        "train": {"total_iters": 7},
        "model": {"options": {"deploy": True}},
        "name": "plain text",
    }
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_override(raw, "train.total_iters")


def test_path_expansion(monkeypatch):
    monkeypatch.delenv("LIGHTSR_SHARED", raising=False)
    monkeypatch.setenv("MY_DATA", "/data")
    assert expand_path("${MY_DATA}/X${scale}", 3) == "/data/X3"
    assert expand_path("${LIGHTSR_SHARED}/a", 2) == f"{shared_dir()}/a"
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        expand_path("${NOT_SET_ANYWHERE}/a", 2)


def test_load_config_with_overrides_and_round_trip(tmp_path, raw):
    path = tmp_path / "c.toml"
    path.write_text(config_to_toml(config_from_dict(raw)), encoding="utf-8")
    config = load_config(path, ["train.total_iters=33", "data.hr_dirs=['${scale}x']"])
    assert config.train.total_iters == 33
    assert config.data.hr_dirs == ["2x"]
    again = tmp_path / "again.toml"
    again.write_text(config_to_toml(config), encoding="utf-8")
    assert load_config(again) == config
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.itres'"):
        load_config(path, ["train.itres=3"])


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)


def test_shipped_configs_are_valid(monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("LIGHTSR_SHARED", "/shared")
    monkeypatch.setenv("LIGHTSR_DATA", "/data")
    configs = {p.stem: p for p in (Path(__file__).parents[2] / "configs").glob("*.toml")}
    recipes = ("default_x2", "default_x3", "default_x4", "esc", "esc_light", "esc_fp", "emt")
    for recipe in (*recipes, "fmen_s", "ditn_real"):
        assert recipe in configs
    for stem, path in configs.items():
        config = load_config(path)
        assert config.name in (stem, f"{stem}_x{config.model.scale}"), path
        assert all(d.startswith(("/shared/", "/data/")) for d in config.data.hr_dirs), path


def test_real_world_configs_chain_their_two_stages(monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("LIGHTSR_SHARED", "/shared")
    folder = Path(__file__).parents[2] / "configs" / "real"
    for network in ("fmen_s", "ditn_real", "esc_real", "emt"):
        stage1 = load_config(folder / f"{network}_stage1.toml")
        stage2 = load_config(folder / f"{network}_stage2_gan.toml")
        assert stage1.model.network == stage2.model.network == network
        assert stage1.data.degradation == stage2.data.degradation == "realesrgan"
        assert stage1.train.gt_usm and stage2.train.gt_usm
        assert not stage1.gan.enabled and stage2.gan.enabled
        assert stage1.train.ema_decay == stage2.train.ema_decay == 0.999
        assert stage2.model.init_weights == str(stage1.run_dir / "final_ema.safetensors")
        assert stage1.model.options == stage2.model.options
        assert all(d.startswith("/shared/data/train/") for d in stage1.data.hr_dirs)
