"""Inference backends behind one interface: eager PyTorch, ONNX Runtime and NCNN.

Everything that differs between backends is here, in one class per backend registered by
name (:data:`lightsr.options.BACKENDS`). :class:`lightsr.api.Upscaler` (and through it
``lightsr upscale``, ``lightsr eval`` and the server) and ``lightsr bench`` pick a class with
:func:`get_backend` and never branch on its name.

A backend class says what it runs (:attr:`Backend.precisions`, :attr:`Backend.file_suffixes`,
whether it runs arbitrary-scale networks or ``torch.compile``), checks options before any
model is loaded (:meth:`Backend.check_options`, :meth:`Backend.check_available`) and loads a
model: from a :class:`~lightsr.models.SRModel` (:meth:`Backend.from_model`; the ONNX Runtime
and NCNN backends export it to the cache folder on first use) or from a file in its own
format (:meth:`Backend.open`: ``.onnx``, ``.param``). A loaded backend holds
:attr:`Backend.network`, which :mod:`lightsr.inference` tiles, runs a batch
(:meth:`Backend.run`) and describes itself (:meth:`Backend.describe`). For ``lightsr bench``
it also builds the bare timed forward (:meth:`Backend.bench_runner`).

* ``torch``: the network in its deploy form and inference layout, on ``cpu``/``cuda``, in
  fp32, fp16 or bf16 (``auto``: :func:`lightsr.runtime.auto_precision`).
* ``onnxruntime``: the ONNX export (:func:`lightsr.export.cached_export`; int8: the
  quantised one, :func:`lightsr.quantize.cached_onnx`) on the CPU, fp32, fp16 or int8.
* ``ncnn``: the NCNN export (:func:`cached_ncnn`, :func:`lightsr.export.ncnn.export_ncnn`)
  through the ``ncnn`` package, fp16 weights (the export's default, and ``auto``) or fp32,
  on a Vulkan GPU when ncnn finds one and the device is ``auto``, else on the CPU.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lightsr.errors import CheckpointError, UsageError
from lightsr.options import AUTO_PRECISION, BACKENDS, ORT_PRECISIONS

if TYPE_CHECKING:
    import torch

    from lightsr.bench.settings import BenchSettings
    from lightsr.models import SRModel

# A benchmark's timed forward and the input maker it takes (see lightsr.bench.protocol.Runner).
BenchForward = tuple[Callable[[Any], Any], Callable[[int, int], Any]]


class Backend:
    """One inference backend; an instance is a model loaded on it.

    Class attributes:
        name: the ``--backend`` name.
        precisions: precisions it runs (``--precision``; ``auto`` too, see
            :meth:`auto_precision`).
        file_suffixes: model files it runs as they are (``--weights model.onnx``).
        arbitrary_scale_networks: whether it runs arbitrary-scale networks (LTE).
        compiles: whether ``torch.compile`` applies (``lightsr bench --compile``).
        modules: Python modules it needs, and the extra that installs them.

    Attributes:
        network: what :mod:`lightsr.inference` runs (``spec``, ``scale``, ``variant``,
            ``device``, ``dtype``, ``module``, ``upscale``).
        precision: the precision it runs in (``auto`` resolved).
        precision_reason: why ``auto`` chose it; ``None`` when a precision was named.
        device: the torch device of the network's inputs and outputs.
    """

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    file_suffixes: ClassVar[tuple[str, ...]] = ()
    arbitrary_scale_networks: ClassVar[bool] = False
    compiles: ClassVar[bool] = False
    modules: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = ""

    def __init__(
        self, network: Any, precision: str, reason: str | None, device: torch.device
    ) -> None:
        self.network = network
        self.precision = precision
        self.precision_reason = reason
        self.device = device

    # ------------------------------------------------------------------ class side

    @classmethod
    def check_available(cls) -> None:
        """Raise :class:`UsageError` unless the modules this backend needs can be imported."""
        missing = [name for name in cls.modules if importlib.util.find_spec(name) is None]
        if missing:
            install = f"; pip install 'lightsr[{cls.extra}]'" if cls.extra else ""
            raise UsageError(
                f"the {cls.name} backend is not available here "
                f"(missing: {', '.join(missing)}){install}"
            )

    @classmethod
    def check_options(cls, device: str, precision: str) -> None:
        """Raise :class:`UsageError` for a device or precision (or ``auto``) it cannot run."""
        raise NotImplementedError

    @classmethod
    def data_device(cls, device: str) -> torch.device:
        """The torch device that inputs and outputs of the network live on."""
        import torch

        return torch.device("cpu")

    @classmethod
    def runs_file(cls, path: str | os.PathLike | None) -> bool:
        """Whether ``path`` is a model file of this backend's own format."""
        return path is not None and Path(path).suffix.lower() in cls.file_suffixes

    @classmethod
    def auto_precision(cls, model: SRModel | None, device: torch.device) -> tuple[str, str]:
        """What ``precision="auto"`` means for ``model`` here, and why (a few words)."""
        return "fp32", "fp32 (auto picks bf16 for torch networks only)"

    @classmethod
    def from_model(
        cls, model: SRModel, precision: str, device: str = "auto", threads: int | None = None
    ) -> Backend:
        """``model`` loaded on this backend (exported first where the backend needs it).

        Raises:
            UsageError: options it cannot run, or an arbitrary-scale model it cannot run.
            ExportError: the model has no export this backend runs.
        """
        raise NotImplementedError

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        precision: str,
        device: str = "auto",
        threads: int | None = None,
    ) -> Backend:
        """A model file of this backend's own format (:attr:`file_suffixes`), loaded.

        Raises:
            UsageError: the backend has no file format of its own, or bad options.
            CheckpointError: the file cannot be loaded.
        """
        raise UsageError(f"the {cls.name} backend runs no model files of its own")

    @classmethod
    def bench_runner(cls, model: SRModel, settings: BenchSettings) -> BenchForward:
        """The bare forward of ``model`` (deploy form, fresh weights) that ``lightsr bench``
        times, and a maker of its inputs at (height, width), for ``settings``."""
        raise NotImplementedError

    @classmethod
    def prepare_bench(cls, model: SRModel, settings: BenchSettings) -> None:
        """Make the files :meth:`bench_runner` loads for ``model`` (exports; none here).
        ``lightsr bench`` calls it in a process of its own, before the measuring one."""

    @classmethod
    def prepares_bench_files(cls) -> bool:
        """Whether :meth:`prepare_bench` makes files: whether this backend overrides it."""
        return cls.prepare_bench.__func__ is not Backend.prepare_bench.__func__

    @classmethod
    def versions(cls) -> dict[str, str]:
        """Versions of the runtime packages, for benchmark reports."""
        info = {}
        for name in cls.modules:
            try:
                module = __import__(name)
            except ImportError:
                continue
            info[name] = str(getattr(module, "__version__", "?"))
        return info

    @classmethod
    def check_arbitrary_scale(cls) -> None:
        """Raise :class:`UsageError` unless this backend runs arbitrary-scale networks."""
        if not cls.arbitrary_scale_networks:
            raise UsageError(
                f"arbitrary-scale models run on the {' or '.join(arbitrary_backends())} "
                "backend only"
            )

    @classmethod
    def _check_arbitrary(cls, model: SRModel) -> None:
        if model.arbitrary_scale:
            cls.check_arbitrary_scale()

    # --------------------------------------------------------------- loaded model

    @property
    def scale(self) -> int:
        return self.network.scale

    @property
    def arbitrary_scale(self) -> bool:
        """Whether the network renders any scale and size itself (an LTE model)."""
        return bool(getattr(self.network, "arbitrary_scale", False))

    @property
    def variant(self) -> str:
        return self.network.variant

    @property
    def device_label(self) -> str:
        """Where the network computes (``"cpu"``, ``"cuda:0"``, ``"vulkan:0"``)."""
        return str(self.device)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Forward an (N, 3, H, W) float32 RGB array in [0, 1]; returns (N, 3, sH, sW)
        float32 (unclamped). Inputs must be at least ``network.spec.min_size`` per side;
        :func:`lightsr.inference.upscale_array` tiles and pads any image."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            y = self.network.upscale(x.to(self.device, self.network.dtype))
        return y.to("cpu", torch.float32).numpy()

    def describe(self) -> dict[str, Any]:
        """Backend, precision, device, scale and the network's provenance (JSON-ready)."""
        provenance = self.network.provenance
        return {
            "backend": self.name,
            "precision": self.precision,
            "device": self.device_label,
            "variant": self.variant,
            "scale": self.scale,
            "arbitrary_scale": self.arbitrary_scale,
            "source": str(getattr(self.network, "source", "")),
            "provenance": provenance.to_metadata() if provenance.form else None,
        }


