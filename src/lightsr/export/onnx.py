"""The ONNX file: conversion of a traced network, metadata, atomic writing and the cache."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lightsr import __version__
from lightsr.errors import ExportError, UsageError
from lightsr.export.onnx_forms import onnx_form, translation_table
from lightsr.export.trace import deployable_copy, first_line, quiet_exporter, trace
from lightsr.export.verify import check_witnesses
from lightsr.models import SRModel
from lightsr.ort import INPUT_NAME, OUTPUT_NAME
from lightsr.paths import replaced_atomically

DEFAULT_OPSET = 18
MIN_OPSET = 18


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


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of ``module``'s state dict."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


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
        UsageError: bad path, opset or static size, or an arbitrary-scale network (its
            output size is a float scale of the input's: not exported yet).
        ExportError: the network cannot be exported with dynamic sizes (see the module doc).
    """
    if model.arbitrary_scale:
        raise UsageError(
            f"{model.variant}: export of arbitrary-scale models is not supported yet "
            "(use the torch backend)"
        )
    path = _checked_output(path)
    if opset < MIN_OPSET:
        raise UsageError(f"opset must be at least {MIN_OPSET}, got {opset}")
    deployed = deployable_copy(model, half)
    # fp16: the faithful graph (ONNX Runtime has no fp16 CPU kernel of the fused attention).
    traced = trace(deployed if half else onnx_form(deployed), static)
    metadata = _metadata(deployed, half, opset, traced.min_side, static)
    try:
        with torch.no_grad(), quiet_exporter():
            onnx_program = torch.onnx.export(
                traced.program,
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                custom_translation_table=translation_table(),
                external_data=False,
                optimize=False,  # the onnxscript optimiser takes minutes on ESC: _fold_constants
                verbose=False,
            )
    except Exception as exc:  # exporter errors come in many types
        raise ExportError(f"{model.variant}: ONNX conversion failed: {first_line(exc)}") from exc
    proto = onnx_program.model_proto
    if not half:  # ONNX Runtime's CPU pass would compute fp16 ops in fp32 (no CPU kernels)
        proto = _fold_constants(proto)
    _slice_split_sequences(proto)
    _order_gelu_for_fusion(proto)
    _name_dims(proto)
    _drop_inner_shapes(proto)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    _write_atomically(proto, path, lambda tmp: check_witnesses(tmp, model, traced, half))
    return ExportResult(path=path, metadata=metadata, min_side=traced.min_side)


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
    # ``model`` is the deployed copy: its provenance names the deploy form where there is one.
    return model.provenance.to_metadata(
        input_range="[0, 1]",
        layout="NCHW, RGB, float32",
        precision="fp16" if half else "fp32",
        min_side=min_side,
        static_size="" if static is None else f"{static[0]}x{static[1]}",
        opset=opset,
        weights_sha256=weights_digest(model.module),
        source=Path(model.source).name if model.source else "",
        lightsr_version=__version__,
    )


def _fold_constants(proto):
    """``proto`` after ONNX Runtime's basic graph optimisations, or as it is if they would
    add ops of a domain that ``proto`` does not use (the ONNX forms use ONNX Runtime's
    ``com.microsoft.MultiHeadAttention``, see :mod:`lightsr.export.onnx_forms`).

    The basic level is hardware-independent (constant folding, redundant nodes, conv + add,
    mul or BatchNorm fusion). Run here once, it folds what ONNX Runtime's own pass at session
    start leaves: the bias chains (Cast → Expand) of many convolutions, which keep those out
    of its blocked NCHWc kernels. Idle 2-core machine, 256×256 → ×4, ONNX Runtime fp32:
    DITN-Real 1443 → 1137 ms, EMT 7327 → 6114 ms, ESC-light 3498 → 3219 ms.
    """
    import tempfile

    import onnx
    import onnxruntime

    with tempfile.TemporaryDirectory() as folder:
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(Path(folder) / "basic.onnx")
        options.log_severity_level = 3
        onnxruntime.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        folded = onnx.load(options.optimized_model_filepath)
    domains = {"", "ai.onnx"} | {node.domain for node in proto.graph.node}
    if any(node.domain not in domains for node in folded.graph.node):
        return proto
    # ONNX Runtime declares every domain it knows; keep the export's own declarations.
    del folded.opset_import[:]
    folded.opset_import.extend(proto.opset_import)
    _fold_cast_expand(folded)
    return folded


