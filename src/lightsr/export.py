"""ONNX export of lightsr networks: dynamic sizes, one self-contained file, verified.

Every exported graph has one input ``input`` (N, 3, H, W) float32 RGB in [0, 1] and one
output ``output`` (N, 3, sH, sW) float32 in [0, 1] (unclamped), whatever the network's own
convention: the value-range conversion, mean shifts and test-time padding of
:meth:`lightsr.models.SRModel.forward` are traced into the graph. ``half=True`` stores fp16
weights and computes in fp16 but keeps fp32 input and output (casts inside the graph), so one
client serves every export.

Networks with a deploy form (FMEN) are re-parameterised first. Batch, height and width stay
symbolic unless a static size is asked for.

Pre-flight (:func:`trace`): the wrapper is traced by :func:`torch.export.export` with
dynamic ``Dim`` s for batch, height and width, on an example whose sides are multiples of no
window, and every assumption the tracer makes about the input size is kept as a deferred
runtime assertion instead of a guard. Then:

* a size the tracer specialised to a constant, or a range it narrowed (``if batch > 2``),
  refuses the export, except a raised minimum side (a grid of one window is special) up to
  :data:`MAX_MIN_SIDE`, which is stored in the metadata and enforced by the runtime;
* every assumption about one size is evaluated at every side up to :data:`PROBE_DENSE_UPTO`
  and at large sides up to :data:`MAX_SIDE` (any batch assumption that fails refuses the
  export). Most failing ones are the tracer's fast paths (a pad of zero, one window row)
  that change no value in the ONNX graph, so the export is run at one failing size per
  assumption (a *witness*) and compared with eager PyTorch; a frozen Python branch shows
  up there as a wrong output and the export is refused;
* assumptions relating several sizes are the stride bookkeeping of views and change no
  value; the verification sizes (window multiples and not) exercise them.

Refusals are one-line :class:`~lightsr.errors.ExportError` s. ``torch.export`` assumes that
dynamic sizes are not 1 without recording it, so a branch on ``size == 1`` goes unnoticed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightsr import __version__
from lightsr.deploy import deploy_module, has_deploy_form
from lightsr.errors import ExportError, UsageError
from lightsr.models import SRModel
from lightsr.paths import replaced_atomically

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 18
MIN_OPSET = 18
# Symbolic ranges declared to torch.export; the ONNX graph itself has no upper bound.
MAX_SIDE = 4096
MAX_BATCH = 64
# Sides at which the traced assumptions are checked: every side up to this one, then a
# few large ones (window grids repeat with their period, at most 48 pixels here).
PROBE_DENSE_UPTO = 160
PROBE_LARGE_SIDES = (255, 256, 257, 511, 512, 513, 1000, 1023, 1024, 1025, 2047, 2049, 4095, 4096)
PROBE_BATCHES = (1, 2, 3, MAX_BATCH)
# The tracer may raise the smallest side (a grid of one window is special) up to this.
MAX_MIN_SIDE = 64
# Example input of the trace: batch 2 and sides that are multiples of no window (a batch
# of 1 or a multiple of 8 or 32 would let the tracer specialise on them).
EXAMPLE_SHAPE = (2, 3, 75, 83)
# ``--verify`` sizes: different from the example and multiples of no window.
VERIFY_SIZES = ((37, 53), (64, 64), (97, 131))
TOLERANCE = {False: 1e-3, True: 2e-2}
# Part of cached export names: bump when the exported graph of the same weights changes
# (g2: attention in window groups, see lightsr.archs.blocks.grouped_attention).
GRAPH_REVISION = "g2"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ``.onnx`` file.
        metadata: the ``metadata_props`` written into it.
        min_side: smallest input side the graph is valid for.
    """

    path: Path
    metadata: dict[str, str]
    min_side: int


class UnitRangeNetwork(nn.Module):
    """``model`` as a module with float32 RGB [0, 1] input and output (see the module doc).

    Args:
        model: the network; its module must already be in the wanted dtype.
    """

    def __init__(self, model: SRModel) -> None:
        super().__init__()
        self.network = model.module  # registered so that export finds its parameters
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward(x.to(self.model.dtype)).float()


