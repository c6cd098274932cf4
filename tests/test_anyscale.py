"""Arbitrary-scale upscaling: the tiler (seams, memory plan, dtypes), the built-in
``anyscale`` model, the API and ``lightsr upscale --scale 2.5`` / ``--size WxH``.

Networks are FMEN-S + LTE with fixed random weights (and ESC + LTE with the golden
checkpoint's), saved as real checkpoint files: tiling exactness does not depend on training.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from safetensors.torch import load_file

from lightsr.anyscale import (
    CONTEXT,
    margin_for,
    output_range,
    output_size,
    plan_anyscale,
    upscale_array_to,
)
from lightsr.api import Upscaler, upscale
from lightsr.archs.lte import build_esc_lte
from lightsr.archs.registry import get_arch
from lightsr.cli import main
from lightsr.errors import UsageError
from lightsr.io import read_image, write_image
from lightsr.models import (
    BUILTIN_MODELS,
    SRModel,
    builtin_is_arbitrary,
    builtin_weights_path,
    load_model,
    resolve_model,
    save_model,
)
from lightsr.options import parse_output_size
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def fmen_lte() -> SRModel:
    """FMEN-S + LTE: the built-in trained weights."""
    return load_model(builtin_weights_path("anyscale"))


@pytest.fixture(scope="module")
def lte_weights(tmp_path_factory, fmen_lte) -> str:
    path = tmp_path_factory.mktemp("lte") / "fmen_s_lte.safetensors"
    save_model(fmen_lte, path)
    return str(path)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


# ----------------------------------------------------------------------------- tiler


def test_output_range_partitions_the_output():
    for lr, out in ((10, 25), (128, 448), (7, 7), (33, 100)):
        pieces = [output_range(a, min(a + 4, lr), lr, out) for a in range(0, lr, 4)]
        assert pieces[0][0] == 0 and pieces[-1][1] == out
        assert all(p[1] == q[0] for p, q in itertools.pairwise(pieces))


def test_output_size_rounds_as_the_official_test():
    assert output_size(128, 100, 2.5) == (320, 250)
    assert output_size(3, 5, 1.5) == (round(4.5), round(7.5)) == (4, 8)  # banker's rounding


@pytest.mark.parametrize("scale", [1.5, 3.7])
def test_tiled_equals_whole_fmen(baby_lr, fmen_lte, scale):
    image = baby_lr[:72, :40].astype(np.float32) / 255
    size = output_size(72, 40, scale)
    whole = upscale_array_to(fmen_lte, image, size, tile=10**6)
    tiled = upscale_array_to(fmen_lte, image, size, tile=16)  # rounded up to 32
    assert plan_anyscale(72, 40, fmen_lte, tile=16).count == 6
    assert tiled.shape == whole.shape == (*size, 3)
    # Only float rounding of convolutions run at other sizes remains (no seams).
    assert _max_diff(tiled, whole) < 1e-4


def test_too_little_context_shows_seams(baby_lr, fmen_lte):
    # The control for the test above: 1 pixel of context is far from FMEN-S's 35.
    image = baby_lr[:72, :40].astype(np.float32) / 255
    size = output_size(72, 40, 1.5)
    whole = upscale_array_to(fmen_lte, image, size, tile=10**6)
    seams = upscale_array_to(fmen_lte, image, size, tile=32, margin=1)
    assert _max_diff(seams, whole) > 1e-3


def test_tiled_equals_whole_esc():
    # ESC + LTE (golden checkpoint): its margin is a multiple of its 32-pixel window.
    data = load_file(shared_file("golden/esc_lte_x2p5.safetensors"))
    state = {k[len("state_dict.") :]: v for k, v in data.items() if k.startswith("state_dict.")}
    module = build_esc_lte().eval()
    module.load_state_dict(state)
    model = SRModel(module, get_arch("esc_lte"), 4)
    assert margin_for(model) == CONTEXT["esc_lte"] == 64
    image = read_image(shared_file("data/Set14/LR_bicubic/X2/barbarax2.png"))[:40, :104]
    size = output_size(40, 104, 1.2)
    whole = upscale_array_to(model, image.astype(np.float32) / 255, size, tile=10**6)
    tiled = upscale_array_to(model, image.astype(np.float32) / 255, size, tile=32)
    assert _max_diff(tiled, whole) < 1e-4


def test_uint8_gray_and_small_images(baby_lr, fmen_lte):
    whole = upscale_array_to(fmen_lte, baby_lr[:40, :64], (50, 110), tile=10**6)
    tiled = upscale_array_to(fmen_lte, baby_lr[:40, :64], (50, 110), tile=32)
    assert tiled.dtype == np.uint8 and tiled.shape == (50, 110, 3)
    assert _max_diff(tiled, whole) <= 1
    gray = upscale_array_to(fmen_lte, baby_lr[:30, :30, 1], (50, 50))
    assert gray.shape == (50, 50) and gray.dtype == np.uint8
    tiny = upscale_array_to(fmen_lte, baby_lr[:3, :5], (7, 12))  # edge-padded for encoding
    assert tiny.shape == (7, 12, 3)
    assert _max_diff(tiny.mean((0, 1)), baby_lr[:3, :5].mean((0, 1))) < 10


def test_memory_budget_tiles_and_reports_progress(baby_lr, fmen_lte):
    image = baby_lr[:96, :96]
    plan = plan_anyscale(96, 96, fmen_lte, max_memory=48 << 20)
    assert plan.count > 1 and plan.margin == CONTEXT["fmen_s_lte"]
    assert plan_anyscale(96, 96, fmen_lte, max_memory=4 << 30).count == 1
    calls = []
    tiled = upscale_array_to(
        fmen_lte, image, (110, 100), max_memory=48 << 20, progress=lambda d, t: calls.append(t)
    )
    assert len(calls) == plan.count and calls[-1] == len(calls)
    assert _max_diff(tiled, upscale_array_to(fmen_lte, image, (110, 100), tile=10**6)) <= 1


def test_default_budget_tiles_a_large_image(fmen_lte):
    # 2000x2000 does not fit in one tile; the head's chunk is bounded whatever the scale.
    plan = plan_anyscale(2000, 2000, fmen_lte)
    assert plan.count > 1 and 1024 <= plan.chunk <= 16384


def test_bf16_runs(baby_lr, lte_weights):
    fp32 = Upscaler(weights=lte_weights, scale=2.5, precision="fp32")(baby_lr[:32, :32])
    bf16 = Upscaler(weights=lte_weights, scale=2.5, precision="bf16")(baby_lr[:32, :32])
    assert bf16.shape == fp32.shape == (80, 80, 3)
    assert np.abs(bf16.astype(int) - fp32).mean() < 2


# ----------------------------------------------------------------------------- models, API


def test_builtin_anyscale_is_one_file():
    assert BUILTIN_MODELS["anyscale"] == "anyscale.safetensors"
    assert builtin_is_arbitrary("anyscale") and not builtin_is_arbitrary("default")
    assert builtin_weights_path("anyscale", 2.5) == builtin_weights_path("anyscale", 4)


def test_arbitrary_weights_take_any_scale(baby_lr, lte_weights):
    assert resolve_model(None, lte_weights, 2.5).arbitrary_scale
    assert resolve_model(None, lte_weights, 3).arbitrary_scale  # integer scales too
    upscaler = Upscaler(weights=lte_weights, scale=2.5)
    assert upscaler.arbitrary_scale and upscaler.scale == 2.5 and upscaler.hint is None
    assert upscaler(baby_lr[:50, :30]).shape == (125, 75, 3)
    assert Upscaler(weights=lte_weights, scale=3)(baby_lr[:20, :30]).shape == (60, 90, 3)
    assert upscale(baby_lr[:20, :30], weights=lte_weights, size=(33, 17)).shape == (33, 17, 3)
    rgba = np.dstack([baby_lr[:20, :30], np.arange(600, dtype=np.uint8).reshape(20, 30)])
    assert upscaler(rgba).shape == (50, 75, 4)


def test_fixed_scale_model_at_a_non_integer_scale_resizes_with_a_hint(baby_lr):
    upscaler = Upscaler(model="default", scale=2.5)
    assert upscaler.scale == 3 and upscaler.outscale == 2.5
    assert "anyscale" in upscaler.hint
    assert upscaler(baby_lr[:20, :30]).shape == (50, 75, 3)
    assert Upscaler(model="bicubic", scale=2.5)(baby_lr[:20, :30]).shape == (50, 75, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scale": 0.5}, "between 1 and 8"),
        ({"scale": 8.5}, "between 1 and 8"),
        ({"size": (0, 10)}, "positive"),
        ({"size": (10, 10), "scale": 2}, "not both"),
        ({"model": "default", "size": (10, 10)}, "arbitrary-scale"),
    ],
)
def test_api_errors(kwargs, message):
    with pytest.raises(UsageError, match=message):
        Upscaler(**kwargs)


def test_builtin_anyscale_through_the_api(baby_lr):
    upscaler = Upscaler(scale=2.5)
    assert upscaler.name == "fmen_s_lte" and upscaler.scale == 2.5
    assert upscaler(baby_lr[:40, :32]).shape == (100, 80, 3)
    assert Upscaler(size=(50, 70)).name == "fmen_s_lte"
    assert Upscaler(model="anyscale", scale=2).scale == 2
    assert Upscaler(scale=2).name == "fmen_s"  # integer scale: the default model


# ----------------------------------------------------------------------------- CLI


def test_parse_output_size_is_width_by_height():
    assert parse_output_size("1920x1080") == (1080, 1920)
    assert parse_output_size("64") == (64, 64)
    with pytest.raises(UsageError, match="width x height"):
        parse_output_size("0x5")


def test_cli_scale_and_size(tmp_path, lte_weights, capsys):
    source = shared_file("data/Set5/LR_bicubic/X4/birdx4.png")
    small = tmp_path / "bird.png"
    write_image(small, read_image(source)[:40, :50])
    out = tmp_path / "out"
    assert (
        main(["upscale", str(small), "-o", str(out), "--weights", lte_weights, "--scale", "2.5"])
        == 0
    )
    assert read_image(out / "bird_x2.5.png").shape == (100, 125, 3)
    assert (
        main(["upscale", str(small), "-o", str(out), "--weights", lte_weights, "--size", "70x30"])
        == 0
    )
    assert read_image(out / "bird_70x30.png").shape == (30, 70, 3)
    assert (
        main(["upscale", str(small), "-o", str(out), "--weights", lte_weights, "--scale", "2"]) == 0
    )
    assert read_image(out / "bird_x2.png").shape == (80, 100, 3)
    capsys.readouterr()
    assert (
        main(["upscale", str(small), "-o", str(out), "--model", "default", "--scale", "1.5"]) == 0
    )
    assert "lightsr upscale: note: fmen_s is a fixed-scale model" in capsys.readouterr().err
    assert read_image(out / "bird_x1.5.png").shape == (60, 75, 3)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scale", "9"], "--scale must be between 1 and 8, got 9"),
        (["--scale", "0.5"], "--scale must be between 1 and 8"),
        (["--size", "0x20"], "--size must look like 1920x1080 (width x height"),
        (["--size", "20x20", "--model", "emt"], "--size needs an arbitrary-scale model"),
        (["--size", "20x20", "--outscale", "2"], "--size or --outscale"),
        (["--scale", "2.5", "--outscale", "3"], "non-integer --scale or --outscale"),
    ],
)
def test_cli_errors(tmp_path, capsys, extra, message):
    source = shared_file("data/Set5/LR_bicubic/X4/birdx4.png")
    assert main(["upscale", str(source), "-o", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lightsr upscale: error: ") and message in err[-1]


def test_cli_scale_and_size_together_is_a_usage_error(tmp_path, capsys):
    source = shared_file("data/Set5/LR_bicubic/X4/birdx4.png")
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", str(source), "-o", str(tmp_path), "--scale", "2", "--size", "9x9"])
    assert exit_info.value.code == 2
    assert "not allowed with argument --scale" in capsys.readouterr().err


# ----------------------------------------------------------------------------- video


def test_video_at_a_non_integer_scale_gets_even_sides(tmp_path, lte_weights):
    from tests.video_clips import Clip, decoded_frames, make_clip

    source = make_clip(tmp_path / "in.mp4", Clip(frames=3))  # 64x48, yuv420p
    upscaler = Upscaler(weights=lte_weights, scale=1.3, device="cpu")
    assert upscaler.output_size(48, 64) == (62, 83)
    from lightsr.video.pipeline import transcode

    report = transcode(upscaler, source, tmp_path / "out.mp4")
    frames = decoded_frames(tmp_path / "out.mp4")
    assert report.frames == len(frames) == 3
    assert {(f.width, f.height) for f in frames} == {(84, 62)}  # 83 is odd: nearest even


# ----------------------------------------------------------------------------- serve


def test_served_scales_of_fixed_and_any_scale_models(baby_lr):
    from lightsr.serve.engine import EngineOptions, Job, ModelPool
    from lightsr.serve.errors import ServeError

    pool = ModelPool(["default", "anyscale"], EngineOptions(device="cpu", precision="fp32"))
    with pytest.raises(ServeError, match=r"not x2\.5"):
        pool.check("default", 2.5)
    assert pool.check("default", 2.0) == 2 and not pool.arbitrary("default")
    assert pool.arbitrary("anyscale") and pool.check("anyscale", 2.5) == 2.5
    with pytest.raises(ServeError):
        pool.check("anyscale", 8.5)
    from lightsr.io import encode_image

    data = encode_image(baby_lr[:20, :24], ".png").tobytes()
    job = Job(
        model="anyscale",
        scale=2.5,
        format="png",
        filename="a.png",
        data=data,
        input_size=(24, 20),
        time_limit=60.0,
        quality=None,
    )
    _, size = pool.run(job, lambda done, total: None)
    assert size == (60, 50)  # (width, height)