_REGISTRY: dict[str, type[Backend]] = {}


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make ``cls`` available as ``--backend cls.name``."""
    if cls.name not in BACKENDS:
        raise ValueError(f"add {cls.name!r} to lightsr.options.BACKENDS (the CLI choices)")
    _REGISTRY[cls.name] = cls
    return cls


def get_backend(name: str) -> type[Backend]:
    """The backend class registered as ``name``.

    Raises:
        UsageError: no such backend.
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise UsageError(
            f"backend {name!r} is not available; choose one of: {', '.join(_REGISTRY)}"
        ) from None


def backend_names() -> tuple[str, ...]:
    """Every registered backend name, in :data:`lightsr.options.BACKENDS` order."""
    return tuple(_REGISTRY)


def arbitrary_backends() -> list[str]:
    """Names of the backends that run arbitrary-scale networks."""
    return [name for name, cls in _REGISTRY.items() if cls.arbitrary_scale_networks]


def file_backend(path: str | os.PathLike | None) -> type[Backend] | None:
    """The backend whose own format ``path`` is (``.onnx``, ``.param``), or ``None``."""
    return next((cls for cls in _REGISTRY.values() if cls.runs_file(path)), None)


def check_weights(backend: type[Backend], weights: str | os.PathLike | None) -> None:
    """Refuse a model file of another backend's format (``.onnx`` with ``torch``)."""
    owner = file_backend(weights)
    if owner is not None and owner is not backend:
        suffix = Path(weights).suffix.lower()
        raise UsageError(f"{weights}: an {suffix} model needs backend '{owner.name}'")


