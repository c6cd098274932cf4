"""The backend interface (:mod:`lightsr.backends`) and the NCNN backend end to end.

Real ncnn, real exported models: FMEN-S (the built-in default) and DITN-Real (official
weights), on small crops of Set5 images, exported once per module to a private cache.
"""

from __future__ import annotations

import json
import re
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from lightsr import backends, options
from lightsr.api import Upscaler
from lightsr.backends import NcnnBackend, TorchBackend, get_backend
from lightsr.cli import main
from lightsr.errors import ExportError, ImageError, UsageError
from lightsr.io import read_image, to_float, write_image
from lightsr.models import SRModel, load_model, resolve_model
from tests.conftest import shared_file

SRC = Path(__file__).resolve().parents[1] / "src" / "lightsr"
DITN_REAL = "weights/official/DITN/DITN_Real_x4.pth"


def test_registry_names_every_backend_once():
    assert backends.backend_names() == options.BACKENDS == ("torch", "onnxruntime", "ncnn")
    for name in options.BACKENDS:
        assert get_backend(name).name == name
    with pytest.raises(UsageError, match="backend 'tensorrt' is not available; choose one"):
        get_backend("tensorrt")
    assert backends.arbitrary_backends() == ["torch"]
    assert backends.file_backend("m.onnx").name == "onnxruntime"
    assert backends.file_backend("fmen_s-x4.PARAM").name == "ncnn"
    assert backends.file_backend("m.safetensors") is None