def parse_size(text: str) -> tuple[int, int]:
    """``"64x96"`` → (64, 96) (height, width).

    Raises:
        UsageError: not two positive integers joined by ``x``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match[1]), int(match[2])) < 1:
        raise UsageError(f"size must look like 64x64 (height x width), got {text!r}")
    return int(match[1]), int(match[2])


def deployable_copy(model: SRModel, half: bool = False) -> SRModel:
    """A CPU copy of ``model`` in deploy form and eval mode, in fp16 when ``half``."""
    module = copy.deepcopy(model.module).float().cpu()
    module = deploy_module(module)
    module = module.to(torch.float16 if half else torch.float32)
    return SRModel(module=module, spec=model.spec, scale=model.scale, source=model.source)


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of ``module``'s state dict."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------ tracing


@dataclass(frozen=True)
class Trace:
    """A traced network and what the pre-flight learnt about its input sizes.

    Attributes:
        program: the exported program (dynamic batch, height and width).
        min_side: smallest input side the graph is valid for.
        witnesses: (height, width) inputs at which an assumption the tracer made about the
            input size is false; the export must match eager PyTorch there too.
    """

    program: torch.export.ExportedProgram
    min_side: int
    witnesses: tuple[tuple[int, int], ...]


def trace(model: SRModel, static: tuple[int, int] | None = None) -> Trace:
    """Trace ``model`` (deploy form, wanted dtype) with dynamic sizes and check its guards.

    Raises:
        ExportError: the tracer specialised the batch or a side to a constant, an
            assumption fails for some batch size, or only large inputs can be exported.
    """
    spec = model.spec
    if static is not None and min(static) < spec.min_size:
        raise UsageError(f"{spec.name} needs inputs of at least {spec.min_size} px per side")
    min_side = max(spec.min_size, 2)
    while True:
        try:
            program = _export_program(model, min_side, static)
            break
        except Exception as exc:  # the tracer raises many types; all mean "cannot export"
            raised = _raised_min_side(str(exc))
            if static is None and raised is not None and min_side < raised <= MAX_MIN_SIDE:
                min_side = raised
                continue
            if "Constraints violated" in str(exc) or "specialized" in str(exc):
                raise ExportError(
                    f"{spec.name}: torch.export specialised the input size "
                    f"({_first_line(exc)}); a shape-dependent Python branch was frozen"
                ) from exc
            raise ExportError(f"{spec.name}: torch.export failed: {_first_line(exc)}") from exc
    if static is not None:
        _check_ranges(program, spec.name, None)
        return Trace(program, min(static), ())
    min_side = _check_ranges(program, spec.name, min_side)
    return Trace(program, min_side, _witnesses(program, spec.name, min_side))


def _export_program(
    model: SRModel, min_side: int, static: tuple[int, int] | None
) -> torch.export.ExportedProgram:
    from torch.export import Dim

    dims: dict[int, Dim] = {0: Dim("batch", min=1, max=MAX_BATCH)}
    if static is None:
        dims[2] = Dim("height", min=min_side, max=MAX_SIDE)
        dims[3] = Dim("width", min=min_side, max=MAX_SIDE)
        example = torch.rand(*EXAMPLE_SHAPE)
    else:
        example = torch.rand(EXAMPLE_SHAPE[0], 3, *static)
    with torch.no_grad(), _quiet_exporter():
        return torch.export.export(
            UnitRangeNetwork(model).eval(),
            (example,),
            dynamic_shapes={"x": dims},
            prefer_deferred_runtime_asserts_over_guards=True,
        )


def _raised_min_side(message: str) -> int | None:
    """The larger minimum side a constraint violation asks for (``N <= size()[2]``), if that
    is all it asks for."""
    guards = re.findall(r"generated guard (.*?)\.?$", message, flags=re.MULTILINE)
    bounds = [re.fullmatch(r"(\d+) <= L\['x'\]\.size\(\)\[[23]\].*", g) for g in guards]
    if not guards or not all(bounds):
        return None
    return max(int(b[1]) for b in bounds if b)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _input_symbols(program: torch.export.ExportedProgram) -> dict[str, int]:
    """Name of each symbolic input dimension → its axis (0 batch, 2 height, 3 width)."""
    placeholder = next(
        node
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs
    )
    return {
        str(size.node.expr): axis
        for axis, size in enumerate(placeholder.meta["val"].shape)
        if isinstance(size, torch.SymInt)
    }


def _check_ranges(
    program: torch.export.ExportedProgram, name: str, min_side: int | None
) -> int | None:
    """The smallest side after the tracer's range refinements; refuse any other narrowing.

    A branch on a bound (``if batch > 1``) does not become an assertion: the tracer narrows
    the symbol's range instead.
    """
    requested = {0: (1, MAX_BATCH), 2: (min_side, MAX_SIDE), 3: (min_side, MAX_SIDE)}
    ranges = {str(symbol): bounds for symbol, bounds in program.range_constraints.items()}
    for symbol, axis in _input_symbols(program).items():
        bounds = ranges.get(symbol)
        if bounds is None:
            continue
        low, high = int(bounds.lower), int(bounds.upper)
        wanted_low, wanted_high = requested[axis]
        raised_side = axis != 0 and low <= MAX_MIN_SIDE
        if high < wanted_high or (low > wanted_low and not raised_side):
            what = "batch" if axis == 0 else "side"
            raise ExportError(
                f"{name}: the traced graph only holds for {what} {low}..{high}; "
                "a shape-dependent Python branch was frozen"
            )
        if raised_side and min_side is not None:
            min_side = max(min_side, low)
    return min_side


def _assumptions(program: torch.export.ExportedProgram) -> list:
    """The sympy conditions behind the program's runtime assertions, deduplicated."""
    seen: dict[str, object] = {}
    for node in program.graph.nodes:
        if node.target is not torch.ops.aten._assert_scalar.default:
            continue
        value = node.args[0].meta.get("val") if hasattr(node.args[0], "meta") else None
        if isinstance(value, torch.SymBool):
            seen.setdefault(str(value.node.expr), value.node.expr)
    return list(seen.values())


