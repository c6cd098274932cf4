"""Option values shared by the CLI, the Python API, the engine, the benchmark and training.

Each fact is stated here once: device, precision and backend names, image file suffixes,
pixel maxima of integer images, the ``HxW`` size syntax and the "does this network support
×N" check. Importing this module is cheap (no torch, numpy or cv2), so the CLI builds its
parsers from it; the functions that need torch import it when called.

To add an inference precision, add one entry to :data:`PRECISIONS`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lightsr.errors import UsageError

if TYPE_CHECKING:
    import torch

# Device types a network runs on; ``cuda:N`` picks a GPU, ``auto`` prefers CUDA when present.
DEVICE_TYPES = ("cpu", "cuda")
DEVICES = ("auto", *DEVICE_TYPES)
DEVICE_HELP = "auto, cpu, cuda, cuda:1, ... (default: auto)"
# Inference precision name → the ``torch`` dtype attribute it computes in.
PRECISIONS: dict[str, str] = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# Precisions only the onnxruntime backend runs: its statically quantised export.
ORT_ONLY_PRECISIONS = ("int8",)
# Precisions the onnxruntime backend runs: fp32 and fp16 exports, and the quantised one.
ORT_PRECISIONS = ("fp32", "fp16", *ORT_ONLY_PRECISIONS)
# Every precision `lightsr upscale`, `eval` and `bench` accept.
INFERENCE_PRECISIONS = (*PRECISIONS, *ORT_ONLY_PRECISIONS)
# Precision of each network picked for this machine (`lightsr.runtime.auto_precision`): the
# default of `lightsr upscale`, `serve` and the Python API.
AUTO_PRECISION = "auto"
# Mixed-precision training: the autocast dtype, or "none" (fp32).
TRAIN_PRECISIONS = ("none", "bf16", "fp16")
# Upscaling factor when neither the options nor the weights give one.
DEFAULT_SCALE = 4
# Range of factors arbitrary-scale models (lightsr.anyscale) take, integer or not.
MIN_SCALE = 1.0
MAX_SCALE = 8.0
# Inference backends: eager PyTorch, the network's ONNX export on ONNX Runtime, or its NCNN
# export on ncnn. Each is a class in lightsr.backends, registered under this name.
BACKENDS = ("torch", "onnxruntime", "ncnn")
# Benchmark protocols (see :mod:`lightsr.bench`).
BENCH_PROTOCOLS = ("robust", "ntire")
# Image file suffix (lowercase) → format name, for every format lightsr reads and writes.
IMAGE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WebP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
IMAGE_SUFFIXES = tuple(IMAGE_FORMATS)
# Largest value of each integer pixel type (by numpy dtype name): 1.0 in float units.
PIXEL_MAX: dict[str, float] = {"uint8": 255.0, "uint16": 65535.0}


def pixel_max(dtype: object) -> float | None:
    """The largest pixel value of integer image ``dtype`` (numpy dtype, type or name), else
    None."""
    name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None) or str(dtype)
    return PIXEL_MAX.get(name)


def check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    """Raise :class:`UsageError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise UsageError(f"{what} must be one of {', '.join(choices)}, got {value!r}")


def check_scale(name: str, scales: Sequence[int], scale: int) -> None:
    """Raise :class:`UsageError` unless network ``name`` (its ``scales``) upscales ×``scale``."""
    if scale not in scales:
        allowed = ", ".join(f"x{s}" for s in scales)
        raise UsageError(f"{name} does not support x{scale}; it supports {allowed}")


def parse_size(text: str, what: str = "size") -> tuple[int, int]:
    """``"64x96"`` → (64, 96) (height × width); ``"64"`` → (64, 64).

    Raises:
        UsageError: not one positive integer, or two joined by ``x``; names ``what``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    sides = (int(match[1]), int(match[2] or match[1])) if match else (0, 0)
    if min(sides) < 1:
        raise UsageError(f"{what} must look like 64x64 (height x width) or 64, got {text!r}")
    return sides


def parse_output_size(text: str, what: str = "--size") -> tuple[int, int]:
    """``"1920x1080"`` (width × height, as image sizes are written) → (1080, 1920), i.e.
    (height, width); ``"512"`` → (512, 512). :func:`parse_size` reads height × width, as
    the ``--static`` and ``--input`` options of ``export`` and ``bench`` do.

    Raises:
        UsageError: not one positive integer, or two joined by ``x``; names ``what``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", text)
    width, height = (int(match[1]), int(match[2] or match[1])) if match else (0, 0)
    if min(width, height) < 1:
        raise UsageError(
            f"{what} must look like 1920x1080 (width x height, positive) or 512, got {text!r}"
        )
    return height, width


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """The torch device for ``name``: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:1``.

    Raises:
        UsageError: unknown device, or CUDA requested but not available.
    """
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {name!r} (use {', '.join(DEVICES)})") from exc
    if device.type not in DEVICE_TYPES:
        raise UsageError(f"unsupported device {name!r} (use {', '.join(DEVICES)})")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available")
    return device


def resolve_precision(name: str) -> torch.dtype:
    """The torch floating-point type of precision ``name`` (see :data:`PRECISIONS`)."""
    import torch

    if name in ORT_ONLY_PRECISIONS:
        raise UsageError(f"precision {name} runs on the onnxruntime backend only")
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r}; choose one of: {', '.join(PRECISIONS)}")
    return getattr(torch, PRECISIONS[name])


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch's operators (process-wide); ``None``: leave.

    Raises:
        UsageError: ``threads`` is not positive.
    """
    if threads is None:
        return
    if threads < 1:
        raise UsageError(f"threads must be positive, got {threads}")
    import torch

    torch.set_num_threads(threads)