# ----------------------------------------------------------------------------- torch


@register
class TorchBackend(Backend):
    """Eager PyTorch: the network's deploy form in its inference layout."""

    name = "torch"
    precisions = ("fp32", "fp16", "bf16")
    arbitrary_scale_networks = True
    compiles = True

    @classmethod
    def check_options(cls, device: str, precision: str) -> None:
        from lightsr.options import resolve_precision

        if precision != AUTO_PRECISION:
            resolve_precision(precision)

    @classmethod
    def data_device(cls, device: str) -> torch.device:
        from lightsr.options import resolve_device

        return resolve_device(device)

    @classmethod
    def auto_precision(cls, model: SRModel | None, device: torch.device) -> tuple[str, str]:
        from lightsr.runtime import auto_precision

        return auto_precision(model, device.type, cls.name)

    @classmethod
    def from_model(
        cls, model: SRModel, precision: str, device: str = "auto", threads: int | None = None
    ) -> Backend:
        from lightsr.inference import prepare_model

        cls.check_options(device, precision)
        target = cls.data_device(device)
        reason = None
        if precision == AUTO_PRECISION:
            precision, reason = cls.auto_precision(model, target)
        return cls(prepare_model(model, target, precision), precision, reason, target)

    @classmethod
    def bench_runner(cls, model: SRModel, settings: BenchSettings) -> BenchForward:
        """The bare module on an input in its own value range, padded beforehand to the
        test-time multiple (ESC) as the official test pipeline does: only the network is
        timed."""
        import torch
        import torch.nn.functional as F

        from lightsr.archs.blocks import to_inference_layout
        from lightsr.options import resolve_precision

        spec = model.spec
        device = torch.device(settings.device)
        dtype = resolve_precision(settings.precision)
        module = to_inference_layout(model.module.to(device=device, dtype=dtype).eval())
        if settings.compile:
            module = torch.compile(module)

        def make_input(height: int, width: int) -> torch.Tensor:
            x = torch.rand(1, 3, height, width) * spec.input_range
            pad_h = _padded_side(height, spec.pad_multiple) - height
            pad_w = _padded_side(width, spec.pad_multiple) - width
            if pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
            return x.to(device=device, dtype=dtype)

        def forward(x: torch.Tensor) -> None:
            module(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)

        return forward, make_input

    @classmethod
    def versions(cls) -> dict[str, str]:
        import torch

        return {"torch": torch.__version__}


