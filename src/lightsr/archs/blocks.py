"""Building blocks shared by several networks.

Anything used by more than one network lives here, so architectures never copy each other.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> torch.Tensor:
    """Pad ``x`` (N,C,H,W) at the bottom and right so H and W are multiples of ``multiple``.

    Written without Python branches on tensor sizes so that traced/exported graphs stay valid
    for every input size (padding by zero is a no-op). The padded size is computed as
    ``ceil(h / multiple) * multiple`` so that ``torch.export`` sees a multiple of
    ``multiple`` and can reshape it into windows without guarding on the size.
    """
    h, w = x.shape[-2:]
    return F.pad(x, (0, padded_size(w, multiple) - w, 0, padded_size(h, multiple) - h), mode=mode)


def padded_size(size: int, multiple: int) -> int:
    """``size`` rounded up to a multiple of ``multiple`` (also for symbolic sizes)."""
    return (size + multiple - 1) // multiple * multiple


def row_bands(height: int, band_rows: int, halo: int = 1) -> Iterator[tuple[slice, slice, slice]]:
    """Split ``height`` rows into bands for running row-local layers one band at a time.

    Yields ``(rows, context, crop)``: the band's rows, the rows to feed the layers (the band
    plus up to ``halo`` rows on either side that the map has), and the part of their output
    on ``context`` that belongs to ``rows``. An output row of layers that read at most
    ``halo`` rows up and down (a 3×3 conv: 1) depends on ``context`` alone, so the cropped
    outputs together equal the layers applied to the whole map.
    """
    for start in range(0, height, band_rows):
        end = min(start + band_rows, height)
        top, bottom = max(start - halo, 0), min(end + halo, height)
        yield slice(start, end), slice(top, bottom), slice(start - top, end - top)


def map_in_bands(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, band_rows: int, halo: int = 1
) -> torch.Tensor:
    """``fn(x)`` for a ``fn`` whose output rows read at most ``halo`` input rows away,
    computed band by band, so that ``fn``'s inner maps exist one band at a time.

    The result has the memory layout of ``fn``'s outputs; ``fn`` must keep the height and
    width.
    """
    out = None
    for rows, context, crop in row_bands(x.shape[-2], band_rows, halo):
        part = fn(x[:, :, context])[:, :, crop]
        if out is None:
            shape = (x.shape[0], part.shape[1], *x.shape[-2:])
            layout = memory_format_of(part)
            out = torch.empty(shape, dtype=part.dtype, device=x.device, memory_format=layout)
        out[:, :, rows] = part
    assert out is not None, "a map with no rows"
    return out


def update_in_bands_(
    target: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    source: torch.Tensor,
    band_rows: int,
    halo: int = 1,
    combine: Callable[[torch.Tensor, torch.Tensor], object] | None = None,
) -> torch.Tensor:
    """``target = fn(source)`` in place, band by band, for a ``fn`` whose output rows read at
    most ``halo`` rows away; with ``combine`` (such as ``torch.Tensor.add_``),
    ``combine(target_rows, fn_rows)`` instead of the assignment.

    ``source`` may be ``target`` itself: each band's result is written only after the next
    band has read its context rows (``halo`` at most ``band_rows``), so every band sees the
    original values. Returns ``target``.
    """
    if halo > band_rows:
        raise ValueError(f"a halo of {halo} rows needs bands of at least as many rows")
    pending: tuple[slice, torch.Tensor] | None = None
    for rows, context, crop in row_bands(source.shape[-2], band_rows, halo):
        part = fn(source[:, :, context])[:, :, crop]
        if pending is not None:
            _write_rows(target, *pending, combine)
        pending = (rows, part)
    if pending is not None:
        _write_rows(target, *pending, combine)
    return target


def _write_rows(
    target: torch.Tensor,
    rows: slice,
    part: torch.Tensor,
    combine: Callable[[torch.Tensor, torch.Tensor], object] | None,
) -> None:
    if combine is None:
        target[:, :, rows] = part
    else:
        combine(target[:, :, rows], part)


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether an (N, C, H, W) map with several channels is laid out channels_last."""
    return x.shape[1] > 1 and x.stride(1) == 1


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``torch.channels_last`` for a channels_last map (:func:`is_channels_last`), else
    ``torch.contiguous_format``: the layout to give a new map like ``x``."""
    return torch.channels_last if is_channels_last(x) else torch.contiguous_format


def chain(
    first: Callable[[torch.Tensor], torch.Tensor], second: Callable[[torch.Tensor], torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``second(first(x))`` as one callable, for the banded helpers."""
    return lambda x: second(first(x))


