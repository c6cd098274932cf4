"""NCNN export (``lightsr export --format ncnn``), the NCNN runner and the apps' rules.

Official weights for FMEN-S, DITN-Real and EMT, real Set5 images. ESC has no official
weights here: ESC-light runs the golden file's weights (the official constructor's seeded
initialisation) with its zero-initialised dynamic-kernel layers given random weights, so
that every path of the graph carries signal. Each network is exported once per precision
(module-scoped fixture; EMT and ESC-light take about a minute each, marked slow).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lightsr.archs.blocks import faithful_path
from lightsr.cli import main
from lightsr.errors import ExportError, UsageError
from lightsr.export.trace import deployable_copy
from lightsr.io import read_image, to_float
from lightsr.metrics import psnr
from lightsr.models import SRModel, load_model
from tests.conftest import randomise_esc_zero_init, shared_file

pytest.importorskip("ncnn")
pytest.importorskip("pnnx")

from lightsr.export.ncnn import export_ncnn
from lightsr.export.ncnn_forms import NcnnNetwork, min_side, ncnn_form
from lightsr.ncnn_runtime import NcnnModel, chainner_scale, param_layers

OFFICIAL = {
    "fmen_s": "weights/official/FMEN/test_weights.pt",
    "ditn_real": "weights/official/DITN/DITN_Real_x4.pth",
    "emt": "weights/official/EMT/EMT_LSR_x4.pth",
}
# No official ESC weights are available (see shared/weights/official/SOURCES.md).
GOLDEN = {
    "esc_light": "golden/esc_light_x4.safetensors",
    "esc": "golden/esc_x4.safetensors",
    "esc_real": "golden/esc_real_x4.safetensors",
}
SET5 = ("baby", "bird", "butterfly", "head", "woman")
# Full Set5 images compared per network (all five for the fast FMEN-S).
PSNR_IMAGES = {
    "fmen_s": SET5,
    "ditn_real": ("butterfly",),
    "emt": ("butterfly",),
    "esc_light": ("butterfly",),
}
# Exported in the tests: (variant, marks); EMT and ESC-light take about a minute each.
EXPORTED = [
    pytest.param(variant, marks=[pytest.mark.slow] if variant in ("emt", "esc_light") else [])
    for variant in ("ditn_real", "emt", "esc_light", "fmen_s")
]
# NCNN forms compared with the faithful network in torch (ESC and ESC-Real as well).
FORMS = [*EXPORTED, "esc", pytest.param("esc_real", marks=pytest.mark.slow)]


def _model(variant: str) -> SRModel:
    if variant in GOLDEN:
        golden = load_file(shared_file(GOLDEN[variant]))
        prefix = "state_dict."
        model = load_model(
            {k[len(prefix) :]: v.float() for k, v in golden.items() if k.startswith(prefix)}
        )
        randomise_esc_zero_init(model.module)
    else:
        model = load_model(shared_file(OFFICIAL[variant]))
    assert (model.variant, model.scale) == (variant, 4)
    return model


def _lr(name: str) -> np.ndarray:
    return to_float(read_image(shared_file(f"data/Set5/LR_bicubic/X4/{name}x4.png")))


def _torch(model: SRModel, image: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    with torch.no_grad():
        return model.upscale(x)[0].permute(1, 2, 0).numpy()


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(variant, precision) → (model, .param path), exported on first use."""
    cache: dict[tuple[str, str], tuple[SRModel, object]] = {}

    def get(variant: str, precision: str):
        if (variant, precision) not in cache:
            model = _model(variant)
            folder = tmp_path_factory.mktemp(f"{variant}-{precision}")
            result = export_ncnn(model, folder, precision=precision)
            cache[variant, precision] = (model, result.param)
        return cache[variant, precision]

    return get


@pytest.mark.parametrize("variant", FORMS)
def test_ncnn_form_equals_faithful_torch(variant):
    """The module swaps of the NCNN export compute the faithful network's function
    (float64, so that only the algebra is compared) on crops of a Set5 image (EMT, fed
    noise, amplifies float64 rounding past 1e-4; on images it does not)."""
    model = deployable_copy(_model(variant))
    form = ncnn_form(model)
    faithful, swapped = NcnnNetwork(model).double(), NcnnNetwork(form).double()
    image = torch.from_numpy(_lr("bird")).permute(2, 0, 1)[None].double()
    sizes = [s for s in ((8, 8), (32, 33), (37, 53), (48, 64)) if min(s) >= min_side(model)]
    assert len(sizes) >= 3
    for size in sizes:
        x = image[:, :, 5 : 5 + size[0], 7 : 7 + size[1]].contiguous()
        with torch.no_grad(), faithful_path():
            expected, actual = faithful(x), swapped(x)
            reference = model.with_module(model.module.double()).forward(x)
        assert torch.equal(expected, reference)  # the wrapper is SRModel.forward
        assert (actual - expected).abs().max().item() <= 1e-4, size


