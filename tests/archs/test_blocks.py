"""Shared blocks: fast-path switch, inference layout, folded-weight cache, BN folding."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightsr.archs.blocks import (
    FoldedCache,
    PixelShuffleUpsampler,
    bn_scale_shift,
    faithful_path,
    fast_path,
    fold_batchnorm_after,
    map_in_bands,
    row_bands,
    symbolic_splits,
    to_inference_layout,
    update_in_bands_,
)


def test_fast_path_only_without_gradients_and_outside_faithful_path():
    assert not fast_path()
    with torch.no_grad():
        assert fast_path()
        with faithful_path():
            assert not fast_path()
            with faithful_path():
                assert not fast_path()
            assert not fast_path()
        assert fast_path()
    with torch.inference_mode():
        assert fast_path()


def test_fast_path_is_off_while_tracing():
    seen = []

    def probe(x: torch.Tensor) -> torch.Tensor:
        seen.append(fast_path())
        return x + 1

    with torch.no_grad():
        torch.jit.trace(probe, torch.zeros(2), check_trace=False)
    assert seen == [False]


class _Prefers(nn.Module):
    prefers_channels_last = True

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)


def test_to_inference_layout_only_for_networks_that_ask():
    plain = nn.Sequential(nn.Conv2d(3, 8, 3))
    assert to_inference_layout(plain)[0].weight.is_contiguous()
    module = _Prefers()
    before = module.conv.weight.detach().clone()
    assert to_inference_layout(module) is module
    assert module.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(module.conv.weight, before)


def test_folded_cache_rebuilds_when_a_source_changes():
    weight = nn.Parameter(torch.ones(3))
    cache, builds = FoldedCache(), []

    def build() -> torch.Tensor:
        builds.append(1)
        return weight.detach() * 2

    with torch.no_grad():
        first = cache.get((weight,), build)
        assert cache.get((weight,), build) is first and len(builds) == 1
        weight.add_(1)  # an optimiser step bumps the version counter
        assert torch.equal(cache.get((weight,), build), torch.full((3,), 4.0))
    assert len(builds) == 2


def test_fold_batchnorm_after_equals_conv_then_norm():
    torch.manual_seed(0)
    conv, norm = nn.Conv2d(4, 6, 1), nn.BatchNorm2d(6)
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    norm.eval()
    x = torch.randn(2, 4, 5, 5)
    weight, bias = fold_batchnorm_after(conv, norm)
    with torch.no_grad():
        expected = norm(conv(x))
        assert torch.allclose(nn.functional.conv2d(x, weight, bias), expected, atol=1e-5)
        y = torch.randn(2, 6, 5, 5)
        scale, shift = bn_scale_shift(norm)
        affine = y * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
        assert torch.allclose(norm(y), affine, atol=1e-6)


def test_row_bands_run_a_3x3_conv_band_by_band_exactly():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(1, 2, 23, 9)
    whole = conv(x)
    out = torch.empty_like(whole)
    covered = []
    for rows, context, crop in row_bands(23, 5):
        covered.extend(range(rows.start, rows.stop))
        out[:, :, rows] = conv(x[:, :, context])[:, :, crop]
    assert covered == list(range(23))
    torch.testing.assert_close(out, whole, rtol=0, atol=1e-6)


def test_upsampler_resampled_from_x4_is_the_x4_output_box_downscaled():
    torch.manual_seed(0)
    x4, x2, x3 = (PixelShuffleUpsampler(6, s) for s in (4, 2, 3))
    x = torch.randn(1, 6, 5, 7)
    for target in (x2, x3):
        target.load_resampled_(x4[0].weight, x4[0].bias)
    with torch.no_grad():
        expected = F.avg_pool2d(x4(x), 2)
        torch.testing.assert_close(x2(x), expected, rtol=0, atol=1e-5)
        # x3: every output pixel is an area-weighted mean, so a constant x4 output stays.
        x4[0].weight.zero_()
        x4[0].bias.fill_(0.7)
        x3.load_resampled_(x4[0].weight, x4[0].bias)
        torch.testing.assert_close(x3(x), torch.full((1, 3, 15, 21), 0.7))
    try:
        x2.load_resampled_(torch.zeros(47, 6, 3, 3), None)
    except ValueError as exc:
        assert "no sub-pixel conv" in str(exc)
    else:
        raise AssertionError("a 47-channel conv was accepted")


@pytest.mark.parametrize("total, parts", [(64, 32), (100, 32), (7, 8), (0, 4), (33, 8)])
def test_symbolic_splits_tile_the_range(total, parts):
    pieces = symbolic_splits(total, parts)
    assert len(pieces) == parts
    ends = list(itertools.accumulate(length for _, length in pieces))
    assert [start for start, _ in pieces] == [0, *ends[:-1]]
    assert ends[-1] == total
    assert {length for _, length in pieces} <= {total // parts, -(-total // parts)}


@pytest.mark.parametrize(("band_rows", "channels_last"), [(1, False), (2, True), (7, False)])
def test_banded_maps_equal_the_whole_map(band_rows, channels_last):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 11, 9)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(4, 4, 5, padding=2)  # reads two rows away

    def layers(t: torch.Tensor) -> torch.Tensor:
        return conv(torch.tanh(conv(t)))  # four rows away

    with torch.no_grad():
        whole = layers(x)
        if band_rows >= 4:
            torch.testing.assert_close(map_in_bands(layers, x, band_rows, halo=4), whole)
            target = x.clone()
            update_in_bands_(target, layers, target, band_rows, halo=4)  # reads what it writes
            torch.testing.assert_close(target, whole)
            target = x.clone()
            update_in_bands_(target, layers, x, band_rows, halo=4, combine=torch.Tensor.add_)
            torch.testing.assert_close(target, x + whole)
        else:
            with pytest.raises(ValueError, match="halo of 4 rows"):
                update_in_bands_(x.clone(), layers, x, band_rows, halo=4)
        assert map_in_bands(layers, x, band_rows, halo=4).is_contiguous(
            memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )
