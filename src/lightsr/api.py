"""High-level Python API: :func:`upscale` one image, or an :class:`Upscaler` for many.

Images are numpy arrays in the conventions of :mod:`lightsr.io` (uint8 or uint16; (H, W)
gray, (H, W, 3) RGB or (H, W, 4) RGBA) and come back in the same dtype and layout.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lightsr.errors import CheckpointError, ImageError, UsageError
from lightsr.imresize import imresize
from lightsr.inference import (
    DEFAULT_TILE_OVERLAP,
    ProgressCallback,
    prepare_model,
    upscale_array,
)
from lightsr.io import read_image
from lightsr.models import SRModel
from lightsr.options import (
    AUTO_PRECISION,
    BACKENDS,
    DEFAULT_SCALE,
    resolve_device,
    resolve_precision,
    set_threads,
)
from lightsr.ort import OrtModel, check_ort_options, is_onnx_file, load_onnx_model
from lightsr.quantize import cached_onnx

BICUBIC = "bicubic"

ImageInput = np.ndarray | str | os.PathLike


class Upscaler:
    """A model loaded once and ready to upscale any number of images.

    Args:
        model: ``None``/``"default"`` for the built-in model, ``"bicubic"`` for MATLAB
            bicubic interpolation, a network or published-checkpoint name (``"emt"``,
            ``"emt_x4_official"``), or a loaded :class:`~lightsr.models.SRModel` (moved to
            ``device``/``precision`` in place).
        scale: upscaling factor; ``None`` means the scale of ``weights`` or of an
            ``SRModel``, otherwise 4.
        weights: checkpoint file; takes precedence over a model name.
        tile: force square tiles of this many input pixels; ``None`` tiles automatically
            when the image would exceed ``max_memory``.
        tile_overlap: context pixels around each tile (see :mod:`lightsr.inference`).
        max_memory: bytes one forward pass may use; ``None`` sizes it from free memory.
        precision: ``"auto"`` (bf16 where this CPU computes it natively and bf16 keeps the
            model's PSNR, else fp32: see :func:`lightsr.runtime.auto_precision`), ``"fp32"``,
            ``"fp16"``, ``"bf16"`` (torch) or ``"int8"`` (onnxruntime: the statically
            quantised export, see :mod:`lightsr.quantize`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        backend: ``"torch"`` or ``"onnxruntime"`` (CPU, fp32, fp16 or int8): runs ``weights``
            when it is an ``.onnx`` export, otherwise the model's ONNX export, made on first
            use and cached (see :func:`lightsr.export.cached_export`).
        outscale: final size factor when it differs from the network's scale (``3.5``):
            the network's output is resized by MATLAB-exact bicubic to ``outscale`` × the
            input size (rounded).
        threads: CPU threads (torch's are process-wide); ``None`` leaves the default.

    Attributes:
        precision: the precision the model runs in (``"auto"`` resolved).
        precision_reason: why ``"auto"`` chose it, in a few words; ``None`` when not asked.

    Raises:
        UsageError: unknown backend, precision, device or model name; bad scale.
        CheckpointError: the weights cannot be loaded or are for another scale.
    """

    def __init__(
        self,
        model: str | SRModel | None = None,
        scale: int | None = None,
        weights: str | os.PathLike | None = None,
        tile: int | None = None,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        max_memory: int | None = None,
        precision: str = AUTO_PRECISION,
        device: str = "auto",
        backend: str = "torch",
        outscale: float | None = None,
        threads: int | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise UsageError(
                f"backend {backend!r} is not available; choose one of: {', '.join(BACKENDS)}"
            )
        if scale is not None and scale < 1:
            raise UsageError(f"scale must be a positive integer, got {scale}")
        if tile is not None and tile < 1:
            raise UsageError(f"tile size must be positive, got {tile}")
        if tile_overlap < 0:
            raise UsageError(f"tile overlap must be >= 0, got {tile_overlap}")
        if outscale is not None and not outscale > 0:
            raise UsageError(f"outscale must be positive, got {outscale}")
        set_threads(threads)
        auto = precision == AUTO_PRECISION
        if backend == "onnxruntime":
            check_ort_options(device, "fp32" if auto else precision)
            device = "cpu"
        elif is_onnx_file(weights):
            raise UsageError(f"{weights}: an .onnx model needs backend 'onnxruntime'")
        elif not auto:
            resolve_precision(precision)
        self.device = resolve_device(device)
        self.precision = precision
        self.precision_reason: str | None = None
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.max_memory = max_memory
        self.outscale = outscale
        self.network: SRModel | OrtModel | None = None
        if model == BICUBIC and weights is None:
            self._settle_precision(None, backend)
            self.scale = DEFAULT_SCALE if scale is None else scale
            return
        if backend == "onnxruntime":
            self._settle_precision(None, backend)
            self.network = _onnx_network(model, scale, weights, self.precision, threads)
        else:
            network = _load_network(model, scale, weights)
            self._settle_precision(network, backend)
            self.network = prepare_model(network, self.device, self.precision)
        self.scale = self.network.scale

    def _settle_precision(self, network: SRModel | None, backend: str) -> None:
        """Resolve ``precision="auto"`` for ``network`` (``None``: bicubic or onnxruntime)."""
        from lightsr.runtime import auto_precision

        if self.precision == AUTO_PRECISION:
            self.precision, self.precision_reason = auto_precision(
                network, self.device.type, backend
            )

    @property
    def name(self) -> str:
        """``"bicubic"`` or the network variant (``"fmen_s"``)."""
        return BICUBIC if self.network is None else self.network.variant

    def __call__(self, image: ImageInput, progress: ProgressCallback | None = None) -> np.ndarray:
        """Upscale ``image`` (an array or a path to an image file).

        Args:
            image: uint8/uint16 array, (H, W), (H, W, 3) or (H, W, 4); or an image path
                (read with :func:`lightsr.io.read_image`, EXIF orientation applied).
            progress: called as ``progress(done, total)`` after every tile.

        Returns:
            The upscaled image, same dtype and channels as the input.

        Raises:
            ImageError: unreadable file, unsupported array, or smaller than the network's
                minimum input size.
        """
        pixels = read_image(image) if isinstance(image, str | os.PathLike) else image
        _check_pixels(pixels)
        if self.network is None:
            output = imresize(pixels, self.scale)
        elif pixels.ndim == 3 and pixels.shape[2] == 4:
            output = self._upscale_rgba(self.network, pixels, progress)
        else:
            output = self._run(self.network, pixels, progress)
        if self.outscale is None or self.outscale == self.scale:
            return output
        size = (round(pixels.shape[0] * self.outscale), round(pixels.shape[1] * self.outscale))
        return imresize(output, output_shape=(max(size[0], 1), max(size[1], 1)))

    def _run(
        self, network: SRModel, pixels: np.ndarray, progress: ProgressCallback | None
    ) -> np.ndarray:
        return upscale_array(
            network, pixels, self.tile, self.tile_overlap, self.max_memory, progress
        )

    def _upscale_rgba(
        self, network: SRModel, pixels: np.ndarray, progress: ProgressCallback | None
    ) -> np.ndarray:
        """Colour through the network; alpha too (as gray) unless it is constant."""
        color = self._run(network, pixels[..., :3], progress)
        out = np.empty((*color.shape[:2], 4), dtype=pixels.dtype)
        out[..., :3] = color
        del color
        alpha = pixels[..., 3]
        if alpha.min() == alpha.max():
            out[..., 3] = alpha.flat[0]
        else:
            out[..., 3] = self._run(network, alpha, progress)
        return out


def upscale(
    image: ImageInput,
    model: str | SRModel | None = None,
    scale: int | None = None,
    weights: str | os.PathLike | None = None,
    tile: int | None = None,
    tile_overlap: int = DEFAULT_TILE_OVERLAP,
    max_memory: int | None = None,
    precision: str = AUTO_PRECISION,
    device: str = "auto",
    backend: str = "torch",
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Super-resolve one image.

    >>> import lightsr
    >>> big = lightsr.upscale("photo.jpg")                 # built-in model, x4
    >>> big = lightsr.upscale(array, model="emt", scale=2)  # published EMT x2 weights

    Takes the arguments of :class:`Upscaler` plus ``image`` and ``progress`` (see
    :meth:`Upscaler.__call__`). To upscale many images, build one :class:`Upscaler` so the
    model is loaded once.

    Returns:
        The upscaled image: same dtype (uint8 or uint16) and channels as the input.
    """
    upscaler = Upscaler(
        model=model,
        scale=scale,
        weights=weights,
        tile=tile,
        tile_overlap=tile_overlap,
        max_memory=max_memory,
        precision=precision,
        device=device,
        backend=backend,
    )
    return upscaler(image, progress)


def _load_network(
    model: str | SRModel | None, scale: int | None, weights: str | os.PathLike | None
) -> SRModel:
    from lightsr.models import load_model, resolve_model

    if isinstance(model, SRModel):
        if scale is not None and scale != model.scale:
            raise UsageError(f"the model upscales x{model.scale}, not x{scale}")
        return model
    if weights is not None and scale is None:
        return load_model(Path(weights))
    return resolve_model(model, weights, DEFAULT_SCALE if scale is None else scale)


def _onnx_network(
    model: str | SRModel | None,
    scale: int | None,
    weights: str | os.PathLike | None,
    precision: str,
    threads: int | None = None,
) -> OrtModel:
    """The ONNX Runtime model: ``weights`` if it is an ``.onnx`` file, else a cached export
    (quantised for ``precision="int8"``, see :func:`lightsr.quantize.cached_int8_export`)."""
    if is_onnx_file(weights):
        network = load_onnx_model(weights, threads)
        if scale is not None and scale != network.scale:
            raise UsageError(f"{weights} upscales x{network.scale}, not x{scale}")
        return network
    torch_model = _load_network(model, scale, weights)
    path = cached_onnx(torch_model, precision)
    try:
        return load_onnx_model(path, threads)
    except CheckpointError:  # a damaged cache file (disk full, killed copy): export again
        path.unlink(missing_ok=True)
        return load_onnx_model(cached_onnx(torch_model, precision), threads)


def _check_pixels(pixels: object) -> None:
    if not isinstance(pixels, np.ndarray):
        raise ImageError(f"expected a numpy array or an image path, got {type(pixels).__name__}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise ImageError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got {pixels.shape}")
    if pixels.size == 0:
        raise ImageError(f"image has zero size ({pixels.shape[1]}x{pixels.shape[0]})")
