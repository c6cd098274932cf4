"""lightsr bench: complexity counting, measuring, isolation, CLI, JSON and the plot."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from lightsr.archs.registry import build_model
from lightsr.bench import (
    BenchRow,
    BenchSettings,
    count_complexity,
    deploy_form,
    failed_row,
    flop_counter,
    measure_network,
    protocol,
    run_bench,
    select_models,
)
from lightsr.bench import plot as bench_plot
from lightsr.bench.complexity import count_arbitrary_complexity
from lightsr.cli import main
from lightsr.errors import UsageError
from tests.conftest import shared_file

SMALL_NETWORKS = ("fmen_s", "ditn_real")
TINY = BenchSettings(size=(32, 32), runs=1, warmup=0)
JSON_FIELDS = (
    "model",
    "variant",
    "scale",
    "params",
    "macs",
    "macs_executed",
    "flops",
    "activations",
    "convs",
    "latency_median_s",
    "latency_min_s",
    "latency_max_s",
    "peak_memory_mib",
    "backend",
    "device",
    "threads",
)


def _explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v


def _counted_flops(fn, *tensors: torch.Tensor) -> int:
    with torch.inference_mode(), flop_counter() as counter:
        fn(*tensors)
    return counter.get_total_flops()


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_sdpa_counts_equal_explicit_matmuls(device):
    # batch 2, 3 heads, 64 queries and keys, q/k dim 16, v dim 8.
    q = torch.randn(2, 3, 64, 16, device=device)
    k = torch.randn(2, 3, 64, 16, device=device)
    v = torch.randn(2, 3, 64, 8, device=device)
    expected = 2 * 2 * 3 * 64 * 64 * (16 + 8)
    assert _counted_flops(_explicit_attention, q, k, v) == expected
    assert _counted_flops(F.scaled_dot_product_attention, q, k, v) == expected


def test_sdpa_math_fallback_is_counted():
    q, k, v = (torch.randn(1, 2, 32, 8) for _ in range(3))
    with sdpa_kernel(SDPBackend.MATH):
        counted = _counted_flops(F.scaled_dot_product_attention, q, k, v)
    assert counted == _counted_flops(_explicit_attention, q, k, v) == 2 * 2 * 32 * 32 * 16


def test_stock_counter_misses_cpu_sdpa():
    """The reason for the extra formula: without it CPU attention counts as nothing."""
    from torch.utils.flop_counter import FlopCounterMode

    q, k, v = (torch.randn(1, 2, 32, 8) for _ in range(3))
    with FlopCounterMode(display=False) as stock:
        F.scaled_dot_product_attention(q, k, v)
    assert stock.get_total_flops() == 0


class _ToyNet(nn.Module):
    """conv3x3(3→8) → attention over pixels → conv1x1(8→3, no bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.tail = nn.Conv2d(8, 3, 1, bias=False)
        self.frozen = nn.Parameter(torch.ones(5), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        tokens = x.flatten(2).transpose(1, 2).unsqueeze(1)  # (B, 1, HW, C)
        x = F.scaled_dot_product_attention(tokens, tokens, tokens)
        return self.tail(x.squeeze(1).transpose(1, 2).reshape(-1, 8, 6, 10))


class _ReadsValues(_ToyNet):
    """A forward that reads a tensor value, which the meta device cannot provide."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.sum().item() >= 0
        return super().forward(x)


@pytest.mark.parametrize("network", [_ToyNet, _ReadsValues])
def test_count_complexity_of_toy_network(network):
    pixels = 6 * 10
    expected_macs = pixels * 8 * 3 * 9 + 2 * pixels * pixels * 8 + pixels * 3 * 8
    counts = count_complexity(network(), (1, 3, 6, 10))
    assert counts.params == 8 * 3 * 9 + 8 + 3 * 8  # the frozen parameter is left out
    assert counts.macs == counts.macs_executed == expected_macs
    assert counts.flops == 2 * expected_macs
    assert counts.activations == pixels * (8 + 3)
    assert counts.convs == 2


def test_fmen_s_deploy_counts_match_ntire_table():
    # NTIRE 2022 ESR, team NJU_Jet: 0.341 M params, 22.28 G FLOPs (= MACs), 72.09 M
    # activations and 34 convs on a 256×256 input.
    module, form = deploy_form(build_model("fmen_s", 4))
    counts = count_complexity(module, (1, 3, 256, 256))
    assert form == "deploy"
    assert counts.params == 341_066
    assert counts.macs == pytest.approx(22.28e9, rel=0.01)
    assert counts.activations == pytest.approx(72.09e6, rel=0.01)
    assert counts.convs == 34


def test_ditn_real_counts():
    # 30.76 G: the official DITN_Real x4 counted with FlopCounterMode / 2 at 256×256.
    module, _ = deploy_form(build_model("ditn_real", 4))
    counts = count_complexity(module, (1, 3, 256, 256))
    assert counts.params == 444_112
    assert counts.macs == pytest.approx(30.76e9, rel=0.01)


def test_emt_counts():
    # The official EMT x4 counts 73.11 G (FlopCounterMode / 2 at 256×256). 4.67 G of that
    # are its one-hot depthwise "shift" convs, which lightsr implements as copies: 6 blocks ×
    # (6 MLPs × (60 + 120) + 4 PixelMixers × 60) channels × 9 taps × 256² pixels.
    # They are counted as the official code runs them; macs_executed leaves them out.
    shift_macs = 6 * (6 * 180 + 4 * 60) * 9 * 256 * 256
    counts = count_complexity(build_model("emt", 4), (1, 3, 256, 256))
    assert counts.params == 690_048
    assert counts.macs == pytest.approx(73.11e9, rel=0.001)
    assert counts.macs - counts.macs_executed == shift_macs


def test_measure_network_in_process_fills_every_field():
    row = measure_network("fmen_s", TINY)
    assert row.form == "deploy" and row.model == "fmen" and row.variant == "fmen_s"
    assert row.params == 341_066 and row.flops == 2 * row.macs
    assert 0 < row.latency_min_s <= row.latency_median_s <= row.latency_max_s
    assert row.peak_memory_mib >= 0 and row.memory_metric == "cpu_peak_rss_increase"
    assert row.runs == 1 and row.threads == 2 and row.error is None
    assert BenchRow.from_dict(json.loads(json.dumps(row.to_dict()))) == row


def test_ntire_protocol_times_one_forward_per_image():
    settings = BenchSettings(size=(32, 32), runs=2, protocol="ntire")
    row = measure_network("fmen_s", settings)
    assert row.runs == 2 and row.protocol == "ntire"
    assert row.latency_s == row.latency_mean_s
    assert row.latency_min_s <= row.latency_mean_s <= row.latency_max_s


def test_isolated_failure_becomes_an_error_row():
    # EMT needs sides above 16 px; the worker's one-line error reaches the row.
    (row,) = run_bench(["emt"], BenchSettings(size=(8, 8), runs=1, warmup=0))
    assert row.error == "emt needs inputs of at least 17 px per side"
    assert row.latency_median_s is None and row.model == "emt"


PROBE_SCRIPT = """
import torch
from lightsr.bench import MemoryProbe
probe = MemoryProbe(torch.device("cpu"))
before = torch.ones(16 * 2**20 // 4)  # allocated before start: not counted
probe.start()
during = torch.ones(64 * 2**20 // 4)  # 64 MiB, written so that it is resident
print(probe.peak_mib())
"""


def test_cpu_memory_probe_sees_an_allocation_after_start():
    # A fresh process, as bench uses it: in a long-lived one, freed pages from earlier work
    # can stay resident and absorb the allocation.
    out = subprocess.run(
        [sys.executable, "-c", PROBE_SCRIPT], capture_output=True, text=True, check=True
    )
    assert 60 <= float(out.stdout) < 64 + 16


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"protocol": "ntire", "precision": "fp16"}, "fp32"),
        ({"backend": "onnxruntime", "precision": "bf16"}, "bf16"),
        ({"runs": 0}, "runs"),
        ({"device": "tpu"}, "device"),
        ({"backend": "onnxruntime", "compile": True}, "--compile"),
    ],
)
def test_invalid_settings_are_usage_errors(changes, message):
    with pytest.raises(UsageError, match=message):
        BenchSettings(**changes).validate()


def test_onnxruntime_backend_needs_its_modules(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "onnxruntime" else real_find_spec(name, *args),
    )
    with pytest.raises(UsageError, match=r"not available here \(missing: .*onnxruntime\)"):
        BenchSettings(backend="onnxruntime").validate()


def test_select_models():
    assert select_models("fmen_s, ditn_real,fmen_s", 4) == ["fmen_s", "ditn_real"]
    assert set(SMALL_NETWORKS) <= set(select_models("all", 4))
    with pytest.raises(UsageError, match="unknown model"):
        select_models("nope", 4)


def _one_image_set(root: Path) -> Path:
    """A copy of Set5 reduced to its smallest image (bird), to keep evaluation quick."""
    hr = shared_file("data/Set5/HR/bird.png")
    lr = shared_file("data/Set5/LR_bicubic/X4/birdx4.png")
    test_set = root / "Bird"
    (test_set / "LR_bicubic" / "X4").mkdir(parents=True)
    (test_set / "HR").mkdir()
    shutil.copy(hr, test_set / "HR" / hr.name)
    shutil.copy(lr, test_set / "LR_bicubic" / "X4" / lr.name)
    return test_set


def test_cli_json_and_plot(tmp_path, monkeypatch, capsys):
    official = shared_file("weights/official/FMEN/test_weights.pt").parents[1]
    monkeypatch.setenv("LIGHTSR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LIGHTSR_WEIGHTS_URL", official.as_uri())
    test_set = _one_image_set(tmp_path)
    plot = tmp_path / "bench.png"
    argv = ["bench", "--models", ",".join(SMALL_NETWORKS), "--input", "32x32", "--runs", "1"]
    argv += ["--warmup", "0", "--json", "--plot", str(plot), "--plot-set", str(test_set)]
    assert main(argv) == 0

    rows = json.loads(capsys.readouterr().out)
    assert [row["variant"] for row in rows] == list(SMALL_NETWORKS)
    for row in rows:
        missing = [key for key in JSON_FIELDS if row.get(key) is None]
        assert not missing, f"{row['variant']}: no {missing}"
    image = cv2.imread(str(plot))
    assert image is not None and image.shape == (660, 960, 3)
    # One cached evaluation per official checkpoint, with a PSNR a working x4 model reaches.
    cached = sorted((tmp_path / "cache" / "eval").glob("*_Bird_x4.json"))
    assert len(cached) == 2
    assert all(json.loads(path.read_text())["psnr"] > 30 for path in cached)


def test_plot_uses_the_eval_cache(tmp_path, monkeypatch):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not really a checkpoint")
    data_dir = tmp_path / "Set5"
    from lightsr.hub import file_sha256

    monkeypatch.setenv("LIGHTSR_CACHE", str(tmp_path / "cache"))
    cache = bench_plot.eval_cache_path(file_sha256(weights), "Set5", 4)
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"psnr": 31.5}))
    # A cache hit never loads the (unloadable) checkpoint nor reads the (missing) images.
    assert bench_plot.weights_psnr(weights, data_dir, 4) == 31.5


def test_plot_without_weights_notes_and_still_writes(tmp_path):
    row = failed_row("emt", TINY, "boom")
    shared_file("data/Set5/HR")
    result = bench_plot.plot_bench([row], tmp_path / "p.png")
    assert result.notes == ["emt: not plotted (failed: boom)"]
    assert cv2.imread(str(tmp_path / "p.png")) is not None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "nope"], "unknown model"),
        (["--input", "32by32"], "--input"),
        (["--backend", "onnxruntime", "--device", "cuda"], "CPU only"),
        (["--protocol", "ntire", "--precision", "fp16"], "fp32"),
    ],
)
def test_cli_usage_errors(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_onnxruntime_backend_runs_the_cached_export(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIGHTSR_CACHE", str(tmp_path))
    argv = ["bench", "--models", "fmen_s", "--backend", "onnxruntime", "--runs", "2"]
    assert main([*argv, "--warmup", "0", "--input", "64x64", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["backend"], row["form"], row["error"]) == ("onnxruntime", "deploy", None)
    assert row["latency_median_s"] > 0 and row["runs"] == 2
    assert len(list((tmp_path / "onnx").glob("fmen_s_x4_fp32_*.onnx"))) == 1


@pytest.mark.parametrize(("backend", "prepared"), [("onnxruntime", True), ("torch", False)])
def test_exports_are_made_before_the_measuring_process(tmp_path, monkeypatch, backend, prepared):
    # Exporting in the measuring process warms its heap: the row's peak memory would read
    # near zero (lightsr.bench.protocol.prepare_network).
    monkeypatch.setenv("LIGHTSR_CACHE", str(tmp_path))
    commands = []
    real_run = protocol.subprocess.run

    def run(command, **kwargs):
        exported = sorted((tmp_path / "onnx").glob("*.onnx"))
        commands.append((command[-1] == protocol.PREPARE_FLAG, exported))
        return real_run(command, **kwargs)

    monkeypatch.setattr(protocol.subprocess, "run", run)
    settings = BenchSettings(backend=backend, size=(64, 64), runs=1, warmup=0)
    (row,) = run_bench(["fmen_s"], settings)
    assert row.error is None
    if prepared:
        assert [flag for flag, _ in commands] == [True, False]
        assert not commands[0][1] and len(commands[1][1]) == 1  # the second one only loads
    else:
        assert [flag for flag, _ in commands] == [False]


# ------------------------------------------------------------- arbitrary-scale networks

# LTE head per output pixel: for each of 4 neighbours the MLP (3 × 256→256 and 256→3),
# plus the phase layer (2→128) once per query. Biases are not multiply-adds.
LTE_HEAD_MACS = 4 * (3 * 256 * 256 + 256 * 3) + 2 * 128


@pytest.mark.parametrize("variant", ["fmen_s_lte", "esc_lte"])
def test_arbitrary_scale_counts_split_encoder_and_head(variant):
    module = build_model(variant).eval()
    split = count_arbitrary_complexity(module, (1, 3, 32, 32), (80, 72))
    assert split.head_macs_per_pixel == LTE_HEAD_MACS
    assert split.head_macs_per_mpx == LTE_HEAD_MACS * 10**6
    # The encoder part holds the trunk and the coef/freq 3x3 convs (per LR pixel).
    coef_freq = 2 * 9 * module.encoder.out_dim * 256 * 32 * 32
    trunk = count_complexity(_Features(module.encoder), (1, 3, 32, 32))
    assert split.encoder.macs == trunk.macs + coef_freq
    assert split.encoder.convs == trunk.convs + 2
    assert split.total.macs == split.encoder.macs + LTE_HEAD_MACS * 80 * 72
    assert split.total.params == trunk.params + sum(
        p.numel() for name, p in module.named_parameters() if not name.startswith("encoder.")
    )


class _Features(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.features(x)


def test_measure_arbitrary_scale_network_reports_the_head_apart():
    settings = BenchSettings(scale=2.5, size=(16, 20), runs=2, warmup=0)
    row = measure_network("fmen_s_lte", settings)
    assert (row.variant, row.scale, row.output, row.error) == ("fmen_s_lte", 2.5, "40x50", None)
    assert row.head_macs_per_mpx == LTE_HEAD_MACS * 10**6
    assert row.macs == row.encoder_macs + LTE_HEAD_MACS * 40 * 50
    # Timings are not asserted (loaded machines); only that both parts were measured.
    assert row.encoder_latency_s > 0 and row.head_latency_s > 0
    assert row.head_s_per_mpx == pytest.approx(row.head_latency_s / (40 * 50 / 1e6))
    assert BenchRow.from_dict(json.loads(json.dumps(row.to_dict()))) == row


def test_fixed_scale_rows_have_no_arbitrary_fields():
    row = measure_network("fmen_s", TINY)
    assert row.output is None and row.encoder_macs is None and row.head_s_per_mpx is None


def test_select_arbitrary_scale_models():
    # At integer scales `all` is the fixed-scale networks; arbitrary ones are named.
    assert not {"esc_lte", "fmen_s_lte"} & set(select_models("all", 4))
    assert select_models("all", 2.5) == ["esc_lte", "fmen_s_lte"]
    assert select_models("fmen_s_lte,fmen_s", 4) == ["fmen_s_lte", "fmen_s"]
    assert select_models("fmen_s_lte", 6) == ["fmen_s_lte"]
    with pytest.raises(UsageError, match=r"fmen_s does not support x2\.5"):
        select_models("fmen_s", 2.5)
    with pytest.raises(UsageError, match="upscales by 1 to 8, not x9"):
        select_models("fmen_s_lte", 9)
    ort = BenchSettings(backend="onnxruntime")
    with pytest.raises(UsageError, match="export of arbitrary-scale models is not supported"):
        select_models("fmen_s_lte", 4, ort)
    with pytest.raises(UsageError, match="--compile"):
        select_models("all", 2.5, BenchSettings(compile=True))
    assert "fmen_s_lte" not in select_models("all", 4, ort)


def test_cli_json_of_an_arbitrary_scale_network(capsys):
    argv = ["bench", "--models", "fmen_s_lte", "--scale", "3.5", "--input", "12x16"]
    assert main([*argv, "--runs", "1", "--warmup", "0", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["scale"], row["output"], row["error"]) == (3.5, "42x56", None)
    for key in ("encoder_macs", "head_macs_per_mpx", "encoder_latency_s", "head_s_per_mpx"):
        assert row[key] is not None, key
