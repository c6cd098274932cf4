"""DITN family: official outputs, shared code between variants, detection, training."""

from __future__ import annotations

import cv2
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from lightsr import load_model
from lightsr.archs import build_model
from lightsr.archs.ditn import (
    ISA,
    SAL,
    SDA,
    UFONE,
    ChannelLayerNorm,
    TanhConvNorm,
    dilated_depthwise_conv,
)
from tests.conftest import shared_file

TOLERANCE = 1e-4


def _golden(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(shared_file(f"golden/{name}.safetensors")))


def _max_diff(module: torch.nn.Module, golden: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        return max(
            (module(golden[f"input_{c}"]) - golden[f"output_{c}"]).abs().max().item() for c in "ab"
        )


def _read_rgb(relative: str) -> torch.Tensor:
    bgr = cv2.imread(str(shared_file(relative)))
    return torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1).float().div(255)


@pytest.mark.parametrize(
    ("golden_name", "weights"),
    [("ditn_real_x4", "DITN_Real_x4.pth"), ("ditn_real_gan_x4", "DITN_Real_GAN_x4.pth")],
)
def test_official_checkpoints_match_golden(golden_name, weights):
    model = load_model(shared_file(f"weights/official/DITN/{weights}"))
    assert (model.variant, model.scale) == ("ditn_real", 4)
    assert _max_diff(model.module, _golden(golden_name)) <= TOLERANCE


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_seeded_official_module_matches_golden(scale):
    golden = _golden(f"ditn_real_seed_x{scale}")
    prefix = "state_dict."
    model = load_model({k[len(prefix) :]: v for k, v in golden.items() if k.startswith(prefix)})
    assert (model.variant, model.scale) == ("ditn_real", scale)
    assert _max_diff(model.module, golden) <= TOLERANCE


def test_ditn_real_keys_equal_official_keys():
    official = torch.load(
        shared_file("weights/official/DITN/DITN_Real_x4.pth"), map_location="cpu", weights_only=True
    )
    ours = build_model("ditn_real", 4).state_dict()
    assert len(ours) == 122
    assert set(ours) == set(official)
    assert all(ours[k].shape == official[k].shape for k in ours)


@pytest.mark.parametrize(("scale", "expected"), [(2, 424_636), (3, 432_751), (4, 444_112)])
def test_ditn_real_parameter_counts(scale, expected):
    assert sum(p.numel() for p in build_model("ditn_real", scale).parameters()) == expected


def test_isa_with_sdpa_matches_explicit_attention():
    torch.manual_seed(0)
    isa = ISA(24, bias=False)
    with torch.no_grad():
        isa.temperature.fill_(2.5)
        patches = torch.randn(5, 24, 8, 8)
        tokens = patches.flatten(2).transpose(1, 2)  # (N, 64, C)
        q, k, v = (t.transpose(1, 2) for t in isa.qkv(tokens).chunk(3, dim=-1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attention = (q @ k.transpose(1, 2) * isa.temperature).softmax(dim=-1)
        expected = isa.project_out((attention @ v).view(5, 24, 8, 8))
        assert (isa(patches) - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("dilation", [2, 3])
@pytest.mark.parametrize("size", [(1, 1), (5, 7), (24, 19)])
def test_dilated_depthwise_conv_by_phases_equals_the_conv(dilation, size):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 6, 7, padding=3 * dilation, dilation=dilation, groups=6)
    x = torch.randn(2, 6, *size).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = dilated_depthwise_conv(x, conv)
        torch.testing.assert_close(out, conv(x), rtol=0, atol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)


def test_variants_share_all_code_except_the_norm():
    real, classic, tiny = (build_model(n, 2) for n in ("ditn_real", "ditn", "ditn_tiny"))
    for model in (classic, tiny):
        assert type(model) is type(real)
        assert type(model.UFONE[0]) is type(real.UFONE[0]) is UFONE
        for group in ("ITLs", "SALs"):
            ours, theirs = getattr(model.UFONE[0], group)[0], getattr(real.UFONE[0], group)[0]
            assert type(ours) is type(theirs)
            assert type(ours.ffn) is type(theirs.ffn)
        assert type(model.UFONE[0].SALs[0].SDA) is SDA
        assert type(model.UFONE[0].ITLs[0].attn) is ISA
    norm_types = {
        type(m) for m in real.modules() if isinstance(m, (TanhConvNorm, ChannelLayerNorm))
    }
    assert norm_types == {TanhConvNorm}
    for model in (classic, tiny):
        assert {type(m) for m in model.modules() if isinstance(m, SAL)} == {SAL}
        assert not any(isinstance(m, TanhConvNorm) for m in model.modules())
        assert any(isinstance(m, ChannelLayerNorm) for m in model.modules())


@pytest.mark.parametrize("variant", ["ditn_real", "ditn", "ditn_tiny"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_detection_round_trip(variant, scale):
    model = load_model(build_model(variant, scale).state_dict())
    assert (model.variant, model.scale) == (variant, scale)


def test_detection_reads_width_ffn_and_bias():
    state = build_model("ditn_tiny", 2, dim=32, ffn_expansion=1.5, bias=True).state_dict()
    model = load_model(state)
    assert model.variant == "ditn_tiny"
    assert model.module.sft.out_channels == 32


@pytest.mark.parametrize("size", [(5, 7), (13, 16), (8, 8)])
def test_any_input_size_is_padded_and_cropped(size):
    model = build_model("ditn_tiny", 3).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert out.shape == (1, 3, size[0] * 3, size[1] * 3)


@pytest.mark.parametrize("variant", ["ditn", "ditn_tiny"])
def test_paper_variants_train(variant):
    torch.manual_seed(0)
    hr = _read_rgb("data/Set5/HR/bird.png")[:, :48, :48].unsqueeze(0)
    lr = _read_rgb("data/Set5/LR_bicubic/X2/birdx2.png")[:, :24, :24].unsqueeze(0)
    model = build_model(variant, 2).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        loss = F.l1_loss(model(lr), hr)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