# Largest constant (elements) that _fold_cast_expand stores in place of the nodes making it.
_MAX_FOLDED_ELEMENTS = 1 << 16


def _fold_cast_expand(proto) -> None:
    """Replace, in place, ``Constant`` nodes, and ``Cast`` and small ``Expand`` nodes of
    constants, by stored tensors (dropping those no node reads any more).

    ONNX Runtime's constant folding leaves ``Expand(Cast(0.0), [C])`` behind, what it makes
    of the exporter's zero bias of a bias-free convolution (EMT's channel shifts, ESC's
    large-kernel convolution), and such a convolution then runs outside ONNX Runtime's
    blocked NCHWc kernels.
    """
    from onnx import numpy_helper

    graph = proto.graph
    values = {tensor.name: tensor for tensor in graph.initializer}
    kept = []
    for node in graph.node:
        value = _constant_value(node, values)
        if value is None:
            kept.append(node)
        else:
            values[node.output[0]] = numpy_helper.from_array(value, node.output[0])
    if len(kept) == len(graph.node):
        return
    used = {name for node in kept for name in node.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(kept)
    stored = [tensor for name, tensor in values.items() if name in used]
    del graph.initializer[:]
    graph.initializer.extend(stored)


def _constant_value(node, values: dict) -> np.ndarray | None:
    """The value of a ``Constant``, or of a ``Cast`` or small ``Expand`` of ``values``."""
    from onnx import helper, numpy_helper

    if node.op_type == "Constant":
        tensors = [a.t for a in node.attribute if a.name == "value"]
        return numpy_helper.to_array(tensors[0]) if tensors else None
    if node.op_type not in ("Cast", "Expand") or not all(n in values for n in node.input):
        return None
    arrays = [numpy_helper.to_array(values[name]) for name in node.input]
    if node.op_type == "Cast":
        to = next(a.i for a in node.attribute if a.name == "to")
        return arrays[0].astype(helper.tensor_dtype_to_np_dtype(to))
    shape = np.broadcast_shapes(arrays[0].shape, tuple(arrays[1]))
    if np.prod(shape) > _MAX_FOLDED_ELEMENTS:
        return None
    return np.broadcast_to(arrays[0], shape).copy()


def _slice_split_sequences(proto) -> None:
    """Replace, in place, each ``SplitToSequence`` whose every reader is a ``SequenceAt``
    of a constant index by one ``Slice`` per reader.

    The exporter writes ``chunk``/``unbind``/``split`` so (DITN's gated FFNs and attention,
    EMT's q/v): ONNX Runtime copies the input into the sequence and each ``SequenceAt``
    copies its piece out again, where a ``Slice`` copies the piece once (256×256 → ×4,
    2 threads: 110-115 ms of DITN-Real's 850 ms and EMT's 2970 ms).
    """
    from onnx import helper, numpy_helper

    graph = proto.graph
    values = {tensor.name: tensor for tensor in graph.initializer}
    readers = _readers(graph)
    replaced: dict[int, list] = {}  # id(node) → the nodes that take its place
    for node in graph.node:
        bounds = _split_bounds(node, values, readers)
        if bounds is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        replaced[id(node)] = []
        for reader in readers[node.output[0]]:
            start, end = bounds(int(numpy_helper.to_array(values[reader.input[1]])))
            names = [f"{reader.output[0]}_{part}" for part in ("start", "end", "axis")]
            for name, value in zip(names, (start, end, axis), strict=True):
                graph.initializer.append(numpy_helper.from_array(np.array([value]), name))
            replaced[id(reader)] = [
                helper.make_node("Slice", [node.input[0], *names], list(reader.output))
            ]
    if not replaced:
        return
    nodes = [new for node in graph.node for new in replaced.get(id(node), [node])]
    del graph.node[:]
    graph.node.extend(nodes)


def _readers(graph) -> dict[str, list]:
    """The nodes of ``graph`` that read each tensor, by tensor name."""
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _split_bounds(node, values: dict, readers: dict) -> Callable[[int], tuple[int, int]] | None:
    """For a ``SplitToSequence`` that :func:`_slice_split_sequences` can replace, the
    (start, end) of its piece ``index``; ``None`` for any other node."""
    from onnx import numpy_helper

    if node.op_type != "SplitToSequence" or len(node.input) < 2 or node.input[1] not in values:
        return None
    users = readers.get(node.output[0], [])
    if not users or any(
        user.op_type != "SequenceAt"
        or user.input[1] not in values
        or int(numpy_helper.to_array(values[user.input[1]])) < 0
        for user in users
    ):
        return None
    sizes = numpy_helper.to_array(values[node.input[1]]).astype(np.int64)
    if sizes.ndim == 0:  # equal pieces; the last may be shorter (Slice clamps the end)
        size = int(sizes)
        return lambda index: (index * size, (index + 1) * size)
    ends = np.cumsum(sizes)
    return lambda index: (int(ends[index] - sizes[index]), int(ends[index]))


def _order_gelu_for_fusion(proto) -> None:
    """Rewrite, in place, each exact GELU the exporter writes as ``x · (0.5 · (1 + erf(x /
    √2)))`` into ``(x · (1 + erf(x / √2))) · 0.5``, the same function in the order ONNX
    Runtime's GELU fusion recognises (it then runs one ``Gelu`` kernel instead of five
    passes over the map; the file stays standard ONNX).
    """
    from onnx import numpy_helper

    graph = proto.graph
    values = {tensor.name: tensor for tensor in graph.initializer}
    makers = {name: node for node in graph.node for name in node.output}
    readers = _readers(graph)

    def constant(name: str) -> float | None:
        tensor = values.get(name)
        array = None if tensor is None else numpy_helper.to_array(tensor)
        return float(array) if array is not None and array.size == 1 else None

    def only_reader(name: str):
        nodes = readers.get(name, [])
        return nodes[0] if len(nodes) == 1 else None

    for erf in [node for node in graph.node if node.op_type == "Erf"]:
        divide = makers.get(erf.input[0])
        add = only_reader(erf.output[0])
        half = add and only_reader(add.output[0])
        last = half and only_reader(half.output[0])
        if not (divide and add and half and last):
            continue
        if [node.op_type for node in (divide, add, half, last)] != ["Div", "Add", "Mul", "Mul"]:
            continue
        x = divide.input[0]
        if not np.isclose(constant(divide.input[1]) or 0.0, np.sqrt(2.0)):
            continue
        if 1.0 not in (constant(name) for name in add.input):
            continue
        halves = [name for name in half.input if constant(name) == 0.5]
        if not halves or x not in last.input or half.output[0] not in last.input:
            continue
        half.input[:] = [x, add.output[0]]
        last.input[:] = [half.output[0], halves[0]]


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


def _drop_inner_shapes(proto) -> None:
    """Remove the shapes of inner tensors (``value_info``); the graph's input and output
    keep theirs.

    From these symbolic shapes ONNX Runtime's allocation planner proves tensors the same
    size and plans to reuse their buffers, and on these networks the planned reuse raises
    the peak (the session option ``enable_mem_reuse=False`` gives the same saving): peak RSS
    rise at 256×256 → ×4, 2 threads, ESC-light 690 → 215 MiB, EMT 419 → 136 MiB, DITN-Real
    199 → 88 MiB, latency the same or lower. Without them ONNX Runtime infers what it needs
    and allocates each tensor when it is made.
    """
    del proto.graph.value_info[:]


def _write_atomically(proto, path: Path, check: Callable[[Path], None]) -> None:
    """Save ``proto`` to a temporary file beside ``path``, ``check`` it, then rename it."""
    import onnx

    with replaced_atomically(path) as temporary:
        onnx.save_model(proto, temporary, format="protobuf", save_as_external_data=False)
        check(temporary)


# Part of cached export names: bump when the graph exported from the same weights changes
# (g2: attention in window groups, see lightsr.archs.blocks.grouped_attention; g3: constants
# folded by ONNX Runtime, see _fold_constants; g4: the ONNX forms of EMT, ESC and DITN, see
# lightsr.export.onnx_forms; g5: no inner shapes, see _drop_inner_shapes; g6: split
# sequences as Slices, GELU in fusable order, EMT and ESC windows gathered from NHWC rows).
GRAPH_REVISION = "g6"


def cached_export(model: SRModel, half: bool = False, opset: int = DEFAULT_OPSET) -> Path:
    """The ONNX export of ``model`` in the cache folder, exported on first use.

    The file name is keyed by variant, scale, precision, opset, :data:`GRAPH_REVISION` and a
    hash of the deploy-form weights, so any change of weights or graph gives a new export.
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
