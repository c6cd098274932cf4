"""ONNX export (``lightsr.export``, ``lightsr export``) and the ONNX Runtime backend.

Every registered variant is exported once (module-scoped fixture) with dynamic sizes and
checked against eager PyTorch at sizes other than the trace's, and on a real Set5 image.
Official weights are used where they exist; the random-init ESC variants are built with
fewer blocks (same code paths, a fraction of the export time).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from lightsr.api import Upscaler, upscale
from lightsr.archs import build_model, list_models
from lightsr.archs.registry import arch_specs
from lightsr.checkpoint import save_safetensors
from lightsr.cli import main
from lightsr.errors import CheckpointError, ExportError, UsageError
from lightsr.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    VERIFY_SIZES,
    cached_export,
    export_onnx,
    onnx_ops,
    parse_size,
    sample_image,
    verify_onnx,
)
from lightsr.io import read_image, to_float
from lightsr.models import SRModel, load_model
from lightsr.ort import OrtModel
from tests.conftest import shared_file
from tests.tiny_sr import tiny_model

OFFICIAL = {
    "emt": ("emt", 4, "weights/official/EMT/EMT_LSR_x4.pth"),
    "fmen_s": ("fmen_s", 4, "weights/official/FMEN/test_weights.pt"),
    "ditn_real": ("ditn_real", 4, "weights/official/DITN/DITN_Real_x4.pth"),
}
# Random-init variants: smaller builds where the full one is slow to trace.
SMALL = {
    "ditn": {"ufone_blocks": 1},
    "esc": {"n_blocks": 1, "conv_blocks": 2},
    "esc_light": {"n_blocks": 1, "conv_blocks": 2},
    "esc_fp": {"n_blocks": 1, "conv_blocks": 2},
    "esc_real": {"n_blocks": 1, "conv_blocks": 1},
    # 48-px windows at 192 channels would need GiBs of attention scores in ORT.
    "esc_xl": {"n_blocks": 1, "conv_blocks": 1, "dim": 48, "pdim": 16, "num_heads": 3},
}
# Other scales: the same small EMT with the ×2 and ×3 tails (the full EMT traces for about
# a minute; "emt" above exports it whole, with its official ×4 weights).
SCALED = {"emt_x2": ("emt", 2), "emt_x3": ("emt", 3)}
EMT_SMALL = {"n_blocks": 1, "n_layers": 2}
# Arbitrary-scale networks (LTE heads) are refused: test_arbitrary_scale_export_is_refused.
ARBITRARY = {spec.name for spec in arch_specs() if spec.arbitrary_scale}
CASES = sorted((set(list_models()) | set(OFFICIAL) | set(SCALED)) - ARBITRARY)
TOLERANCE = 1e-3


def _model(case: str) -> SRModel:
    if case in OFFICIAL:
        variant, scale, relative = OFFICIAL[case]
        model = load_model(shared_file(relative))
        assert (model.variant, model.scale) == (variant, scale)
        return model
    torch.manual_seed(0)
    if case in SCALED:
        variant, scale = SCALED[case]
        return _wrap(build_model(variant, scale, **EMT_SMALL).eval(), variant, scale)
    module = build_model(case, 4, **SMALL.get(case, {})).eval()
    if case == "fmen":  # training form with non-trivial BatchNorm statistics
        for bn in (m for m in module.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return load_model(module.state_dict()) if case not in SMALL else _wrap(module, case)


def _wrap(module: nn.Module, variant: str, scale: int = 4) -> SRModel:
    from lightsr.archs.registry import get_arch

    return SRModel(module=module, spec=get_arch(variant), scale=scale, source="random")


@pytest.fixture(scope="module", params=CASES)
def exported(request, tmp_path_factory):
    model = _model(request.param)
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    result = export_onnx(model, path)
    return model, result


def test_every_variant_is_covered():
    assert set(list_models()) | set(OFFICIAL) | set(SCALED) == set(CASES) | ARBITRARY
    assert {"esc_lte", "fmen_s_lte"} <= ARBITRARY


@pytest.mark.parametrize("variant", sorted(ARBITRARY))
def test_arbitrary_scale_export_is_refused(tmp_path, capsys, variant):
    model = _wrap(build_model(variant, 4).eval(), variant)
    with pytest.raises(UsageError, match="export of arbitrary-scale models is not supported"):
        export_onnx(model, tmp_path / "m.onnx")
    weights = tmp_path / f"{variant}.safetensors"
    save_safetensors(model.module.state_dict(), weights)
    code = main(["export", "--weights", str(weights), "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{variant}: export of arbitrary-scale models is not supported yet" in err
    assert not (tmp_path / "m.onnx").exists()


def test_export_matches_torch_at_untraced_sizes(exported):
    model, result = exported
    sizes = [s for s in VERIFY_SIZES if min(s) >= result.min_side]
    assert len(sizes) == 3
    diffs = verify_onnx(result.path, model, sizes)
    assert max(diffs.values()) <= TOLERANCE, diffs


def test_export_keeps_the_batch_dynamic(exported):
    model, result = exported
    generator = torch.Generator().manual_seed(3)
    x = torch.cat([sample_image(37, 53, generator) for _ in range(3)])
    with torch.inference_mode():
        expected = model.upscale(x).numpy()
    assert np.abs(OrtModel(result.path).run(x.numpy()) - expected).max() <= TOLERANCE


def test_export_matches_torch_on_a_set5_image(exported):
    model, result = exported
    lr = read_image(shared_file(f"data/Set5/LR_bicubic/X{model.scale}/birdx{model.scale}.png"))
    lr = lr[:72, :72]  # the whole x4 image; the x2/x3 ones cropped to the same cost
    x = torch.from_numpy(to_float(lr)).permute(2, 0, 1)[None].contiguous()
    with torch.inference_mode():
        expected = model.upscale(x).numpy()
    actual = OrtModel(result.path).run(x.numpy())
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= TOLERANCE


def test_export_is_one_dynamic_self_contained_file(exported):
    model, result = exported
    proto = onnx.load(str(result.path), load_external_data=False)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    assert dims[1].dim_value == 3
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert metadata["variant"] == model.variant and metadata["family"] == model.family
    assert metadata["scale"] == str(model.scale) and metadata["input_range"] == "[0, 1]"
    assert metadata["lightsr_version"] and int(metadata["min_side"]) == result.min_side
    assert result.min_side <= 33
    assert "Conv" in onnx_ops(result.path)
    # No inner shapes: ONNX Runtime would plan buffer reuse from them that raises the peak
    # memory 2-3x (lightsr.export.onnx._drop_inner_shapes).
    assert not proto.graph.value_info
    assert "SplitToSequence" not in onnx_ops(result.path)  # sliced (_slice_split_sequences)
    # Constants are folded: convolutions have stored weights and biases (not Cast → Expand
    # chains, which keep ONNX Runtime from its blocked kernels), and the graph stays in the
    # standard ONNX domain but for the fused attention of EMT and ESC (ONNX Runtime's
    # contrib op, see lightsr.export.onnx_forms).
    stored = {tensor.name for tensor in proto.graph.initializer}
    convs = [node for node in proto.graph.node if node.op_type == "Conv"]
    assert all(set(node.input[1:]) <= stored for node in convs)
    contrib = {
        (node.domain, node.op_type)
        for node in proto.graph.node
        if node.domain not in ("", "ai.onnx")
    }
    fused = model.family in ("emt", "esc")
    assert contrib == ({("com.microsoft", "MultiHeadAttention")} if fused else set())


def test_fmen_export_is_reparameterised(tmp_path):
    torch.manual_seed(0)
    model = load_model(build_model("fmen_s", 2).state_dict())
    result = export_onnx(model, tmp_path / "fmen.onnx")
    assert result.metadata["form"] == "deploy"
    assert "BatchNormalization" not in onnx_ops(result.path)
    assert not model.module.deploy  # the caller's model is untouched


# ------------------------------------------------------------------- frozen branches


class _BranchOnWidth(nn.Module):
    """Doubles even-width inputs: a Python branch on a size that tracing would freeze."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.repeat_interleave(torch.repeat_interleave(x, 2, dim=2), 2, dim=3)
        return y * 2 if x.shape[-1] % 2 == 0 else y


