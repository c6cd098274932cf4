"""Every precision and backend through `lightsr upscale`, `eval` and `bench`, plus the pieces
behind them: grouped attention in exports, int8 quantisation, bf16 notes, thread choice.

The network is FMEN-S with its official ×4 weights (the fastest to export); exports and the
int8 calibration (on three small training images) go to one temporary cache per module.
"""

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from lightsr import quantize, runtime
from lightsr.archs.blocks import EXPORT_ATTENTION_GROUPS, grouped_attention
from lightsr.bench import BenchSettings
from lightsr.cli import main
from lightsr.errors import UsageError
from lightsr.io import read_image, write_image
from lightsr.metrics import psnr
from lightsr.options import resolve_precision
from lightsr.ort import read_metadata
from tests.conftest import shared_file

WEIGHTS = "weights/official/FMEN/test_weights.pt"
# Backend and precision pairs `lightsr upscale` offers (fp16 torch is GPU-only in practice:
# FMEN-S overflows to NaN in CPU fp16).
COMBINATIONS = [
    ("torch", "fp32"),
    ("torch", "bf16"),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "fp16"),
    ("onnxruntime", "int8"),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private export cache and a calibration folder of three training images."""
    root = tmp_path_factory.mktemp("precisions")
    calibration = root / "calibration"
    calibration.mkdir()
    for name in ("100075.png", "147021.png", "187083.png"):
        shutil.copy(shared_file(f"data/train/BSD200/HR/{name}"), calibration)
    patch = pytest.MonkeyPatch()
    patch.setenv("LIGHTSR_CACHE", str(root / "cache"))
    patch.setenv(quantize.CALIBRATION_VARIABLE, str(calibration))
    yield root
    patch.undo()


@pytest.fixture(scope="module")
def set5_crop(cache):
    """A 40×48 crop of Set5 'bird' ×4 LR and its HR counterpart."""
    lr = read_image(shared_file("data/Set5/LR_bicubic/X4/birdx4.png"))[:40, :48]
    hr = read_image(shared_file("data/Set5/HR/bird.png"))[:160, :192]
    path = cache / "bird_crop.png"
    write_image(path, lr)
    return path, hr


@pytest.mark.parametrize("backend, precision", COMBINATIONS)
def test_upscale_every_backend_and_precision(backend, precision, cache, set5_crop, capsys):
    source, hr = set5_crop
    out = cache / f"out_{backend}_{precision}.png"
    argv = ["upscale", str(source), "-o", str(out), "--weights", shared_file(WEIGHTS)]
    argv += ["--backend", backend, "--precision", precision, "--threads", "1", "--json"]
    assert main([str(a) for a in argv]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["succeeded"], summary["precision"]) == (1, precision)
    sr = read_image(out)
    assert sr.shape == hr.shape
    # Every form of the network is far better than noise on a real image.
    assert psnr(sr, hr, crop_border=4) > 24
    needs_note = precision == "bf16" and not runtime.has_native_bf16()
    assert ("no native bf16" in captured.err) == needs_note


def test_int8_export_is_cached_with_float_edges(cache, set5_crop):
    from lightsr.models import load_model

    model = load_model(shared_file(WEIGHTS))
    path = quantize.cached_int8_export(model)
    assert path == quantize.cached_int8_export(model)  # reused, not quantised again
    assert "_int8" in path.name and path.parent == cache / "cache" / "onnx"
    metadata = read_metadata(path)
    assert metadata["precision"] == "int8" and metadata["variant"] == "fmen_s"
    graph = onnx.load(str(path)).graph
    convs = [node for node in graph.node if node.op_type == "Conv"]
    # First and last convolutions read float tensors straight (no DequantizeLinear input).
    produced_by = {output: node.op_type for node in graph.node for output in node.output}
    assert produced_by.get(convs[0].input[0]) != "DequantizeLinear"
    assert produced_by.get(convs[-1].input[0]) != "DequantizeLinear"
    quantized = sum(produced_by.get(c.input[1]) == "DequantizeLinear" for c in convs)
    assert quantized == len(convs) - 2 * quantize.FLOAT_EDGE_CONVS
    # The HFAB gates between quantised convolutions are quantised too (3 of FMEN-S's 5):
    # both their operands are dequantised.
    gates = [
        n
        for n in graph.node
        if n.op_type == "Mul"
        and {produced_by.get(name) for name in n.input} == {"DequantizeLinear"}
    ]
    assert len(gates) == 3
    # Every quantised convolution has channel counts ONNX Runtime's fast int8 kernel takes.
    weights = {tensor.name: tensor.dims for tensor in graph.initializer}
    for conv in convs:
        if produced_by.get(conv.input[1]) == "DequantizeLinear":
            dequantize = next(n for n in graph.node if conv.input[1] in n.output)
            outputs, inputs = weights[dequantize.input[0]][:2]
            assert outputs % 4 == 0 and outputs >= 16 and inputs % 4 == 0


def test_channel_padding_keeps_the_function(cache):
    """FMEN-S (official weights): the padded fp32 graph computes what the export does."""
    from lightsr.export import cached_export
    from lightsr.models import load_model

    path = cached_export(load_model(shared_file(WEIGHTS)))
    proto = onnx.load(str(path))
    # 50-channel trunk → 52, the warm-up HFAB's 12-channel branch → 16, the rest as is.
    assert quantize.pad_conv_channels(proto) == 15
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    weights = {tensor.name: tuple(tensor.dims[:2]) for tensor in proto.graph.initializer}
    assert weights[convs[0].input[1]] == (52, 3) and weights[convs[-1].input[1]] == (48, 52)
    x = np.random.default_rng(0).random((1, 3, 23, 31), dtype=np.float32)
    expected = _run(onnx.load(str(path)), x, "input")
    # The bound of `lightsr export --verify`.
    np.testing.assert_allclose(_run(proto, x, "input"), expected, atol=1e-3)


def _run(model, x, name="x"):
    """``model`` (an ONNX proto) on ONNX Runtime, one thread."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(model.SerializeToString(), options)
    return session.run(None, {name: x})[0]