def _probe_values(axis: int, min_side: int) -> list[int]:
    if axis == 0:
        return list(PROBE_BATCHES)
    dense = range(min_side, PROBE_DENSE_UPTO + 1)
    return [*dense, *(side for side in PROBE_LARGE_SIDES if side > PROBE_DENSE_UPTO)]


def _witnesses(
    program: torch.export.ExportedProgram, name: str, min_side: int
) -> tuple[tuple[int, int], ...]:
    """Inputs that break the tracer's assumptions about one size (see :class:`Trace`).

    Most such assumptions are the tracer's own fast paths (a pad of zero, a window grid of
    one row) that change no value in the ONNX graph; a frozen Python branch shows up as a
    wrong output at the witness. Assumptions relating several sizes are the stride
    bookkeeping of views; they change no value either, and the verification sizes (window
    multiples and not) exercise them.
    """
    from torch.utils._sympy.printers import PythonPrinter

    axes = _input_symbols(program)
    example = {2: EXAMPLE_SHAPE[2], 3: EXAMPLE_SHAPE[3]}
    found: set[tuple[int, int]] = set()
    for expr in _assumptions(program):
        symbols = [str(s) for s in expr.free_symbols]
        if len(symbols) != 1 or symbols[0] not in axes:
            continue
        symbol, axis = symbols[0], axes[symbols[0]]
        code = compile(PythonPrinter().doprint(expr), "<assumption>", "eval")
        for value in _probe_values(axis, min_side):
            if eval(code, {"__builtins__": {"min": min, "max": max}}, {symbol: value}):
                continue
            if axis == 0 or value > PROBE_DENSE_UPTO:
                what = "batch" if axis == 0 else "side"
                raise ExportError(
                    f"{name}: the traced graph assumes {expr} about the input size, which is "
                    f"false for {what} {value}; a shape-dependent Python branch was frozen"
                )
            found.add((value, example[3]) if axis == 2 else (example[2], value))
            break
    return tuple(sorted(found))


# ------------------------------------------------------------------------------- export


