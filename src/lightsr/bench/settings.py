"""Benchmark settings (one for all networks of a run) and result rows."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from lightsr.errors import UsageError
from lightsr.options import (
    BACKENDS,
    BENCH_PROTOCOLS,
    DEVICE_TYPES,
    INFERENCE_PRECISIONS,
    check_choice,
    resolve_device,
)


@dataclass(frozen=True)
class BenchSettings:
    """How to benchmark (one setting for all networks of a run).

    Attributes:
        scale: upscale factor (any number from 1 to 8 for arbitrary-scale networks).
        size: LR input (height, width).
        device: ``"cpu"`` or ``"cuda"``.
        backend: ``"torch"`` (eager), ``"onnxruntime"`` (the network's ONNX export) or
            ``"ncnn"`` (its NCNN export, CPU); see :mod:`lightsr.backends`.
        precision: ``"fp32"``, ``"fp16"``, ``"bf16"`` (torch) or ``"int8"`` (onnxruntime);
            what each backend runs is :attr:`lightsr.backends.Backend.precisions`.
        protocol: ``"robust"`` or ``"ntire"`` (see :mod:`lightsr.bench`).
        runs: timed forwards (robust) or images (ntire).
        warmup: untimed forwards before timing (robust only).
        threads: torch / ONNX Runtime intra-op threads.
        compile: run the torch backend through ``torch.compile`` (see :mod:`lightsr.bench`).
    """

    scale: int | float = 4
    size: tuple[int, int] = (256, 256)
    device: str = "cpu"
    backend: str = "torch"
    precision: str = "fp32"
    protocol: str = "robust"
    runs: int = 10
    warmup: int = 3
    threads: int = 2
    compile: bool = False

    def validate(self) -> None:
        """Raise :class:`UsageError` for invalid values or combinations."""
        from lightsr.backends import get_backend

        check_choice("device", self.device, DEVICE_TYPES)
        check_choice("backend", self.backend, BACKENDS)
        check_choice("precision", self.precision, INFERENCE_PRECISIONS)
        backend = get_backend(self.backend)
        if self.precision not in backend.precisions:
            runs = [name for name in BACKENDS if self.precision in get_backend(name).precisions]
            raise UsageError(
                f"{self.precision} runs on the {' or '.join(runs)} backend only, "
                f"not on {self.backend}"
            )
        check_choice("protocol", self.protocol, BENCH_PROTOCOLS)
        for name in ("scale", "runs", "threads"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise UsageError(f"warmup must be 0 or more, got {self.warmup}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise UsageError(f"input size must be two positive sides, got {self.size}")
        if self.protocol == "ntire" and self.precision != "fp32":
            raise UsageError("--protocol ntire measures in fp32 (the challenge procedure)")
        if self.compile and not backend.compiles:
            runs = [name for name in BACKENDS if get_backend(name).compiles]
            raise UsageError(f"--compile applies to the {' or '.join(runs)} backend only")
        backend.check_available()
        backend.check_options(self.device, self.precision)
        if self.device == "cuda":
            resolve_device(self.device)

    @property
    def input_label(self) -> str:
        """``"256x256"``."""
        return f"{self.size[0]}x{self.size[1]}"


@dataclass
class BenchRow:
    """One network's results; :meth:`to_dict` is the ``--json`` record.

    ``model`` is the network family and ``variant`` the registry name, as in
    :class:`lightsr.models.SRModel`. ``form`` is ``"deploy"`` when the network was
    re-parameterised before measuring. Latencies are in seconds; a failed network has
    ``error`` set and ``None`` for what could not be measured.

    Arbitrary-scale networks (LTE) also report their two parts, ``None`` for others:
    ``output`` (``"HxW"``, the rendered size), ``encoder_macs`` (encoder *plus* the head's
    ``coef``/``freq`` 3×3 convs, which run once per LR pixel) and ``encoder_latency_s``;
    the head's queries (phase layer and MLP, per output pixel) as ``head_macs_per_mpx``
    (per output megapixel, independent of the scale), ``head_latency_s`` and
    ``head_s_per_mpx``. ``macs`` is the encoder plus the head at ``output``.
    """

    model: str
    variant: str
    form: str
    scale: int | float
    input: str
    backend: str
    device: str
    precision: str
    protocol: str
    threads: int
    runs: int
    params: int | None = None
    macs: int | None = None
    macs_executed: int | None = None
    flops: int | None = None
    activations: int | None = None
    convs: int | None = None
    latency_median_s: float | None = None
    latency_mean_s: float | None = None
    latency_min_s: float | None = None
    latency_max_s: float | None = None
    peak_memory_mib: float | None = None
    memory_metric: str = ""
    compiled: bool = False
    compile_s: float | None = None
    output: str | None = None
    encoder_macs: int | None = None
    head_macs_per_mpx: int | None = None
    encoder_latency_s: float | None = None
    head_latency_s: float | None = None
    head_s_per_mpx: float | None = None
    error: str | None = None

    @property
    def latency_s(self) -> float | None:
        """The protocol's headline latency: the median (robust) or the mean (ntire)."""
        return self.latency_mean_s if self.protocol == "ntire" else self.latency_median_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchRow:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def settings_from_json(text: str) -> BenchSettings:
    """Inverse of ``json.dumps(asdict(settings))`` (the worker's argument)."""
    data = json.loads(text)
    data["size"] = tuple(data["size"])
    return replace(BenchSettings(), **data)
