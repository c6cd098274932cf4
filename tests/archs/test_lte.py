"""LTE arbitrary-scale head: golden parity of ESC + LTE with the official code, checkpoint
detection, and the exactness that tiling relies on (a crop renders what the whole image
renders, chunking changes nothing)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lightsr.archs.lte import build_esc_lte, build_fmen_s_lte, cell_for, read_lte
from lightsr.archs.registry import build_on_meta, detect, get_arch
from lightsr.errors import UsageError
from tests.conftest import shared_file

TOLERANCE = 1e-4


def _golden(tag: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    data = load_file(shared_file(f"golden/esc_lte_{tag}.safetensors"))
    prefix = "state_dict."
    state = {k[len(prefix) :]: v for k, v in data.items() if k.startswith(prefix)}
    return data, state


@pytest.mark.parametrize(("tag", "scale"), [("x2p5", 2.5), ("x3p7", 3.7), ("x6p0", 6.0)])
def test_esc_lte_matches_official_outputs(tag: str, scale: float) -> None:
    data, state = _golden(tag)
    model = build_esc_lte().eval()
    model.load_state_dict(state, strict=True)  # official key names, unchanged
    for part in "ab":
        image = data[f"image_{part}"]
        with torch.no_grad():
            out = model.upscale_to(data[f"input_{part}"], image.shape[-2:], (scale, scale))
        assert out.shape == image.shape
        assert (out - image).abs().max().item() <= TOLERANCE


def test_official_checkpoint_is_detected_as_esc_lte() -> None:
    _, state = _golden("x2p5")
    found = detect(state)
    assert found is not None and found.name == "esc_lte" and not found.overrides
    assert get_arch("esc_lte").arbitrary_scale


def test_fmen_s_lte_is_read_back() -> None:
    state = build_fmen_s_lte().state_dict()
    reading = read_lte(state)
    assert reading is not None and reading.variants == ("fmen_s_lte",)
    assert reading.config == {"hidden_dim": 256, "mlp_hidden": (256, 256, 256)}
    assert not any(key.startswith("encoder.tail") for key in state)


def test_cell_is_that_of_x4_beyond_the_training_range() -> None:
    assert cell_for(10, 25) == pytest.approx(0.8)
    assert cell_for(10, 60) == pytest.approx(cell_for(10, 40))


@pytest.fixture(scope="module")
def fmen_lte() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_fmen_s_lte().eval()
    with torch.no_grad():  # a non-trivial head, so every term of the output matters
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    return model


@torch.no_grad()
def test_crop_renders_the_same_pixels_as_the_whole_image(fmen_lte: torch.nn.Module) -> None:
    x = torch.rand(1, 3, 20, 24)
    out_size = (47, 57)  # x2.35 by x2.375: no output row or column lands on the LR grid
    whole = fmen_lte.encode(x)
    expected = fmen_lte.render(whole, out_size, (10, 30), (20, 40))
    # The head only: encode the crop from the whole image's encoder output.
    crop = whole.__class__(
        whole.coef.unflatten(1, (20, 24))[:, 3:15, 7:19].flatten(1, 2),
        whole.freq.unflatten(1, (20, 24))[:, 3:15, 7:19].flatten(1, 2),
        whole.image[..., 3:15, 7:19],
        (3, 7),
        (20, 24),
    )
    got = fmen_lte.render(crop, out_size, (10, 30), (20, 40))
    assert torch.equal(got, expected)


@torch.no_grad()
def test_chunking_and_forward(fmen_lte: torch.nn.Module) -> None:
    x = torch.rand(2, 3, 9, 11)
    one = fmen_lte.upscale_to(x, (30, 31))
    chunked = fmen_lte.upscale_to(x, (30, 31), chunk=97)
    assert torch.allclose(one, chunked, atol=1e-6)
    fmen_lte.scale = 3
    assert fmen_lte(x).shape == (2, 3, 27, 33)


@torch.no_grad()
def test_query_outside_the_crop_is_refused(fmen_lte: torch.nn.Module) -> None:
    features = fmen_lte.encode(torch.rand(1, 3, 8, 8), origin=(8, 8), full_size=(32, 32))
    with pytest.raises(ValueError, match="outside the encoded crop"):
        fmen_lte.render(features, (64, 64), (0, 4), (0, 4))


def test_arbitrary_scale_variants_build_at_any_factor() -> None:
    assert build_on_meta("fmen_s_lte", 3.5).scale == 3.5
    with pytest.raises(UsageError, match="factors of 1 or more"):
        build_on_meta("fmen_s_lte", 0.5)
    with pytest.raises(UsageError, match="does not support x5"):
        build_on_meta("fmen_s", 5)


def test_balance_reaches_the_fmen_trunk(fmen_lte: torch.nn.Module) -> None:
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        before = fmen_lte.upscale_to(x, (30, 30))
        balanced = build_fmen_s_lte().eval()
        balanced.load_state_dict(fmen_lte.state_dict())
        balanced.balance_()
        after = balanced.upscale_to(x, (30, 30))
    assert torch.allclose(before, after, atol=1e-4)
    with pytest.raises(ValueError, match="has no balance_"):
        build_esc_lte().balance_()


def test_fourier_phases_stay_fp32_under_autocast(fmen_lte: torch.nn.Module) -> None:
    x = torch.rand(2, 3, 12, 12)
    rows = torch.rand(2, 50, dtype=torch.float64) * 12
    cols = torch.rand(2, 50, dtype=torch.float64) * 12
    cell = torch.full((2, 1, 2), 0.5)
    with torch.no_grad():
        exact = fmen_lte(x, rows, cols, cell)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = fmen_lte(x, rows, cols, cell)
    assert mixed.shape == exact.shape == (2, 50, 3)
    # Only the MLP runs in bf16: no phase scrambling.
    assert (mixed.float() - exact).abs().max() < 0.02 * exact.abs().max()