def export_onnx(
    model: SRModel,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    half: bool = False,
    static: tuple[int, int] | None = None,
) -> ExportResult:
    """Export ``model`` to one self-contained ONNX file (written atomically).

    Args:
        model: the network (any form, device and dtype; it is not changed).
        path: output file, must end in ``.onnx``.
        opset: ONNX opset (at least :data:`MIN_OPSET`).
        half: fp16 weights and compute, fp32 input and output.
        static: fixed (height, width) instead of dynamic ones; the batch stays dynamic.

    Raises:
        UsageError: bad path, opset or static size.
        ExportError: the network cannot be exported with dynamic sizes (see the module doc).
    """
    path = _checked_output(path)
    if opset < MIN_OPSET:
        raise UsageError(f"opset must be at least {MIN_OPSET}, got {opset}")
    deployed = deployable_copy(model, half)
    traced = trace(deployed, static)
    metadata = _metadata(deployed, half, opset, traced.min_side, static)
    try:
        with torch.no_grad(), _quiet_exporter():
            onnx_program = torch.onnx.export(
                traced.program,
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                external_data=False,
                optimize=False,  # the onnxscript optimiser takes minutes on ESC; ORT optimises
                verbose=False,
            )
    except Exception as exc:  # exporter errors come in many types
        raise ExportError(f"{model.variant}: ONNX conversion failed: {_first_line(exc)}") from exc
    proto = onnx_program.model_proto
    _name_dims(proto)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    _write_atomically(proto, path, lambda tmp: _check_witnesses(tmp, model, traced, half))
    return ExportResult(path=path, metadata=metadata, min_side=traced.min_side)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's progress lines and its warnings about optional packages."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _check_witnesses(path: Path, model: SRModel, traced: Trace, half: bool) -> None:
    """Refuse the export if it is wrong where the tracer's size assumptions are false.

    "Wrong" is measured against torch's own rounding noise (fp32 against fp64), because a
    network with fresh weights can amplify rounding by whole units (EMT), and a frozen
    branch changes the output by far more than rounding.
    """
    from lightsr.ort import create_session

    if not traced.witnesses:
        return
    precise = SRModel(deployable_copy(model).module.double(), model.spec, model.scale)
    for (height, width), x, expected, actual in _torch_and_ort(
        create_session(path), model, traced.witnesses, seed=1
    ):
        with torch.inference_mode():
            noise = (precise.forward(x.double()) - expected.double()).abs().max().item()
        error = (torch.from_numpy(actual).double() - expected.double()).abs().max().item()
        allowed = max(TOLERANCE[half], 10 * noise)
        if error > allowed:
            raise ExportError(
                f"{model.variant}: the export differs from torch by {error:.2e} at "
                f"{height}x{width} (allowed {allowed:.1e}); a shape-dependent branch was frozen"
            )


