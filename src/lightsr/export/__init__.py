"""ONNX export of lightsr networks: dynamic sizes, one self-contained file, verified.

Every exported graph has one input ``input`` (N, 3, H, W) float32 RGB in [0, 1] and one
output ``output`` (N, 3, sH, sW) float32 in [0, 1] (unclamped), whatever the network's own
convention: the value-range conversion, mean shifts and test-time padding of
:meth:`lightsr.models.SRModel.forward` are traced into the graph. ``half=True`` stores fp16
weights and computes in fp16 but keeps fp32 input and output (casts inside the graph), so one
client serves every export.

Networks with a deploy form (FMEN) are re-parameterised first. Batch, height and width stay
symbolic unless a static size is asked for.

Submodules: :mod:`~lightsr.export.trace` (torch.export and its size checks),
:mod:`~lightsr.export.onnx` (the ONNX file, its metadata and the export cache),
:mod:`~lightsr.export.verify` (ONNX Runtime against torch), and for the apps that run NCNN
models :mod:`~lightsr.export.ncnn` (``.param``/``.bin`` through pnnx, the optional
``lightsr[ncnn]`` extra) with :mod:`~lightsr.export.ncnn_forms` (the networks written with
ops NCNN can express).
"""

from lightsr.export.onnx import (
    DEFAULT_OPSET,
    MIN_OPSET,
    ExportResult,
    cached_export,
    export_onnx,
    onnx_ops,
    weights_digest,
)
from lightsr.export.trace import Trace, UnitRangeNetwork, deployable_copy
from lightsr.export.verify import VERIFY_SIZES, sample_image, verify_onnx
from lightsr.options import parse_size
from lightsr.ort import INPUT_NAME, OUTPUT_NAME

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "MIN_OPSET",
    "OUTPUT_NAME",
    "VERIFY_SIZES",
    "ExportResult",
    "Trace",
    "UnitRangeNetwork",
    "cached_export",
    "deployable_copy",
    "export_onnx",
    "onnx_ops",
    "parse_size",
    "sample_image",
    "verify_onnx",
    "weights_digest",
]
