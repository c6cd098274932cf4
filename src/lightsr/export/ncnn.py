"""NCNN export (``lightsr export --format ncnn``): ``<name>-x<s>.param`` and ``.bin`` for the
apps that run NCNN models (Upscayl, realesrgan-ncnn-vulkan, chaiNNer).

The files follow those apps' conventions: input blob ``data`` and output blob ``output``,
RGB in [0, 1], planar (NCHW without the batch axis), the scale in the file name, any input
size, fp16 weights unless fp32 is asked for. The network's value range and test-time
padding are inside the graph. Networks whose faithful graph NCNN cannot express are
exported in an equivalent form (:mod:`lightsr.export.ncnn_forms`).

The conversion is ``torch.jit.trace`` then the ``pnnx`` converter (``pip install
'lightsr[ncnn]'``), run in a temporary folder; the two files are checked with NCNN against
torch before they are moved into place together.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lightsr.errors import ExportError, UsageError
from lightsr.export.ncnn_forms import NcnnNetwork, min_side, ncnn_form
from lightsr.export.trace import deployable_copy, quiet_exporter
from lightsr.models import SRModel
from lightsr.ncnn_runtime import INPUT_BLOB, OUTPUT_BLOB, NcnnModel

PRECISIONS = ("fp16", "fp32")
# Trace sizes: the second one tells pnnx which sizes are dynamic. pnnx takes every size
# that is equal in both traces for a constant, so the sizes padded to each window (8, 32)
# must differ too (41 → 48, 64; 75 → 80, 96), and no side is a multiple of a window.
TRACE_SIZES = ((41, 46), (75, 70))
# Largest |NCNN − torch| the export accepts on its check image, by precision.
CHECK_TOLERANCE = {"fp32": 2e-3, "fp16": 3e-2}
PNNX_TIMEOUT_S = 600


@dataclass(frozen=True)
class NcnnExport:
    """What :func:`export_ncnn` wrote.

    Attributes:
        param: the ``.param`` file (the ``.bin`` is beside it, same stem).
        bin: the ``.bin`` file.
        precision: ``"fp16"`` or ``"fp32"`` weights.
        min_side: smallest input side the graph is valid for.
        max_abs_diff: NCNN against torch on the check image (NaN when not checked).
    """

    param: Path
    bin: Path
    precision: str
    min_side: int
    max_abs_diff: float


def file_stem(model: SRModel) -> str:
    """``<variant>-x<scale>``: the apps read the scale from the name."""
    return f"{model.variant}-x{model.scale}"


def ncnn_paths(model: SRModel, output: str | os.PathLike) -> tuple[Path, Path]:
    """The ``.param`` and ``.bin`` paths for ``output``: a ``.param`` file or a folder (which
    gets :func:`file_stem` names)."""
    output = Path(output)
    if output.suffix.lower() == ".param":
        param = output
    elif output.is_dir() or output.suffix == "":
        param = output / f"{file_stem(model)}.param"
    else:
        raise UsageError(f"{output}: NCNN output must be a .param file or a folder")
    if not param.parent.is_dir():
        raise UsageError(f"{param.parent}: no such folder")
    if not os.access(param.parent, os.W_OK):
        raise UsageError(f"{param.parent}: folder is not writable")
    if f"x{model.scale}" not in param.stem.lower():
        raise UsageError(
            f"{param.name}: the name must carry the scale (x{model.scale}), as the apps "
            f"read it from there; for example {file_stem(model)}.param"
        )
    return param, param.with_suffix(".bin")


def export_ncnn(
    model: SRModel,
    output: str | os.PathLike,
    precision: str = "fp16",
    overwrite: bool = False,
    check: bool = True,
) -> NcnnExport:
    """Export ``model`` to an NCNN ``.param``/``.bin`` pair (see the module doc).

    Args:
        model: the network (any form, device and dtype; it is not changed).
        output: a ``.param`` file whose name carries the scale, or a folder.
        precision: ``"fp16"`` (weights stored in fp16, the apps' default) or ``"fp32"``.
        overwrite: replace existing files.
        check: compare NCNN's output with torch's on a smooth image (off only for
            benchmarks of random weights, which EMT amplifies beyond the tolerance).

    Raises:
        UsageError: bad output path or precision, existing files, pnnx/ncnn missing.
        ExportError: the network has no NCNN form, or the conversion or its check failed.
    """
    if precision not in PRECISIONS:
        raise UsageError(f"NCNN precision must be one of {', '.join(PRECISIONS)}")
    if model.arbitrary_scale:
        raise UsageError(f"{model.variant}: export of arbitrary-scale models is not supported")
    param, weights = ncnn_paths(model, output)
    for path in (param, weights):
        if path.exists() and not overwrite:
            raise UsageError(f"{path}: output exists; use --overwrite to replace it")
    deployed = deployable_copy(model)
    side = min_side(deployed)
    form = ncnn_form(deployed)
    with tempfile.TemporaryDirectory(prefix="lightsr-ncnn-") as folder:
        work = Path(folder)
        _convert(form, work, precision)
        _rename_blobs(work / "model.ncnn.param")
        diff = _check(work / "model.ncnn.param", deployed, precision) if check else math.nan
        _move_pair(
            (work / "model.ncnn.param", param), (work / "model.ncnn.bin", weights), overwrite
        )
    return NcnnExport(param, weights, precision, side, diff)


def _pnnx() -> str:
    try:
        import pnnx
    except ImportError:
        raise UsageError("NCNN export needs pnnx and ncnn: pip install 'lightsr[ncnn]'") from None
    return pnnx.EXEC_PATH


def _convert(form: SRModel, work: Path, precision: str) -> None:
    """Trace ``form`` and convert it with pnnx; every file stays in ``work``."""
    executable = _pnnx()
    network = NcnnNetwork(form).eval()
    (h1, w1), (h2, w2) = TRACE_SIZES
    try:
        with torch.no_grad(), quiet_exporter():
            traced = torch.jit.trace(network, torch.rand(1, 3, h1, w1), check_trace=False)
        traced.save(str(work / "model.pt"))
    except Exception as exc:  # the tracer raises many types
        raise ExportError(f"{form.variant}: tracing for NCNN failed: {_first(exc)}") from exc
    command = [
        executable,
        str(work / "model.pt"),
        f"inputshape=[1,3,{h1},{w1}]f32",
        f"inputshape2=[1,3,{h2},{w2}]f32",
        "device=cpu",
        f"fp16={int(precision == 'fp16')}",
        *(
            f"{key}={work / name}"
            for key, name in (
                ("pnnxparam", "model.pnnx.param"),
                ("pnnxbin", "model.pnnx.bin"),
                ("pnnxpy", "model_pnnx.py"),
                ("pnnxonnx", "model.pnnx.onnx"),
                ("ncnnparam", "model.ncnn.param"),
                ("ncnnbin", "model.ncnn.bin"),
                ("ncnnpy", "model_ncnn.py"),
            )
        ),
    ]
    try:
        done = subprocess.run(
            command, cwd=work, capture_output=True, text=True, timeout=PNNX_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ExportError(f"{form.variant}: pnnx did not run: {_first(exc)}") from exc
    log = done.stdout + "\n" + done.stderr
    param = work / "model.ncnn.param"
    if done.returncode != 0 or not param.is_file() or not (work / "model.ncnn.bin").is_file():
        raise ExportError(
            f"{form.variant}: pnnx failed (exit {done.returncode}): {_pnnx_reason(log)}"
        )
    leftover = _unconverted(param)
    if leftover:
        raise ExportError(
            f"{form.variant}: pnnx left operators NCNN cannot run ({', '.join(leftover)}): "
            f"{_pnnx_reason(log)}"
        )


def _unconverted(param: Path) -> list[str]:
    """pnnx operator types left in an NCNN param (``F.pad``, ``Tensor.reshape``, …)."""
    kinds = {line.split()[0] for line in param.read_text().splitlines()[2:] if line.strip()}
    return sorted(kind for kind in kinds if "." in kind)


def _pnnx_reason(log: str) -> str:
    """The most telling line of pnnx's output."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for pattern in ("unsupported", "error", "ignore ", "failed"):
        found = [line for line in lines if pattern in line.lower()]
        if found:
            return found[0][:200]
    return lines[-1][:200] if lines else "no output"


def _first(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def _rename_blobs(param: Path) -> None:
    """Name the input blob ``data`` and the output blob ``output`` (the apps' names)."""
    lines = param.read_text().splitlines()
    inputs = [line.split()[3 + 1] for line in lines[2:] if line.split()[:1] == ["Input"]]
    produced = {b for line in lines[2:] for b in _blobs(line)[1]}
    consumed = {b for line in lines[2:] for b in _blobs(line)[0]}
    outputs = sorted(produced - consumed)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(f"expected one input and one output blob, got {inputs} and {outputs}")
    names = {inputs[0]: INPUT_BLOB, outputs[0]: OUTPUT_BLOB}
    renamed = lines[:2]
    for line in lines[2:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        n = 4 + int(fields[2]) + int(fields[3])
        if fields[0] == "Input":
            fields[1] = INPUT_BLOB
        fields[4:n] = [names.get(blob, blob) for blob in fields[4:n]]
        renamed.append(" ".join(fields))
    param.write_text("\n".join(renamed) + "\n")


def _blobs(line: str) -> tuple[list[str], list[str]]:
    fields = line.split()
    if len(fields) < 4:
        return [], []
    n_in, n_out = int(fields[2]), int(fields[3])
    return fields[4 : 4 + n_in], fields[4 + n_in : 4 + n_in + n_out]


def _check(param: Path, model: SRModel, precision: str) -> float:
    """Max |NCNN − torch| on a smooth check image at a size other than the trace's."""
    from lightsr.export.verify import sample_image

    image = sample_image(45, 37, torch.Generator().manual_seed(0))  # (1, 3, H, W)
    with torch.no_grad():
        expected = model.upscale(image.to(model.dtype)).float()[0].permute(1, 2, 0).numpy()
    try:
        actual = NcnnModel(param).run(image[0].permute(1, 2, 0).numpy())
    except UsageError as exc:
        raise ExportError(f"{model.variant}: the NCNN files do not run: {exc}") from exc
    if actual.shape != expected.shape:
        raise ExportError(
            f"{model.variant}: NCNN output has shape {actual.shape}, torch {expected.shape}"
        )
    diff = float(np.abs(actual - expected).max())
    if not diff <= CHECK_TOLERANCE[precision]:
        raise ExportError(
            f"{model.variant}: NCNN output differs from torch by {diff:.2e} "
            f"(more than {CHECK_TOLERANCE[precision]:g})"
        )
    return diff


def _move_pair(first: tuple[Path, Path], second: tuple[Path, Path], overwrite: bool) -> None:
    """Copy both files beside their destinations, then rename them into place together;
    on any failure neither destination is left half-written."""
    import secrets
    import shutil

    staged = []
    try:
        for source, target in (first, second):
            temporary = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
            staged.append((temporary, target))
            shutil.copyfile(source, temporary)
        for _, target in staged:
            if target.exists() and not overwrite:
                raise UsageError(f"{target}: output exists; use --overwrite to replace it")
        for temporary, target in staged:
            os.replace(temporary, target)
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
