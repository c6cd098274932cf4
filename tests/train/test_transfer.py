"""``model.init_from`` (another scale's weights) and the teacher loss."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lightsr.archs.blocks import PixelShuffleUpsampler
from lightsr.archs.registry import build_model
from lightsr.checkpoint import read_state_dict, save_safetensors
from lightsr.errors import CheckpointError, ConfigError
from lightsr.hub import file_sha256
from lightsr.models import load_model
from lightsr.train import train
from lightsr.train.config import config_from_dict
from lightsr.train.transfer import load_matching
from tests.train.conftest import TINY_FMEN, smooth_image, tiny_config


def tiny_fmen_file(path, scale, seed):
    """A random tiny deploy-form FMEN-S checkpoint with self-describing metadata."""
    torch.manual_seed(seed)
    model = build_model("fmen_s", scale, deploy=True, **TINY_FMEN)
    metadata = {
        "network": "fmen",
        "variant": "fmen_s",
        "scale": str(scale),
        "form": "deploy",
        "overrides": json.dumps(TINY_FMEN),
    }
    return save_safetensors(model.state_dict(), path, metadata), model.state_dict()


def deploy_run(tiny_data, tmp_path, init_from, **train):
    """A raw config: tiny deploy-form FMEN-S x2 started from ``init_from``, no EMA."""
    return tiny_config(
        tiny_data,
        tmp_path / "runs",
        model={"options": {**TINY_FMEN, "deploy": True}, "init_from": str(init_from)},
        val={"interval": 0},
        train={"ema_decay": 0.0, **train},
    )


def test_load_matching_reports_every_key():
    x4 = build_model("fmen_s", 4, deploy=True, **TINY_FMEN).state_dict()
    x4["extra.weight"] = torch.zeros(1)
    x2 = build_model("fmen_s", 2, deploy=True, **TINY_FMEN)
    report = load_matching(x2, x4)
    assert report.resampled == ["tail.0.weight", "tail.0.bias"]
    assert report.unused == ["extra.weight"] and report.missing == report.mismatched == []
    assert len(report.loaded) == len(x2.state_dict()) - 2
    torch.testing.assert_close(x2.state_dict()["head.weight"], x4["head.weight"])
    assert "resampled from another scale: tail.0.weight" in report.summary("x4.pt")

    x4["head.weight"] = x4["head.weight"][:, :2]
    del x4["lr_conv.bias"]
    report = load_matching(x2, x4)
    assert report.mismatched == ["head.weight"] and report.missing == ["lr_conv.bias"]

    with pytest.raises(CheckpointError, match="no tensor"):
        load_matching(x2, {"unrelated": torch.zeros(2)})


def test_init_from_another_scale_trains_the_body_from_x4(tiny_data, tmp_path, capsys):
    source, x4 = tiny_fmen_file(tmp_path / "x4.safetensors", scale=4, seed=1)
    raw = deploy_run(tiny_data, tmp_path, source, total_iters=2)
    raw["optim"]["lr"] = 1e-12
    result = train(config_from_dict(raw), progress=True)
    assert (
        "loaded 26 tensors; resampled from another scale: tail.0.weight" in capsys.readouterr().out
    )
    end, metadata = read_state_dict(result.run_dir / "final.safetensors")
    assert metadata["scale"] == "2" and end["tail.0.weight"].shape[0] == 12
    # The run's weights name what they derive from (a published file adds its licence).
    assert metadata["init_from"] == str(source)
    assert metadata["source_sha256"] == file_sha256(source) and "licence" not in metadata
    for key, value in x4.items():
        if not key.startswith("tail."):
            torch.testing.assert_close(end[key], value, rtol=0, atol=1e-6, msg=key)
    expected = PixelShuffleUpsampler(TINY_FMEN["n_feats"], 2)
    expected.load_resampled_(x4["tail.0.weight"], x4["tail.0.bias"])
    torch.testing.assert_close(end["tail.0.weight"], expected[0].weight, rtol=0, atol=1e-6)

    with pytest.raises(ConfigError, match="init_weights"):
        config_from_dict({**raw, "model": {**raw["model"], "init_weights": str(source)}})


def test_teacher_loss_pulls_the_student_to_the_teacher(tiny_data, tmp_path):
    """With weight 1 the HR images are ignored: the student learns a frozen teacher."""
    student, _ = tiny_fmen_file(tmp_path / "student.safetensors", scale=2, seed=1)
    teacher, _ = tiny_fmen_file(tmp_path / "teacher.safetensors", scale=2, seed=2)
    raw = deploy_run(
        tiny_data, tmp_path, student, total_iters=40, teacher=str(teacher), teacher_weight=1.0
    )
    result = train(config_from_dict(raw), progress=False)
    pixels = smooth_image(np.random.default_rng(3), 20, 20)
    images = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    target = load_model(teacher).upscale(images)
    before = (load_model(student).upscale(images) - target).abs().mean()
    after = load_model(result.run_dir / "deploy_fp16.safetensors").upscale(images) - target
    assert after.abs().mean() < 0.5 * before, (float(before), float(after.abs().mean()))

    raw["model"]["scale"] = 3
    with pytest.raises(ConfigError, match="is x2, not x3"):
        train(config_from_dict({**raw, "name": "wrong_scale"}), progress=False)
