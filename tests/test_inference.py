import itertools

import numpy as np
import pytest
import torch

from lightsr.errors import ImageError, UsageError
from lightsr.inference import (
    TILE_ALIGN,
    estimate_bytes_per_pixel,
    plan_tiles,
    prepare_model,
    resolve_device,
    resolve_precision,
    split_axis,
    upscale_array,
    upscale_tensor,
)
from tests.conftest import shared_file
from tests.tiny_sr import TINY_DEPTH, tiny_model


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).float() / 255


@pytest.mark.parametrize(("length", "core", "margin"), [(128, 32, 32), (100, 32, 64), (70, 32, 0)])
def test_split_axis_partitions_and_aligns(length, core, margin):
    spans = split_axis(length, core, margin)
    assert spans[0].start == 0 and spans[-1].end == length
    for before, after in itertools.pairwise(spans):
        assert before.end == after.start
        assert before.blend_after == after.blend_before == min(margin // 4, core // 2)
    for span in spans:
        assert span.input_start % TILE_ALIGN == 0
        assert span.input_start <= span.keep_start and span.keep_end <= span.input_end
        # Every kept pixel has margin - band pixels of context, or the image edge.
        assert span.keep_start - span.input_start >= min(span.keep_start, margin * 3 // 4)


def test_split_axis_merges_a_sliver_into_the_previous_core():
    spans = split_axis(65, 32, 64)
    assert [(s.start, s.end) for s in spans] == [(0, 32), (32, 65)]
    spans = split_axis(33, 32, 0, min_size=17)
    assert [(s.start, s.end) for s in spans] == [(0, 33)]


def test_tiled_equals_whole_for_a_conv_network(baby_lr):
    model = tiny_model()
    x = _tensor(baby_lr)
    whole = upscale_tensor(model, x)
    tiled = upscale_tensor(model, x, tile=32, overlap=32)
    assert plan_tiles(128, 128, model, tile=32, overlap=32).count == 16
    assert tiled.shape == whole.shape == (1, 3, 512, 512)
    assert (tiled - whole).abs().max().item() < 1e-5


def test_tiles_without_overlap_show_seams(baby_lr):
    # The control for the test above: with no context, tile borders see zero padding.
    model = tiny_model()
    x = _tensor(baby_lr)
    seams = upscale_tensor(model, x, tile=32, overlap=0) - upscale_tensor(model, x)
    assert seams.abs().max().item() > 2 / 255


def test_overlap_must_cover_the_receptive_field(baby_lr):
    model = tiny_model()
    x = _tensor(baby_lr)
    # margin 32 with 8-pixel bands leaves 24 >= TINY_DEPTH pixels of context: exact.
    assert TINY_DEPTH <= 32 - 32 // 4
    exact = upscale_tensor(model, x, tile=32, overlap=1)  # rounded up to 32
    assert (exact - upscale_tensor(model, x)).abs().max().item() < 1e-5


def test_uint8_tiles_are_written_straight_to_the_output(baby_lr):
    model = tiny_model()
    whole = upscale_array(model, baby_lr)
    tiled = upscale_array(model, baby_lr, tile=32, overlap=32)
    assert tiled.dtype == np.uint8 and tiled.shape == (512, 512, 3)
    assert np.abs(tiled.astype(int) - whole).max() <= 1


def test_automatic_tiling_under_a_small_memory_budget(baby_lr):
    model = tiny_model()
    per_pixel = estimate_bytes_per_pixel(model)
    budget = int(per_pixel * 100 * 100)  # fits a 100x100 tile, not the 128x128 image
    assert plan_tiles(128, 128, model, max_memory=budget).count > 1
    assert plan_tiles(128, 128, model, max_memory=budget * 2).count == 1
    calls = []
    tiled = upscale_array(
        model, baby_lr, max_memory=budget, progress=lambda done, total: calls.append(total)
    )
    assert len(calls) > 1 and calls[-1] == len(calls)
    assert np.abs(tiled.astype(int) - upscale_array(model, baby_lr)).max() <= 1


def test_pad_multiple_is_respected_at_image_borders(baby_lr):
    # 100x90 is not a multiple of 16: border tiles must pad exactly as the whole image does.
    model = tiny_model(pad_multiple=16)
    x = _tensor(baby_lr[:100, :90])
    whole = upscale_tensor(model, x)
    tiled = upscale_tensor(model, x, tile=32, overlap=32)
    assert whole.shape == (1, 3, 400, 360)
    assert (tiled - whole).abs().max().item() < 1e-5


def test_gray_in_gray_out(baby_lr):
    model = tiny_model()
    gray = baby_lr[..., 1]
    out = upscale_array(model, gray, tile=32)
    assert out.shape == (512, 512) and out.dtype == np.uint8
    # The engine averages the unclamped channels, then clamps and rounds once.
    rgb = model.upscale(_tensor(np.repeat(gray[..., None], 3, axis=2)))
    expected = np.rint(rgb[0].mean(dim=0).clamp(0, 1).numpy() * 255)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_sixteen_bit_keeps_its_precision(baby_lr):
    model = tiny_model()
    image16 = baby_lr.astype(np.uint16) * 257 + 100
    out = upscale_array(model, image16, tile=64)
    assert out.dtype == np.uint16
    expected = upscale_tensor(model, torch.from_numpy(image16 / 65535.0).permute(2, 0, 1)[None])
    expected = np.rint(expected[0].permute(1, 2, 0).numpy() * 65535)
    assert np.abs(out.astype(np.int64) - expected).max() <= 1
    # Values that 8 bits cannot hold survive.
    assert np.any(out % 257 != 0)


def test_small_images_are_padded_and_empty_ones_rejected():
    model = tiny_model(min_size=17)
    small = np.random.default_rng(0).integers(0, 256, (16, 40, 3), np.uint8)
    out = upscale_array(model, small)
    padded = np.pad(small, ((0, 1), (0, 0), (0, 0)), mode="edge")  # 17 high, in the middle
    assert np.array_equal(out, upscale_array(model, padded)[:64])
    assert upscale_array(model, small[:1, :1, 0]).shape == (4, 4)
    with pytest.raises(ImageError, match="zero size"):
        upscale_array(model, np.zeros((0, 40, 3), np.uint8))
    with pytest.raises(ImageError, match="expected"):
        upscale_array(model, np.zeros((20, 20, 2), np.uint8))


def test_memory_estimate_follows_precision():
    model = tiny_model()
    fp32 = estimate_bytes_per_pixel(model)
    prepare_model(model, "cpu", "bf16")
    assert estimate_bytes_per_pixel(model) == fp32 / 2
    assert next(model.module.parameters()).dtype == torch.bfloat16


def test_reduced_precision_runs_on_cpu(baby_lr):
    model = prepare_model(tiny_model(), "cpu", "bf16")
    out = upscale_array(model, baby_lr[:40, :40], tile=32)
    reference = upscale_array(tiny_model(), baby_lr[:40, :40])
    assert out.shape == reference.shape
    assert np.abs(out.astype(int) - reference).mean() < 3


def test_device_and_precision_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_precision("fp16") == torch.float16
    with pytest.raises(UsageError, match="precision"):
        resolve_precision("int8")
    with pytest.raises(UsageError, match="device"):
        resolve_device("tpu")


def test_tiled_equals_whole_for_fmen_s(baby_lr):
    # Official FMEN-S weights; the default 64-pixel overlap covers its 34-conv receptive field.
    from lightsr.models import load_model

    model = load_model(shared_file("weights/official/FMEN/test_weights.pt"))
    x = _tensor(baby_lr)
    whole = upscale_tensor(model, x)
    tiled = upscale_tensor(model, x, tile=32)
    assert plan_tiles(128, 128, model, tile=32).count == 16
    assert (tiled - whole).abs().max().item() <= 1e-4
