"""A minimal NCNN runner: a ``.param``/``.bin`` pair → an upscaled image (CPU).

It runs the files that ``lightsr export --format ncnn`` writes (input blob ``data``, output
blob ``output``, RGB in [0, 1], no batch axis), the way the desktop apps do, so that tests
prove the files work. It computes in fp32; a file with fp16 weights keeps them in fp16
storage. On the CPU by default; on a Vulkan GPU when asked (:func:`vulkan_gpu_count`).
Needs the ``ncnn`` package (``pip install lightsr[ncnn]``).

:class:`NcnnSRModel` wraps a model for :mod:`lightsr.inference` (tiling, blending), as
:class:`lightsr.ort.OrtModel` does for ONNX Runtime: it is what ``--backend ncnn`` runs
(:mod:`lightsr.backends`). :func:`chainner_scale` is the scale chaiNNer infers from a
``.param`` file.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightsr.errors import ImageError, UsageError
from lightsr.identity import NamedBySpec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from lightsr.archs.registry import ArchSpec
    from lightsr.models import SRModel

INPUT_BLOB = "data"
OUTPUT_BLOB = "output"
# Tag before a weight blob in a .bin file that holds it in fp16 (ncnn's ModelBin).
FP16_TAG = 0x01306B47


def param_layers(path: str | os.PathLike) -> list[tuple[str, str, list[str], list[str], str]]:
    """The layers of an NCNN ``.param`` (text) file: (type, name, inputs, outputs, params)."""
    lines = Path(path).read_text().splitlines()
    if not lines or lines[0].strip() != "7767517":
        raise UsageError(f"{path}: not an NCNN .param file (no 7767517 magic)")
    layers = []
    for line in lines[2:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        kind, name, n_in, n_out = fields[0], fields[1], int(fields[2]), int(fields[3])
        inputs = fields[4 : 4 + n_in]
        outputs = fields[4 + n_in : 4 + n_in + n_out]
        layers.append((kind, name, inputs, outputs, " ".join(fields[4 + n_in + n_out :])))
    return layers


def chainner_scale(path: str | os.PathLike) -> int:
    """The upscale factor chaiNNer reads from an NCNN ``.param`` file.

    chaiNNer (``backend/src/nodes/impl/ncnn/model.py``, ``NcnnModelWrapper.get_scale``)
    multiplies the factors of the upsampling layers it finds: ``PixelShuffle`` (its
    ``0=`` parameter), ``Interp`` (``1=`` height scale, when an upsampling mode) and
    ``Deconvolution`` (its stride); 1 when there are none. The exported lightsr files
    upsample only by ``PixelShuffle``.
    """
    scale = 1.0
    for kind, _, _, _, params in param_layers(path):
        values = dict(
            item.split("=", 1) for item in params.split() if re.fullmatch(r"-?\d+=.*", item)
        )
        if kind == "PixelShuffle":
            scale *= int(values.get("0", "1"))
        elif kind == "Interp" and values.get("0", "0") != "0":
            scale *= float(values.get("1", "1"))
        elif kind in ("Deconvolution", "DeconvolutionDepthWise"):
            scale *= int(values.get("3", "1"))
    return round(scale)


def bin_is_fp16(path: str | os.PathLike) -> bool:
    """Whether the first weight blob of an NCNN ``.bin`` file is stored in fp16."""
    with open(path, "rb") as file:
        head = file.read(4)
    return len(head) == 4 and int.from_bytes(head, "little") == FP16_TAG


def _import_ncnn() -> Any:
    try:
        import ncnn
    except ImportError:
        raise UsageError(
            "the NCNN runtime needs the ncnn package: pip install 'lightsr[ncnn]'"
        ) from None
    return ncnn


@functools.cache
def vulkan_gpu_count() -> int:
    """GPUs that ncnn can run on through Vulkan (0 without a Vulkan driver or the package).

    Asked once per process. ncnn's loader reports a missing Vulkan library on stderr line
    by line; that is no error here (the CPU is used), so those lines are not shown.
    """
    try:
        ncnn = _import_ncnn()
    except UsageError:
        return 0
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        return int(ncnn.get_gpu_count())
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class NcnnModel:
    """An NCNN super-resolution model, on the CPU or a Vulkan GPU.

    Args:
        param: the ``.param`` file; the ``.bin`` beside it (same stem) holds the weights.
        threads: CPU threads (``None``: ncnn's default, the physical cores).
        fp16_storage: keep weights in fp16 (default: when the ``.bin`` stores fp16).
        vulkan: run on the first Vulkan GPU (see :func:`vulkan_gpu_count`).
    """

    def __init__(
        self,
        param: str | os.PathLike,
        threads: int | None = 1,
        fp16_storage: bool | None = None,
        vulkan: bool = False,
    ) -> None:
        ncnn = _import_ncnn()
        self.param = Path(param)
        self.bin = self.param.with_suffix(".bin")
        for path in (self.param, self.bin):
            if not path.is_file():
                raise UsageError(f"{path}: no such file")
        self.scale = chainner_scale(self.param)
        self.fp16 = bin_is_fp16(self.bin) if fp16_storage is None else fp16_storage
        self.net = ncnn.Net()
        opt = self.net.opt
        self.vulkan = vulkan
        opt.use_vulkan_compute = vulkan
        if threads is not None:
            opt.num_threads = threads
        opt.use_fp16_storage = self.fp16
        opt.use_fp16_packed = self.fp16
        opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = False
        if self.net.load_param(str(self.param)) != 0:
            raise UsageError(f"{self.param}: NCNN could not load it")
        if self.net.load_model(str(self.bin)) != 0:
            raise UsageError(f"{self.bin}: NCNN could not load it")

    def run(self, image: np.ndarray) -> np.ndarray:
        """Upscale ``image``, (H, W, 3) float RGB in [0, 1]; returns (sH, sW, 3) float32."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise UsageError(f"expected an (H, W, 3) image, got shape {image.shape}")
        return self.run_planar(image.transpose(2, 0, 1)).transpose(1, 2, 0).copy()

    def run_planar(self, planar: np.ndarray) -> np.ndarray:
        """Upscale a (3, H, W) float RGB array in [0, 1]; returns (3, sH, sW) float32."""
        import ncnn

        if planar.ndim != 3 or planar.shape[0] != 3:
            raise UsageError(f"expected a (3, H, W) array, got shape {planar.shape}")
        planar = np.ascontiguousarray(planar, dtype=np.float32)
        extractor = self.net.create_extractor()
        # clone(): the Mat must own aligned memory (ncnn reads a view of NumPy memory wrong).
        extractor.input(INPUT_BLOB, ncnn.Mat(planar).clone())
        status, out = extractor.extract(OUTPUT_BLOB)
        if status != 0:
            raise UsageError(f"{self.param}: NCNN inference failed (code {status})")
        return np.array(out.numpy(), dtype=np.float32)


# ``<variant>-x<scale>`` at the start of a .param name, as lightsr export --format ncnn
# writes it (the export cache adds ``-<precision>-<digest>``).
_STEM = re.compile(r"(?P<variant>[a-z0-9_]+?)-x(?P<scale>\d+)(?:$|[-_.])", re.IGNORECASE)


def variant_of(param: str | os.PathLike) -> tuple[str, int]:
    """The registry variant and scale a lightsr ``.param`` file is named for.

    Raises:
        UsageError: the name is not ``<variant>-x<scale>...`` of a registered variant.
    """
    from lightsr.archs.registry import arch_specs

    name = Path(param).stem
    variants = {spec.name for spec in arch_specs()}
    match = _STEM.match(name)
    if match is None or match["variant"].lower() not in variants:
        raise UsageError(
            f"{param}: cannot tell which network it holds; lightsr runs the NCNN files it "
            "exports, named <variant>-x<scale>.param (lightsr export --format ncnn)"
        )
    return match["variant"].lower(), int(match["scale"])


class NcnnSRModel(NamedBySpec):
    """An NCNN export run by :mod:`lightsr.inference` (tiling, blending), like
    :class:`lightsr.models.SRModel`: ``spec``, ``scale``, ``variant``, ``device``,
    ``dtype``, ``module`` (the architecture on the meta device, for the memory model) and
    :meth:`upscale`.

    Args:
        param: a ``.param`` file written by :func:`lightsr.export.ncnn.export_ncnn`.
        threads: CPU threads (``None``: ncnn's default).
        vulkan: run on the first Vulkan GPU.
        model: the network the files were exported from; default: the variant and scale
            in the file name (:func:`variant_of`).

    Attributes:
        spec: the variant's spec, ``min_size`` raised to the export's smallest input side.
        precision: ``"fp16"`` or ``"fp32"``: how the ``.bin`` stores the weights.
        source: the ``.param`` path.
    """

    arbitrary_scale = False

    def __init__(
        self,
        param: str | os.PathLike,
        threads: int | None = None,
        vulkan: bool = False,
        model: SRModel | None = None,
    ) -> None:
        import torch

        from lightsr.archs.registry import get_arch
        from lightsr.provenance import Provenance

        self.source = str(param)
        self.net = NcnnModel(param, threads=threads, vulkan=vulkan)
        self.precision = "fp16" if self.net.fp16 else "fp32"
        if model is not None:
            provenance = model.provenance
            provenance = dataclasses.replace(provenance, form=model.spec.form_of(model.module))
        else:
            variant, named_scale = variant_of(param)
            spec = get_arch(variant)
            form = "deploy" if spec.has_deploy_form else "single"
            provenance = Provenance(spec.family, spec.name, named_scale, form)
        if self.net.scale != provenance.scale:
            raise UsageError(
                f"{param}: the graph upscales x{self.net.scale}, not x{provenance.scale}"
            )
        self.provenance = provenance
        self.scale = provenance.scale
        spec = get_arch(provenance.variant)
        self.spec: ArchSpec = spec
        self._module: nn.Module | None = None
        self.spec = dataclasses.replace(spec, min_size=self._min_side())
        self.device = torch.device("cpu")  # where inputs and outputs live
        self.dtype = torch.float32

    def _min_side(self) -> int:
        from lightsr.export.ncnn_forms import min_side
        from lightsr.models import SRModel

        return min_side(SRModel(module=self.module, spec=self.spec, scale=self.scale))

    @property
    def module(self) -> nn.Module:
        """The architecture on the meta device (shapes only), for the memory model."""
        if self._module is None:
            from lightsr.archs.registry import build_on_meta

            p = self.provenance
            config = {**p.config, **self.spec.form_arguments(p.form)}
            self._module = build_on_meta(self.spec.name, self.scale, **config).eval()
        return self._module

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Forward an (N, 3, H, W) float32 [0, 1] array; returns (N, 3, sH, sW) float32.

        Raises:
            ImageError: a side is under :attr:`spec` ``.min_size`` (the export's minimum;
                :func:`lightsr.inference.upscale_array` pads such images itself).
        """
        if min(batch.shape[-2:]) < self.spec.min_size:
            height, width = batch.shape[-2:]
            raise ImageError(
                f"{width}x{height} is too small for the NCNN export of {self.variant}; it "
                f"needs at least {self.spec.min_size} pixels per side"
            )
        return np.stack([self.net.run_planar(image) for image in batch])

    def upscale(self, image: torch.Tensor) -> torch.Tensor:
        """:meth:`lightsr.models.SRModel.upscale` through NCNN (CPU tensors)."""
        import torch

        batched = image.dim() == 4
        x = image if batched else image.unsqueeze(0)
        y = torch.from_numpy(self.run(x.detach().to("cpu", torch.float32).numpy()))
        return y if batched else y.squeeze(0)