def _checked_output(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise UsageError(f"{path}: output must end in .onnx")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder")
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: no such folder")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"{path.parent}: folder is not writable")
    return path


def _metadata(
    model: SRModel, half: bool, opset: int, min_side: int, static: tuple[int, int] | None
) -> dict[str, str]:
    return {
        "network": model.name,
        "variant": model.variant,
        "scale": str(model.scale),
        "input_range": "[0, 1]",
        "layout": "NCHW, RGB, float32",
        "precision": "fp16" if half else "fp32",
        # ``model`` is the deployed copy: a network with a split is in its deploy form now.
        "form": "deploy" if has_deploy_form(model.module) else "standard",
        "min_side": str(min_side),
        "static_size": "" if static is None else f"{static[0]}x{static[1]}",
        "opset": str(opset),
        "weights_sha256": weights_digest(model.module),
        "source": Path(model.source).name if model.source else "",
        "lightsr_version": __version__,
    }


def _name_dims(proto) -> None:
    """Readable names for the symbolic input dimensions (``batch``, ``height``, ``width``)."""
    names = {0: "batch", 2: "height", 3: "width"}
    renamed: dict[str, str] = {}
    for axis, dim in enumerate(proto.graph.input[0].type.tensor_type.shape.dim):
        if dim.dim_param and axis in names:
            renamed[dim.dim_param] = names[axis]
            dim.dim_param = names[axis]
    output = proto.graph.output[0].type.tensor_type.shape.dim
    for dim in output:
        if dim.dim_param in renamed:
            dim.dim_param = renamed[dim.dim_param]


def _write_atomically(proto, path: Path, check: Callable[[Path], None]) -> None:
    """Save ``proto`` to a temporary file beside ``path``, ``check`` it, then rename it."""
    import onnx

    with replaced_atomically(path) as temporary:
        onnx.save_model(proto, temporary, format="protobuf", save_as_external_data=False)
        check(temporary)


# ------------------------------------------------------------------------------- verify


def verify_onnx(
    path: str | os.PathLike,
    model: SRModel,
    sizes: Iterable[tuple[int, int]] = VERIFY_SIZES,
    half: bool = False,
    threads: int | None = None,
) -> dict[str, float]:
    """Compare ONNX Runtime with torch (fp32, eager) on image-like inputs (:func:`sample_image`).

    Returns:
        ``"HxW"`` → max abs difference of the [0, 1] outputs.

    Raises:
        ExportError: a difference exceeds 1e-3 (fp32) or 2e-2 (fp16).
    """
    from lightsr.ort import create_session

    session = create_session(path, threads=threads)
    diffs = {
        f"{height}x{width}": float(np.abs(actual - expected.numpy()).max())
        for (height, width), _, expected, actual in _torch_and_ort(session, model, sizes, seed=0)
    }
    tolerance = TOLERANCE[half]
    worst = max(diffs, key=diffs.get, default=None)
    if worst is not None and diffs[worst] > tolerance:
        raise ExportError(
            f"ONNX Runtime differs from torch by {diffs[worst]:.2e} at {worst} "
            f"(tolerance {tolerance:g})"
        )
    return diffs


def _torch_and_ort(
    session, model: SRModel, sizes: Iterable[tuple[int, int]], seed: int
) -> Iterator[tuple[tuple[int, int], torch.Tensor, torch.Tensor, np.ndarray]]:
    """For each size: the size, an image-like input (:func:`sample_image`), the output of
    ``model`` (deploy form, fp32, eager) and the output of the ONNX Runtime ``session``."""
    reference = deployable_copy(model)
    generator = torch.Generator().manual_seed(seed)
    for height, width in sizes:
        x = sample_image(height, width, generator)
        with torch.inference_mode():
            expected = reference.forward(x)
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        yield (height, width), x, expected, actual


def sample_image(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A (1, 3, H, W) image-like input in [0, 1]: smooth random colours plus faint noise.

    Uniform noise is no test input for attention networks: trained EMT maps it to outputs
    that change by whole units between fp32 and fp64, so no two runtimes could agree.
    """
    coarse = torch.rand(1, 3, max(2, height // 8), max(2, width // 8), generator=generator)
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    noise = torch.rand(1, 3, height, width, generator=generator) - 0.5
    return (smooth + 0.04 * noise).clamp(0.0, 1.0)


# -------------------------------------------------------------------------------- cache


def cached_export(model: SRModel, half: bool = False, opset: int = DEFAULT_OPSET) -> Path:
    """The ONNX export of ``model`` in the cache folder, exported on first use.

    The file name is keyed by variant, scale, precision, opset and a hash of the deploy-form
    weights, so any change of weights gives a new export.
    """
    from lightsr.paths import cache_dir

    deployed = deployable_copy(model, half)
    precision = "fp16" if half else "fp32"
    key = weights_digest(deployed.module)[:16]
    folder = cache_dir() / "onnx"
    name = f"{model.variant}_x{model.scale}_{precision}_op{opset}_{GRAPH_REVISION}_{key}"
    path = folder / f"{name}.onnx"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        export_onnx(model, path, opset=opset, half=half)
    return path


def onnx_ops(path: str | os.PathLike) -> list[str]:
    """Sorted ONNX op types used by the graph in ``path`` (functions inlined)."""
    import onnx
    import onnx.inliner

    proto = onnx.inliner.inline_local_functions(onnx.load(str(path)))
    return sorted({node.op_type for node in _all_nodes(proto.graph.node)})


def _all_nodes(nodes: Sequence) -> Iterable:
    for node in nodes:
        yield node
        for attribute in node.attribute:
            if attribute.g.node:
                yield from _all_nodes(attribute.g.node)
