"""The built-in default weights: quality on Set5, size, format and provenance."""

from __future__ import annotations

import pytest
import torch

from lightsr.checkpoint import read_state_dict
from lightsr.evaluate import evaluate
from lightsr.models import (
    builtin_scales,
    builtin_weights_path,
    default_weights_path,
    load_builtin_model,
    load_default_model,
)

# Set5 PSNR-Y floors (issue 19): the official FMEN-S at x4, fine-tuned from it at x2/x3.
SET5_FLOOR = {2: 37.70, 3: 33.90, 4: 32.10}


@pytest.mark.parametrize("scale", sorted(SET5_FLOOR))
def test_default_weights_reach_the_set5_floor(shared, scale):
    result = evaluate(shared("data/Set5/HR").parent, scale, load_default_model(scale), False)
    assert result.psnr >= SET5_FLOOR[scale]


@pytest.mark.parametrize("scale", sorted(SET5_FLOOR))
def test_default_weights_are_small_self_describing_safetensors(scale):
    path = default_weights_path(scale)
    assert path.stat().st_size <= 5 << 20
    tensors, meta = read_state_dict(path)
    assert {tensor.dtype for tensor in tensors.values()} <= {torch.float16, torch.float32}
    assert (meta["variant"], meta["scale"], meta["form"]) == ("fmen_s", str(scale), "deploy")
    # Everything starts from the official FMEN-S x4 file (Apache-2.0), named by its hash.
    assert meta["source_name"] == "fmen_s_x4_official" and meta["licence"] == "Apache-2.0"
    assert meta["source_sha256"].startswith("d5534eba1fea")


def test_builtin_real_photo_model_is_a_fine_tune_of_the_official_ditn_real_gan(shared):
    # Fine-tuned here from the official file (Apache-2.0), with its provenance and hash.
    path = builtin_weights_path("real", 4)
    assert path.stat().st_size <= 5 << 20
    tensors, meta = read_state_dict(path)
    official, _ = read_state_dict(shared("weights/official/DITN/DITN_Real_GAN_x4.pth"))
    assert tensors.keys() == official.keys()
    assert all(tensors[k].shape == official[k].shape for k in tensors)
    # A short GAN fine-tune anchored to the official output: close to it, but moved.
    moved = sum((tensors[k].float() - official[k]).square().sum() for k in tensors).sqrt()
    size = sum(official[k].square().sum() for k in official).sqrt()
    assert 0 < moved / size < 0.05
    assert (meta["variant"], meta["scale"], meta["licence"]) == ("ditn_real", "4", "Apache-2.0")
    assert meta["source_name"] == "ditn_real_gan_x4_official"
    assert meta["source_sha256"].startswith("a103f07b5c60")
    assert "configs/real/ditn_real_gan_anchored.toml" in meta["recipe"]
    assert builtin_scales("real") == (4,)
    assert load_builtin_model("real", 4).variant == "ditn_real"
