"""The shared option facts in ``lightsr.options``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightsr.errors import UsageError
from lightsr.options import (
    IMAGE_SUFFIXES,
    PRECISIONS,
    check_choice,
    check_scale,
    parse_size,
    pixel_max,
    resolve_device,
    resolve_precision,
)


def test_parse_size_names_the_option():
    assert parse_size("64x96") == (64, 96)
    assert parse_size(" 7 X 5 ") == (7, 5)
    assert parse_size("64") == (64, 64)
    for bad in ("0x4", "axb", "64x", "", "-3x4"):
        with pytest.raises(UsageError, match="--input must look like 64x64"):
            parse_size(bad, "--input")


def test_check_scale_lists_what_the_network_supports():
    check_scale("emt", (2, 3, 4), 3)
    with pytest.raises(UsageError, match="esc_real does not support x2; it supports x4"):
        check_scale("esc_real", (4,), 2)


def test_check_choice():
    check_choice("backend", "torch", ("torch", "onnxruntime"))
    with pytest.raises(UsageError, match="backend must be one of torch, onnxruntime, got 'tf'"):
        check_choice("backend", "tf", ("torch", "onnxruntime"))


def test_every_precision_is_a_torch_dtype_and_unknown_ones_are_refused():
    assert {name: resolve_precision(name) for name in PRECISIONS} == {
        "fp32": torch.float32,
        "fp16": torch.float16,
        "bf16": torch.bfloat16,
    }
    with pytest.raises(UsageError, match="choose one of: fp32, fp16, bf16"):
        resolve_precision("fp8")


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    for bad in ("tpu", "meta"):
        with pytest.raises(UsageError, match="use auto, cpu, cuda"):
            resolve_device(bad)


def test_pixel_maxima_by_dtype_object_or_name():
    assert pixel_max(np.dtype(np.uint8)) == 255.0
    assert pixel_max(np.zeros(1, np.uint16).dtype) == 65535.0
    assert pixel_max("uint16") == 65535.0 and pixel_max(np.uint8) == 255.0
    assert pixel_max(np.float32) is None and pixel_max(np.dtype(np.int16)) is None
    assert {".png", ".jpg", ".tif", ".webp", ".bmp"} <= set(IMAGE_SUFFIXES)