def _padded_side(side: int, multiple: int) -> int:
    """``side`` rounded up to ``multiple``."""
    return -(-side // multiple) * multiple


# ----------------------------------------------------------------------- onnxruntime


@register
class OnnxRuntimeBackend(Backend):
    """The network's ONNX export on ONNX Runtime (CPU): fp32, fp16 or statically
    quantised int8 (:mod:`lightsr.quantize`)."""

    name = "onnxruntime"
    precisions = ORT_PRECISIONS
    file_suffixes = (".onnx",)
    modules = ("onnx", "onnxruntime")
    extra = "onnx"

    @classmethod
    def check_available(cls) -> None:
        missing = [
            name
            for name in ("lightsr.export", *cls.modules)
            if importlib.util.find_spec(name) is None
        ]
        if missing:
            raise UsageError(
                f"the onnxruntime backend is not available here (missing: {', '.join(missing)})"
            )

    @classmethod
    def check_options(cls, device: str, precision: str) -> None:
        from lightsr.ort import check_ort_options

        check_ort_options(device, "fp32" if precision == AUTO_PRECISION else precision)

    @classmethod
    def from_model(
        cls, model: SRModel, precision: str, device: str = "auto", threads: int | None = None
    ) -> Backend:
        from lightsr.ort import load_onnx_model
        from lightsr.quantize import cached_onnx

        cls.check_options(device, precision)
        cls._check_arbitrary(model)
        reason = None
        if precision == AUTO_PRECISION:
            precision, reason = cls.auto_precision(model, cls.data_device(device))
        path = cached_onnx(model, precision)
        try:
            network = load_onnx_model(path, threads)
        except CheckpointError:  # a damaged cache file (disk full, killed copy): export again
            path.unlink(missing_ok=True)
            network = load_onnx_model(cached_onnx(model, precision), threads)
        return cls(network, precision, reason, cls.data_device(device))

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        precision: str,
        device: str = "auto",
        threads: int | None = None,
    ) -> Backend:
        from lightsr.ort import load_onnx_model

        cls.check_options(device, precision)
        network = load_onnx_model(path, threads)
        reason = None
        if precision == AUTO_PRECISION:
            precision, reason = cls.auto_precision(None, cls.data_device(device))
        return cls(network, precision, reason, cls.data_device(device))

    @classmethod
    def prepare_bench(cls, model: SRModel, settings: BenchSettings) -> None:
        from lightsr.quantize import cached_onnx

        cached_onnx(model, settings.precision)

    @classmethod
    def bench_runner(cls, model: SRModel, settings: BenchSettings) -> BenchForward:
        """The cached ONNX export of ``model`` ([0, 1] in and out; the value-range
        conversion and any test-time padding are in the graph)."""
        from lightsr.ort import INPUT_NAME, OUTPUT_NAME, create_session
        from lightsr.quantize import cached_onnx

        session = create_session(cached_onnx(model, settings.precision), settings.threads)

        def make_input(height: int, width: int) -> np.ndarray:
            return np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)

        def forward(array: np.ndarray) -> None:
            session.run([OUTPUT_NAME], {INPUT_NAME: array})

        return forward, make_input


# ------------------------------------------------------------------------------ ncnn

NCNN_PRECISIONS = ("fp16", "fp32")