def band_rows_for(width: int, pixels: int, minimum: int = 1) -> int:
    """Rows per band so that a band holds about ``pixels`` pixels (at least ``minimum``)."""
    return max(minimum, pixels // width)


# Input rows per band of the fast path's upsampler (see PixelShuffleUpsampler).
UPSAMPLE_BAND_ROWS = 32


def _overlap_matrix(cells: int, source: int) -> torch.Tensor:
    """(cells, source) weights: how much of output cell ``a`` of [0, 1) split in ``cells``
    each of ``source`` equal cells covers, as a fraction of ``a`` (rows sum to 1)."""
    edges = torch.arange(cells + 1, dtype=torch.float64) / cells
    source_edges = torch.arange(source + 1, dtype=torch.float64) / source
    low = torch.maximum(edges[:-1, None], source_edges[None, :-1])
    high = torch.minimum(edges[1:, None], source_edges[None, 1:])
    return (high - low).clamp(min=0) * cells


class PixelShuffleUpsampler(nn.Sequential):
    """conv3x3(dim → out·s²) followed by PixelShuffle(s): the common one-step upsampler.

    Its first conv is ``<name>.0`` in state dicts, matching the official networks. On the
    fast path (gradients off) it runs in bands of input rows, each with one row of context
    on either side, written straight into the output image: the s²-channel map before the
    shuffle, as large as the output, then never exists in full.
    """

    def __init__(self, dim: int, scale: int, out_channels: int = 3, bias: bool = True) -> None:
        super().__init__(
            nn.Conv2d(dim, out_channels * scale * scale, 3, 1, 1, bias=bias),
            nn.PixelShuffle(scale),
        )

    @torch.no_grad()
    def load_resampled_(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Initialise the conv from that of an upsampler of another scale, in place.

        Each output sub-pixel takes the area-weighted mean of the source sub-pixels it
        overlaps, so the network upscales like the source one followed by a box
        downscale: a good start for fine-tuning a network to a new scale.
        """
        conv, shuffle = self
        scale, colours = shuffle.upscale_factor, conv.out_channels // shuffle.upscale_factor**2
        source = math.isqrt(weight.shape[0] // colours)
        if colours * source**2 != weight.shape[0] or weight.shape[1:] != conv.weight.shape[1:]:
            raise ValueError(f"weight of shape {tuple(weight.shape)} is no sub-pixel conv")
        area = _overlap_matrix(scale, source).to(weight)

        def resample(tensor: torch.Tensor) -> torch.Tensor:
            grid = tensor.reshape(colours, source, source, -1)
            out = torch.einsum("ai,bj,cijk->cabk", area, area, grid)
            return out.reshape(colours * scale * scale, *tensor.shape[1:])

        conv.weight.copy_(resample(weight))
        if conv.bias is not None and bias is not None:
            conv.bias.copy_(resample(bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not fast_path() or x.shape[-2] <= UPSAMPLE_BAND_ROWS:
            return super().forward(x)
        conv, shuffle = self
        return pixel_shuffle_in_bands(conv, shuffle.upscale_factor, x)


def pixel_shuffle_in_bands(
    conv: Callable[[torch.Tensor], torch.Tensor], scale: int, x: torch.Tensor
) -> torch.Tensor:
    """``pixel_shuffle(conv(x), scale)`` for a 3×3 ``conv``, in bands of input rows written
    straight into the output: the s²-channel map before the shuffle never exists in full."""
    height = x.shape[-2]
    out = None
    for rows, context, crop in row_bands(height, UPSAMPLE_BAND_ROWS):
        band = F.pixel_shuffle(conv(x[:, :, context])[:, :, crop], scale)
        if out is None:
            shape = (x.shape[0], band.shape[1], height * scale, x.shape[-1] * scale)
            layout = memory_format_of(x)
            out = torch.empty(shape, dtype=band.dtype, device=x.device, memory_format=layout)
        out[:, :, rows.start * scale : rows.stop * scale] = band
    assert out is not None, "a map with no rows"
    return out


# ----------------------------------------------------------------------------- fast path
#
# Every network has two forward paths with equal outputs (to float rounding):
#
# * the *faithful* path, written to follow the official code and used whenever autograd
#   records (training) or a graph is traced for export;
# * the *fast* path, taken when gradients are off: in-place activations and residual adds
#   into freshly computed tensors, folded affine layers, chunked transients, row-local
#   layers in bands of rows (:func:`map_in_bands`, :func:`update_in_bands_`). It never
#   writes into a tensor the caller passed in. tests/archs/test_inference_paths.py checks
#   that both paths agree for every variant.
#
# ``to_inference_layout`` adds the module-level half: channels_last parameters for networks
# whose convolutions are faster in that layout (oneDNN's NHWC depthwise and 1×1 kernels).

# Thread-local, not a global: one thread counting FLOPs on the faithful path must not slow
# another thread's inference. (torch.compile reads thread-locals in full graphs; it would
# break the graph at a ContextVar.)
_PATH = threading.local()


@contextlib.contextmanager
def faithful_path() -> Iterator[None]:
    """Run forwards on the faithful path even with gradients off (tests, counting, debugging).

    Applies to the current thread only.
    """
    previous = getattr(_PATH, "faithful_only", False)
    _PATH.faithful_only = True
    try:
        yield
    finally:
        _PATH.faithful_only = previous


def fast_path() -> bool:
    """Whether a forward may take the fast inference path now.

    True when no gradient is recorded (``torch.no_grad``/``torch.inference_mode``), outside
    :func:`faithful_path`, and not while ``torch.jit`` traces or ``torch.export`` exports
    (exported graphs keep the faithful, functional form). ``torch.compile`` may take it.
    """
    faithful_only = getattr(_PATH, "faithful_only", False)
    if faithful_only or torch.is_grad_enabled() or torch.jit.is_tracing():
        return False
    return not torch.compiler.is_exporting()


# Groups the windows of an exported attention are split into (see grouped_attention).
EXPORT_ATTENTION_GROUPS = 16


def grouped_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    window_dim: int,
    attn_mask: torch.Tensor | None = None,
    scale: float | None = None,
    groups: int = EXPORT_ATTENTION_GROUPS,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` over a batch of windows, in groups when exported.

    Eager and compiled PyTorch run the fused kernel, which never holds more than a few score
    matrices. An exported graph decomposes attention into MatMul → Softmax → MatMul, so a
    runtime would materialise the scores of every window at once (3.4 GiB for ESC on a
    256×256 input). There the windows, along ``window_dim``, are split into ``groups``
    groups attended one after another, so only one group's scores exist at a time (each
    group adds its attention ops to the graph: networks with small windows and many
    attention layers use fewer). The group bounds stay symbolic in the window count (groups may
    be empty for small inputs); the outputs are equal.
    """
    if not torch.compiler.is_exporting():
        return F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, scale=scale)
    outputs = []
    for start, length in symbolic_splits(query.shape[window_dim], groups):
        q, k, v = (t.narrow(window_dim, start, length) for t in (query, key, value))
        outputs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale))
    return torch.cat(outputs, dim=window_dim)


