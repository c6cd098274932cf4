"""ONNX Runtime backend: run a lightsr ONNX export through the same tiling engine as torch.

:class:`OrtModel` exposes what :mod:`lightsr.inference` needs from a model (``spec``,
``scale``, ``device``, ``dtype``, ``upscale``) on top of an ONNX Runtime CPU session, so
tiling, blending and image I/O are shared with the torch backend.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightsr.archs.registry import ArchSpec, build_on_meta, get_arch
from lightsr.errors import CheckpointError, LightSRError, UsageError
from lightsr.identity import NamedBySpec
from lightsr.options import ORT_PRECISIONS
from lightsr.provenance import read_provenance

# Names of the graph input and output in every lightsr ONNX export.
INPUT_NAME = "input"
OUTPUT_NAME = "output"

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "OrtModel",
    "check_ort_options",
    "create_session",
    "is_onnx_file",
    "load_onnx_model",
    "read_metadata",
]


def is_onnx_file(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` names an ONNX model (by its extension)."""
    return path is not None and Path(path).suffix.lower() == ".onnx"


def check_ort_options(device: str, precision: str) -> None:
    """Raise :class:`UsageError` for a device or precision this backend cannot run."""
    if device not in ("auto", "cpu"):
        raise UsageError("the onnxruntime backend runs on the CPU only; use device 'cpu'")
    if precision not in ORT_PRECISIONS:
        raise UsageError(
            f"the onnxruntime backend supports {', '.join(ORT_PRECISIONS)}, not {precision}"
        )


def create_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for ``path`` with ``threads`` intra-op threads.

    Raises:
        CheckpointError: the file cannot be loaded by ONNX Runtime.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initialisers are noise here
    # EMT's unscaled attention makes denormal numbers, which the CPU handles about 10x
    # slower (one fused attention call: 2.0 s, 0.2 s flushed); torch's oneDNN kernels
    # flush them already.
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: ONNX Runtime cannot load it: {first}") from exc


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (without loading its weights)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise CheckpointError(f"{path}: not a readable ONNX file") from exc
    return {prop.key: prop.value for prop in proto.metadata_props}


class OrtModel(NamedBySpec):
    """An exported lightsr network on ONNX Runtime (CPU).

    Args:
        path: a ``.onnx`` file written by :func:`lightsr.export.export_onnx`.
        threads: intra-op threads (``None``: ONNX Runtime's default).

    Attributes:
        spec: the variant's spec, with ``min_size`` raised to the graph's minimum side.
        scale: upscale factor.
        module: the variant's architecture on the meta device (no weights): the engine
            models memory from its shapes.

    Raises:
        CheckpointError: the file is not a lightsr export or cannot be loaded.
    """

    device = torch.device("cpu")
    # Input and output are float32 whatever the export's internal precision.
    dtype = torch.float32

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        self.source = str(path)
        metadata = read_metadata(path)
        provenance = read_provenance(metadata)
        if provenance is None:
            raise CheckpointError(f"{path}: not a lightsr ONNX export (no variant metadata)")
        try:
            spec = get_arch(provenance.variant)
        except LightSRError:
            raise CheckpointError(f"{path}: unknown variant {provenance.variant!r}") from None
        self.metadata = metadata
        self.provenance = provenance
        min_side = int(metadata.get("min_side", spec.min_size))
        self.spec: ArchSpec = dataclasses.replace(spec, min_size=max(spec.min_size, min_side))
        self.scale = provenance.scale
        self.precision = metadata.get("precision", "fp32")
        self.session = create_session(path, threads)
        self._module: nn.Module | None = None

    @property
    def module(self) -> nn.Module:
        if self._module is None:
            config = {**self.provenance.config, **self.spec.form_arguments(self.provenance.form)}
            self._module = build_on_meta(self.spec.name, self.scale, **config).eval()
        return self._module

    @property
    def arbitrary_scale(self) -> bool:
        """Always False: arbitrary-scale networks are not exported (like
        :attr:`lightsr.models.SRModel.arbitrary_scale`, for code that takes either)."""
        return False

    def run(self, array: np.ndarray) -> np.ndarray:
        """Forward an (N, 3, H, W) float32 [0, 1] array; returns (N, 3, sH, sW) float32."""
        array = np.ascontiguousarray(array, dtype=np.float32)
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0]

    def upscale(self, image: torch.Tensor) -> torch.Tensor:
        """:meth:`lightsr.models.SRModel.upscale` through ONNX Runtime (CPU tensors)."""
        batched = image.dim() == 4
        x = image if batched else image.unsqueeze(0)
        y = torch.from_numpy(self.run(x.detach().to("cpu", torch.float32).numpy()))
        return y if batched else y.squeeze(0)


def load_onnx_model(path: str | os.PathLike, threads: int | None = None) -> OrtModel:
    """:class:`OrtModel` for ``path``, with a one-line error when the file is missing."""
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: no such ONNX file")
    return OrtModel(path, threads)