@register
class NcnnBackend(Backend):
    """The network's NCNN export (``.param``/``.bin``, as the desktop apps run it) through
    the ``ncnn`` package: on the first Vulkan GPU when ncnn finds one and the device is
    ``auto``, else on the CPU. Weights in fp16 (``auto``, the export's default) or fp32;
    arithmetic in fp32 on the CPU."""

    name = "ncnn"
    precisions = NCNN_PRECISIONS
    file_suffixes = (".param",)
    modules = ("ncnn",)
    extra = "ncnn"

    def __init__(self, *args: Any, vulkan: bool = False) -> None:
        super().__init__(*args)
        self.vulkan = vulkan

    @classmethod
    def check_options(cls, device: str, precision: str) -> None:
        if device not in ("auto", "cpu"):
            raise UsageError(
                "the ncnn backend runs on the CPU, or on a Vulkan GPU that ncnn finds with "
                "device 'auto'; use device 'auto' or 'cpu'"
            )
        if precision not in (AUTO_PRECISION, *cls.precisions):
            raise UsageError(
                f"the ncnn backend supports {', '.join(cls.precisions)}, not {precision}"
            )

    @classmethod
    def auto_precision(cls, model: SRModel | None, device: torch.device) -> tuple[str, str]:
        return "fp16", "fp16 (NCNN's default: fp16 weights, as the apps run them)"

    @staticmethod
    def _vulkan(device: str) -> bool:
        from lightsr.ncnn_runtime import vulkan_gpu_count

        return device == "auto" and vulkan_gpu_count() > 0

    @classmethod
    def from_model(
        cls, model: SRModel, precision: str, device: str = "auto", threads: int | None = None
    ) -> Backend:
        from lightsr.ncnn_runtime import NcnnSRModel

        cls.check_available()
        cls.check_options(device, precision)
        cls._check_arbitrary(model)
        reason = None
        if precision == AUTO_PRECISION:
            precision, reason = cls.auto_precision(model, cls.data_device(device))
        param = cached_ncnn(model, precision)
        vulkan = cls._vulkan(device)
        network = NcnnSRModel(param, threads=threads, vulkan=vulkan, model=model)
        return cls(network, precision, reason, cls.data_device(device), vulkan=vulkan)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        precision: str,
        device: str = "auto",
        threads: int | None = None,
    ) -> Backend:
        from lightsr.ncnn_runtime import NcnnSRModel

        cls.check_available()
        cls.check_options(device, precision)
        vulkan = cls._vulkan(device)
        network = NcnnSRModel(path, threads=threads, vulkan=vulkan)
        reason = None
        if precision == AUTO_PRECISION:
            reason = f"{network.precision} (the weights of {Path(path).name})"
        elif precision != network.precision:
            raise UsageError(
                f"{path}: its weights are {network.precision}, not {precision}; use "
                f"--precision {network.precision} (or auto), or export it with --precision "
                f"{precision}"
            )
        return cls(network, network.precision, reason, cls.data_device(device), vulkan=vulkan)

    @property
    def device_label(self) -> str:
        return "vulkan:0" if self.vulkan else "cpu"

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.network.run(np.asarray(batch, dtype=np.float32))

    @classmethod
    def prepare_bench(cls, model: SRModel, settings: BenchSettings) -> None:
        cls._bench_export(model, settings)

    @classmethod
    def _bench_export(cls, model: SRModel, settings: BenchSettings) -> Path:
        from lightsr.export.ncnn_forms import min_side

        cls.check_options(settings.device, settings.precision)
        cls._check_arbitrary(model)
        smallest = min_side(model)
        if min(settings.size) < smallest:
            raise UsageError(
                f"{model.variant}: its NCNN export needs inputs of at least {smallest} px per side"
            )
        # The bench's networks have random weights, which EMT amplifies past the export's
        # torch comparison (real weights pass it; see tests/test_export_ncnn.py).
        return cached_ncnn(model, settings.precision, check=False)

    @classmethod
    def bench_runner(cls, model: SRModel, settings: BenchSettings) -> BenchForward:
        """The cached NCNN export of ``model`` on the CPU ([0, 1] in and out, planar, the
        value range and test-time padding inside the graph)."""
        from lightsr.ncnn_runtime import NcnnModel

        net = NcnnModel(cls._bench_export(model, settings), threads=settings.threads)

        def make_input(height: int, width: int) -> np.ndarray:
            return np.random.default_rng(0).random((3, height, width), dtype=np.float32)

        def forward(planar: np.ndarray) -> None:
            net.run_planar(planar)

        return forward, make_input


def cached_ncnn(model: SRModel, precision: str = "fp16", check: bool = True) -> Path:
    """The NCNN export of ``model`` in the cache folder (``<cache>/ncnn``), made on first use
    by :func:`lightsr.export.ncnn.export_ncnn` (which checks it against torch).

    Named ``<variant>-x<scale>-<precision>-<digest>.param`` (``.bin`` beside it), keyed by
    a hash of the deploy-form weights, so other weights give another export.

    Raises:
        ExportError: the network has no NCNN form (one line saying why) or did not convert.
    """
    from lightsr.export.ncnn import export_ncnn
    from lightsr.export.onnx import weights_digest
    from lightsr.export.trace import deployable_copy
    from lightsr.paths import cache_dir

    key = weights_digest(deployable_copy(model).module)[:16]
    folder = cache_dir() / "ncnn"
    unchecked = "" if check else "-unchecked"
    param = folder / f"{model.variant}-x{model.scale}-{precision}-{key}{unchecked}.param"
    if not (param.is_file() and param.with_suffix(".bin").is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        export_ncnn(model, param, precision=precision, overwrite=True, check=check)
    return param
