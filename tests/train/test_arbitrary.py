"""Arbitrary-scale training: the LIIF/LTE batch recipe, a frozen trunk started from a
fixed-scale checkpoint, and the config rules around ``data.scale_range``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightsr.errors import ConfigError
from lightsr.models import load_model
from lightsr.train import train
from lightsr.train.arbitrary import ArbitraryScaleBatches
from lightsr.train.config import config_from_dict
from tests.conftest import shared_file
from tests.train.conftest import smooth_image, tiny_config
from tests.train.test_gan import start_trainer

HEAD = {"hidden_dim": 16, "mlp_hidden": [16]}


def anyscale_config(root, out, **train_options):
    raw = tiny_config(root, out, train={"total_iters": 6, "checkpoint_interval": 6})
    raw["model"] = {
        "network": "fmen_s_lte",
        "scale": 2,
        "options": dict(HEAD),
        "init_from": str(shared_file("weights/official/FMEN/test_weights.pt")),
        "init_prefix": "encoder.",
        "freeze": ["encoder."],
    }
    raw["data"].update(scale_range=[1.0, 3.0], query_samples=40)
    raw["val"]["interval"] = 0
    raw["train"].update(train_options)
    return raw


def test_batches_follow_the_official_recipe():
    rng = np.random.default_rng(0)
    images = [smooth_image(rng, 40, 50), smooth_image(rng, 31, 29)]
    batches = ArbitraryScaleBatches(images, 8, (1.0, 4.0), 30, 5, True, torch.device("cpu"), 3)
    state = batches.state_dict()
    lr, target, (rows, cols, cell) = batches.next_batch()
    assert lr.shape == (5, 3, 8, 8) and target.shape == (5, 30, 3)
    assert rows.dtype == torch.float64 and rows.shape == cols.shape == (5, 30)
    assert rows.min() > 0 and rows.max() < 8 and cols.min() > 0 and cols.max() < 8
    # cell = 2 / scale, scale in [1, 4]: the HR crop was round(8 s) pixels
    assert cell.shape == (5, 1, 2) and ((cell >= 0.5) & (cell <= 2.0)).all()
    assert target.min() >= 0 and target.max() <= 1
    # The generator state is the whole data order: restoring it repeats the batch.
    batches.load_state_dict(state)
    again = batches.next_batch()
    assert torch.equal(again[0], lr) and torch.equal(again[1], target)


def test_queries_hit_hr_pixel_centres():
    image = np.arange(24 * 24 * 3, dtype=np.uint8).reshape(24, 24, 3)
    batches = ArbitraryScaleBatches([image], 8, (3.0, 3.0), 64, 1, False, torch.device("cpu"), 0)
    _, target, (rows, cols, cell) = batches.next_batch()
    hr_rows = rows * 3 - 0.5  # the crop is the whole 24x24 image at x3
    hr_cols = cols * 3 - 0.5
    assert torch.allclose(hr_rows, hr_rows.round()) and torch.allclose(cell, torch.tensor(2 / 3))
    expected = image[hr_rows.round().long()[0], hr_cols.round().long()[0]] / 255.0
    assert np.allclose(target[0].numpy(), expected, atol=1e-6)


def test_head_trains_on_a_frozen_trunk(tiny_data, tmp_path):
    raw = anyscale_config(tiny_data, tmp_path)
    trainer = start_trainer(raw)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    after = trainer.model.state_dict()
    trunk = [k for k in before if k.startswith("encoder.")]
    head = [k for k in before if not k.startswith("encoder.")]
    assert trunk and all(torch.equal(before[k], after[k]) for k in trunk)
    assert any(not torch.equal(before[k], after[k]) for k in head)
    official = load_model(shared_file("weights/official/FMEN/test_weights.pt")).module
    assert torch.equal(after["encoder.head.weight"], official.state_dict()["head.weight"])


def test_trained_file_is_an_arbitrary_scale_model(tiny_data, tmp_path):
    result = train(config_from_dict(anyscale_config(tiny_data, tmp_path)), progress=False)
    model = load_model(result.run_dir / "final.safetensors")
    assert model.variant == "fmen_s_lte" and model.arbitrary_scale
    out = model.upscale_to(torch.rand(3, 10, 12), (23, 31))
    assert out.shape == (3, 23, 31) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": {"network": "fmen_s", "scale": 2}}, "not: remove it"),
        ({"data": {"scale_range": [2.0, 1.0]}}, "1 <= low <= high"),
        ({"data": {"query_samples": 65}}, "data.lr_patch"),
        ({"model": {"freeze": ["nothing."]}}, "no parameter starts with nothing."),
    ],
)
def test_config_mistakes_are_named(tiny_data, tmp_path, change, message):
    raw = anyscale_config(tiny_data, tmp_path)
    for section, values in change.items():
        raw[section].update(values)
    if change.get("model", {}).get("network") == "fmen_s":
        for key in ("init_prefix", "freeze", "options", "init_from"):
            raw["model"].pop(key)
    with pytest.raises(ConfigError, match=message):
        start_trainer(raw)
