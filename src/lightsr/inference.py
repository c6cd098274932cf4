"""Inference engine: whole-image or tiled super-resolution with bounded memory.

An image is cut into a grid of tiles when its estimated working memory exceeds a budget
(or when a tile size is forced). Every tile owns a *core* region of the input and is fed to
the network with ``margin`` extra pixels of context on each side; only the core, widened by
a narrow blend band, contributes to the result. Neighbouring tiles meet in those bands,
where linear-ramp weights (summing to one) cross-fade them.

Why this is exact for convolution-only networks: an output pixel depends only on inputs
within the network's receptive-field radius. Every pixel that a tile contributes lies at
least ``margin - band`` input pixels away from any tile edge that is not also an image edge,
so when that distance covers the receptive field the tile computes exactly the whole-image
value, and a weighted average of equal values is that value. Tile origins sit on a
32-pixel grid (and on the network's ``pad_multiple``) so that the attention windows and
inner patches of DITN, ESC and EMT fall on the same grid as in a whole-image forward;
what differs is the far context, which shifts results by a fraction of a level on average
with no excess at tile boundaries (``benchmarks/tile_seams.py``). EMT's shifted windows
also wrap around the image, so near the image border a tile, which holds a different
opposite edge, can differ by more.

Tiles are written straight into a preallocated output array of the image's own dtype as
soon as their pixels are final; only the blend bands are held in float32, so peak memory is
the output plus one tile's working set.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import numpy as np
import psutil
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from lightsr.archs.blocks import to_inference_layout
from lightsr.deploy import deploy_module
from lightsr.errors import ImageError, UsageError
from lightsr.models import SRModel
from lightsr.options import pixel_max, resolve_device, resolve_precision
from lightsr.probes import remembered

ProgressCallback = Callable[[int, int], None]
# Every function here takes an ``SRModel`` or anything with the same ``spec``, ``scale``,
# ``variant``, ``device``, ``dtype``, ``module`` (for the memory model) and ``upscale``:
# the ONNX Runtime backend's :class:`lightsr.ort.OrtModel`.

# Default context (input pixels) around each tile. 64 covers FMEN-S's 34-conv receptive
# field even at the edge of the blend band (64 - 64 // 4 = 48 >= 34).
DEFAULT_TILE_OVERLAP = 64
# Images with a smaller side are edge-padded to it: with less context a network's output
# drifts (FMEN-S turns a lone 1x1 pixel's colour from (200, 60, 30) to (70, 44, 26)).
MIN_CONTEXT = 16
# Tile origins, tile sizes and margins are multiples of this: the largest window or patch
# grid among the networks (ESC 32x32, EMT 32x8/8x32, DITN 8x8).
TILE_ALIGN = 32
# Default CPU budget. FMEN-S throughput is the same on 256- and 512-pixel tiles (apart
# from the context margins), and 4096x4096 x4 (768 MiB of output) stays under 2 GiB of
# resident memory (measured 1.63 GiB peak with the CPU build of torch, 2 threads).
CPU_BUDGET_CAP = 384 << 20
# ...but tiles are allowed at least this side (input pixels), or the context margins would
# dominate the work of memory-hungry attention networks.
MIN_TILE_SIDE = 512
# Fraction of the free RAM (CPU) or free device memory (CUDA) a tile may use by default.
FREE_MEMORY_FRACTION = 0.5
# CPU peak memory of a forward pass ≈ the larger of these multiples of its largest tensor
# (operands of one op, residual and long skips and oneDNN scratch live at the same time;
# measured 6.5 for FMEN-S) and of its largest attention score matrix (scores, mask sum and
# softmax coexist; measured 1.9 for EMT, 2.4 for ESC-light).
ACTIVATION_FACTOR = 8.0
ATTENTION_FACTOR = 3.0
# Side of the square probe image used to estimate memory per pixel.
PROBE_SIZE = 256


def prepare_model(model: SRModel, device: str | torch.device, precision: str) -> SRModel:
    """Make ``model`` (in place) ready for inference on ``device`` in ``precision``; return it.

    The network is re-parameterised to its deploy form when it has one (exactly equal
    outputs), put in eval mode and given the parameter layout of its fast inference path
    (:func:`lightsr.archs.blocks.to_inference_layout`).
    """
    model.module = deploy_module(model.module)
    model.form = model.spec.form_of(model.module)
    model.to(device=resolve_device(device), dtype=resolve_precision(precision))
    to_inference_layout(model.module)
    return model


# ----------------------------------------------------------------------------- memory


class _TensorSizes(TorchFunctionMode):
    """Records the largest tensor torch functions return and the largest attention matrix.

    Fused attention (``F.scaled_dot_product_attention``) returns only its small output, but
    on the CPU it materialises the (queries × keys) score matrix internally.
    """

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0
        self.attention = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if func is F.scaled_dot_product_attention:
            query, key = args[0], args[1]
            scores = query.shape[:-1].numel() * key.shape[-2]
            self.attention = max(self.attention, scores * query.element_size())
        for item in result if isinstance(result, tuple) else (result,):
            if isinstance(item, torch.Tensor):
                self.largest = max(self.largest, item.numel() * item.element_size())
        return result


# Estimates per (module, device, dtype); memory does not depend on the weights' values.
_ESTIMATES: WeakKeyDictionary[nn.Module, dict[tuple[str, torch.dtype], float]] = WeakKeyDictionary()


def estimate_bytes_per_pixel(model: SRModel) -> float:
    """Working memory of one forward pass per input pixel, on the model's device and dtype.

    On CUDA the peak allocation of a probe forward is measured. On the CPU, where torch keeps
    no allocation statistics, a probe forward runs on the ``meta`` device (shapes only, no
    arithmetic) and the peak is modelled from its largest tensor and largest attention
    matrix, with factors calibrated on FMEN-S, EMT and ESC. Convolutions and windowed
    attention scale linearly with the pixel count, so the probe extrapolates to any size.
    The result is cached per module, device and dtype, and the CPU model across processes
    (:mod:`lightsr.probes`: a meta-device probe costs a ``torch._dynamo`` import).
    """
    device, dtype = model.device, model.dtype
    cache = _ESTIMATES.setdefault(model.module, {})
    key = (str(device), dtype)
    if key not in cache:
        side = _round_up(max(PROBE_SIZE, model.spec.min_size), TILE_ALIGN)
        if device.type == "cuda":
            cache[key] = _cuda_peak(model, side) / (side * side)
        else:
            cache[key] = remembered(
                model, "cpu_bytes_per_pixel", dtype, lambda: _modelled_peak(model, side) / side**2
            )
    return cache[key]


def _cuda_peak(model: SRModel, side: int) -> int:
    device, dtype = model.device, model.dtype
    probe = torch.rand(1, 3, side, side, device=device, dtype=dtype)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    model.upscale(probe)
    return torch.cuda.max_memory_allocated(device) - before


def _modelled_peak(model: SRModel, side: int) -> float:
    shadow = SRModel(copy.deepcopy(model.module).to("meta"), model.spec, model.scale)
    with _TensorSizes() as sizes:
        shadow.upscale(torch.empty(1, 3, side, side, device="meta"))
    return max(sizes.largest * ACTIVATION_FACTOR, sizes.attention * ATTENTION_FACTOR)


def default_memory_budget(device: torch.device, bytes_per_pixel: float) -> int:
    """Bytes one tile may use by default.

    CUDA: part of the free device memory. CPU: part of the free RAM, but no more than
    :data:`CPU_BUDGET_CAP` unless a :data:`MIN_TILE_SIDE` tile needs more.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * FREE_MEMORY_FRACTION)
    available = psutil.virtual_memory().available * FREE_MEMORY_FRACTION
    wanted = max(CPU_BUDGET_CAP, MIN_TILE_SIDE**2 * bytes_per_pixel)
    return int(min(available, wanted))