def test_callers_never_branch_on_a_backend_name():
    """api, bench, eval and serve pick a backend class; only lightsr.backends knows names."""
    files = [
        SRC / "api.py",
        SRC / "evaluate.py",
        SRC / "cli" / "eval.py",
        SRC / "cli" / "upscale.py",
    ]
    files += sorted((SRC / "bench").glob("*.py")) + sorted((SRC / "serve").glob("*.py"))
    branch = re.compile(
        r"""backend\s*(==|!=|\bin\b|\bnot in\b)\s*\(?["']|== ["'](onnxruntime|ncnn)["']"""
    )
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if branch.search(line)
    ]
    assert found == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "bf16"}, "the ncnn backend supports fp16, fp32, not bf16"),
        ({"precision": "int8"}, "not int8"),
        ({"device": "cuda"}, "use device 'auto' or 'cpu'"),
        ({"model": "anyscale"}, "arbitrary-scale models run on the torch backend only"),
        ({"scale": 2.5}, "arbitrary-scale models run on the torch backend only"),
    ],
)
def test_ncnn_options_are_refused_before_loading(kwargs, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        Upscaler(backend="ncnn", **kwargs)


def test_model_files_need_their_own_backend(tmp_path):
    with pytest.raises(UsageError, match=r"an \.param model needs backend 'ncnn'"):
        Upscaler(weights=tmp_path / "fmen_s-x4.param")
    with pytest.raises(UsageError, match=r"an \.onnx model needs backend 'onnxruntime'"):
        Upscaler(weights=tmp_path / "m.onnx", backend="ncnn")


# ------------------------------------------------------------------------ NCNN backend

needs_ncnn = pytest.mark.skipif(
    find_spec("ncnn") is None or find_spec("pnnx") is None,
    reason="needs the ncnn extra (pip install 'lightsr[ncnn]')",
)


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    """A private export cache for the module (each network is exported once)."""
    root = tmp_path_factory.mktemp("backends-cache")
    patch = pytest.MonkeyPatch()
    patch.setenv("LIGHTSR_CACHE", str(root))
    yield root
    patch.undo()


@pytest.fixture(scope="module")
def crop():
    """A 40x48 crop of Set5 'bird' x4 LR, uint8."""
    return read_image(shared_file("data/Set5/LR_bicubic/X4/birdx4.png"))[:40, :48]


def _model(name: str) -> SRModel:
    if name == "ditn_real":
        return load_model(shared_file(DITN_REAL))
    return resolve_model(None, None, 4)  # the built-in default, FMEN-S


@needs_ncnn
@pytest.mark.parametrize("name", ["fmen_s", "ditn_real"])
def test_ncnn_fp32_equals_torch(name, crop, cache):
    ncnn = NcnnBackend.from_model(_model(name), "fp32", "cpu", threads=1)
    torch_backend = TorchBackend.from_model(_model(name), "fp32", "cpu")
    assert (ncnn.variant, ncnn.scale, ncnn.precision) == (name, 4, "fp32")
    batch = to_float(crop).transpose(2, 0, 1)[None].copy()
    actual, expected = ncnn.run(batch), torch_backend.run(batch)
    assert actual.shape == expected.shape == (1, 3, 160, 192)
    assert np.abs(actual - expected).max() <= 1e-3
    described = ncnn.describe()
    assert described["backend"] == "ncnn" and described["device"] in ("cpu", "vulkan:0")
    assert described["provenance"]["variant"] == name
    assert Path(described["source"]).parent == cache / "ncnn"


@needs_ncnn
@pytest.mark.parametrize("name", ["fmen_s", "ditn_real"])
def test_ncnn_upscaler_tiles_like_torch(name, crop):
    """Through the tiler (forced 32-pixel tiles, edge tiles narrower) the uint8 images of the
    two backends agree to one level."""
    weights = shared_file(DITN_REAL) if name == "ditn_real" else None
    common = {"weights": weights, "precision": "fp32", "device": "cpu", "tile": 32}
    ncnn = Upscaler(backend="ncnn", threads=1, **common)
    torch_upscaler = Upscaler(**common)
    assert ncnn.name == torch_upscaler.name == name and ncnn.precision == "fp32"
    out = ncnn(crop)
    assert out.shape == (160, 192, 3)
    assert np.abs(out.astype(int) - torch_upscaler(crop)).max() <= 1


@needs_ncnn
def test_ncnn_inputs_smaller_than_the_export_takes(crop):
    """DITN's export needs 8 px per side: the tiler pads smaller images; run() refuses them."""
    upscaler = Upscaler(
        weights=shared_file(DITN_REAL), backend="ncnn", precision="fp32", device="cpu"
    )
    assert upscaler.network.spec.min_size == 8
    tiny = crop[:5, :7]
    out = upscaler(tiny)
    reference = Upscaler(weights=shared_file(DITN_REAL), precision="fp32", device="cpu")(tiny)
    assert out.shape == (20, 28, 3) and np.abs(out.astype(int) - reference).max() <= 1
    with pytest.raises(ImageError, match="at least 8 pixels per side"):
        upscaler.backend.run(np.zeros((1, 3, 5, 7), np.float32))


@needs_ncnn
def test_ncnn_param_files_run_as_they_are(crop):
    exported = Upscaler(backend="ncnn", device="cpu")  # auto: fp16, the export's default
    assert exported.precision == "fp16" and "fp16" in exported.precision_reason
    param = exported.network.source
    again = Upscaler(weights=param, backend="ncnn", device="cpu")
    assert (again.name, again.scale, again.precision) == ("fmen_s", 4, "fp16")
    assert np.array_equal(again(crop), exported(crop))
    with pytest.raises(UsageError, match="its weights are fp16, not fp32"):
        Upscaler(weights=param, backend="ncnn", precision="fp32", device="cpu")
    with pytest.raises(UsageError, match="upscales x4, not x2"):
        Upscaler(weights=param, backend="ncnn", scale=2, device="cpu")


@needs_ncnn
def test_ncnn_param_names_must_say_the_network(tmp_path):
    exported = Upscaler(backend="ncnn", device="cpu")
    param = Path(exported.network.source)
    renamed = tmp_path / "model.param"
    renamed.write_bytes(param.read_bytes())
    renamed.with_suffix(".bin").write_bytes(param.with_suffix(".bin").read_bytes())
    with pytest.raises(UsageError, match="cannot tell which network"):
        Upscaler(weights=renamed, backend="ncnn")


@needs_ncnn
def test_cli_upscale_with_ncnn(tmp_path, crop, capsys):
    source = write_image(tmp_path / "bird.png", crop)
    out = tmp_path / "bird_x4.png"
    argv = ["upscale", str(source), "-o", str(out), "--backend", "ncnn", "--precision", "fp32"]
    assert main([*argv, "--threads", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["succeeded"], summary["backend"], summary["precision"]) == (1, "ncnn", "fp32")
    expected = Upscaler(precision="fp32", device="cpu")(crop)
    assert np.abs(read_image(out).astype(int) - expected).max() <= 1


@needs_ncnn
def test_cli_refuses_a_network_without_ncnn_form_in_one_line(tmp_path, crop, monkeypatch, capsys):
    from lightsr.export import ncnn_forms

    monkeypatch.setenv("LIGHTSR_CACHE", str(tmp_path / "fresh"))  # nothing exported yet
    for key in ("fmen", "fmen_s"):  # keyed by family or by variant
        monkeypatch.setitem(ncnn_forms.UNSUPPORTED, key, "its test-only reason")
    source = write_image(tmp_path / "bird.png", crop)
    argv = ["upscale", str(source), "-o", str(tmp_path / "out.png"), "--backend", "ncnn"]
    assert main(argv) == ExportError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lightsr upscale: error: fmen_s: no NCNN export: its test-only reason"]


@needs_ncnn
def test_cli_eval_with_ncnn(tmp_path, capsys):
    """A two-image test set (HR crops; LR made by bicubic): the same PSNR as torch."""
    hr = tmp_path / "tiny" / "HR"
    hr.mkdir(parents=True)
    for name in ("baby", "bird"):
        write_image(
            hr / f"{name}.png", read_image(shared_file(f"data/Set5/HR/{name}.png"))[:96, :96]
        )
    argv = ["eval", "--data", str(hr.parent), "--json", "--threads", "1", "--device", "cpu"]
    assert main([*argv, "--backend", "ncnn"]) == 0
    ncnn = json.loads(capsys.readouterr().out)
    assert main(argv) == 0
    torch_result = json.loads(capsys.readouterr().out)
    assert ncnn["model"] == torch_result["model"] == "fmen_s" and len(ncnn["images"]) == 2
    assert abs(ncnn["psnr"] - torch_result["psnr"]) < 0.01


@needs_ncnn
def test_cli_bench_with_ncnn(capsys):
    argv = ["bench", "--models", "fmen_s", "--backend", "ncnn", "--runs", "2", "--warmup", "0"]
    assert main([*argv, "--input", "48x48", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["backend"], row["precision"], row["form"], row["error"]) == (
        "ncnn",
        "fp32",
        "deploy",
        None,
    )
    assert row["latency_median_s"] > 0 and row["runs"] == 2
    assert row["peak_memory_mib"] is not None and row["memory_metric"] == "cpu_peak_rss_increase"


@needs_ncnn
def test_bench_settings_for_ncnn():
    from lightsr.bench import BenchSettings, select_models

    with pytest.raises(UsageError, match="bf16 runs on the torch backend only"):
        BenchSettings(backend="ncnn", precision="bf16").validate()
    with pytest.raises(UsageError, match="--compile applies to the torch backend only"):
        BenchSettings(backend="ncnn", compile=True).validate()
    with pytest.raises(UsageError, match="not supported yet"):
        select_models("fmen_s_lte", 4, BenchSettings(backend="ncnn"))
