"""int8 ONNX exports: ONNX Runtime static quantisation (QDQ) of the fp32 export.

The fp32 export (:func:`lightsr.export.cached_export`) is quantised with
:func:`onnxruntime.quantization.quantize_static`: convolutions get int8 per-output-channel
weights and uint8 activations whose ranges come from calibration forwards on a few
low-resolution crops of training images (the HR images are MATLAB-bicubic downscaled by the
model's scale, as the networks were trained). The first two and the last two convolutions
stay in float: they are nearest the pixels, and an 8-bit grid there costs more PSNR than
everything else together (see :data:`FLOAT_EDGE_CONVS`). Besides the convolutions only the
attention gates ``x * sigmoid(y)`` are quantised (FMEN's HFABs), so that the int8 trunk is
not dequantised and quantised again around each gate; everything else (attention MatMuls,
LayerNorm, the sigmoids, pixel shuffle) stays in float.

Before quantising, convolution channels are zero-padded where that is exact (see
:func:`pad_conv_channels`) so that ONNX Runtime can use its fast int8 convolution kernels.
On x86 CPUs with AVX-512 VNNI (or AVX-VNNI) those run with 8-bit dot-product instructions;
without them int8 can be slower than fp32.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightsr.errors import UsageError
from lightsr.models import SRModel
from lightsr.options import IMAGE_SUFFIXES
from lightsr.paths import replaced_atomically, shared_dir

# Calibration: this many training images, one centred LR crop of this side from each.
CALIBRATION_IMAGES = 8
CALIBRATION_CROP = 64
CALIBRATION_VARIABLE = "LIGHTSR_CALIBRATION"
# Part of the cache file name: bump when the quantisation recipe changes.
RECIPE = "qdq3"
# Convolutions kept in float at each end of the graph. FMEN-S ×4, Set5 PSNR-Y change
# against fp32 (MinMax calibration on 8 crops): 1 → -0.68 dB, 2 → -0.14 dB, 4 → -0.07 dB.
FLOAT_EDGE_CONVS = 2
# ONNX Runtime's fast int8 convolution (MLAS's symmetric-weight "ConvSym" kernels) takes only
# convolutions with a multiple of 4 input and output channels and at least 16 outputs; any
# other runs as im2col + int8 GEMM, 2.6× slower for FMEN-S's 50-channel 3×3 convolutions.
CHANNEL_MULTIPLE = 4
MIN_CONV_OUTPUTS = 16
# Ops that act on each channel on its own, so zero-padded channels never reach real ones.
_CHANNELWISE_OPS = frozenset({"Add", "Sub", "Mul", "Relu", "LeakyRelu", "PRelu", "Sigmoid"})


def default_calibration_dir() -> Path:
    """``$LIGHTSR_CALIBRATION``, else the shared training images (``<shared>/data/train``)."""
    env = os.environ.get(CALIBRATION_VARIABLE)
    return Path(env) if env else shared_dir() / "data" / "train"


def calibration_inputs(
    folder: str | os.PathLike,
    scale: int,
    count: int = CALIBRATION_IMAGES,
    crop: int = CALIBRATION_CROP,
) -> list[np.ndarray]:
    """(1, 3, crop, crop) float32 [0, 1] LR inputs from ``count`` images of ``folder``.

    Images (searched recursively, spread over the sorted list) are MATLAB-bicubic
    downscaled by ``scale`` and centre-cropped; images too small for the crop are skipped
    (histogram calibration needs equal shapes).

    Raises:
        UsageError: the folder does not exist or holds no image large enough.
    """
    from lightsr.imresize import imresize
    from lightsr.io import read_rgb_uint8, to_float

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(
            f"int8 needs calibration images: {folder} is not a folder (set {CALIBRATION_VARIABLE})"
        )
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    step = max(1, len(files) // count)
    inputs: list[np.ndarray] = []
    for path in files[::step] + files:  # the spread first, then any image to fill up
        if len(inputs) == count:
            break
        lr = imresize(read_rgb_uint8(path), 1 / scale)
        height, width = lr.shape[:2]
        if min(height, width) < crop:
            continue
        top, left = (height - crop) // 2, (width - crop) // 2
        patch = to_float(lr[top : top + crop, left : left + crop]).transpose(2, 0, 1)
        inputs.append(np.ascontiguousarray(patch[None], dtype=np.float32))
    if not inputs:
        raise UsageError(
            f"int8 needs calibration images: none in {folder} has {crop * scale}+ px sides"
        )
    return inputs


class _Reader:
    """The :class:`onnxruntime.quantization.CalibrationDataReader` protocol over arrays."""

    def __init__(self, input_name: str, arrays: Sequence[np.ndarray]) -> None:
        self.input_name = input_name
        self.arrays = iter(arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        array = next(self.arrays, None)
        return None if array is None else {self.input_name: array}

    def rewind(self) -> None:  # part of the protocol; calibration reads the data once
        pass


def float_convs(proto: Any, edge: int = FLOAT_EDGE_CONVS) -> list[str]:
    """Names of the convolutions kept in float: the first and last ``edge`` of the graph."""
    convs = [node.name for node in proto.graph.node if node.op_type == "Conv"]
    return sorted(set(convs[:edge] + convs[-edge:]))


def quantized_nodes(proto: Any, edge: int = FLOAT_EDGE_CONVS) -> list[str]:
    """Names of the nodes to quantise: the convolutions but the first and last ``edge``,
    and the gates ``x * sigmoid(y)`` that neither read from nor feed a float convolution
    (quantising those costs PSNR at the edges, as the float convolutions themselves would).
    """
    nodes = proto.graph.node
    kept_float = set(float_convs(proto, edge))
    beside_float = {
        name for node in nodes if node.name in kept_float for name in (*node.input, *node.output)
    }
    sigmoids = {name for node in nodes if node.op_type == "Sigmoid" for name in node.output}

    def is_gate(node: Any) -> bool:
        touched = {*node.input, *node.output}
        return bool(sigmoids & touched) and not beside_float & touched

    return [
        node.name
        for node in nodes
        if (node.op_type == "Conv" and node.name not in kept_float)
        or (node.op_type == "Mul" and is_gate(node))
    ]


def padded_channels(channels: int) -> int:
    """The channel count ONNX Runtime's fast int8 convolution takes for ``channels``."""
    multiple = -(-channels // CHANNEL_MULTIPLE) * CHANNEL_MULTIPLE
    return max(multiple, MIN_CONV_OUTPUTS)


def pad_conv_channels(proto: Any, convs: Collection[str] | None = None) -> int:
    """Zero-pad, in place, the channels between convolutions to :func:`padded_channels`.

    A set of feature maps joined by channel-wise ops (activations, residual sums, gates)
    is padded when every one of them is made by a convolution or such an op and read only
    by such ops or as a convolution's input, with every other operand a scalar: the
    producing convolutions get zero output filters and biases, the reading ones zero
    weights for the new input channels, so whatever the extra channels hold never reaches
    a real channel and the function is unchanged. Everything else (the image input, pixel
    shuffle, attention) is left as it is.

    Args:
        proto: the ONNX model.
        convs: pad only the sets that one of these convolutions (names) makes or reads, e.g.
            the ones to be quantised (default: every set).

    Returns:
        The number of feature-map sets padded.
    """
    graph = proto.graph
    wanted = None if convs is None else set(convs)
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    outputs = {output.name for output in graph.output}
    scalars = {
        node.output[0]
        for node in graph.node
        if node.op_type == "Constant" and _constant_size(node) <= 1
    } | {name for name, tensor in initializers.items() if np.prod(tensor.dims) <= 1}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producers = {name: node for node in graph.node for name in node.output}
    padded = 0
    for maps in _channelwise_sets(graph, scalars):
        plan = _padding_plan(maps, producers, consumers, initializers, scalars, outputs)
        if plan is None:
            continue
        producing, reading = plan
        if wanted is not None and not {n.name for n in producing + reading} & wanted:
            continue
        channels = int(initializers[producing[0].input[1]].dims[0])
        target = padded_channels(channels)
        if target == channels:
            continue
        for node in producing:
            _pad_initializer(initializers[node.input[1]], 0, target)
            if len(node.input) > 2:
                _pad_initializer(initializers[node.input[2]], 0, target)
        for node in reading:
            _pad_initializer(initializers[node.input[1]], 1, target)
        padded += 1
    del graph.value_info[:]  # optional shape records, some now stale
    return padded


def _constant_size(node: Any) -> int:
    """Elements of a ``Constant`` node's value (2 for anything but a plain tensor)."""
    for attribute in node.attribute:
        if attribute.name == "value":
            return int(np.prod(attribute.t.dims))
    return 2


def _channelwise_sets(graph: Any, scalars: set[str]) -> list[set[str]]:
    """Feature maps grouped by the channel-wise ops that join them (union–find)."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        parent.setdefault(name, name)
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for node in graph.node:
        if node.op_type == "Conv":
            root(node.output[0])
        elif node.op_type in _CHANNELWISE_OPS:
            tensors = [name for name in (*node.input, *node.output) if name not in scalars]
            for name in tensors[1:]:
                parent[root(name)] = root(tensors[0])
    sets: dict[str, set[str]] = {}
    for name in parent:
        sets.setdefault(root(name), set()).add(name)
    return list(sets.values())


def _padding_plan(
    maps: set[str],
    producers: dict[str, Any],
    consumers: dict[str, list[Any]],
    initializers: dict[str, Any],
    scalars: set[str],
    outputs: set[str],
) -> tuple[list[Any], list[Any]] | None:
    """(producing convs, reading convs) of ``maps`` if padding them is exact, else None."""
    producing: list[Any] = []
    reading: list[Any] = []
    for name in maps:
        node = producers.get(name)
        if node is None:  # a graph input
            return None
        if node.op_type == "Conv":
            if not _plain_conv(node, initializers, consumers):
                return None
            producing.append(node)
        elif node.op_type not in _CHANNELWISE_OPS:
            return None
        users = consumers.get(name, [])
        if name in outputs or not users:
            return None
        for user in users:
            if user.op_type == "Conv" and user.input[0] == name:
                if not _plain_conv(user, initializers, consumers):
                    return None
                reading.append(user)
            elif user.op_type not in _CHANNELWISE_OPS or any(
                other not in maps and other not in scalars for other in user.input
            ):
                return None
    if not producing:
        return None
    counts = {int(initializers[node.input[1]].dims[0]) for node in producing}
    return (producing, reading) if len(counts) == 1 else None


def _plain_conv(node: Any, initializers: dict[str, Any], consumers: dict[str, list[Any]]) -> bool:
    """An ungrouped convolution whose weight (and bias) are initializers of its own."""
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    parameters = node.input[1:]
    return group == 1 and all(
        name in initializers and len(consumers.get(name, [])) == 1 for name in parameters
    )


def _pad_initializer(tensor: Any, axis: int, size: int) -> None:
    """Zero-pad ``tensor`` along ``axis`` to ``size`` (no-op when it is that size)."""
    from onnx import numpy_helper

    array = numpy_helper.to_array(tensor)
    if array.shape[axis] == size:
        return
    widths = [(0, 0)] * array.ndim
    widths[axis] = (0, size - array.shape[axis])
    tensor.CopyFrom(numpy_helper.from_array(np.pad(array, widths), tensor.name))


def quantize_onnx(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    inputs: Sequence[np.ndarray],
) -> Path:
    """Quantise the fp32 lightsr export ``source`` to int8 QDQ, written atomically.

    Args:
        source: fp32 ONNX export (see :func:`lightsr.export.export_onnx`).
        destination: output ``.onnx`` file.
        inputs: calibration inputs, (1, 3, H, W) float32 in [0, 1].
    """
    destination = Path(destination)
    # The quantiser logs advice (pre-processing) on the root logger at WARNING level.
    logging.disable(logging.WARNING)
    try:
        with replaced_atomically(destination) as temporary:
            _quantize(Path(source), temporary, inputs)
    finally:
        logging.disable(logging.NOTSET)
    return destination


def _quantize(source: Path, temporary: Path, inputs: Sequence[np.ndarray]) -> None:
    """:func:`quantize_onnx` into ``temporary``, keeping the fp32 export's metadata."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from lightsr.ort import INPUT_NAME

    proto = onnx.load(str(source))
    metadata = {prop.key: prop.value for prop in proto.metadata_props}
    quantized = quantized_nodes(proto)
    pad_conv_channels(proto, quantized)
    quantize_static(
        proto,
        str(temporary),
        _Reader(INPUT_NAME, inputs),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_quantize=quantized,
        calibrate_method=CalibrationMethod.MinMax,
    )
    result = onnx.load(str(temporary))
    metadata.update(precision="int8", quantization=f"onnxruntime static QDQ ({RECIPE})")
    del result.metadata_props[:]
    for key, value in metadata.items():
        result.metadata_props.add(key=key, value=value)
    onnx.save_model(result, str(temporary))


def cached_int8_export(model: SRModel, calibration: str | os.PathLike | None = None) -> Path:
    """The int8 export of ``model`` in the cache folder, quantised on first use.

    Named like the fp32 export (which is made first if needed) with ``int8`` and the
    calibration recipe in place of ``fp32``; calibration images come from ``calibration``
    or :func:`default_calibration_dir`.
    """
    from lightsr.export import cached_export

    fp32 = cached_export(model)
    path = fp32.with_name(fp32.name.replace("_fp32_", f"_int8{RECIPE}_", 1))
    if not path.is_file():
        folder = default_calibration_dir() if calibration is None else Path(calibration)
        quantize_onnx(fp32, path, calibration_inputs(folder, model.scale))
    return path


def cached_onnx(model: SRModel, precision: str) -> Path:
    """The cached export of ``model`` that runs ``precision`` (fp32, fp16 or int8)."""
    from lightsr.export import cached_export

    if precision == "int8":
        return cached_int8_export(model)
    return cached_export(model, half=precision == "fp16")