class _BranchOnBatch(nn.Module):
    """Treats batches of 3+ differently. (torch.export assumes dynamic sizes are not 1
    without recording it, so a branch on ``batch > 1`` cannot be caught.)"""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.repeat_interleave(torch.repeat_interleave(x, 2, dim=2), 2, dim=3)
        return y * 2 if x.shape[0] > 2 else y


def _toy(module: nn.Module) -> SRModel:
    base = tiny_model(scale=2)
    module.register_parameter("unused", nn.Parameter(torch.zeros(1)))
    return SRModel(module=module, spec=base.spec, scale=2, source="toy")


@pytest.mark.parametrize("module", [_BranchOnWidth(), _BranchOnBatch()], ids=["width", "batch"])
def test_frozen_size_branches_are_refused(tmp_path, module):
    path = tmp_path / "toy.onnx"
    with pytest.raises(ExportError, match="branch was frozen") as info:
        export_onnx(_toy(module), path)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_failed_export_leaves_no_file(tmp_path, monkeypatch):
    import lightsr.export.onnx

    def fail(*args, **kwargs):
        raise ExportError("checked and refused")

    monkeypatch.setattr(lightsr.export.onnx, "check_witnesses", fail)
    target = tmp_path / "m.onnx"
    target.write_bytes(b"old")
    with pytest.raises(ExportError, match="refused"):
        export_onnx(tiny_model(), target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_fp16_export_keeps_float32_io(tmp_path):
    model = load_model(shared_file("weights/official/DITN/DITN_Real_x4.pth"))
    result = export_onnx(model, tmp_path / "ditn16.onnx", half=True)
    proto = onnx.load(str(result.path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not proto.graph.value_info
    conv_weights = [t for t in proto.graph.initializer if len(t.dims) == 4]
    assert conv_weights and {t.data_type for t in conv_weights} == {onnx.TensorProto.FLOAT16}
    diffs = verify_onnx(result.path, model, half=True)
    assert max(diffs.values()) <= 2e-2


def test_static_export(tmp_path):
    result = export_onnx(tiny_model(), tmp_path / "s.onnx", static=(40, 48))
    dims = onnx.load(str(result.path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[2:]] == [40, 48]
    assert result.metadata["static_size"] == "40x48"


def test_parse_size():
    assert parse_size("64x96") == (64, 96)
    assert parse_size("64") == (64, 64)
    for bad in ("0", "0x4", "axb", "64x"):
        with pytest.raises(UsageError, match="64x64"):
            parse_size(bad)


# ------------------------------------------------------------------------------- CLI


def test_cli_export_verify_json(tmp_path, capsys):
    weights = shared_file("weights/official/FMEN/test_weights.pt")
    out = tmp_path / "fmen_s.onnx"
    code = main(["export", "--weights", str(weights), "-o", str(out), "--verify", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["variant"] == "fmen_s" and summary["scale"] == 4
    assert set(summary["max_abs_diff"]) == {"37x53", "64x64", "97x131"}
    assert max(summary["max_abs_diff"].values()) <= TOLERANCE
    assert out.is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "fmen_s", "--scale", "4", "--static", "64by64"], "64x64"),
        (["--model", "nonet", "--scale", "4"], "unknown model 'nonet'"),
        (["--model", "fmen_s"], "--scale"),
        (["--model", "fmen_s", "--scale", "4", "--opset", "9"], "opset"),
    ],
)
def test_cli_export_usage_errors(tmp_path, capsys, argv, message):
    code = main(["export", *argv, "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("output", "message"),
    [("m.pth", "must end in .onnx"), ("missing/m.onnx", "no such folder"), ("f/m.onnx", "folder")],
)
def test_cli_export_bad_outputs(tmp_path, capsys, output, message):
    (tmp_path / "f").write_text("a file, not a folder")
    weights = shared_file("weights/official/FMEN/test_weights.pt")
    code = main(["export", "--weights", str(weights), "-o", str(tmp_path / output)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


# ---------------------------------------------------------------- ONNX Runtime backend


@pytest.fixture(scope="module")
def fmen_s_onnx(tmp_path_factory):
    model = load_model(shared_file("weights/official/FMEN/test_weights.pt"))
    return export_onnx(model, tmp_path_factory.mktemp("ort") / "fmen_s.onnx").path


def test_cli_upscale_onnxruntime_matches_torch(tmp_path, fmen_s_onnx):
    lr = shared_file("data/Set5/LR_bicubic/X4/birdx4.png")
    weights = shared_file("weights/official/FMEN/test_weights.pt")
    torch_png, ort_png = tmp_path / "torch.png", tmp_path / "ort.png"
    # torch in fp32: `--precision auto` (the default) may pick bf16 on this CPU.
    argv = ["upscale", str(lr), "-o", str(torch_png), "--weights", str(weights)]
    assert main([*argv, "--precision", "fp32"]) == 0
    argv = ["upscale", str(lr), "-o", str(ort_png), "--weights", str(fmen_s_onnx)]
    assert main([*argv, "--backend", "onnxruntime"]) == 0
    a, b = read_image(torch_png).astype(int), read_image(ort_png).astype(int)
    assert a.shape == b.shape == (288, 288, 3)
    assert np.abs(a - b).max() <= 1


def test_api_onnxruntime_tiles_like_torch(fmen_s_onnx):
    lr = read_image(shared_file("data/Set5/LR_bicubic/X4/womanx4.png"))
    weights = shared_file("weights/official/FMEN/test_weights.pt")
    expected = upscale(lr, weights=weights, tile=64, precision="fp32")
    actual = upscale(lr, weights=fmen_s_onnx, backend="onnxruntime", tile=64)
    assert np.abs(actual.astype(int) - expected.astype(int)).max() <= 1
    gray = upscale(lr[..., 0], weights=fmen_s_onnx, backend="onnxruntime")
    assert gray.shape == (lr.shape[0] * 4, lr.shape[1] * 4)


def test_onnxruntime_exports_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTSR_CACHE", str(tmp_path))
    model = tiny_model()
    first = cached_export(model)
    assert first.parent == tmp_path / "onnx" and first.name.startswith("tiny_x4_fp32_op18_")
    mtime = first.stat().st_mtime_ns
    assert cached_export(model) == first and first.stat().st_mtime_ns == mtime
    assert cached_export(model, half=True) != first
    weights = shared_file("weights/official/FMEN/test_weights.pt")
    upscaler = Upscaler(weights=weights, backend="onnxruntime")
    assert isinstance(upscaler.network, OrtModel) and upscaler.scale == 4
    assert len(list((tmp_path / "onnx").glob("fmen_s_x4_fp32_*.onnx"))) == 1


def test_onnxruntime_backend_errors(tmp_path, fmen_s_onnx):
    with pytest.raises(UsageError, match="CPU only"):
        Upscaler(weights=fmen_s_onnx, backend="onnxruntime", device="cuda")
    with pytest.raises(UsageError, match="needs backend 'onnxruntime'"):
        Upscaler(weights=fmen_s_onnx)
    with pytest.raises(UsageError, match="x4, not x2"):
        Upscaler(weights=fmen_s_onnx, backend="onnxruntime", scale=2)
    with pytest.raises(CheckpointError, match="no such ONNX file"):
        Upscaler(weights=tmp_path / "none.onnx", backend="onnxruntime")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(CheckpointError):
        Upscaler(weights=tmp_path / "junk.onnx", backend="onnxruntime")


# ------------------------------------------------------------------ graph passes for ORT


def _run_graph(proto, x: np.ndarray, optimized: Path | None = None) -> list[np.ndarray]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    session = onnxruntime.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": x})


def _graph(nodes, outputs, constants):
    from onnx import TensorProto, helper, numpy_helper

    return helper.make_model(
        helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 7, 5, 6])],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
            [numpy_helper.from_array(np.array(v), k) for k, v in constants.items()],
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )


@pytest.mark.parametrize("split", [np.int64(3), np.array([2, 4, 1], dtype=np.int64)])
def test_split_sequences_become_slices(split):
    from onnx import helper

    from lightsr.export.onnx import _slice_split_sequences

    indices = {"i0": np.int64(0), "i2": np.int64(2), "i1": np.int64(1)}
    nodes = [helper.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=1)]
    nodes += [helper.make_node("SequenceAt", ["seq", i], [f"y{i}"]) for i in indices]
    proto = _graph(nodes, [f"y{i}" for i in indices], {"split": split, **indices})
    x = np.random.default_rng(0).random((1, 7, 5, 6), dtype=np.float32)
    expected = _run_graph(proto, x)
    _slice_split_sequences(proto)
    assert {node.op_type for node in proto.graph.node} == {"Slice"}
    for actual, want in zip(_run_graph(proto, x), expected, strict=True):
        np.testing.assert_array_equal(actual, want)


def test_other_sequence_readers_keep_the_sequence():
    from onnx import helper

    from lightsr.export.onnx import _slice_split_sequences

    nodes = [
        helper.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=1),
        helper.make_node("SequenceAt", ["seq", "i0"], ["y"]),
        helper.make_node("SequenceLength", ["seq"], ["n"]),
    ]
    proto = _graph(nodes, ["y"], {"split": np.int64(3), "i0": np.int64(0)})
    _slice_split_sequences(proto)
    assert [node.op_type for node in proto.graph.node] == [
        "SplitToSequence",
        "SequenceAt",
        "SequenceLength",
    ]


def test_exported_gelu_is_put_in_the_order_onnx_runtime_fuses(tmp_path):
    from onnx import helper

    from lightsr.export.onnx import _order_gelu_for_fusion

    nodes = [  # the exporter's form: x · (0.5 · (1 + erf(x / √2)))
        helper.make_node("Div", ["x", "sqrt2"], ["scaled"]),
        helper.make_node("Erf", ["scaled"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["shifted"]),
        helper.make_node("Mul", ["half", "shifted"], ["halved"]),
        helper.make_node("Mul", ["x", "halved"], ["y"]),
    ]
    constants = {"sqrt2": np.float32(np.sqrt(2)), "one": np.float32(1), "half": np.float32(0.5)}
    proto = _graph(nodes, ["y"], constants)
    x = np.random.default_rng(0).normal(size=(1, 7, 5, 6)).astype(np.float32)
    _order_gelu_for_fusion(proto)
    (actual,) = _run_graph(proto, x, optimized=tmp_path / "opt.onnx")
    fused = onnx.load(str(tmp_path / "opt.onnx"))
    assert [node.op_type for node in fused.graph.node] == ["Gelu"]
    expected = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-6)