# ----------------------------------------------------------------------------- tile plan


@dataclass(frozen=True)
class Span:
    """One tile along one axis, in input pixels.

    Attributes:
        start, end: the core this tile owns.
        input_start, input_end: what the network sees (core plus clamped context).
        blend_before, blend_after: half-width of the cross-fade band centred on the start
            and end of the core; 0 at the image border or without overlap.
    """

    start: int
    end: int
    input_start: int
    input_end: int
    blend_before: int
    blend_after: int

    @property
    def keep_start(self) -> int:
        """First input pixel whose output this tile contributes."""
        return self.start - self.blend_before

    @property
    def keep_end(self) -> int:
        """One past the last input pixel whose output this tile contributes."""
        return self.end + self.blend_after


@dataclass(frozen=True)
class TilePlan:
    """The tile grid of one image: ``rows`` × ``cols``, visited row by row."""

    rows: tuple[Span, ...]
    cols: tuple[Span, ...]

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in range(len(self.rows)):
            for j in range(len(self.cols)):
                yield i, j


def split_axis(length: int, core: int, margin: int, min_size: int = 1) -> tuple[Span, ...]:
    """Cut ``[0, length)`` into cores of ``core`` pixels (the last one shorter).

    ``margin`` pixels of context are added on both sides (clamped to the image) and the
    blend bands are ``margin // 4`` wide on each side of a core boundary, capped so that the
    two bands of a core never overlap. A too-short last core (narrower than its band, or
    leaving its tile below ``min_size``) is merged into the previous one.
    """
    if core >= length:
        return (Span(0, length, 0, length, 0, 0),)
    band = min(margin // 4, core // 2)
    bounds = [*range(0, length, core), length]
    while len(bounds) > 2:
        last = bounds[-1] - bounds[-2]
        if last >= band and last + margin >= min_size:
            break
        del bounds[-2]
    spans = []
    for k in range(len(bounds) - 1):
        start, end = bounds[k], bounds[k + 1]
        spans.append(
            Span(
                start=start,
                end=end,
                input_start=max(0, start - margin),
                input_end=min(length, end + margin),
                blend_before=band if k > 0 else 0,
                blend_after=band if k < len(bounds) - 2 else 0,
            )
        )
    return tuple(spans)


def plan_tiles(
    height: int,
    width: int,
    model: SRModel,
    tile: int | None = None,
    overlap: int = DEFAULT_TILE_OVERLAP,
    max_memory: int | None = None,
) -> TilePlan:
    """Decide how to tile a ``height`` × ``width`` input for ``model``.

    Args:
        height, width: input size in pixels.
        model: the network; its ``spec.pad_multiple`` and ``spec.min_size`` are respected.
        tile: force square cores of this many input pixels (rounded up to the tile grid);
            ``None`` tiles only when the whole image would exceed ``max_memory``.
        overlap: context pixels around each tile, rounded up to the tile grid.
        max_memory: bytes one forward pass may use; ``None`` uses
            :func:`default_memory_budget`. Ignored when ``tile`` is given.
    """
    if tile is not None and tile < 1:
        raise UsageError(f"tile size must be positive, got {tile}")
    if overlap < 0:
        raise UsageError(f"tile overlap must be >= 0, got {overlap}")
    align = math.lcm(TILE_ALIGN, model.spec.pad_multiple)
    margin = _round_up(overlap, align)
    smallest_core = _round_up(model.spec.min_size, align)
    if tile is None:
        device = model.device
        bytes_per_pixel = estimate_bytes_per_pixel(model)
        budget = (
            default_memory_budget(device, bytes_per_pixel) if max_memory is None else max_memory
        )
        if height * width * bytes_per_pixel <= budget:
            return TilePlan(split_axis(height, height, 0), split_axis(width, width, 0))
        side = math.sqrt(budget / bytes_per_pixel)
        core = int((side - 2 * margin) // align) * align
    else:
        core = _round_up(tile, align)
    core = max(core, smallest_core)
    min_size = model.spec.min_size
    return TilePlan(
        split_axis(height, core, margin, min_size), split_axis(width, core, margin, min_size)
    )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


# ----------------------------------------------------------------------------- assembly


def _ramp_weights(span: Span, scale: int) -> np.ndarray:
    """1-D weights over the output pixels ``span`` contributes: linear ramps in its bands.

    The rising ramp of one tile and the falling ramp of its neighbour sum to one.
    """
    weights = np.ones((span.keep_end - span.keep_start) * scale, dtype=np.float32)
    if span.blend_before:
        n = 2 * span.blend_before * scale
        weights[:n] = (np.arange(n, dtype=np.float32) + 0.5) / n
    if span.blend_after:
        n = 2 * span.blend_after * scale
        weights[-n:] = 1.0 - (np.arange(n, dtype=np.float32) + 0.5) / n
    return weights


class _Assembler:
    """Collects weighted tile outputs in raster order and writes final pixels to ``out``.

    Pixels covered by one tile are written at once. The horizontal band below a tile row
    is accumulated in float32 until the next row has added its share; the vertical band
    on the right of a tile waits for the next tile in the row.
    """

    def __init__(self, out: np.ndarray, band_rows: int) -> None:
        self.out = out
        band_shape = (band_rows, out.shape[1], out.shape[2])
        self.band_above = np.zeros(band_shape, dtype=np.float32)
        self.band_below = np.zeros(band_shape, dtype=np.float32)
        self.band_left: np.ndarray | None = None

    def add(self, values: np.ndarray, y: int, x: int, bands: tuple[int, int, int, int]) -> None:
        """Add a weighted tile whose top-left output pixel is (``y``, ``x``).

        ``bands`` = output-pixel widths of its (top, bottom, left, right) blend bands.
        """
        top, bottom, left, right = bands
        height, width = values.shape[:2]
        columns = slice(x, x + width)
        if top:
            self.band_above[:, columns] += values[:top]
        if bottom:
            self.band_below[:, columns] += values[height - bottom :]
        body = values[top : height - bottom]
        if left:
            body[:, :left] += self.band_left
        final_width = width - right
        self._write(body[:, :final_width], y + top, x)
        self.band_left = body[:, final_width:].copy() if right else None

    def end_row(self, band_y: int | None) -> None:
        """Finish a tile row; its top band (starting at output row ``band_y``) is now final."""
        if band_y is not None:
            self._write(self.band_above, band_y, 0)
        self.band_above, self.band_below = self.band_below, self.band_above
        self.band_below.fill(0.0)

    def _write(self, values: np.ndarray, y: int, x: int) -> None:
        height, width = values.shape[:2]
        _store(self.out[y : y + height, x : x + width], values)


def _store(target: np.ndarray, values: np.ndarray) -> None:
    """Write float [0, 1] ``values`` into ``target``, clamped and rounded to its dtype."""
    clipped = np.clip(values, 0.0, 1.0)
    max_value = pixel_max(target.dtype)
    if max_value is None:
        target[...] = clipped
    else:
        target[...] = np.rint(clipped * max_value)


# ----------------------------------------------------------------------------- forward


def _forward(model: SRModel, patches: np.ndarray) -> np.ndarray:
    """Run the network on (N, h, w, C) patches (C = 1 or 3); return float32 (N, sh, sw, C)."""
    device, dtype = model.device, model.dtype
    tensor = torch.from_numpy(np.ascontiguousarray(patches)).to(device)
    max_value = pixel_max(patches.dtype)
    tensor = tensor.to(dtype) if max_value is None else tensor.to(dtype) / max_value
    tensor = tensor.permute(0, 3, 1, 2).expand(-1, 3, -1, -1)
    output = model.upscale(tensor)
    if patches.shape[3] == 1:
        # Gray in, gray out: the three channels are near-equal; their mean is exact when equal.
        output = output.float().mean(dim=1, keepdim=True)
    return output.permute(0, 2, 3, 1).to(device="cpu", dtype=torch.float32).numpy()


def _forward_tile(model: SRModel, patch: np.ndarray) -> np.ndarray:
    """Run the network on an (h, w, C) patch (C = 1 or 3); return float32 (sh, sw, C)."""
    return _forward(model, patch[None])[0]


def check_pixels(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as (H, W, C) with C in {1, 3}; reject what no network can take."""
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ImageError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    if pixel_max(image.dtype) is None and image.dtype != np.float32:
        raise ImageError(f"expected uint8, uint16 or float32 pixels, got {image.dtype}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ImageError(f"image has zero size ({width}x{height})")
    return image


def _upscale_padded(model: SRModel, pixels: np.ndarray, *options: Any) -> np.ndarray:
    """Upscale (H, W, C) ``pixels`` edge-padded on all sides to the smallest side the
    network takes meaningfully (:data:`MIN_CONTEXT` or its ``min_size``), then crop: the
    image sits in the middle, away from the zero padding of the network's convolutions."""
    smallest = max(model.spec.min_size, MIN_CONTEXT)
    height, width = pixels.shape[:2]
    top, left = max(smallest - height, 0) // 2, max(smallest - width, 0) // 2
    bottom, right = max(smallest - height - top, 0), max(smallest - width - left, 0)
    padded = np.pad(pixels, ((top, bottom), (left, right), (0, 0)), mode="edge")
    out = upscale_array(model, padded, *options)
    scale = model.scale
    return out[top * scale : (top + height) * scale, left * scale : (left + width) * scale]


def upscale_array(
    model: SRModel,
    image: np.ndarray,
    tile: int | None = None,
    overlap: int = DEFAULT_TILE_OVERLAP,
    max_memory: int | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Super-resolve an RGB or grayscale array, tiling when needed.

    Args:
        model: the network, already on its device and precision (see :func:`prepare_model`).
        image: (H, W) gray or (H, W, 3) RGB; uint8, uint16 or float32 in [0, 1].
        tile: force cores of this many input pixels (see :func:`plan_tiles`).
        overlap: context pixels around each tile.
        max_memory: byte budget of one forward pass; ``None`` for the default.
        progress: called as ``progress(done, total)`` after every tile.

    Returns:
        (sH, sW) or (sH, sW, 3) array of the input's dtype, clamped to its range.

    Raises:
        ImageError: wrong shape or dtype, or zero size.

    Images with a side under :data:`MIN_CONTEXT` pixels (or the network's ``min_size``) are
    edge-padded to it and the output cropped back: every network takes them, and gets
    enough context to keep their colours.
    """
    gray = image.ndim == 2
    pixels = check_pixels(image)
    if min(pixels.shape[:2]) < max(model.spec.min_size, MIN_CONTEXT):
        out = _upscale_padded(model, pixels, tile, overlap, max_memory, progress)
        return out[..., 0] if gray else out
    height, width, channels = pixels.shape
    scale = model.scale
    plan = plan_tiles(height, width, model, tile, overlap, max_memory)
    out = np.empty((height * scale, width * scale, channels), dtype=pixels.dtype)
    band_rows = 2 * max((span.blend_after for span in plan.rows), default=0) * scale
    assembler = _Assembler(out, band_rows)
    row_weights = [_ramp_weights(span, scale) for span in plan.rows]
    col_weights = [_ramp_weights(span, scale) for span in plan.cols]
    for done, (i, j) in enumerate(plan, start=1):
        row, col = plan.rows[i], plan.cols[j]
        patch = pixels[row.input_start : row.input_end, col.input_start : col.input_end]
        output = _forward_tile(model, patch)
        kept = output[
            (row.keep_start - row.input_start) * scale : (row.keep_end - row.input_start) * scale,
            (col.keep_start - col.input_start) * scale : (col.keep_end - col.input_start) * scale,
        ]
        if plan.count > 1:
            kept = kept * row_weights[i][:, None, None] * col_weights[j][None, :, None]
        bands = (
            2 * scale * row.blend_before,
            2 * scale * row.blend_after,
            2 * scale * col.blend_before,
            2 * scale * col.blend_after,
        )
        assembler.add(kept, row.keep_start * scale, col.keep_start * scale, bands)
        if j == len(plan.cols) - 1:
            assembler.end_row(row.keep_start * scale if row.blend_before else None)
        if progress is not None:
            progress(done, plan.count)
    return out[..., 0] if gray else out


def upscale_batch(
    model: SRModel,
    images: Sequence[np.ndarray],
    tile: int | None = None,
    overlap: int = DEFAULT_TILE_OVERLAP,
    max_memory: int | None = None,
) -> list[np.ndarray]:
    """Super-resolve same-sized images (video frames), all in one forward pass when they fit.

    The images are stacked into one batch when :func:`plan_tiles` would run all of them
    as one untiled picture (their heights added) within the memory budget; otherwise each
    goes through :func:`upscale_array`. Either way the results are those of
    :func:`upscale_array`, up to the floating-point order of batched kernels.

    Args:
        model: the network, already on its device and precision.
        images: (H, W, 3) RGB arrays of one shape and dtype (uint8, uint16 or float32).
        tile, overlap, max_memory: as in :func:`upscale_array`.

    Returns:
        One (sH, sW, 3) array per image, of the input's dtype.
    """
    first = check_pixels(images[0])
    height, width = first.shape[:2]
    if len(images) > 1 and tile is None:
        plan = plan_tiles(height * len(images), width, model, None, overlap, max_memory)
        if plan.count == 1:
            stacked = np.stack([check_pixels(image) for image in images])
            outputs = []
            for values in _forward(model, stacked):
                out = np.empty(values.shape, dtype=stacked.dtype)
                _store(out, values)
                outputs.append(out)
            return outputs
    return [upscale_array(model, image, tile, overlap, max_memory) for image in images]


def upscale_tensor(
    model: SRModel,
    x: torch.Tensor,
    tile: int | None = None,
    overlap: int = DEFAULT_TILE_OVERLAP,
    max_memory: int | None = None,
    progress: ProgressCallback | None = None,
) -> torch.Tensor:
    """Super-resolve a float RGB tensor, tiling when needed.

    Args:
        model: the network, already on its device and precision.
        x: (1, 3, H, W) float in [0, 1], on any device.
        tile, overlap, max_memory, progress: as in :func:`upscale_array`.

    Returns:
        (1, 3, sH, sW) float32 tensor on the CPU, clamped to [0, 1].
    """
    if x.dim() != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise ImageError(f"expected a (1, 3, H, W) tensor, got shape {tuple(x.shape)}")
    image = x[0].permute(1, 2, 0).to(device="cpu", dtype=torch.float32).numpy()
    out = upscale_array(model, image, tile, overlap, max_memory, progress)
    return torch.from_numpy(out).permute(2, 0, 1).unsqueeze(0)
