"""Benchmark engine: size, compute, latency and memory of the registered networks.

Every number describes the network as it is deployed: a network with a separate training
form (FMEN) is re-parameterised first, and weights are freshly initialised (seed 0), which
changes neither the counts nor the speed.

Complexity, per forward pass on one ``1×3×H×W`` input:

* ``params``: trainable parameters (fixed masks and BN statistics excluded).
* ``macs``: multiply-accumulates of convolutions and matrix products, attention included,
  as the papers count them; ``flops`` = 2 × ``macs``. Both come from
  :class:`torch.utils.flop_counter.FlopCounterMode`, taught the CPU kernel of
  ``scaled_dot_product_attention`` that it does not know. Where lightsr replaces a
  fixed-kernel convolution of the official code by copies (EMT's one-hot shifts), the module
  says so with a ``reference_macs(input)`` method and those multiply-adds are added, so
  ``macs`` matches the published figures; ``macs_executed`` leaves them out.
* ``activations``: elements output by all ``nn.Conv2d`` calls; ``convs``: ``nn.Conv2d``
  layers. These follow the NTIRE efficient-SR challenge definitions.

Speed and memory, by protocol:

* ``robust`` (default): each network runs in a fresh subprocess with pinned torch threads,
  under :func:`torch.inference_mode`. It is primed on a small input, warmed up, then timed
  ``runs`` times on one input; the median and the min–max range are reported.
* ``ntire``: the NTIRE efficient-SR challenge procedure, for comparison with its tables:
  fp32, no warm-up, one timed forward per image over ``runs`` different images, averaged.

The torch backend runs each network's fast inference path (gradients off, in its
:func:`~lightsr.archs.blocks.to_inference_layout` layout). With ``compile``, the network goes
through ``torch.compile`` (default mode) first; its first forward at the benchmark size,
which compiles it, is reported as ``compile_s`` and replaces the small priming forward.
That full-size forward runs before the memory probe starts, so the allocator may already
hold some of the memory the timed forwards need: peak memory under ``compile`` can read low.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA (weights and input included, as
the papers report it). On the CPU it is the rise of the process's resident memory (peak RSS)
during the warm-up and timed forwards over the resident memory after the model and inputs
were built, so it measures what the forward itself needs (meaningful in a fresh process).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import psutil
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightsr.archs.blocks import faithful_path, to_inference_layout
from lightsr.archs.registry import ArchSpec, arch_specs, build_model, get_arch
from lightsr.deploy import deploy_module, has_deploy_form
from lightsr.errors import LightSRError, UsageError

PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
# Precisions only ONNX Runtime runs (its statically quantised export, lightsr.quantize).
ORT_ONLY_PRECISIONS = ("int8",)
BACKENDS = ("torch", "onnxruntime")
PROTOCOLS = ("robust", "ntire")
DEVICES = ("cpu", "cuda")
MIB = 2**20
# Side of the priming input of the robust protocol: large enough for every network's
# minimum size and for ONNX exports (32), small enough to cost nothing.
PRIME_SIDE = 32
WORKER_MODULE = "lightsr._bench_worker"


@dataclass(frozen=True)
class BenchSettings:
    """How to benchmark (one setting for all networks of a run).

    Attributes:
        scale: upscale factor.
        size: LR input (height, width).
        device: ``"cpu"`` or ``"cuda"``.
        backend: ``"torch"`` (eager) or ``"onnxruntime"`` (the network's ONNX export).
        precision: ``"fp32"``, ``"fp16"``, ``"bf16"`` (torch) or ``"int8"`` (onnxruntime).
        protocol: ``"robust"`` or ``"ntire"`` (see the module docstring).
        runs: timed forwards (robust) or images (ntire).
        warmup: untimed forwards before timing (robust only).
        threads: torch / ONNX Runtime intra-op threads.
        compile: run the torch backend through ``torch.compile`` (see the module docstring).
    """

    scale: int = 4
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
        _check_choice("device", self.device, DEVICES)
        _check_choice("backend", self.backend, BACKENDS)
        _check_choice("precision", self.precision, (*PRECISIONS, *ORT_ONLY_PRECISIONS))
        if self.precision in ORT_ONLY_PRECISIONS and self.backend != "onnxruntime":
            raise UsageError(f"{self.precision} runs on the onnxruntime backend only")
        _check_choice("protocol", self.protocol, PROTOCOLS)
        for name in ("scale", "runs", "threads"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise UsageError(f"warmup must be 0 or more, got {self.warmup}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise UsageError(f"input size must be two positive sides, got {self.size}")
        if self.protocol == "ntire" and self.precision != "fp32":
            raise UsageError("--protocol ntire measures in fp32 (the challenge procedure)")
        if self.compile and self.backend != "torch":
            raise UsageError("--compile applies to the torch backend only")
        if self.backend == "onnxruntime":
            _check_onnx_backend()
            from lightsr.ort import check_ort_options

            check_ort_options(self.device, self.precision)
        if self.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda requested but CUDA is not available")

    @property
    def input_label(self) -> str:
        """``"256x256"``."""
        return f"{self.size[0]}x{self.size[1]}"


def _check_onnx_backend() -> None:
    """Raise :class:`UsageError` unless the exporter and ONNX Runtime can be imported."""
    missing = [
        name
        for name in ("lightsr.export", "onnx", "onnxruntime")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise UsageError(
            f"the onnxruntime backend is not available here (missing: {', '.join(missing)})"
        )


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UsageError(f"{name} must be one of {', '.join(choices)}, got {value!r}")


@dataclass(frozen=True)
class Complexity:
    """Size and compute of one forward pass (see the module docstring)."""

    params: int
    macs: int
    activations: int
    convs: int
    macs_executed: int

    @property
    def flops(self) -> int:
        """2 × MACs: one multiply and one add per multiply-accumulate."""
        return 2 * self.macs


@dataclass
class BenchRow:
    """One network's results; :meth:`to_dict` is the ``--json`` record.

    ``model`` is the network family and ``variant`` the registry name, as in
    :class:`lightsr.models.SRModel`. ``form`` is ``"deploy"`` when the network was
    re-parameterised before measuring. Latencies are in seconds; a failed network has
    ``error`` set and ``None`` for what could not be measured.
    """

    model: str
    variant: str
    form: str
    scale: int
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


# --------------------------------------------------------------------------- complexity


def _sdpa_flops(
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of Q·Kᵀ and attn·V for (batch, heads, tokens, dim) inputs (heads may be grouped)."""
    batch, heads, queries, qk_dim = query_shape
    keys, value_dim = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * queries * keys * (qk_dim + value_dim)


# FlopCounterMode knows the CUDA fused attention kernels only. On the CPU,
# scaled_dot_product_attention dispatches to this kernel, which it would count as 0; the CPU
# math fallback decomposes into bmm and is counted already.
_CPU_ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def flop_counter() -> FlopCounterMode:
    """A silent :class:`FlopCounterMode` that also counts CPU fused attention."""
    return FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION_FLOPS)


