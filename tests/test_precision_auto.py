"""``precision="auto"``: bf16 only where the CPU computes it natively and the weights keep
their PSNR in bf16 (``lightsr.runtime.auto_precision``), through the API and the CLI.

The CPU's flags are faked, so every case runs on any machine.
"""

import json

import pytest
import torch

from lightsr import runtime
from lightsr.api import Upscaler
from lightsr.cli import main
from lightsr.hub import file_sha256
from lightsr.io import write_image
from lightsr.models import builtin_weights_path, load_builtin_model
from tests.tiny_sr import tiny_model


@pytest.fixture
def cpu_flags(monkeypatch):
    """Set the flags the CPU reports: ``cpu_flags("amx_bf16")``."""

    def fake(*flags: str) -> None:
        monkeypatch.setattr(runtime, "cpu_flags", lambda: {"avx2", "avx512f", *flags})

    return fake


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("auto") / "photo.png"
    write_image(path, torch.randint(0, 256, (24, 24, 3), dtype=torch.uint8).numpy())
    return path


@pytest.mark.parametrize(
    "flag, feature", [("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX-512 BF16")]
)
def test_native_bf16_cpu_runs_a_qualifying_model_in_bf16(cpu_flags, flag, feature):
    cpu_flags(flag)
    precision, reason = runtime.auto_precision(load_builtin_model("default", 4), "cpu", "torch")
    assert precision == "bf16"
    assert reason == (
        f"bf16 (CPU has {feature}; fmen_s (default_x4) changes PSNR by 0.011 dB in bf16)"
    )


def test_weights_that_move_psnr_or_are_unmeasured_stay_fp32(cpu_flags):
    cpu_flags("amx_bf16")
    precision, reason = runtime.auto_precision(load_builtin_model("real", 4), "cpu", "torch")
    assert (precision, reason) == (
        "fp32",
        "fp32 (ditn_real (real_x4) changes PSNR by 0.073 dB in bf16, over 0.05)",
    )
    precision, reason = runtime.auto_precision(tiny_model(), "cpu", "torch")
    assert precision == "fp32" and "not measured" in reason


def test_without_native_bf16_or_off_the_cpu_torch_path_auto_is_fp32(cpu_flags):
    default = load_builtin_model("default", 4)
    cpu_flags()
    assert runtime.auto_precision(default, "cpu", "torch") == (
        "fp32",
        "fp32 (this CPU has no AVX-512 BF16 or AMX)",
    )
    cpu_flags("amx_bf16")
    assert runtime.auto_precision(default, "cuda", "torch")[0] == "fp32"
    assert runtime.auto_precision(None, "cpu", "onnxruntime")[0] == "fp32"
    assert runtime.auto_precision(None, "cpu", "torch")[0] == "fp32"  # bicubic


def test_built_in_weights_are_in_the_table():
    """Replacing a built-in file must come with a new measurement (its hash is the key)."""
    for name, row in (("default", "default_x4"), ("real", "real_x4")):
        digest = file_sha256(builtin_weights_path(name, 4))
        assert runtime.MEASURED_WEIGHTS[digest] == row
    assert set(runtime.MEASURED_WEIGHTS.values()) <= set(runtime.BF16_PSNR_CHANGE)


def test_upscaler_resolves_auto_by_default_and_keeps_explicit_precisions(cpu_flags):
    cpu_flags("amx_bf16")
    auto = Upscaler(device="cpu")
    assert auto.precision == "bf16" and auto.precision_reason.startswith("bf16 (CPU has")
    assert next(auto.network.module.parameters()).dtype == torch.bfloat16
    exact = Upscaler(device="cpu", precision="fp32")
    assert (exact.precision, exact.precision_reason) == ("fp32", None)
    assert next(exact.network.module.parameters()).dtype == torch.float32
    ort = Upscaler(model="bicubic", backend="onnxruntime")
    assert ort.precision == "fp32"


@pytest.mark.parametrize(
    "flags, extra, precision, line",
    [
        (
            ("amx_bf16",),
            [],
            "bf16",
            "lightsr upscale: precision auto: bf16 (CPU has AMX-BF16; fmen_s (default_x4) "
            "changes PSNR by 0.011 dB in bf16)",
        ),
        (
            (),
            [],
            "fp32",
            "lightsr upscale: precision auto: fp32 (this CPU has no AVX-512 BF16 or AMX)",
        ),
        (("amx_bf16",), ["--precision", "fp32"], "fp32", None),
    ],
)
def test_upscale_verbose_says_what_auto_chose(
    cpu_flags, photo, tmp_path, capsys, flags, extra, precision, line
):
    cpu_flags(*flags)
    argv = ["upscale", str(photo), "-o", str(tmp_path / "out.png"), "--json", "--threads", "1"]
    assert main([*argv, *extra, "--verbose"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["precision"] == precision
    lines = [text for text in captured.err.splitlines() if "precision auto" in text]
    assert lines == ([line] if line else [])
    assert main([*argv, *extra, "--overwrite"]) == 0  # without --verbose: no line
    assert "precision auto" not in capsys.readouterr().err
