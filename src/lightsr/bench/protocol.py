"""Measuring: the robust and ntire protocols, isolation per network. Each backend's timed
forward comes from its class (:meth:`lightsr.backends.Backend.bench_runner`)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightsr.archs.blocks import to_inference_layout
from lightsr.archs.registry import ArchSpec, arch_specs, build_model, get_arch
from lightsr.backends import backend_names, get_backend
from lightsr.bench.complexity import count_arbitrary_complexity, count_complexity
from lightsr.bench.memory import MemoryProbe
from lightsr.bench.settings import BenchRow, BenchSettings
from lightsr.deploy import deploy_module, has_deploy_form
from lightsr.errors import LightSRError, UsageError
from lightsr.models import SRModel
from lightsr.options import MAX_SCALE, MIN_SCALE, check_scale, resolve_precision

# Side of the priming input of the robust protocol: large enough for every network's
# minimum size and for ONNX exports (32), small enough to cost nothing.
PRIME_SIDE = 32
WORKER_MODULE = "lightsr.bench.worker"
# Worker argument: only make the backend's files (see prepare_network).
PREPARE_FLAG = "--prepare"


# ---------------------------------------------------------------------------- runners


@dataclass
class Runner:
    """One backend's forward pass and its inputs.

    ``make_input(height, width)`` returns an input the forward accepts, already on the
    device; ``forward`` runs the network on it and waits for the result. An
    arbitrary-scale network's forward also appends (encoder seconds, head seconds) to
    ``parts`` each time.
    """

    forward: Callable[[Any], Any]
    make_input: Callable[[int, int], Any]
    parts: list[tuple[float, float]] | None = None


def deploy_form(module: nn.Module) -> tuple[nn.Module, str]:
    """``module`` in inference form and the form's name (``"deploy"`` or ``"single"``)."""
    form = "deploy" if has_deploy_form(module) else "single"
    return deploy_module(module), form


