"""Real-world training: degraded pairs, the U-Net discriminator, the VGG19 perceptual loss,
and a GAN stage that is killed, resumed, and started from a first stage's EMA weights."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.utils import parametrize

from lightsr.checkpoint import read_state_dict
from lightsr.errors import CheckpointError, ConfigError
from lightsr.train import train
from lightsr.train.batches import load_training_data
from lightsr.train.checkpoints import list_checkpoints, load_checkpoint
from lightsr.train.config import config_from_dict
from lightsr.train.distributed import launched_by_torchrun
from lightsr.train.engine import Trainer, make_perceptual_loss
from lightsr.train.gan import UNetDiscriminatorSN
from lightsr.train.perceptual import (
    PerceptualLoss,
    load_vgg19_features,
    save_random_vgg19,
    vgg19_features,
)
from tests.train.conftest import tiny_config, write_toml
from tests.train.test_kill_resume import train_until_killed

LAYERS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0}


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    return save_random_vgg19(tmp_path_factory.mktemp("vgg") / "vgg19.safetensors", seed=0)


def real_config(root, out, vgg=None, **sections):
    """A tiny config on degraded pairs (stage 1), or with a GAN stage when ``vgg`` is given."""
    raw = tiny_config(root, out, **sections)
    raw["data"].update(degradation="realesrgan", degradation_crop=32)
    raw["train"]["gt_usm"] = True
    raw["val"]["interval"] = 0
    if vgg is not None:
        raw["gan"] = {"enabled": True, "num_feat": 8, "vgg_weights": str(vgg)}
        raw["gan"]["perceptual_layers"] = dict(LAYERS)
    return raw


def start_trainer(raw, resume=None):
    """A Trainer as :func:`lightsr.train.train` sets it up, for inspection before it runs."""
    config = config_from_dict(raw)
    trainer = Trainer(
        config,
        launched_by_torchrun(),
        torch.device("cpu"),
        resume,
        False,
        make_perceptual_loss(config.gan),
    )
    trainer.prepare_data(load_training_data(config, 1), 0.0)
    return trainer


# ----------------------------------------------------------------------------- discriminator


def test_discriminator_judges_every_pixel():
    net = UNetDiscriminatorSN(3, num_feat=8)
    assert net(torch.rand(2, 3, 32, 24)).shape == (2, 1, 32, 24)
    normalised = [name for name, m in net.named_modules() if parametrize.is_parametrized(m)]
    convs = [name for name, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert set(convs) - set(normalised) == {"first", "last"}
    assert len(normalised) == 8


# ----------------------------------------------------------------------------- perceptual loss


def test_vgg19_stack_numbers_layers_like_torchvision():
    keys = list(vgg19_features().state_dict())
    conv_indices = sorted({int(key.split(".")[0]) for key in keys})
    assert conv_indices == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    assert len(vgg19_features("conv2_2")) == 8  # stops at the conv, before its ReLU


def test_perceptual_loss_is_zero_for_identical_images(vgg_file):
    loss = PerceptualLoss(load_vgg19_features(str(vgg_file), "conv3_4"), LAYERS)
    target = torch.rand(1, 3, 32, 32)
    assert loss(target.clone(), target).item() == 0.0
    output = (target + 0.1 * torch.randn_like(target)).requires_grad_(True)
    value = loss(output, target)
    value.backward()
    assert value.item() > 0 and output.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())  # VGG stays frozen


def test_vgg_weights_saved_as_pth_load_too(tmp_path):
    path = save_random_vgg19(tmp_path / "vgg19.pth", seed=1)
    assert len(load_vgg19_features(str(path), "conv1_2")) == 3


def test_missing_vgg_file_is_refused_before_training(tiny_data, tmp_path):
    raw = real_config(tiny_data, tmp_path / "runs", vgg=tmp_path / "absent.pth")
    with pytest.raises(ConfigError, match=r"gan\.vgg_weights") as caught:
        train(config_from_dict(raw), progress=False)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("damage", ["missing", "shape"])
def test_vgg_file_that_is_not_vgg19_is_refused(tmp_path, vgg_file, damage):
    state, _ = read_state_dict(vgg_file)
    if damage == "missing":
        del state["features.16.weight"]  # as in VGG16, whose layer 16 is a max pool
        expected = "no tensor 'features.16.weight'"
    else:
        state["features.0.weight"] = torch.zeros(64, 1, 3, 3)
        expected = r"'features.0.weight' has shape \(64, 1, 3, 3\)"
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match=expected) as caught:
        load_vgg19_features(str(tmp_path / "bad.pth"), "conv5_4")
    assert "\n" not in str(caught.value)


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"degradation": "harsh"}}, "'data.degradation' must be one of"),
        ({"data": {"degradation_options": {"jpeg_rang": [1, 2]}}}, "unknown degradation option"),
        ({"data": {"degradation_options": {"jpeg_range": [9, 2]}}}, "jpeg_range must be"),
        ({"data": {"degradation_crop": 8}}, "'data.degradation_crop' must be at least"),
        ({"data": {"degradation": ""}}, "'train.gt_usm' needs data.degradation"),
        ({"gan": {"vgg_weights": ""}}, "'gan.vgg_weights' is needed"),
        ({"gan": {"perceptual_layers": {"conv6_1": 1.0}}}, "'gan.perceptual_layers' must be"),
        ({"gan": {"d_betas": [0.9]}}, "'gan.d_betas' must hold two numbers"),
        ({"gan": {"d_init_iters": -1}}, "'gan.d_init_iters' must be 0 or more"),
        ({"gan": {"discriminator": "patch"}}, "'gan.discriminator' must be one of unet_sn"),
    ],
)
def test_invalid_real_world_settings_name_the_key(tiny_data, tmp_path, change, message):
    raw = real_config(tiny_data, tmp_path, vgg=tmp_path / "vgg.pth")
    for section, values in change.items():
        raw[section].update(values)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_degradation_options_override_the_preset(tiny_data, tmp_path):
    from lightsr.train.config import degradation_config

    raw = real_config(tiny_data, tmp_path)
    raw["data"]["degradation_options"] = {"jpeg_range": [60, 95], "sinc_prob": 0.0}
    degradation = degradation_config(config_from_dict(raw).data)
    assert degradation.jpeg_range == (60, 95) and degradation.sinc_prob == 0.0


# ----------------------------------------------------------------------------- the two stages


def test_gan_stage_killed_resumes_both_networks(tiny_data, tmp_path, vgg_file):
    raw = real_config(
        tiny_data,
        tmp_path / "runs",
        vgg=vgg_file,
        train={"total_iters": 1000, "checkpoint_interval": 2, "log_interval": 1},
    )
    config_path = write_toml(tmp_path / "stage2.toml", raw)
    run_dir = tmp_path / "runs" / "tiny"
    train_until_killed(config_path, run_dir, tmp_path / "train.log", at_least=2)
    saved = load_checkpoint(list_checkpoints(run_dir)[-1])
    assert saved.discriminator is not None and "d_optimizer" in saved.extra

    raw["train"]["total_iters"] = saved.iteration + 2
    trainer = start_trainer(raw, resume="auto")
    try:
        assert trainer.iteration == saved.iteration
        for key, value in saved.discriminator.items():
            torch.testing.assert_close(trainer.adversary.discriminator.state_dict()[key], value)
        for key, value in saved.model.items():
            torch.testing.assert_close(trainer.model.state_dict()[key], value)
        d_state = trainer.adversary.optimizer.state_dict()["state"]
        for index, moments in saved.extra["d_optimizer"]["state"].items():
            torch.testing.assert_close(d_state[index]["exp_avg"], moments["exp_avg"])
            assert d_state[index]["step"] == moments["step"] > 0
        result = trainer.run()
    finally:
        trainer.batches.close()
    assert result.iterations == saved.iteration + 2
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "loss" in r][-1]
    assert last["iter"] == saved.iteration + 2
    assert {"g_pixel", "g_percep", "g_gan", "d_real", "d_fake"} <= set(last)
    after = load_checkpoint(list_checkpoints(run_dir)[-1]).discriminator
    assert any(not torch.equal(after[k], v) for k, v in saved.discriminator.items())

    # The run's checkpoints hold a discriminator: they do not resume a run without one.
    del raw["gan"]
    with pytest.raises(CheckpointError, match=r"gan\.enabled differs"):
        start_trainer(raw, resume="auto")


def test_stage2_starts_from_stage1_ema(tiny_data, tmp_path, vgg_file):
    stage1 = real_config(tiny_data, tmp_path / "runs", train={"total_iters": 3})
    stage1["name"] = "stage1"
    first = train(config_from_dict(stage1), progress=False)
    ema_file = first.run_dir / "final_ema.safetensors"
    assert first.weights["final_ema"] == ema_file

    stage2 = real_config(tiny_data, tmp_path / "runs", vgg=vgg_file, train={"total_iters": 1})
    stage2["name"] = "stage2"
    stage2["model"]["init_weights"] = str(ema_file)
    trainer = start_trainer(stage2)
    try:
        ema, _ = read_state_dict(ema_file)
        raw_weights, _ = read_state_dict(first.run_dir / "final.safetensors")
        assert not torch.equal(ema["head.weight"], raw_weights["head.weight"])
        for key, value in ema.items():
            torch.testing.assert_close(trainer.model.state_dict()[key], value, msg=key)
    finally:
        trainer.batches.close()


def test_discriminator_trains_alone_for_d_init_iters(tiny_data, tmp_path, vgg_file):
    raw = real_config(tiny_data, tmp_path / "runs", vgg=vgg_file, train={"total_iters": 3})
    raw["gan"]["d_init_iters"] = 2
    trainer = start_trainer(raw)
    try:
        start = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
        d_start = {k: v.clone() for k, v in trainer.adversary.discriminator.state_dict().items()}
        for _ in range(2):
            trainer._step()
            trainer.iteration += 1
        params = dict(trainer.model.named_parameters())
        for key, value in start.items():  # the generator's weights have not moved ...
            torch.testing.assert_close(params[key], value, msg=key)
        d_now = trainer.adversary.discriminator.state_dict()
        assert any(not torch.equal(d_now[k], v) for k, v in d_start.items())  # ... D has
        trainer._step()  # the third iteration trains the generator too
        assert any(not torch.equal(params[k], v) for k, v in start.items())
    finally:
        trainer.batches.close()
