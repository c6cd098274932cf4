"""The models a server offers, loaded once and kept, and the upscale that a job runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from lightsr.anyscale import output_size
from lightsr.api import DEFAULT_SCALE, Upscaler, model_scales
from lightsr.errors import ImageError
from lightsr.io import decode_image, encode_image
from lightsr.options import AUTO_PRECISION
from lightsr.serve.errors import ServeError
from lightsr.serve.jobs import Job

DEFAULT_MODEL = "default"
# What `lightsr serve` offers when no --model is given: the page's two choices.
DEFAULT_SERVED = (DEFAULT_MODEL, "real")
# How the page names the built-in models; any other model is shown by name and variant.
MODEL_LABELS = {
    DEFAULT_MODEL: "Default (fast; clean images)",
    "real": "Real photo (noise, blur, JPEG)",
    "anyscale": "Any scale (1-8, e.g. 2.5)",
}
# File extension and media type of each output format a request may ask for.
FORMATS = {
    "png": (".png", "image/png"),
    "webp": (".webp", "image/webp"),
    "jpeg": (".jpg", "image/jpeg"),
}


@dataclass(frozen=True)
class EngineOptions:
    """How every served model runs (the ``lightsr upscale`` options of the same names;
    ``backend`` names a :mod:`lightsr.backends` class)."""

    device: str = "auto"
    precision: str = AUTO_PRECISION
    tile: int | None = None
    max_memory: int | None = None
    backend: str = "torch"


def served_scales(name: str) -> tuple[int, ...]:
    """Integer scales that model ``name`` can be served at, as ``--model`` accepts it
    (:func:`lightsr.api.model_scales`); an arbitrary-scale model (``"anyscale"``) also
    serves any scale between 1 and 8.

    Raises:
        UsageError: unknown name, or a network without published weights.
    """
    return model_scales(name)


class ModelPool:
    """The served models: one :class:`~lightsr.api.Upscaler` per (model, scale), loaded on
    first use (or by :meth:`load_all`) and kept for the life of the server.

    Args:
        names: model names as ``lightsr upscale --model`` takes them.
        options: device, precision and tiling of every model.
    """

    def __init__(self, names: Sequence[str], options: EngineOptions) -> None:
        self.options = options
        self.scales = {name: served_scales(name) for name in dict.fromkeys(names)}
        self._upscalers: dict[tuple[str, int], Upscaler] = {}
        self._lock = threading.Lock()
        self._catalog: dict[str, list[dict[str, Any]]] | None = None
        self._catalog_lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        """Served model names, the default first."""
        return list(self.scales)

    def label(self, name: str) -> str:
        """How the page names served model ``name``."""
        if name in MODEL_LABELS:
            return MODEL_LABELS[name]
        variant = self.get(name, self.default_scale(name)).name
        return name if variant == name else f"{name} ({variant})"

    def default_scale(self, name: str) -> int:
        """The scale a request gets when it names none: 4 where served, else the largest."""
        scales = self.scales[name]
        return DEFAULT_SCALE if DEFAULT_SCALE in scales else max(scales)

    def arbitrary(self, name: str) -> bool:
        """Whether served model ``name`` takes any scale from 1 to 8 (``"anyscale"``)."""
        from lightsr.models import BUILTIN_MODELS, builtin_is_arbitrary

        return name in BUILTIN_MODELS and builtin_is_arbitrary(name)

    def check(self, name: str, scale: float | None) -> float:
        """The scale to run ``name`` at (an int when whole).

        Raises:
            ServeError: 422 when the model is not served or not at ``scale``.
        """
        if name not in self.scales:
            served = ", ".join(self.scales)
            raise ServeError(422, "unknown_model", f"unknown model {name!r}; served: {served}")
        if scale is None:
            return self.default_scale(name)
        if scale == int(scale):
            scale = int(scale)
        if self.arbitrary(name) and 1 <= scale <= 8:
            return scale
        if scale not in self.scales[name]:
            scales = ", ".join(f"x{s}" for s in self.scales[name])
            raise ServeError(422, "unsupported_scale", f"{name} serves {scales}, not x{scale:g}")
        return scale

    def get(self, name: str, scale: float) -> Upscaler:
        """The loaded upscaler (loading it the first time); an arbitrary-scale model has
        one for all scales (at its default scale; :meth:`run` asks it for a size)."""
        if self.arbitrary(name):
            scale = self.default_scale(name)
        with self._lock:
            upscaler = self._upscalers.get((name, scale))
            if upscaler is None:
                upscaler = Upscaler(
                    model=name,
                    scale=scale,
                    tile=self.options.tile,
                    max_memory=self.options.max_memory,
                    precision=self.options.precision,
                    device=self.options.device,
                    backend=self.options.backend,
                )
                self._upscalers[(name, scale)] = upscaler
            return upscaler

    def catalog(self) -> dict[str, list[dict[str, Any]]]:
        """What ``lightsr models --json`` shows (computed once: it builds every variant)."""
        with self._catalog_lock:
            if self._catalog is None:
                from lightsr.catalog import catalog

                self._catalog = catalog()
            return self._catalog

    def load_all(self) -> None:
        """Load every served (model, scale), so that problems show at start-up."""
        for name, scales in self.scales.items():
            for scale in (self.default_scale(name),) if self.arbitrary(name) else scales:
                self.get(name, scale)

    def run(self, job: Job, progress: Callable[[int, int], None]) -> tuple[bytes, tuple[int, int]]:
        """Decode the upload, upscale it, encode the result (a :class:`JobQueue` runner)."""
        try:
            # The header was checked against the server's limit when the job was submitted.
            pixels = decode_image(job.data, job.filename, max_pixels=0)
        except ImageError as exc:
            raise ServeError(400, "bad_image", str(exc)) from None
        try:
            upscaler = self.get(job.model, job.scale)
            if upscaler.arbitrary_scale:
                size = output_size(*pixels.shape[:2], job.scale)
                output = upscaler(pixels, progress, size=size)
            else:
                output = upscaler(pixels, progress)
        except ImageError as exc:
            raise ServeError(422, "cannot_upscale", str(exc)) from None
        except (MemoryError, torch.OutOfMemoryError):
            raise ServeError(503, "out_of_memory", "out of memory; try a smaller image") from None
        del pixels
        try:
            encoded = encode_image(output, FORMATS[job.format][0], job.quality)
        except ImageError as exc:
            raise ServeError(422, "unsupported_format", str(exc)) from None
        return encoded.tobytes(), (output.shape[1], output.shape[0])
