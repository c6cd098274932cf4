"""ONNX forms (``lightsr.export.onnx_forms``): equal to the faithful forward in torch.

The exported graphs themselves are checked against torch by ``tests/test_export.py`` (every
variant goes through its ONNX form there).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lightsr.archs import build_model
from lightsr.archs.blocks import faithful_path
from lightsr.archs.registry import get_arch
from lightsr.export.onnx_forms import (
    OnnxSDA,
    OnnxStripedWindowAttention,
    OnnxUFONE,
    OnnxWindowAttention,
    banded_ffn,
    fused_attention,
    onnx_form,
    window_indices,
)
from lightsr.export.trace import deployable_copy
from lightsr.models import SRModel

# Small builds: the same code paths at a fraction of the cost.
CONFIGS = {
    "ditn_real": {},
    "emt": {"n_blocks": 1, "n_layers": 2},
    "esc_light": {"n_blocks": 1, "conv_blocks": 1},
}
FORMS = {
    "ditn_real": OnnxUFONE,
    "emt": OnnxStripedWindowAttention,
    "esc_light": OnnxWindowAttention,
}


def _model(variant: str) -> SRModel:
    torch.manual_seed(0)
    module = build_model(variant, 4, **CONFIGS[variant]).eval()
    with torch.no_grad():  # zero-initialised scales and biases would hide a wrong branch
        for name, parameter in module.named_parameters():
            if name.endswith("scale") or "relative_position_bias" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return deployable_copy(SRModel(module=module, spec=get_arch(variant), scale=4))


@pytest.mark.parametrize("variant", sorted(CONFIGS))
def test_onnx_form_equals_the_faithful_forward(variant):
    model = _model(variant)
    form = onnx_form(model)
    assert any(isinstance(m, FORMS[variant]) for m in form.module.modules())
    assert not any(isinstance(m, FORMS[variant]) for m in model.module.modules())
    # In float64: the forms reorder the arithmetic (BatchNorm folded into weights, 1×1 convs
    # as Gemms), and the unscaled attention of this random EMT amplifies fp32 rounding to
    # ~1e-3 on either side; in float64 a wrong form is off by orders of magnitude more.
    model.module.double()
    form.module.double()
    generator = torch.Generator().manual_seed(1)
    for size in ((37, 53), (64, 64), (8, 97), (131, 9)):
        if min(size) < model.spec.min_size:
            continue
        x = torch.rand(2, 3, *size, generator=generator, dtype=torch.float64)
        with torch.no_grad(), faithful_path():
            expected = model.forward(x)
            actual = form.forward(x)
        assert (actual - expected).abs().max().item() <= 1e-9, size


@pytest.mark.parametrize("size", [(8, 8), (13, 21), (37, 53), (20, 9)])
@pytest.mark.parametrize("window, shift", [((8, 4), (0, 0)), ((8, 4), (4, 2)), ((5, 5), (4, 1))])
def test_window_indices_are_pad_roll_and_partition(size, window, shift):
    batch, channels, (h, w), (win_h, win_w) = 2, 3, size, window
    x = torch.randn(batch, channels, h, w)
    rows, cols = -(-h // win_h), -(-w // win_w)
    padded = F.pad(x, (0, cols * win_w - w, 0, rows * win_h - h), mode="reflect")
    rolled = torch.roll(padded, shifts=shift, dims=(2, 3))
    expected = (
        rolled.view(batch, channels, rows, win_h, cols, win_w)
        .permute(0, 2, 4, 3, 5, 1)
        .reshape(batch * rows * cols, win_h * win_w, channels)
    )
    partition, merge = window_indices(batch, h, w, window, shift, x.device)
    pixels = x.permute(0, 2, 3, 1).reshape(-1, channels)
    tokens = pixels[partition]
    assert torch.equal(tokens, expected)
    assert torch.equal(tokens.flatten(0, 1)[merge], pixels)


def test_window_indices_reject_a_shift_of_a_window_or_more():
    with pytest.raises(ValueError, match="shift"):
        window_indices(1, 16, 16, (8, 8), (8, 0), torch.device("cpu"))


def test_families_without_a_form_are_returned_as_they_are():
    model = deployable_copy(
        SRModel(module=build_model("fmen_s", 4).eval(), spec=get_arch("fmen_s"), scale=4)
    )
    assert onnx_form(model) is model


@pytest.mark.parametrize("height", [4, 5, 7, 8, 9, 17, 40])
def test_banded_ffn_equals_the_whole_map(height):
    from lightsr.archs.ditn import GatedDConvFFN

    torch.manual_seed(0)
    ffn = GatedDConvFFN(12, 2.0, bias=False).eval()
    x = torch.randn(2, 12, height, 11)
    with torch.no_grad(), faithful_path():
        assert torch.allclose(banded_ffn(ffn, x, bands=4), ffn(x), atol=1e-6)


def test_sda_form_folds_its_scale():
    from lightsr.archs.ditn import SDA

    torch.manual_seed(0)
    sda = SDA(10).eval()
    with torch.no_grad():
        sda.scale.normal_()
        x = torch.randn(1, 10, 23, 19)
        with faithful_path():
            assert torch.allclose(OnnxSDA(sda)(x), sda(x), atol=1e-5)


@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_attention_is_multi_head_attention(with_bias):
    torch.manual_seed(0)
    batch, length, heads, dim = 3, 20, 2, 5
    q, k, v = (torch.randn(batch, length, heads * dim) for _ in range(3))
    bias = torch.randn(1, heads, length, length) if with_bias else None
    split = [t.view(batch, length, heads, dim).transpose(1, 2) for t in (q, k, v)]
    scores = split[0] @ split[1].transpose(2, 3) * 0.7
    if bias is not None:
        scores = scores + bias
    expected = (scores.softmax(-1) @ split[2]).transpose(1, 2).reshape(batch, length, -1)
    actual = fused_attention(q, k, v, bias, heads, 0.7)
    assert torch.allclose(actual, expected, atol=1e-5)
    assert torch.equal(
        fused_attention(q, k, v, bias, heads, 0.7),
        F.scaled_dot_product_attention(*split, attn_mask=bias, scale=0.7)
        .transpose(1, 2)
        .reshape(batch, length, -1),
    )
