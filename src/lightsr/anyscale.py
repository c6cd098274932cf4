"""Tiled inference for arbitrary-scale models (:class:`lightsr.archs.lte.LTE`).

The LR image is cut into core tiles; each is encoded with ``margin`` pixels of context, and
the output pixels whose centres fall inside its core are rendered from it, a few thousand
queries at a time. Queries are computed in the whole image's LR pixel units, so a tile gives
exactly the pixels the whole image would, as long as the margin covers the encoder's
receptive field plus the head's reach (its 3×3 ``coef``/``freq`` convs and the neighbour
one LR pixel away). No blending is needed: every output pixel comes from one tile.

Margins (:data:`CONTEXT`), from the encoders' receptive fields and measured as tiled-vs-whole
differences with forced 32-pixel tiles (``tests/test_anyscale.py`` keeps them):

* ``fmen_s_lte``: ``coef``/``freq`` at an LR pixel depend on inputs up to 34 pixels away
  (31 3×3 convs of the trunk, head and long skip, plus the 3×3 ``coef`` conv: measured with
  autograd), and the head reads one neighbour beyond the core: 35. 40 is used; what remains
  is float rounding of convolutions run at other sizes (max 2.3e-5 in [0, 1] units, as
  much as at 56; 32 gives 3.3e-5).
* ``esc_lte``: ESC's window attention makes every feature depend on its whole 32×32 window
  and five blocks of 13×13 convolutions reach further; a margin of 32 leaves 5e-4 (a
  tenth of a uint8 level), 64 leaves 4.6e-6 and 96 1.2e-7: 64 is used. Its margins are
  multiples of 32 (:data:`WINDOWED`), so that the attention windows of every tile fall
  where they do in a whole-image forward.

Memory is bounded at any output size: the tile's encoder working set and features grow
with its LR pixels, the head's with the queries of one call (``chunk``), and rendered
pixels go straight into an output array of the input's dtype (uint8 output: 3 bytes per
pixel, as in the fixed-scale tiler).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import numpy as np
import torch

from lightsr.errors import UsageError
from lightsr.inference import (
    ACTIVATION_FACTOR,
    ATTENTION_FACTOR,
    _TensorSizes,
    check_pixels,
    default_memory_budget,
)
from lightsr.models import SRModel
from lightsr.options import MAX_SCALE, MIN_SCALE, pixel_max
from lightsr.probes import remembered

ProgressCallback = Callable[[int, int], None]

# Context (LR pixels) each tile is encoded with, by variant; others get DEFAULT_MARGIN.
CONTEXT = {"fmen_s_lte": 40, "esc_lte": 64}
DEFAULT_MARGIN = 64
# Tile cores are multiples of ALIGN; so are the margins of the variants in WINDOWED, whose
# attention windows must fall on the grid of the whole image.
ALIGN = 32
WINDOWED = ("esc_lte",)
# Images with a smaller side are edge-padded to it for encoding (as in the fixed tiler).
MIN_CONTEXT = 16
# Queries per head call: at most MAX_CHUNK, at least MIN_CHUNK, and no more than a
# quarter of the memory budget (HEAD_SHARE).
MAX_CHUNK = 16384
MIN_CHUNK = 1024
HEAD_SHARE = 0.25
# Bytes one query of the head holds at its peak, per hidden channel and per byte of the
# dtype: 4 neighbours × (gathered coef and freq, Fourier features, their product, MLP
# activations) ≈ 20 hidden-wide vectors (measured 15.8 KiB per query at hidden 256, fp32).
QUERY_VECTORS = 20
# Side of the probe image for the encoder's memory estimate.
PROBE_SIZE = 128


def margin_for(model: SRModel) -> int:
    """Default context (LR pixels) around each tile for ``model`` (:data:`CONTEXT`)."""
    return CONTEXT.get(model.variant, DEFAULT_MARGIN)


def output_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(H', W') of an ``height`` × ``width`` image upscaled by ``scale``: rounded as the
    official LTE test does (Python ``round``), at least one pixel."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def check_scale(scale: float) -> float:
    """``scale`` as a float, if arbitrary-scale models take it (1 ≤ scale ≤ 8).

    Raises:
        UsageError: out of range or not a number.
    """
    if not (isinstance(scale, int | float) and math.isfinite(scale)):
        raise UsageError(f"scale must be a number, got {scale!r}")
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise UsageError(f"scale must be between {MIN_SCALE:g} and {MAX_SCALE:g}, got {scale:g}")
    return float(scale)


def output_range(lr_start: int, lr_stop: int, lr_size: int, out_size: int) -> tuple[int, int]:
    """Output pixels ``[start, stop)`` whose centres lie in LR pixels ``[lr_start, lr_stop)``."""

    def first_at_or_after(edge: int) -> int:
        # Smallest i with (i + 0.5) * lr_size / out_size >= edge, in integers.
        return max(0, -((-(2 * edge * out_size - lr_size)) // (2 * lr_size)))

    stop = out_size if lr_stop >= lr_size else first_at_or_after(lr_stop)
    return first_at_or_after(lr_start), stop


# ----------------------------------------------------------------------------- memory

# Estimates per (module, device, dtype).
_ENCODER_BYTES: WeakKeyDictionary[torch.nn.Module, dict[tuple[str, torch.dtype], float]] = (
    WeakKeyDictionary()
)


def encoder_bytes_per_pixel(model: SRModel) -> float:
    """Memory of encoding one LR pixel: the encoder's working set (modelled from a probe on
    the ``meta`` device, as :func:`lightsr.inference.estimate_bytes_per_pixel` does) plus
    the ``coef`` and ``freq`` features and the image kept for rendering; remembered across
    processes (:mod:`lightsr.probes`)."""
    dtype = model.dtype
    cache = _ENCODER_BYTES.setdefault(model.module, {})
    key = (str(model.device), dtype)
    if key not in cache:
        cache[key] = remembered(model, "encoder_bytes_per_pixel", dtype, lambda: _probe(model))
    return cache[key]


def _probe(model: SRModel) -> float:
    module, dtype = model.module, model.dtype
    side = max(PROBE_SIZE, model.spec.min_size)
    shadow = copy.deepcopy(module).to(device="meta")
    with _TensorSizes() as sizes:
        shadow.encoder.features(torch.empty(1, 3, side, side, device="meta", dtype=dtype))
    working = max(sizes.largest * ACTIVATION_FACTOR, sizes.attention * ATTENTION_FACTOR)
    kept = (2 * module.coef.out_channels + 3) * torch.finfo(dtype).bits // 8
    return working / (side * side) + kept


def query_bytes(model: SRModel) -> int:
    """Peak memory of one query of the head (see :data:`QUERY_VECTORS`)."""
    itemsize = torch.finfo(model.dtype).bits // 8
    return QUERY_VECTORS * model.module.coef.out_channels * max(itemsize, 4)


@dataclass(frozen=True)
class AnyScalePlan:
    """How an image is cut: LR cores along each axis, the context margin, head chunk."""

    rows: tuple[tuple[int, int], ...]
    cols: tuple[tuple[int, int], ...]
    margin: int
    chunk: int

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)


def _split(length: int, core: int, smallest: int) -> tuple[tuple[int, int], ...]:
    """Cores of ``core`` pixels along ``[0, length)``; a last one under ``smallest`` pixels
    (too small for the network to encode without context) joins the previous one."""
    bounds = [*range(0, length, core), length]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < smallest:
        del bounds[-2]
    return tuple(itertools.pairwise(bounds))


def plan_anyscale(
    height: int,
    width: int,
    model: SRModel,
    tile: int | None = None,
    margin: int | None = None,
    max_memory: int | None = None,
) -> AnyScalePlan:
    """Decide how to tile a ``height`` × ``width`` LR input for an arbitrary-scale ``model``.

    Args:
        tile: force square LR cores of this many pixels (rounded up to :data:`ALIGN`);
            ``None`` tiles only when the whole image would exceed the budget.
        margin: context around each core; ``None`` for :func:`margin_for`. At least 1 (the
            head reads one pixel beyond a core); rounded up to :data:`ALIGN` for
            :data:`WINDOWED` encoders.
        max_memory: bytes one tile (encoder and head together) may use; ``None`` uses
            :func:`lightsr.inference.default_memory_budget` (CPU: at most 384 MiB).
    """
    if tile is not None and tile < 1:
        raise UsageError(f"tile size must be positive, got {tile}")
    margin = margin_for(model) if margin is None else margin
    if margin < 0:
        raise UsageError(f"tile overlap must be >= 0, got {margin}")
    margin = max(margin, 1)  # the head reads one LR pixel beyond a core
    if model.variant in WINDOWED:
        margin = -(-margin // ALIGN) * ALIGN
    per_query = query_bytes(model)
    budget = default_memory_budget(model.device, 0.0) if max_memory is None else max_memory
    chunk = int(min(MAX_CHUNK, max(MIN_CHUNK, budget * HEAD_SHARE // per_query)))
    if tile is None:
        per_pixel = encoder_bytes_per_pixel(model)
        available = max(budget - chunk * per_query, 0)
        if height * width * per_pixel <= available:
            return AnyScalePlan(((0, height),), ((0, width),), 0, chunk)
        side = math.sqrt(available / per_pixel)
        core = max(ALIGN, int((side - 2 * margin) // ALIGN) * ALIGN)
    else:
        core = -(-tile // ALIGN) * ALIGN
    smallest = model.spec.min_size
    return AnyScalePlan(
        _split(height, core, smallest), _split(width, core, smallest), margin, chunk
    )


# ----------------------------------------------------------------------------- upscale


def _to_tensor(pixels: np.ndarray, model: SRModel) -> torch.Tensor:
    """(h, w, C) pixels → (1, 3, h, w) tensor in [0, 1] on the model's device and dtype."""
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).to(model.device)
    max_value = pixel_max(pixels.dtype)
    tensor = tensor.to(model.dtype) if max_value is None else tensor.to(model.dtype) / max_value
    return tensor.permute(2, 0, 1).unsqueeze(0).expand(-1, 3, -1, -1)


