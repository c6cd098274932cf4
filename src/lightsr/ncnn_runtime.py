"""A minimal NCNN runner: a ``.param``/``.bin`` pair → an upscaled image (CPU).

It runs the files that ``lightsr export --format ncnn`` writes (input blob ``data``, output
blob ``output``, RGB in [0, 1], no batch axis), the way the desktop apps do, so that tests
prove the files work. It computes in fp32; a file with fp16 weights keeps them in fp16
storage. Needs the ``ncnn`` package (``pip install lightsr[ncnn]``).

:func:`chainner_scale` is the scale chaiNNer infers from a ``.param`` file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from lightsr.errors import UsageError

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


class NcnnModel:
    """An NCNN super-resolution model loaded on the CPU.

    Args:
        param: the ``.param`` file; the ``.bin`` beside it (same stem) holds the weights.
        threads: CPU threads.
        fp16_storage: keep weights in fp16 (default: when the ``.bin`` stores fp16).
    """

    def __init__(
        self, param: str | os.PathLike, threads: int = 1, fp16_storage: bool | None = None
    ) -> None:
        try:
            import ncnn
        except ImportError:
            raise UsageError(
                "the NCNN runtime needs the ncnn package: pip install 'lightsr[ncnn]'"
            ) from None
        self.param = Path(param)
        self.bin = self.param.with_suffix(".bin")
        for path in (self.param, self.bin):
            if not path.is_file():
                raise UsageError(f"{path}: no such file")
        self.scale = chainner_scale(self.param)
        self.fp16 = bin_is_fp16(self.bin) if fp16_storage is None else fp16_storage
        self.net = ncnn.Net()
        opt = self.net.opt
        opt.use_vulkan_compute = False
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
        import ncnn

        if image.ndim != 3 or image.shape[2] != 3:
            raise UsageError(f"expected an (H, W, 3) image, got shape {image.shape}")
        planar = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)
        extractor = self.net.create_extractor()
        # clone(): the Mat must own aligned memory (ncnn reads a view of NumPy memory wrong).
        extractor.input(INPUT_BLOB, ncnn.Mat(planar).clone())
        status, out = extractor.extract(OUTPUT_BLOB)
        if status != 0:
            raise UsageError(f"{self.param}: NCNN inference failed (code {status})")
        return np.array(out.numpy(), dtype=np.float32).transpose(1, 2, 0).copy()
