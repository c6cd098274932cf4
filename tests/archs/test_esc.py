"""ESC family: golden parity with the official code, parameter counts, batching, gradients,
the attention bias and its cache, the D4 ensemble and checkpoint detection."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import lightsr
from lightsr.archs.esc import (
    ConvolutionalAttention,
    WindowAttention,
    d4_average,
    depthwise3x3_by_shifts,
    dynamic_depthwise3x3,
    read_esc,
)
from lightsr.archs.registry import detect
from lightsr.errors import UsageError
from tests.conftest import randomise_esc_zero_init, shared_file

GOLDEN = [
    ("esc_x2", "esc", 2),
    ("esc_x3", "esc", 3),
    ("esc_x4", "esc", 4),
    ("esc_light_x4", "esc_light", 4),
    ("esc_fp_x3", "esc_fp", 3),
    ("esc_fp_x4", "esc_fp", 4),
    ("esc_real_x4", "esc_real", 4),
]

PARAMS = {
    ("esc", 2): 946_728,
    ("esc", 3): 955_383,
    ("esc", 4): 967_500,
    ("esc_light", 2): 603_600,
    ("esc_light", 3): 612_255,
    ("esc_light", 4): 624_372,
    ("esc_fp", 2): 523_675,
    ("esc_fp", 3): 530_170,
    ("esc_fp", 4): 539_263,
    ("esc_real", 4): 2_265_307,
    ("esc_xl", 2): 12_455_916,
    ("esc_xl", 4): 12_518_160,
}

TOLERANCE = 1e-4


@pytest.mark.parametrize("golden_name, variant, scale", GOLDEN)
def test_matches_official_golden_outputs(golden_name, variant, scale):
    golden = load_file(shared_file(f"golden/{golden_name}.safetensors"))
    prefix = "state_dict."
    state_dict = {k[len(prefix) :]: v for k, v in golden.items() if k.startswith(prefix)}
    model = lightsr.load_model(state_dict)
    assert (model.name, model.variant, model.scale) == ("esc", variant, scale)
    assert set(model.module.state_dict()) == set(state_dict)
    with torch.no_grad():
        for case in ("a", "b"):
            out = model.module(golden[f"input_{case}"])
            assert out.shape == golden[f"output_{case}"].shape
            assert (out - golden[f"output_{case}"]).abs().max().item() <= TOLERANCE
    # The official test pipeline reflect-pads the LR image to a multiple of 32 first.
    pipeline = model.upscale(golden["input_b"])
    assert (pipeline - golden["output_b_pipeline"]).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("variant, scale", list(PARAMS))
def test_parameter_counts(variant, scale):
    module = lightsr.build_model(variant, scale)
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == PARAMS[variant, scale]
    # The relative-position index is derived, never stored.
    assert not any("offsets" in key for key in module.state_dict())


@pytest.mark.parametrize("variant, scale", [("esc", 2), ("esc_fp", 3), ("esc_real", 4)])
def test_batch_of_two_equals_two_single_runs(variant, scale):
    torch.manual_seed(0)
    module = lightsr.build_model(variant, scale, n_blocks=1, conv_blocks=2).eval()
    randomise_esc_zero_init(module)
    x = torch.rand(2, 3, 20, 36)
    with torch.no_grad():
        batched = module(x)
        singles = torch.cat([module(x[:1]), module(x[1:])])
    assert batched.shape == (2, 3, 20 * scale, 36 * scale)
    assert (batched - singles).abs().max().item() <= 1e-5


def test_dynamic_kernel_layout_matches_per_channel_reference():
    torch.manual_seed(0)
    pdim, channels = 4, 6
    attention = ConvolutionalAttention(pdim)
    randomise_esc_zero_init(attention)
    x = torch.randn(2, channels, 9, 11)
    large = torch.randn(pdim, pdim, 5, 5)
    with torch.no_grad():
        out = attention(x, large)
        for b in range(2):
            x1 = x[b : b + 1, :pdim]
            kernels = attention.dwc_proj(x1).flatten()  # channel-major, 3×3 row-major
            expected = F.conv2d(x1, large, padding=2)
            for c in range(pdim):
                kernel = kernels[9 * c : 9 * c + 9].view(1, 1, 3, 3)
                expected[:, c] += F.conv2d(x1[:, c : c + 1], kernel, padding=1)[:, 0]
            assert torch.allclose(out[b : b + 1, :pdim], expected, atol=1e-5)
    assert torch.equal(out[:, pdim:], x[:, pdim:])


def test_attention_bias_is_key_minus_query():
    window, heads = 3, 2
    attention = WindowAttention(dim=8, window_size=window, num_heads=heads)
    table = attention.relative_position_bias
    span = 2 * window - 1
    bias = attention.bias_matrix()
    assert bias.shape == (1, heads, window**2, window**2)
    for q in range(window**2):
        for k in range(window**2):
            (qh, qw), (kh, kw) = divmod(q, window), divmod(k, window)
            index = (kh - qh + window - 1) * span + (kw - qw + window - 1)
            assert torch.equal(bias[0, :, q, k], table[:, index])


def test_cached_bias_follows_parameter_updates():
    def small_esc() -> torch.nn.Module:
        return lightsr.build_model("esc", 2, n_blocks=1, conv_blocks=1).eval()

    torch.manual_seed(0)
    module = small_esc()
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        before = module(x)
        module.blocks[0].attn.relative_position_bias.mul_(500.0)
        after = module(x)
        fresh = small_esc()
        fresh.load_state_dict(module.state_dict())
        assert not torch.allclose(before, after)
        assert torch.equal(after, fresh(x))
        module.load_state_dict(small_esc().state_dict())
        assert not torch.equal(module(x), after)


def test_d4_average_is_symmetric_and_idempotent():
    kernel = torch.randn(3, 2, 5, 5)
    symmetric = d4_average(kernel)
    for transformed in (
        symmetric.flip(-1),
        symmetric.flip(-2),
        torch.rot90(symmetric, 1, (-2, -1)),
        symmetric.transpose(-2, -1),
    ):
        assert torch.allclose(transformed, symmetric, atol=1e-6)
    # A checkpoint folded by the official convert() therefore loads unchanged.
    assert torch.allclose(d4_average(symmetric), symmetric, atol=1e-6)
    explicit = sum(torch.rot90(k, r, (-2, -1)) for k in (kernel, kernel.flip(-1)) for r in range(4))
    assert torch.allclose(symmetric, explicit / 8, atol=1e-6)


@pytest.mark.parametrize("variant, scale", [("esc", 2), ("esc_fp", 2), ("esc_real", 4)])
def test_gradients_reach_every_parameter(variant, scale):
    torch.manual_seed(0)
    module = lightsr.build_model(variant, scale, n_blocks=1, conv_blocks=2).train()
    randomise_esc_zero_init(module)
    module(torch.rand(2, 3, 20, 24)).square().mean().backward()
    for name, param in module.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "variant, scale, overrides",
    [
        ("esc_light", 3, {}),
        ("esc", 2, {"n_blocks": 2, "conv_blocks": 3}),
        ("esc_xl", 2, {}),
        ("esc_fp", 2, {"n_blocks": 1}),
        ("esc_real", 4, {"n_blocks": 2}),
    ],
)
def test_detects_variant_scale_and_depth(variant, scale, overrides):
    torch.manual_seed(0)
    state_dict = lightsr.build_model(variant, scale, **overrides).state_dict()
    detection = detect(state_dict)
    assert (detection.name, detection.scale) == (variant, scale)
    assert dict(detection.overrides) == overrides
    loaded = lightsr.load_model(state_dict)
    assert (loaded.name, loaded.variant, loaded.scale) == ("esc", variant, scale)


def test_other_networks_are_not_detected():
    state_dict = lightsr.build_model("esc", 2, n_blocks=1).state_dict()
    del state_dict["plk_filter"]
    assert read_esc(state_dict) is None
    assert read_esc({"head.weight": torch.zeros(1)}) is None


def test_smallest_input_and_scale_limits():
    torch.manual_seed(0)
    module = lightsr.build_model("esc", 3, n_blocks=1, conv_blocks=1).eval()
    with torch.no_grad():
        assert module(torch.rand(1, 3, 17, 17)).shape == (1, 3, 51, 51)
    with pytest.raises(UsageError):
        lightsr.build_model("esc_real", 2)


def test_shifted_depthwise_equals_grouped_conv():
    torch.manual_seed(0)
    x, kernels = torch.randn(3, 5, 9, 11), torch.randn(3, 5, 3, 3)
    assert torch.allclose(
        depthwise3x3_by_shifts(x, kernels), dynamic_depthwise3x3(x, kernels), atol=1e-5
    )


@pytest.mark.slow
def test_exports_with_dynamic_batch_and_size():
    """Traced graphs take the shift-based dynamic conv and rebuild the attention bias.

    The example and the new input both hold at least two windows per attention group:
    torch.export guards on whether a group of the exported attention is empty or holds one
    window (the ONNX graph has no such guard: tests/test_precisions.py runs it from 1 window).
    """
    torch.manual_seed(0)
    module = lightsr.build_model("esc", 2, n_blocks=1, conv_blocks=1).eval()
    randomise_esc_zero_init(module)
    side = torch.export.Dim.DYNAMIC(min=32)
    shapes = {"x": {0: torch.export.Dim.DYNAMIC(min=1), 2: side, 3: side}}
    with torch.no_grad():
        program = torch.export.export(module, (torch.rand(2, 3, 130, 130),), dynamic_shapes=shapes)
        x = torch.rand(3, 3, 100, 70)
        assert torch.allclose(program.module()(x), module(x), atol=1e-5)