def _padded_side(side: int, spec: ArchSpec) -> int:
    """``side`` rounded up to the network's test-time padding multiple."""
    return -(-side // spec.pad_multiple) * spec.pad_multiple


def output_size(settings: BenchSettings) -> tuple[int, int]:
    """Output (height, width) at the benchmark's input size and scale (rounded, as
    arbitrary-scale networks and ``lightsr upscale`` size a non-integer scale)."""
    height, width = settings.size
    return round(height * settings.scale), round(width * settings.scale)


def _arbitrary_runner(module: nn.Module, spec: ArchSpec, settings: BenchSettings) -> Runner:
    """Eager PyTorch for an arbitrary-scale network (:class:`lightsr.archs.lte.LTE`): the
    whole image encoded, then rendered to ``scale`` × its size in one piece; the encoder
    (with the head's ``coef``/``freq`` convs) and the head (queries) are timed apart."""
    device = torch.device(settings.device)
    dtype = resolve_precision(settings.precision)
    module = to_inference_layout(module.to(device=device, dtype=dtype).eval())
    scale = (float(settings.scale), float(settings.scale))
    parts: list[tuple[float, float]] = []

    def make_input(height: int, width: int) -> torch.Tensor:
        return torch.rand(1, 3, height, width).to(device=device, dtype=dtype)

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def forward(x: torch.Tensor) -> None:
        height, width = x.shape[-2:]
        size = (round(height * scale[0]), round(width * scale[1]))
        start = time.perf_counter()
        features = module.encode(x)
        synchronize()
        encoded = time.perf_counter()
        module.render(features, size, (0, size[0]), (0, size[1]), scale)
        synchronize()
        parts.append((encoded - start, time.perf_counter() - encoded))

    return Runner(forward=forward, make_input=make_input, parts=parts)


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
    module, form = _bench_module(spec, settings)
    if spec.arbitrary_scale:
        runner = _arbitrary_runner(module, spec, settings)
    else:
        model = SRModel(module=module, spec=spec, scale=settings.scale)
        runner = Runner(*get_backend(settings.backend).bench_runner(model, settings))
    probe = MemoryProbe(torch.device(settings.device))
    with torch.inference_mode():
        compile_s = _compile(runner, settings) if settings.compile else None
        times = run_protocol(runner, spec, settings, probe, primed=settings.compile)
    peak = probe.peak_mib()
    # Counted last: a forward before timing would warm up the ntire protocol's cold start.
    height, width = (_padded_side(side, spec) for side in settings.size)
    arbitrary: dict[str, Any] = {}
    if spec.arbitrary_scale:
        split = count_arbitrary_complexity(module, (1, 3, height, width), output_size(settings))
        complexity = split.total
        arbitrary = _arbitrary_fields(split, runner.parts[-len(times) :], settings)
    else:
        complexity = count_complexity(module, (1, 3, height, width))
    return _row(
        spec.family,
        spec.name,
        form,
        settings,
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
        **arbitrary,
    )


def prepare_network(variant: str, settings: BenchSettings) -> None:
    """Make the files the backend of ``settings`` loads for ``variant`` (its export into
    the cache), so that :func:`measure_network` in another process only loads them.

    Exporting traces the network and checks the export, which leaves the process's heap
    warm and its thread pools started: measured in the same process, the peak memory of
    the first measurement read near zero and its latency up to 2× high.

    Raises:
        UsageError: as :func:`measure_network`.
        ExportError: the network does not export to the backend's format.
    """
    settings.validate()
    spec = _checked_spec(variant, settings)
    if spec.arbitrary_scale:
        return
    module, _ = _bench_module(spec, settings)
    model = SRModel(module=module, spec=spec, scale=settings.scale)
    get_backend(settings.backend).prepare_bench(model, settings)


def _bench_module(spec: ArchSpec, settings: BenchSettings) -> tuple[nn.Module, str]:
    """The network the bench measures: fresh weights (seed 0) in its deploy form."""
    torch.manual_seed(0)
    # An arbitrary-scale network is built at its nominal scale; the runner renders any.
    build_scale = max(spec.scales) if spec.arbitrary_scale else settings.scale
    return deploy_form(build_model(spec.name, build_scale).eval())


def _arbitrary_fields(
    split: Any, parts: list[tuple[float, float]], settings: BenchSettings
) -> dict[str, Any]:
    """The encoder/head fields of an arbitrary-scale network's row (see BenchRow)."""
    out_h, out_w = output_size(settings)
    megapixels = out_h * out_w / 1e6
    head_s = statistics.median(head for _, head in parts)
    return {
        "output": f"{out_h}x{out_w}",
        "encoder_macs": split.encoder.macs,
        "head_macs_per_mpx": split.head_macs_per_mpx,
        "encoder_latency_s": statistics.median(encoder for encoder, _ in parts),
        "head_latency_s": head_s,
        "head_s_per_mpx": head_s / megapixels,
    }


def check_arbitrary_settings(spec: ArchSpec, settings: BenchSettings) -> None:
    """Raise :class:`UsageError` for settings an arbitrary-scale network cannot run with."""
    if not get_backend(settings.backend).arbitrary_scale_networks:
        raise UsageError(
            f"{spec.name}: export of arbitrary-scale models is not supported yet "
            f"(no {settings.backend} backend)"
        )
    if settings.compile:
        raise UsageError(f"{spec.name}: --compile does not apply to arbitrary-scale networks")


def _check_bench_scale(spec: ArchSpec, scale: float) -> None:
    if spec.arbitrary_scale:
        if not MIN_SCALE <= scale <= MAX_SCALE:
            raise UsageError(
                f"{spec.name} upscales by {MIN_SCALE:g} to {MAX_SCALE:g}, not x{scale:g}"
            )
    else:
        check_scale(spec.name, spec.scales, scale)


def _checked_spec(variant: str, settings: BenchSettings) -> ArchSpec:
    spec = get_arch(variant)
    _check_bench_scale(spec, settings.scale)
    if spec.arbitrary_scale:
        check_arbitrary_settings(spec, settings)
    if min(settings.size) < spec.min_size:
        raise UsageError(f"{spec.name} needs inputs of at least {spec.min_size} px per side")
    return spec


def _compile(runner: Runner, settings: BenchSettings) -> float:
    """Seconds of the first forward of a compiled network at the benchmark size,
    which is when it compiles (the input size is fixed, so it compiles once)."""
    return _timed(runner.forward, runner.make_input(*settings.size))


def run_protocol(
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


def select_models(names: str, scale: float, settings: BenchSettings | None = None) -> list[str]:
    """Registry names for ``--models``: ``"all"`` or a comma-separated list.

    ``"all"`` means every fixed-scale variant defined at ``scale``; arbitrary-scale ones
    (whose head costs about 0.8 T MACs per output megapixel: minutes per network at the
    default sizes on a CPU) are measured when named, or by ``"all"`` at a non-integer
    ``scale``, where they are the only ones, and never where ``settings`` asks for what
    they do not support (onnxruntime, compile). Explicit names are checked.

    Raises:
        UsageError: an unknown name, or a named variant that does not support ``scale`` or
            ``settings``.
    """
    settings = settings or BenchSettings()
    if names.strip().lower() == "all":
        if scale == int(scale):
            return [s.name for s in arch_specs() if not s.arbitrary_scale and scale in s.scales]
        arbitrary = [spec for spec in arch_specs() if spec.arbitrary_scale]
        for spec in arbitrary:
            _check_bench_scale(spec, scale)
            check_arbitrary_settings(spec, settings)
        return [spec.name for spec in arbitrary]
    selected = []
    for name in filter(None, (part.strip() for part in names.split(","))):
        spec = get_arch(name)
        _check_bench_scale(spec, scale)
        if spec.arbitrary_scale:
            check_arbitrary_settings(spec, settings)
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
        isolate: run each network in a fresh ``python -m lightsr.bench.worker`` process.
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
        env = _worker_env(settings.threads)
        prepare = get_backend(settings.backend).prepares_bench_files()
        for step in ([[*command, PREPARE_FLAG]] if prepare else []) + [command]:
            proc = subprocess.run(step, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                break
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
    return _row(model, name, "", settings, runs=0, error=message)


def _row(model: str, variant: str, form: str, settings: BenchSettings, **fields: Any) -> BenchRow:
    """A row naming the network and the settings it was measured with, plus ``fields``."""
    return BenchRow(
        model=model,
        variant=variant,
        form=form,
        scale=settings.scale,
        input=settings.input_label,
        backend=settings.backend,
        device=settings.device,
        precision=settings.precision,
        protocol=settings.protocol,
        threads=settings.threads,
        **fields,
    )


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
    for name in backend_names():
        info.update(get_backend(name).versions())
    return info


def _cpu_name() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return match.group(1).strip() if match else platform.machine()