@pytest.mark.parametrize("variant", EXPORTED)
def test_ncnn_fp32_matches_torch_on_set5_crop(exported, variant):
    model, param = exported(variant, "fp32")
    crop = _lr("bird")[10:58, 12:60]  # 48×48
    actual = NcnnModel(param).run(crop)
    expected = _torch(model, crop)
    assert actual.shape == expected.shape == (192, 192, 3)
    assert np.abs(actual - expected).max() <= 1e-3


@pytest.mark.parametrize("variant", EXPORTED)
def test_ncnn_fp16_set5_psnr_within_0_05_db(exported, variant):
    model, param = exported(variant, "fp16")
    runner = NcnnModel(param, threads=2)
    assert runner.fp16
    for name in PSNR_IMAGES[variant]:
        lr = _lr(name)
        hr = read_image(shared_file(f"data/Set5/HR/{name}.png"))
        hr = hr[: lr.shape[0] * 4, : lr.shape[1] * 4]
        torch_psnr = psnr(_to_uint8(_torch(model, lr)), hr, crop_border=4)
        ncnn_psnr = psnr(_to_uint8(runner.run(lr)), hr, crop_border=4)
        assert abs(ncnn_psnr - torch_psnr) <= 0.05, (name, torch_psnr, ncnn_psnr)


@pytest.mark.parametrize("variant", EXPORTED)
def test_param_follows_the_apps_rules(exported, variant):
    model, param = exported(variant, "fp16")
    layers = param_layers(param)
    inputs = [layer for layer in layers if layer[0] == "Input"]
    assert len(inputs) == 1 and inputs[0][1] == "data" and inputs[0][3] == ["data"]
    produced = {blob for layer in layers for blob in layer[3]}
    consumed = {blob for layer in layers for blob in layer[2]}
    assert produced - consumed == {"output"}
    # chaiNNer: the product of the PixelShuffle factors is the scale; it refuses MemoryData.
    assert chainner_scale(param) == model.scale
    kinds = {layer[0] for layer in layers}
    assert "MemoryData" not in kinds and not any("." in kind for kind in kinds)
    assert param.name == f"{variant}-x4.param" and param.with_suffix(".bin").is_file()


def test_chainner_scale_counts_upsampling_layers(tmp_path):
    param = tmp_path / "m.param"
    param.write_text(
        "7767517\n4 4\nInput data 0 1 data\nPixelShuffle ps 1 1 data a 0=2\n"
        "Interp up 1 1 a b 0=2 1=2.000000e+00 2=2.000000e+00\n"
        "Convolution c 1 1 b output 0=3 1=3 3=1 6=81\n"
    )
    assert chainner_scale(param) == 4


def test_variants_without_ncnn_form_are_refused(tmp_path):
    from lightsr.archs import build_model
    from lightsr.archs.registry import get_arch

    module = build_model("esc_fp", 4, n_blocks=1, conv_blocks=2).eval()
    model = SRModel(module, get_arch("esc_fp"), 4)
    with pytest.raises(ExportError, match="esc_fp: no NCNN export: its bicubic"):
        export_ncnn(model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cli_export_ncnn(tmp_path, capsys):
    weights = str(shared_file(OFFICIAL["fmen_s"]))
    assert main(["export", "--weights", weights, "-o", str(tmp_path), "--json"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fmen_s-x4.bin", "fmen_s-x4.param"]
    assert '"precision": "fp16"' in capsys.readouterr().out
    # Existing files need --overwrite; a .param name must carry the scale; ONNX-only flags.
    for argv in (
        ["-o", str(tmp_path)],
        ["-o", str(tmp_path / "fmen.param")],
        ["-o", str(tmp_path / "f-x4.param"), "--static", "64x64"],
        ["-o", str(tmp_path / "f-x4.param"), "--fp16", "--precision", "fp32"],
    ):
        assert main(["export", "--weights", weights, *argv]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    out = tmp_path / "fmen_s-x4-fp32.param"
    assert main(["export", "--weights", weights, "-o", str(out), "--precision", "fp32"]) == 0
    assert not NcnnModel(out).fp16 and NcnnModel(tmp_path / "fmen_s-x4.param").fp16


def test_failed_check_leaves_no_files(tmp_path, monkeypatch):
    import lightsr.export.ncnn as ncnn_export

    def fail(*args):
        raise ExportError("check failed")

    monkeypatch.setattr(ncnn_export, "_check", fail)
    with pytest.raises(ExportError):
        export_ncnn(_model("fmen_s"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_ncnn_output_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match=r"must be a \.param file or a folder"):
        export_ncnn(_model("fmen_s"), tmp_path / "m.onnx")


def test_onnx_export_follows_chainner_rules():
    """chaiNNer's ONNX rules: first input and first output, NCHW with 3 channels, float32
    or float16, dynamic height and width."""
    import onnx

    from lightsr.export import cached_export

    proto = onnx.load(str(cached_export(_model("fmen_s"))))
    for value in (proto.graph.input[0], proto.graph.output[0]):
        tensor = value.type.tensor_type
        assert tensor.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
        dims = tensor.shape.dim
        assert len(dims) == 4 and dims[1].dim_value == 3
        assert dims[2].dim_param and dims[3].dim_param  # dynamic H and W