def count_params(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_complexity(module: nn.Module, input_shape: Sequence[int]) -> Complexity:
    """Params, MACs, conv activations and conv layers of ``module`` on one input shape.

    The forward runs on the meta device (shapes only, no arithmetic), so counting a
    256×256 input is instant. A network whose forward reads tensor values cannot run there;
    it is counted on the CPU with a random input instead. ``module`` itself is not changed.
    """
    params = count_params(module)
    try:
        meta_input = torch.empty(input_shape, device="meta")
        counts = _count_forward(_frozen_copy(module, "meta"), meta_input)
    except (NotImplementedError, RuntimeError):
        counts = _count_forward(_frozen_copy(module, "cpu"), torch.rand(input_shape))
    return replace(counts, params=params)


def _frozen_copy(module: nn.Module, device: str) -> nn.Module:
    # FlopCounterMode's module tracker hooks autograd on forward arguments that require
    # grad, which fails under inference_mode when a parameter is passed as an argument
    # (ESC shares one between blocks); a copy without grad avoids that.
    frozen = copy.deepcopy(module).to(device=device, dtype=torch.float32)
    return frozen.requires_grad_(False)


def _count_forward(module: nn.Module, x: torch.Tensor) -> Complexity:
    """Complexity of one forward of ``module`` on ``x``, with ``params`` left at 0."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    emulated = [m for m in module.modules() if callable(getattr(m, "reference_macs", None))]
    activations = 0
    reference_macs = 0

    def add_activations(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal activations
        activations += output.numel()

    def add_reference_macs(emulating: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        nonlocal reference_macs
        reference_macs += emulating.reference_macs(inputs[0])

    handles = [conv.register_forward_hook(add_activations) for conv in convs]
    handles += [m.register_forward_pre_hook(add_reference_macs) for m in emulated]
    try:
        # The faithful path: counts describe the network, not this package's fast path
        # (which, e.g., recomputes FMEN's long skip and runs EMT's shifts as convs).
        with torch.inference_mode(), faithful_path(), flop_counter() as counter:
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    executed = counter.get_total_flops() // 2
    return Complexity(
        params=0,
        macs=executed + reference_macs,
        activations=activations,
        convs=len(convs),
        macs_executed=executed,
    )


# ------------------------------------------------------------------------------ memory


class MemoryProbe:
    """Peak memory of the code run between :meth:`start` and :meth:`peak_mib`.

    CUDA: ``max_memory_allocated`` (absolute). CPU: peak RSS minus the RSS at
    :meth:`start`. The kernel's high-water mark is reset at :meth:`start` through
    ``/proc/self/clear_refs``; where that is impossible the lifetime ``ru_maxrss`` is used,
    which over-reports if the process was ever larger before :meth:`start`.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.baseline = 0

    @property
    def metric(self) -> str:
        """What :meth:`peak_mib` reports, for the ``memory_metric`` field."""
        if self.device.type == "cuda":
            return "cuda_max_memory_allocated"
        return "cpu_peak_rss_increase"

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _reset_peak_rss()
        self.baseline = psutil.Process().memory_info().rss

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / MIB
        return max(0, _peak_rss_bytes() - self.baseline) / MIB


def _reset_peak_rss() -> None:
    # Writing 5 resets VmHWM (Linux ≥ 4.0); elsewhere the lifetime peak has to do.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_bytes() -> int:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    if match:
        return int(match.group(1)) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


# ---------------------------------------------------------------------------- runners


@dataclass
class Runner:
    """One backend's forward pass and its inputs.

    ``make_input(height, width)`` returns an input the forward accepts, already on the
    device; ``forward`` runs the network on it and waits for the result.
    """

    forward: Callable[[Any], Any]
    make_input: Callable[[int, int], Any]


def deploy_form(module: nn.Module) -> tuple[nn.Module, str]:
    """``module`` in inference form and the form's name (``"deploy"`` or ``"standard"``)."""
    form = "deploy" if has_deploy_form(module) else "standard"
    return deploy_module(module), form


def _padded_side(side: int, spec: ArchSpec) -> int:
    """``side`` rounded up to the network's test-time padding multiple."""
    return -(-side // spec.pad_multiple) * spec.pad_multiple


def _torch_runner(module: nn.Module, spec: ArchSpec, settings: BenchSettings) -> Runner:
    """Eager PyTorch: the bare network on an input in its own value range.

    The input is padded beforehand to the test-time multiple (ESC), as the official test
    pipeline does, so only the network is timed.
    """
    device = torch.device(settings.device)
    dtype = PRECISIONS[settings.precision]
    module = to_inference_layout(module.to(device=device, dtype=dtype).eval())
    if settings.compile:
        module = torch.compile(module)

    def make_input(height: int, width: int) -> torch.Tensor:
        x = torch.rand(1, 3, height, width) * spec.input_range
        pad_h = _padded_side(height, spec) - height
        pad_w = _padded_side(width, spec) - width
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        return x.to(device=device, dtype=dtype)

    def forward(x: torch.Tensor) -> None:
        module(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return Runner(forward=forward, make_input=make_input)


def _onnx_runner(module: nn.Module, spec: ArchSpec, settings: BenchSettings) -> Runner:
    """ONNX Runtime on the CPU: the cached ONNX export of ``module`` ([0, 1] in and out).

    The exported graph contains the value-range conversion and any test-time padding.
    """
    from lightsr.export import cached_export
    from lightsr.models import SRModel
    from lightsr.ort import INPUT_NAME, OUTPUT_NAME, create_session

    model = SRModel(module=module, spec=spec, scale=settings.scale)
    if settings.precision == "int8":
        from lightsr.quantize import cached_int8_export

        path = cached_int8_export(model)
    else:
        path = cached_export(model, half=settings.precision == "fp16")
    session = create_session(path, threads=settings.threads)

    def make_input(height: int, width: int) -> Any:
        return torch.rand(1, 3, height, width).numpy()

    def forward(array: Any) -> None:
        session.run([OUTPUT_NAME], {INPUT_NAME: array})

    return Runner(forward=forward, make_input=make_input)


# ---------------------------------------------------------------------------- measuring


def pin_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads and one inter-op thread in this process."""
    torch.set_num_threads(threads)
    # Only settable before the first parallel op; later calls keep what is there.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def measure_network(variant: str, settings: BenchSettings) -> BenchRow:
    """Benchmark one network in this process (see :func:`run_bench` for isolation).

    Raises:
        UsageError: unknown variant, unsupported scale, input too small, or bad settings.
    """
    settings.validate()
    spec = _checked_spec(variant, settings)
    pin_threads(settings.threads)
    torch.manual_seed(0)
    built = build_model(spec.name, settings.scale).eval()
    module, form = deploy_form(built)
    make_runner = _onnx_runner if settings.backend == "onnxruntime" else _torch_runner
    # The ONNX exporter re-parameterises on its own copy.
    runner = make_runner(built if settings.backend == "onnxruntime" else module, spec, settings)
    probe = MemoryProbe(torch.device(settings.device))
    with torch.inference_mode():
        compile_s = _compile(runner, settings) if settings.compile else None
        times = _run_protocol(runner, spec, settings, probe, primed=settings.compile)
    peak = probe.peak_mib()
    # Counted last: a forward before timing would warm up the ntire protocol's cold start.
    height, width = (_padded_side(side, spec) for side in settings.size)
    complexity = count_complexity(module, (1, 3, height, width))
    return BenchRow(
        model=spec.family,
        variant=spec.name,
        form=form,
        scale=settings.scale,
        input=settings.input_label,
        backend=settings.backend,
        device=settings.device,
        precision=settings.precision,
        protocol=settings.protocol,
        threads=settings.threads,
        runs=len(times),
        params=complexity.params,
        macs=complexity.macs,
        macs_executed=complexity.macs_executed,
        flops=complexity.flops,
        activations=complexity.activations,
        convs=complexity.convs,
        latency_median_s=statistics.median(times),
        latency_mean_s=statistics.fmean(times),
        latency_min_s=min(times),
        latency_max_s=max(times),
        peak_memory_mib=peak,
        memory_metric=probe.metric,
        compiled=settings.compile,
        compile_s=compile_s,
    )


def _checked_spec(variant: str, settings: BenchSettings) -> ArchSpec:
    spec = get_arch(variant)
    if settings.scale not in spec.scales:
        allowed = ", ".join(f"x{s}" for s in spec.scales)
        raise UsageError(f"{spec.name} does not support x{settings.scale}; it supports {allowed}")
    if min(settings.size) < spec.min_size:
        raise UsageError(f"{spec.name} needs inputs of at least {spec.min_size} px per side")
    return spec


def _compile(runner: Runner, settings: BenchSettings) -> float:
    """Seconds of the first forward of a compiled network at the benchmark size,
    which is when it compiles (the input size is fixed, so it compiles once)."""
    return _timed(runner.forward, runner.make_input(*settings.size))


def _run_protocol(
    runner: Runner,
    spec: ArchSpec,
    settings: BenchSettings,
    probe: MemoryProbe,
    primed: bool = False,
) -> list[float]:
    """Run the protocol's forwards; return the timed ones' durations in seconds.

    The memory probe starts after the inputs exist (and, robust, after priming), so it
    sees the forwards only. ``primed``: the network already ran (compiled) at full size,
    so the robust protocol skips its small priming forward.
    """
    height, width = settings.size
    if settings.protocol == "ntire":
        images = [runner.make_input(height, width) for _ in range(settings.runs)]
        probe.start()
        return [_timed(runner.forward, image) for image in images]
    # Priming loads kernels and starts thread pools: one-time costs that are not the
    # network's memory or speed. An input no larger than the priming one is not primed:
    # the allocator would keep that forward's memory and hide it from the probe.
    prime_side = max(PRIME_SIDE, spec.min_size)
    if not primed and (height > prime_side or width > prime_side):
        runner.forward(runner.make_input(min(height, prime_side), min(width, prime_side)))
    x = runner.make_input(height, width)
    probe.start()
    for _ in range(settings.warmup):
        runner.forward(x)
    return [_timed(runner.forward, x) for _ in range(settings.runs)]


def _timed(forward: Callable[[Any], Any], x: Any) -> float:
    start = time.perf_counter()
    forward(x)
    return time.perf_counter() - start


# ------------------------------------------------------------------------- orchestration


def select_models(names: str, scale: int) -> list[str]:
    """Registry names for ``--models``: ``"all"`` or a comma-separated list.

    ``"all"`` means every variant defined at ``scale``. Explicit names are checked.

    Raises:
        UsageError: an unknown name, or a named variant that does not support ``scale``.
    """
    if names.strip().lower() == "all":
        return [spec.name for spec in arch_specs() if scale in spec.scales]
    selected = []
    for name in filter(None, (part.strip() for part in names.split(","))):
        spec = get_arch(name)
        if scale not in spec.scales:
            allowed = ", ".join(f"x{s}" for s in spec.scales)
            raise UsageError(f"{spec.name} does not support x{scale}; it supports {allowed}")
        if spec.name not in selected:
            selected.append(spec.name)
    if not selected:
        raise UsageError("no model selected; pass --models all or a comma-separated list")
    return selected


def run_bench(
    variants: Sequence[str],
    settings: BenchSettings,
    *,
    isolate: bool = True,
    on_row: Callable[[BenchRow], None] | None = None,
) -> list[BenchRow]:
    """Benchmark ``variants`` one after another.

    Args:
        variants: registry names (see :func:`select_models`).
        settings: how to measure.
        isolate: run each network in a fresh ``python -m lightsr._bench_worker`` process.
            Needed for meaningful CPU memory numbers and for thread pinning. A network
            that fails there gives a row with ``error`` set; without isolation the error
            is raised.
        on_row: called with each row as soon as it is measured (progress display).
    """
    settings.validate()
    rows = []
    for variant in variants:
        measure = _measure_isolated if isolate else measure_network
        row = measure(variant, settings)
        if on_row is not None:
            on_row(row)
        rows.append(row)
    return rows


def _measure_isolated(variant: str, settings: BenchSettings) -> BenchRow:
    with tempfile.TemporaryDirectory(prefix="lightsr-bench-") as tmp:
        result = Path(tmp) / "row.json"
        command = [
            sys.executable,
            "-m",
            WORKER_MODULE,
            variant,
            json.dumps(asdict(settings)),
            str(result),
        ]
        proc = subprocess.run(
            command, env=_worker_env(settings.threads), capture_output=True, text=True
        )
        if proc.returncode == 0 and result.is_file():
            return BenchRow.from_dict(json.loads(result.read_text()))
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    message = lines[-1] if lines else f"worker exited with status {proc.returncode}"
    return failed_row(variant, settings, message)


def _worker_env(threads: int) -> dict[str, str]:
    """The worker's environment: this lightsr first on the path, thread counts pinned."""
    import lightsr

    env = dict(os.environ)
    package_root = str(Path(lightsr.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    # OpenMP/MKL read these when torch loads, before torch.set_num_threads can act.
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def failed_row(variant: str, settings: BenchSettings, message: str) -> BenchRow:
    """The row of a network that could not be measured."""
    try:
        spec = get_arch(variant)
        model, name = spec.family, spec.name
    except LightSRError:
        model = name = variant
    return BenchRow(
        model=model,
        variant=name,
        form="",
        scale=settings.scale,
        input=settings.input_label,
        backend=settings.backend,
        device=settings.device,
        precision=settings.precision,
        protocol=settings.protocol,
        threads=settings.threads,
        runs=0,
        error=message,
    )


def settings_from_json(text: str) -> BenchSettings:
    """Inverse of ``json.dumps(asdict(settings))`` (the worker's argument)."""
    data = json.loads(text)
    data["size"] = tuple(data["size"])
    return replace(BenchSettings(), **data)


def machine_info(device: str = "cpu") -> dict[str, str]:
    """Hardware and software the numbers were measured with."""
    info = {
        "cpu": _cpu_name(),
        "cpu_cores": str(os.cpu_count()),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = str(torch.version.cuda)
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def _cpu_name() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return match.group(1).strip() if match else platform.machine()
