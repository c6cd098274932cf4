"""High-level Python API: :func:`upscale` one image, or an :class:`Upscaler` for many.

Images are numpy arrays in the conventions of :mod:`lightsr.io` (uint8 or uint16; (H, W)
gray, (H, W, 3) RGB or (H, W, 4) RGBA) and come back in the same dtype and layout.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from lightsr import anyscale
from lightsr.backends import Backend, check_weights, get_backend
from lightsr.errors import ImageError, UsageError
from lightsr.imresize import imresize
from lightsr.inference import (
    DEFAULT_TILE_OVERLAP,
    ProgressCallback,
    upscale_array,
)
from lightsr.io import read_image
from lightsr.models import ANYSCALE_MODEL, SRModel
from lightsr.options import AUTO_PRECISION, DEFAULT_SCALE, set_threads

BICUBIC = "bicubic"
BICUBIC_SCALES = (2, 3, 4)

ImageInput = np.ndarray | str | os.PathLike


class Upscaler:
    """A model loaded once and ready to upscale any number of images.

    Args:
        model: ``None``/``"default"`` for the built-in model, ``"bicubic"`` for MATLAB
            bicubic interpolation, a network or published-checkpoint name (``"emt"``,
            ``"emt_x4_official"``), or a loaded :class:`~lightsr.models.SRModel` (moved to
            ``device``/``precision`` in place).
        scale: upscaling factor; ``None`` means the scale of ``weights`` or of an
            ``SRModel``, otherwise 4. Any number from 1 to 8 (``2.5``) for an
            arbitrary-scale model: with no ``model``/``weights`` a non-integer scale loads
            the built-in ``"anyscale"`` model, and ``"anyscale"`` or arbitrary-scale
            ``weights`` (``esc_lte``) take integer scales too. A fixed-scale model given a
            non-integer scale runs at its own scale (the smallest it has at or above
            ``scale``) and is resized by bicubic, as ``outscale`` does; :attr:`hint` says so.
            The output is ``round(h · scale)`` × ``round(w · scale)``.
        weights: checkpoint file; takes precedence over a model name.
        tile: force square tiles of this many input pixels; ``None`` tiles automatically
            when the image would exceed ``max_memory``.
        tile_overlap: context pixels around each tile; ``None``: 64 for fixed-scale
            networks (see :mod:`lightsr.inference`), the encoder's receptive field for
            arbitrary-scale ones (:func:`lightsr.anyscale.margin_for`).
        max_memory: bytes one forward pass may use; ``None`` sizes it from free memory.
        precision: ``"auto"`` (bf16 where this CPU computes it natively and bf16 keeps the
            model's PSNR, else fp32: see :func:`lightsr.runtime.auto_precision`), ``"fp32"``,
            ``"fp16"``, ``"bf16"`` (torch) or ``"int8"`` (onnxruntime: the statically
            quantised export, see :mod:`lightsr.quantize`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        backend: ``"torch"``, ``"onnxruntime"`` (CPU, fp32, fp16 or int8) or ``"ncnn"``
            (CPU, or a Vulkan GPU with ``device="auto"``; fp16 or fp32 weights, ``auto``:
            fp16): runs ``weights`` when it is a file of the backend's own format
            (``.onnx``, ``.param``), otherwise the model's export, made on first use and
            cached (see :mod:`lightsr.backends`).
        outscale: final size factor when it differs from the network's scale (``3.5``):
            the network's output is resized by MATLAB-exact bicubic to ``outscale`` × the
            input size (rounded).
        threads: CPU threads (torch's are process-wide); ``None`` leaves the default.
        size: output ``(height, width)`` of every image, whatever its size; needs an
            arbitrary-scale model (or bicubic). With no ``model``/``weights`` the built-in
            ``"anyscale"`` model is used.

    Attributes:
        scale: the factor images are upscaled by (a float for arbitrary-scale models).
        arbitrary_scale: whether the model renders any scale and size itself.
        hint: a note for the user when a fixed-scale model is resized by bicubic to a
            non-integer ``scale``; ``None`` otherwise.
        precision: the precision the model runs in (``"auto"`` resolved).
        precision_reason: why ``"auto"`` chose it, in a few words; ``None`` when not asked.
        backend: the loaded :class:`lightsr.backends.Backend` (``None`` for bicubic);
            :meth:`describe` says what runs.
        network: the model the backend runs (``backend.network``).

    Raises:
        UsageError: unknown backend, precision, device or model name; bad scale.
        CheckpointError: the weights cannot be loaded or are for another scale.
    """

    def __init__(
        self,
        model: str | SRModel | None = None,
        scale: float | None = None,
        weights: str | os.PathLike | None = None,
        tile: int | None = None,
        tile_overlap: int | None = None,
        max_memory: int | None = None,
        precision: str = AUTO_PRECISION,
        device: str = "auto",
        backend: str = "torch",
        outscale: float | None = None,
        threads: int | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        backend_class = get_backend(backend)
        if scale is not None and not _is_integer(scale):
            anyscale.check_scale(scale)
        elif scale is not None and scale < 1:
            raise UsageError(f"scale must be a positive integer, got {scale}")
        if tile is not None and tile < 1:
            raise UsageError(f"tile size must be positive, got {tile}")
        if tile_overlap is not None and tile_overlap < 0:
            raise UsageError(f"tile overlap must be >= 0, got {tile_overlap}")
        if outscale is not None and not outscale > 0:
            raise UsageError(f"outscale must be positive, got {outscale}")
        if size is not None:
            size = _check_size(size)
            if scale is not None or outscale is not None:
                raise UsageError("give an output size or a scale, not both")
        set_threads(threads)
        backend_class.check_options(device, precision)
        check_weights(backend_class, weights)
        self.device = backend_class.data_device(device)
        self.precision = precision
        self.precision_reason: str | None = None
        self.tile = tile
        self.max_memory = max_memory
        self.outscale = outscale
        self.size = size
        self.hint: str | None = None
        self.backend: Backend | None = None
        if model == BICUBIC and weights is None:
            self._settle_precision(backend)
            self.scale = DEFAULT_SCALE if scale is None else _as_scale(scale)
            self.tile_overlap = DEFAULT_TILE_OVERLAP if tile_overlap is None else tile_overlap
            return
        wants_any = (size is not None or not _is_integer(scale)) and model is None
        if wants_any and weights is None:
            model = ANYSCALE_MODEL
        if wants_any or model == ANYSCALE_MODEL:
            backend_class.check_arbitrary_scale()
        if backend_class.runs_file(weights):
            self.backend = backend_class.open(weights, precision, device, threads)
            if scale is not None and scale != self.backend.scale:
                raise UsageError(f"{weights} upscales x{self.backend.scale}, not x{scale}")
        else:
            network = self._load(model, scale, weights)
            self.backend = backend_class.from_model(network, precision, device, threads)
        self.precision = self.backend.precision
        self.precision_reason = self.backend.precision_reason
        if self.arbitrary_scale:
            if outscale is not None:  # renders at outscale directly
                scale, self.outscale = outscale, None
                anyscale.check_scale(scale)
            self.scale = DEFAULT_SCALE if scale is None else _as_scale(scale)
            if not _is_integer(self.scale) or self.size is not None or scale is not None:
                anyscale.check_scale(self.scale)
            default = anyscale.margin_for(self.network)
            self.tile_overlap = default if tile_overlap is None else tile_overlap
        else:
            if size is not None:
                raise UsageError(
                    f"{self.network.variant} upscales x{self.network.scale} only; an output "
                    f"size needs an arbitrary-scale model (leave the model out or use "
                    f"{ANYSCALE_MODEL}), or use outscale"
                )
            self.scale = self.network.scale
            self.tile_overlap = DEFAULT_TILE_OVERLAP if tile_overlap is None else tile_overlap

    def _load(
        self, model: str | SRModel | None, scale: float | None, weights: str | os.PathLike | None
    ) -> SRModel:
        """Load the network; a fixed-scale one asked for a non-integer ``scale`` runs at its
        own scale, then bicubic to ``scale`` (sets :attr:`outscale` and :attr:`hint`)."""
        if _is_integer(scale) or (isinstance(model, SRModel) and model.arbitrary_scale):
            return _load_network(model, scale, weights)
        if weights is not None or isinstance(model, SRModel):
            network = _load_network(model, None, weights)
        else:
            network = _load_network(model, _network_scale(model, scale), None)
        if not network.arbitrary_scale:
            if self.outscale is not None:
                raise UsageError("give a non-integer scale or outscale, not both")
            self.outscale = scale
            self.hint = (
                f"{network.variant} is a fixed-scale model: x{network.scale}, then bicubic "
                f"to x{scale:g}; leave the model out (or use {ANYSCALE_MODEL}) for a true "
                "arbitrary-scale result"
            )
        return network

    @property
    def network(self) -> Any:
        """What the backend runs: an :class:`~lightsr.models.SRModel`, an
        :class:`~lightsr.ort.OrtModel` or an :class:`~lightsr.ncnn_runtime.NcnnSRModel`
        (``None`` for bicubic)."""
        return None if self.backend is None else self.backend.network

    @property
    def arbitrary_scale(self) -> bool:
        """Whether the network renders any scale and size itself (an LTE model)."""
        return self.backend is not None and self.backend.arbitrary_scale

    def describe(self) -> dict[str, Any]:
        """What runs: backend, precision, device, scale, network and its provenance."""
        if self.backend is None:
            return {"backend": None, "precision": self.precision, "model": BICUBIC}
        return self.backend.describe()

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the output for an ``height`` × ``width`` input."""
        if self.size is not None:
            return self.size
        factor = self.outscale if self.outscale is not None else self.scale
        if self.outscale is None and _is_integer(factor):
            return height * int(factor), width * int(factor)
        return anyscale.output_size(height, width, factor)

    def _settle_precision(self, backend: str) -> None:
        """Resolve ``precision="auto"`` for bicubic (no network)."""
        from lightsr.runtime import auto_precision

        if self.precision == AUTO_PRECISION:
            self.precision, self.precision_reason = auto_precision(None, self.device.type, backend)

    @property
    def name(self) -> str:
        """``"bicubic"`` or the network variant (``"fmen_s"``)."""
        return BICUBIC if self.network is None else self.network.variant

    def __call__(
        self,
        image: ImageInput,
        progress: ProgressCallback | None = None,
        size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Upscale ``image`` (an array or a path to an image file).

        Args:
            image: uint8/uint16 array, (H, W), (H, W, 3) or (H, W, 4); or an image path
                (read with :func:`lightsr.io.read_image`, EXIF orientation applied).
            progress: called as ``progress(done, total)`` after every tile.
            size: output (height, width) of this image, for an arbitrary-scale model or
                bicubic; default :meth:`output_size`.

        Returns:
            The upscaled image, same dtype and channels as the input.

        Raises:
            ImageError: unreadable file, unsupported array, or smaller than the network's
                minimum input size.
        """
        pixels = read_image(image) if isinstance(image, str | os.PathLike) else image
        _check_pixels(pixels)
        if size is not None:
            size = _check_size(size)
            if self.network is not None and not self.arbitrary_scale and self.outscale is None:
                raise UsageError(f"{self.name} upscales x{self.scale} only, not to a size")
        target = size or self.output_size(*pixels.shape[:2])
        if self.network is None:
            if _is_integer(self.scale) and size is None and self.size is None:
                output = imresize(pixels, self.scale)
            else:
                output = imresize(pixels, output_shape=target)
        elif pixels.ndim == 3 and pixels.shape[2] == 4:
            output = self._upscale_rgba(self.network, pixels, progress, target)
        else:
            output = self._run(self.network, pixels, progress, target)
        if output.shape[:2] == tuple(target):
            return output
        return imresize(output, output_shape=target)

    def _run(
        self,
        network: SRModel,
        pixels: np.ndarray,
        progress: ProgressCallback | None,
        size: tuple[int, int],
    ) -> np.ndarray:
        if self.arbitrary_scale:
            nominal = None if self.size is not None else (float(self.scale),) * 2
            if nominal is not None and tuple(size) != self.output_size(*pixels.shape[:2]):
                nominal = None  # another size asked for this image: its own factors
            return anyscale.upscale_array_to(
                network,
                pixels,
                size,
                nominal,
                self.tile,
                self.tile_overlap,
                self.max_memory,
                progress,
            )
        return upscale_array(
            network, pixels, self.tile, self.tile_overlap, self.max_memory, progress
        )

    def _upscale_rgba(
        self,
        network: SRModel,
        pixels: np.ndarray,
        progress: ProgressCallback | None,
        size: tuple[int, int],
    ) -> np.ndarray:
        """Colour through the network; alpha too (as gray) unless it is constant."""
        color = self._run(network, pixels[..., :3], progress, size)
        out = np.empty((*color.shape[:2], 4), dtype=pixels.dtype)
        out[..., :3] = color
        del color
        alpha = pixels[..., 3]
        if alpha.min() == alpha.max():
            out[..., 3] = alpha.flat[0]
        else:
            out[..., 3] = self._run(network, alpha, progress, size)
        return out


def upscale(
    image: ImageInput,
    model: str | SRModel | None = None,
    scale: float | None = None,
    weights: str | os.PathLike | None = None,
    tile: int | None = None,
    tile_overlap: int | None = None,
    max_memory: int | None = None,
    precision: str = AUTO_PRECISION,
    device: str = "auto",
    backend: str = "torch",
    progress: ProgressCallback | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Super-resolve one image.

    >>> import lightsr
    >>> big = lightsr.upscale("photo.jpg")                 # built-in model, x4
    >>> big = lightsr.upscale(array, model="emt", scale=2)  # published EMT x2 weights
    >>> big = lightsr.upscale("photo.jpg", scale=2.5)      # built-in anyscale model
    >>> big = lightsr.upscale("photo.jpg", size=(1080, 1920))  # (height, width)

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
        size=size,
    )
    return upscaler(image, progress)


def _load_network(
    model: str | SRModel | None, scale: float | None, weights: str | os.PathLike | None
) -> SRModel:
    from lightsr.models import load_model, resolve_model

    if isinstance(model, SRModel):
        if scale is not None and scale != model.scale and not model.arbitrary_scale:
            raise UsageError(f"the model upscales x{model.scale}, not x{scale}")
        return model
    if weights is not None and scale is None:
        return load_model(Path(weights))
    return resolve_model(model, weights, DEFAULT_SCALE if scale is None else scale)


def _is_integer(scale: float | None) -> bool:
    """Whether ``scale`` is ``None`` or a whole number (``4``, ``4.0``)."""
    return scale is None or float(scale) == int(scale)


def _as_scale(scale: float) -> float:
    """``4.0`` → ``4`` (an int), ``2.5`` → ``2.5``."""
    return int(scale) if _is_integer(scale) else float(scale)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    """An output (height, width) of two positive integers."""
    try:
        height, width = (int(side) for side in size)
    except (TypeError, ValueError):
        raise UsageError(f"size must be (height, width), got {size!r}") from None
    if height < 1 or width < 1:
        raise UsageError(f"output size must be positive, got {width}x{height} (width x height)")
    return height, width


def model_scales(name: str) -> tuple[int, ...]:
    """Integer scales that model ``name`` (as ``model`` takes it) has weights for.

    A built-in model (``"default"``, ``"real"``) has its weights' scales (``"anyscale"``:
    1-8, and any scale between), ``"bicubic"`` 2-4, a published checkpoint its own, and a
    network name the scales it has published weights for.

    Raises:
        UsageError: unknown name, or a network without published weights.
    """
    from lightsr.archs.registry import get_arch
    from lightsr.hub import find_official, get_official, official_names
    from lightsr.models import BUILTIN_MODELS, builtin_scales

    if name in BUILTIN_MODELS:
        return builtin_scales(name)
    if name == BICUBIC:
        return BICUBIC_SCALES
    if name in official_names():
        return (get_official(name).scale,)
    spec = get_arch(name)
    scales = tuple(s for s in spec.scales if find_official(spec.name, s) is not None)
    if not scales:
        raise UsageError(f"{name} has no published weights to serve")
    return scales


def _network_scale(model: str | None, scale: float) -> int:
    """The integer scale to load fixed-scale ``model`` at for non-integer ``scale``: the
    smallest it has at or above ``scale``, else its largest (then bicubic does the rest)."""
    if model is None:
        return DEFAULT_SCALE
    try:
        scales = model_scales(model)
    except UsageError:
        scales = ()
    above = [s for s in scales if s >= scale]
    if above:
        return min(above)
    return max(scales) if scales else DEFAULT_SCALE


def _check_pixels(pixels: object) -> None:
    if not isinstance(pixels, np.ndarray):
        raise ImageError(f"expected a numpy array or an image path, got {type(pixels).__name__}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise ImageError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got {pixels.shape}")
    if pixels.size == 0:
        raise ImageError(f"image has zero size ({pixels.shape[1]}x{pixels.shape[0]})")