def symbolic_splits(total: int, parts: int) -> list[tuple[int, int]]:
    """(start, length) of ``parts`` consecutive, near-equal pieces of ``total`` items.

    The bounds are expressions of ``total``, so in a traced graph they follow the input
    size (``tensor_split`` would bake the traced example's piece sizes into the graph);
    pieces are empty where ``total < parts``.
    """
    bounds = [total * part // parts for part in range(parts + 1)]
    return [(start, end - start) for start, end in itertools.pairwise(bounds)]


def to_inference_layout(module: nn.Module) -> nn.Module:
    """Give ``module`` (in place) the parameter layout its fast path prefers; return it.

    A network class that sets ``prefers_channels_last = True`` gets channels_last 4-D
    parameters, so every convolution runs in NHWC whatever layout its input has. Values,
    names and shapes of the parameters do not change (checkpoints save them contiguous).
    """
    if getattr(module, "prefers_channels_last", False):
        module.to(memory_format=torch.channels_last)
    return module


def bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """BatchNorm in eval mode as ``x * scale + shift`` (from its running statistics)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def fold_batchnorm_after(
    conv: nn.Conv2d, norm: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of the single conv equal to ``norm(conv(x))`` in eval mode."""
    scale, shift = bn_scale_shift(norm)
    weight = conv.weight * scale.view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return weight, bias


class FoldedCache:
    """Tensors derived from parameters (folded weights), rebuilt when those change.

    The key holds each source tensor's version counter, storage, device and dtype, so
    optimiser steps, ``load_state_dict`` and ``.to()`` all invalidate the cached value.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: object = None

    def get(self, sources: Sequence[torch.Tensor], build: Callable[[], object]) -> object:
        """The value of ``build()``, reused while ``sources`` are unchanged."""
        if torch.compiler.is_compiling() or any(t.is_inference() for t in sources):
            return build()  # a traced graph computes it; inference tensors have no version
        key = tuple((t._version, t.data_ptr(), t.device, t.dtype) for t in sources)
        if self._key != key:
            self._key, self._value = key, build()
        return self._value
