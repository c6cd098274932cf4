"""EMT: golden parity with the official code, parameter counts, gradients, detection."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import lightsr
from lightsr.archs.emt import (
    copy_rolled,
    one_hot_shift_mask,
    shift_channel_groups,
    shift_channel_groups_fast,
)
from lightsr.checkpoint import read_state_dict
from lightsr.errors import CheckpointError
from tests.conftest import shared_file

TRAINABLE_PARAMS = {2: 670_572, 3: 678_687, 4: 690_048}


def _official(scale: int):
    return shared_file(f"weights/official/EMT/EMT_LSR_x{scale}.pth")


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_matches_official_golden_outputs(scale):
    golden = load_file(shared_file(f"golden/emt_x{scale}.safetensors"))
    model = lightsr.load_model(_official(scale))
    assert (model.variant, model.name, model.scale) == ("emt", "emt", scale)
    with torch.no_grad():
        for case in ("a", "b"):
            out = model.module(golden[f"input_{case}"])
            expected = golden[f"output_{case}"]
            assert out.shape == expected.shape
            assert (out - expected).abs().max().item() / 255.0 <= 1e-4


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_parameter_count_and_state_dict_keys(scale):
    module = lightsr.build_model("emt", scale)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert trainable == TRAINABLE_PARAMS[scale]
    official, _ = read_state_dict(_official(scale))
    assert len(official) == 476
    assert list(module.state_dict()) == list(official)


@pytest.mark.parametrize("interleaved, pad_mode", [(False, "constant"), (True, "circular")])
def test_shift_equals_official_one_hot_depthwise_conv(interleaved, pad_mode):
    x = torch.randn(2, 20, 7, 9)
    mask = one_hot_shift_mask(20, interleaved)
    reference = F.conv2d(F.pad(x, (1, 1, 1, 1), mode=pad_mode), mask, groups=20)
    assert torch.equal(shift_channel_groups(x, interleaved, pad_mode, mask), reference)


@pytest.mark.parametrize("interleaved, pad_mode", [(False, "constant"), (True, "circular")])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_shift_is_bit_exact(interleaved, pad_mode, channels_last):
    x = torch.randn(2, 20, 7, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    mask = one_hot_shift_mask(20, interleaved)
    fast = shift_channel_groups_fast(x, mask, interleaved, circular=pad_mode == "circular")
    assert torch.equal(fast, shift_channel_groups(x, interleaved, pad_mode, mask))


@pytest.mark.parametrize("offset", [(3, 5), (-3, -5), (0, 0), (10, 12)])
def test_copy_rolled_is_a_cropped_roll(offset):
    src = torch.randn(2, 3, 10, 12)
    dst = torch.empty(2, 3, 8, 9)
    copy_rolled(dst, src, offset)
    expected = torch.roll(src, (-offset[0], -offset[1]), dims=(2, 3))[..., :8, :9]
    assert torch.equal(dst, expected)


def test_masks_in_checkpoint_are_the_expected_pattern():
    official, _ = read_state_dict(_official(2))
    assert torch.equal(official["body.0.sa_list.2.token_mixer.mask"], one_hot_shift_mask(60, True))
    assert torch.equal(official["body.3.mlp_list.1.fc2.mask"], one_hot_shift_mask(120, False))


def test_wrong_mask_is_rejected_at_load():
    state_dict = lightsr.build_model("emt", 2, n_blocks=1).state_dict()
    state_dict["body.0.mlp_list.0.fc1.mask"] = torch.roll(
        state_dict["body.0.mlp_list.0.fc1.mask"], 1, dims=0
    )
    with pytest.raises(CheckpointError, match="mask"):
        lightsr.load_model(state_dict)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    module = lightsr.build_model("emt", 2, n_blocks=1).train()
    x = torch.rand(2, 3, 20, 24) * 255
    module(x).square().mean().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_detects_non_default_depth_and_smallest_input():
    torch.manual_seed(0)
    module = lightsr.build_model("emt", 3, n_blocks=2, n_layers=3).eval()
    loaded = lightsr.load_model(module.state_dict())
    assert loaded.scale == 3 and len(loaded.module.body) == 2
    x = torch.rand(1, 3, 17, 17) * 255  # min_size: window 32 reflect padding needs > 16
    with torch.no_grad():
        out = loaded.module(x)
        assert torch.equal(out, module(x))
    assert out.shape == (1, 3, 51, 51)