def _store(target: np.ndarray, values: torch.Tensor) -> None:
    """Write a (1, 3, r, c) float tile into ``target`` (r, c, C), clamped and rounded to its
    dtype; gray targets take the mean of the three channels."""
    values = values[0].float()
    if target.shape[2] == 1:
        values = values.mean(0, keepdim=True)
    array = values.clamp_(0.0, 1.0).permute(1, 2, 0).cpu().numpy()
    max_value = pixel_max(target.dtype)
    target[...] = array if max_value is None else np.rint(array * max_value)


@torch.inference_mode()
def upscale_array_to(
    model: SRModel,
    image: np.ndarray,
    size: tuple[int, int],
    scale: tuple[float, float] | None = None,
    tile: int | None = None,
    margin: int | None = None,
    max_memory: int | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Upscale ``image`` to ``size`` = (H', W') with an arbitrary-scale ``model``, tile by tile.

    Args:
        model: an arbitrary-scale network, already on its device and precision
            (:func:`lightsr.inference.prepare_model`).
        image: (H, W) gray or (H, W, 3) RGB; uint8, uint16 or float32 in [0, 1].
        size: output (height, width), any positive integers.
        scale: nominal factor per axis (sets the head's cell beyond ×4); default H'/H, W'/W.
        tile, margin, max_memory: see :func:`plan_anyscale`.
        progress: called as ``progress(done, total)`` after every tile.

    Returns:
        (H', W') or (H', W', 3) array of the input's dtype, clamped to its range.

    Images with a side under :data:`MIN_CONTEXT` pixels (or the network's ``min_size``) are
    encoded edge-padded to it; the queries stay in the unpadded image.
    """
    if not model.arbitrary_scale:
        raise UsageError(f"{model.variant} upscales by x{model.scale} only")
    out_h, out_w = (int(side) for side in size)
    if out_h < 1 or out_w < 1:
        raise UsageError(f"output size must be positive, got {out_w}x{out_h} (width x height)")
    gray = image.ndim == 2
    pixels = check_pixels(image)
    lr_h, lr_w, channels = pixels.shape
    smallest = max(model.spec.min_size, MIN_CONTEXT)
    pad_top, pad_left = max(smallest - lr_h, 0) // 2, max(smallest - lr_w, 0) // 2
    pad_bottom = max(smallest - lr_h - pad_top, 0)
    pad_right = max(smallest - lr_w - pad_left, 0)
    if pad_top or pad_bottom or pad_left or pad_right:
        pad = ((pad_top, pad_bottom), (pad_left, pad_right), (0, 0))
        pixels = np.pad(pixels, pad, mode="edge")
    plan = plan_anyscale(lr_h, lr_w, model, tile, margin, max_memory)
    out = np.empty((out_h, out_w, channels), dtype=pixels.dtype)
    module = model.module
    done = 0
    for top, bottom in plan.rows:
        rows = output_range(top, bottom, lr_h, out_h)
        r0 = max(0, top - plan.margin) if top > 0 else -pad_top
        r1 = min(lr_h, bottom + plan.margin) if bottom < lr_h else lr_h + pad_bottom
        for left, right in plan.cols:
            done += 1
            cols = output_range(left, right, lr_w, out_w)
            if rows[0] < rows[1] and cols[0] < cols[1]:
                c0 = max(0, left - plan.margin) if left > 0 else -pad_left
                c1 = min(lr_w, right + plan.margin) if right < lr_w else lr_w + pad_right
                crop = pixels[r0 + pad_top : r1 + pad_top, c0 + pad_left : c1 + pad_left]
                features = module.encode(_to_tensor(crop, model), (r0, c0), (lr_h, lr_w))
                # Rows of output rendered per head call: about `chunk` queries each.
                step = max(1, plan.chunk // (cols[1] - cols[0]))
                for start in range(rows[0], rows[1], step):
                    stop = min(start + step, rows[1])
                    values = module.render(
                        features, (out_h, out_w), (start, stop), cols, scale, plan.chunk
                    )
                    _store(out[start:stop, cols[0] : cols[1]], values)
                del features
            if progress is not None:
                progress(done, plan.count)
    return out[..., 0] if gray else out