def _graph(*nodes, outputs=("y",)):
    """A float model: input x (1, 3, 8, 8) → ``nodes`` → ``outputs``; conv weights w1
    (3 → 6 channels) and w2 (6 → 3), and a scalar ``half``."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.random((6, 3, 3, 3), np.float32), "w1"),
        numpy_helper.from_array(rng.random((3, 6, 3, 3), np.float32), "w2"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    graph = helper.make_graph(
        list(nodes),
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _conv(source, weight, target):
    from onnx import helper

    return helper.make_node("Conv", [source, weight], [target], pads=[1, 1, 1, 1], name=target)


def test_channel_padding_only_where_it_is_exact():
    from onnx import helper

    x = np.random.default_rng(1).random((1, 3, 8, 8), dtype=np.float32)
    # conv → (x · 0.5, sigmoid) gate → conv: channel-wise in between, so padded to 16.
    gated = _graph(
        _conv("x", "w1", "a"),
        helper.make_node("Mul", ["a", "half"], ["b"]),
        helper.make_node("Sigmoid", ["a"], ["s"]),
        helper.make_node("Mul", ["b", "s"], ["c"]),
        _conv("c", "w2", "y"),
    )
    expected = _run(gated, x)
    assert quantize.pad_conv_channels(gated) == 1
    dims = {tensor.name: tuple(tensor.dims) for tensor in gated.graph.initializer}
    assert dims["w1"] == (16, 3, 3, 3) and dims["w2"] == (3, 16, 3, 3)
    np.testing.assert_allclose(_run(gated, x), expected, rtol=1e-6)
    # A map read by anything that is not channel-wise (here a transpose) keeps its channels,
    # as does a map that is a graph output (read by nothing else, or also by a conv), or
    # one made by a conv left out by name.
    between = (_conv("x", "w1", "a"), _conv("a", "w2", "y"))
    for model, convs in [
        (_graph(_conv("x", "w1", "a"), helper.make_node("Transpose", ["a"], ["y"])), None),
        (_graph(_conv("x", "w1", "y")), None),
        (_graph(*between, outputs=("y", "a")), None),
        (_graph(*between), ["z"]),
    ]:
        assert quantize.pad_conv_channels(model, convs) == 0


def test_eval_and_bench_accept_int8(cache, capsys):
    set5 = shared_file("data/Set5/HR").parent
    argv = ["eval", "--data", str(set5), "--weights", str(shared_file(WEIGHTS)), "--json"]
    assert main([*argv, "--backend", "onnxruntime", "--precision", "int8"]) == 0
    int8 = json.loads(capsys.readouterr().out)
    assert 29 < int8["psnr"] < 33 and len(int8["images"]) == 5
    argv = ["bench", "--models", "fmen_s", "--backend", "onnxruntime", "--precision", "int8"]
    assert main([*argv, "--runs", "1", "--warmup", "0", "--input", "48x48", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["precision"], row["error"]) == ("int8", None)


def test_int8_needs_onnxruntime_and_calibration_images(tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="onnxruntime"):
        resolve_precision("int8")
    with pytest.raises(UsageError, match="onnxruntime"):
        BenchSettings(precision="int8").validate()
    with pytest.raises(UsageError, match="calibration"):
        quantize.calibration_inputs(tmp_path / "missing", 4)
    with pytest.raises(UsageError, match="calibration"):
        quantize.calibration_inputs(tmp_path, 4)  # an empty folder


def test_calibration_inputs_are_equal_lr_crops(cache):
    inputs = quantize.calibration_inputs(cache / "calibration", 4, count=2, crop=32)
    assert len(inputs) == 2
    for array in inputs:
        assert array.shape == (1, 3, 32, 32) and array.dtype == np.float32
        assert array.min() >= 0 and array.max() <= 1


class _Windows(torch.nn.Module):
    """Self-attention in 4×4 windows of an (N, C, H, W) map, as ESC exports it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grouped_attention(*(_windows(x),) * 3, window_dim=0)


