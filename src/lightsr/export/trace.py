"""Tracing for ONNX export: :func:`torch.export.export` with dynamic sizes, checked.

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
import io
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from lightsr.deploy import deploy_module
from lightsr.errors import ExportError, UsageError
from lightsr.models import SRModel

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


def deployable_copy(model: SRModel, half: bool = False) -> SRModel:
    """A CPU copy of ``model`` in deploy form and eval mode, in fp16 when ``half``."""
    module = copy.deepcopy(model.module).float().cpu()
    module = deploy_module(module)
    module = module.to(torch.float16 if half else torch.float32)
    return model.with_module(module)


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
                    f"({first_line(exc)}); a shape-dependent Python branch was frozen"
                ) from exc
            raise ExportError(f"{spec.name}: torch.export failed: {first_line(exc)}") from exc
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
    with torch.no_grad(), quiet_exporter():
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


def first_line(exc: BaseException) -> str:
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


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
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
