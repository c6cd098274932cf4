"""int8 ONNX exports: ONNX Runtime static quantisation (QDQ) of the fp32 export.

The fp32 export (:func:`lightsr.export.cached_export`) is quantised with
:func:`onnxruntime.quantization.quantize_static`: convolutions get int8 per-output-channel
weights and uint8 activations whose ranges come from calibration forwards on a few
low-resolution crops of training images (the HR images are MATLAB-bicubic downscaled by the
model's scale, as the networks were trained). The first two and the last two convolutions
stay in float: they are nearest the pixels, and an 8-bit grid there costs more PSNR than
everything else together (see :data:`FLOAT_EDGE_CONVS`). Everything that is not a
convolution (attention MatMuls, LayerNorm, activations) stays in float.

On x86 CPUs with AVX-512 VNNI (or AVX-VNNI) ONNX Runtime runs the quantised convolutions
with 8-bit dot-product instructions; without them int8 can be slower than fp32.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightsr.errors import UsageError
from lightsr.models import SRModel
from lightsr.options import IMAGE_SUFFIXES
from lightsr.paths import replaced_atomically, shared_dir

# Calibration: this many training images, one centred LR crop of this side from each.
CALIBRATION_IMAGES = 8
CALIBRATION_CROP = 64
CALIBRATION_VARIABLE = "LIGHTSR_CALIBRATION"
# Part of the cache file name: bump when the quantisation recipe changes.
RECIPE = "qdq2"
# Convolutions kept in float at each end of the graph. FMEN-S ×4, Set5 PSNR-Y change
# against fp32 (MinMax calibration on 8 crops): 1 → -0.68 dB, 2 → -0.14 dB, 4 → -0.07 dB.
FLOAT_EDGE_CONVS = 2


def default_calibration_dir() -> Path:
    """``$LIGHTSR_CALIBRATION``, else the shared training images (``<shared>/data/train``)."""
    env = os.environ.get(CALIBRATION_VARIABLE)
    return Path(env) if env else shared_dir() / "data" / "train"


def calibration_inputs(
    folder: str | os.PathLike,
    scale: int,
    count: int = CALIBRATION_IMAGES,
    crop: int = CALIBRATION_CROP,
) -> list[np.ndarray]:
    """(1, 3, crop, crop) float32 [0, 1] LR inputs from ``count`` images of ``folder``.

    Images (searched recursively, spread over the sorted list) are MATLAB-bicubic
    downscaled by ``scale`` and centre-cropped; images too small for the crop are skipped
    (histogram calibration needs equal shapes).

    Raises:
        UsageError: the folder does not exist or holds no image large enough.
    """
    from lightsr.imresize import imresize
    from lightsr.io import read_rgb_uint8, to_float

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(
            f"int8 needs calibration images: {folder} is not a folder (set {CALIBRATION_VARIABLE})"
        )
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    step = max(1, len(files) // count)
    inputs: list[np.ndarray] = []
    for path in files[::step] + files:  # the spread first, then any image to fill up
        if len(inputs) == count:
            break
        lr = imresize(read_rgb_uint8(path), 1 / scale)
        height, width = lr.shape[:2]
        if min(height, width) < crop:
            continue
        top, left = (height - crop) // 2, (width - crop) // 2
        patch = to_float(lr[top : top + crop, left : left + crop]).transpose(2, 0, 1)
        inputs.append(np.ascontiguousarray(patch[None], dtype=np.float32))
    if not inputs:
        raise UsageError(
            f"int8 needs calibration images: none in {folder} has {crop * scale}+ px sides"
        )
    return inputs


class _Reader:
    """The :class:`onnxruntime.quantization.CalibrationDataReader` protocol over arrays."""

    def __init__(self, input_name: str, arrays: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.arrays = iter(arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        array = next(self.arrays, None)
        return None if array is None else {self.input_name: array}

    def rewind(self) -> None:  # part of the protocol; calibration reads the data once
        pass


def float_convs(proto: Any, edge: int = FLOAT_EDGE_CONVS) -> list[str]:
    """Names of the convolutions kept in float: the first and last ``edge`` of the graph."""
    convs = [node.name for node in proto.graph.node if node.op_type == "Conv"]
    return sorted(set(convs[:edge] + convs[-edge:]))


def quantize_onnx(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    inputs: Sequence[np.ndarray],
) -> Path:
    """Quantise the fp32 lightsr export ``source`` to int8 QDQ, written atomically.

    Args:
        source: fp32 ONNX export (see :func:`lightsr.export.export_onnx`).
        destination: output ``.onnx`` file.
        inputs: calibration inputs, (1, 3, H, W) float32 in [0, 1].
    """
    destination = Path(destination)
    # The quantiser logs advice (pre-processing) on the root logger at WARNING level.
    logging.disable(logging.WARNING)
    try:
        with replaced_atomically(destination) as temporary:
            _quantize(Path(source), temporary, inputs)
    finally:
        logging.disable(logging.NOTSET)
    return destination


def _quantize(source: Path, temporary: Path, inputs: Sequence[np.ndarray]) -> None:
    """:func:`quantize_onnx` into ``temporary``, keeping the fp32 export's metadata."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from lightsr.ort import INPUT_NAME

    proto = onnx.load(str(source))
    quantize_static(
        str(source),
        str(temporary),
        _Reader(INPUT_NAME, inputs),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["Conv"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=float_convs(proto),
        calibrate_method=CalibrationMethod.MinMax,
    )
    quantized = onnx.load(str(temporary))
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    metadata.update(precision="int8", quantization=f"onnxruntime static QDQ ({RECIPE})")
    del quantized.metadata_props[:]
    for key, value in metadata.items():
        quantized.metadata_props.add(key=key, value=value)
    onnx.save_model(quantized, str(temporary))


def cached_int8_export(model: SRModel, calibration: str | os.PathLike | None = None) -> Path:
    """The int8 export of ``model`` in the cache folder, quantised on first use.

    Named like the fp32 export (which is made first if needed) with ``int8`` and the
    calibration recipe in place of ``fp32``; calibration images come from ``calibration``
    or :func:`default_calibration_dir`.
    """
    from lightsr.export import cached_export

    fp32 = cached_export(model)
    path = fp32.with_name(fp32.name.replace("_fp32_", f"_int8{RECIPE}_", 1))
    if not path.is_file():
        folder = default_calibration_dir() if calibration is None else Path(calibration)
        quantize_onnx(fp32, path, calibration_inputs(folder, model.scale))
    return path


def cached_onnx(model: SRModel, precision: str) -> Path:
    """The cached export of ``model`` that runs ``precision`` (fp32, fp16 or int8)."""
    from lightsr.export import cached_export

    if precision == "int8":
        return cached_int8_export(model)
    return cached_export(model, half=precision == "fp16")