def _windows(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N·H/4·W/4, 1, 16, C): one row of tokens per 4×4 window."""
    n, c, h, w = x.shape
    tokens = x.reshape(n, c, h // 4, 4, w // 4, 4).permute(0, 2, 4, 3, 5, 1)
    return tokens.reshape(n * (h // 4) * (w // 4), 1, 16, c)


@pytest.fixture(scope="module")
def windows_onnx(tmp_path_factory):
    """``_Windows`` exported to ONNX with dynamic N, H and W, as lightsr exports."""
    from lightsr.ort import create_session

    rows, cols = torch.export.Dim("rows", max=64), torch.export.Dim("cols", max=64)
    dims = {"x": {0: torch.export.Dim("batch", max=8), 2: 4 * rows, 3: 4 * cols}}
    program = torch.export.export(
        _Windows(),
        (torch.rand(2, 3, 12, 20),),
        dynamic_shapes=dims,
        prefer_deferred_runtime_asserts_over_guards=True,
    )
    calls = [n for n in program.graph.nodes if "scaled_dot_product" in str(n.target)]
    assert len(calls) == EXPORT_ATTENTION_GROUPS  # the windows go through the groups in turn
    path = tmp_path_factory.mktemp("windows") / "windows.onnx"
    torch.onnx.export(program, dynamo=True, f=str(path), input_names=["x"])
    return create_session(path, threads=1)


# Window counts 1, 3, one more than the groups, and twice the groups.
@pytest.mark.parametrize("shape", [(1, 3, 4, 4), (1, 3, 4, 12), (1, 3, 4, 132), (2, 3, 32, 16)])
def test_grouped_attention_is_exact_for_any_window_count(shape, windows_onnx):
    x = torch.rand(shape)
    tokens = _windows(x)
    expected = F.scaled_dot_product_attention(tokens, tokens, tokens)
    (actual,) = windows_onnx.run(None, {"x": x.numpy()})
    np.testing.assert_allclose(actual, expected.numpy(), atol=1e-5)


def test_threads_follow_the_environment_and_free_cores(monkeypatch):
    monkeypatch.setenv(runtime.THREADS_VARIABLE, "3")
    assert runtime.default_threads() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(runtime.THREADS_VARIABLE, bad)
        with pytest.raises(ValueError, match=runtime.THREADS_VARIABLE):
            runtime.default_threads()
    monkeypatch.delenv(runtime.THREADS_VARIABLE)
    assert 1 <= runtime.default_threads() <= len(runtime.os.sched_getaffinity(0))


def test_threads_option_errors(capsys):
    assert main(["upscale", "x.png", "-o", "y.png", "--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
