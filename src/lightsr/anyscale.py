"""Tiled inference for arbitrary-scale models (:class:`lightsr.archs.lte.LTE`).

The LR image is cut into core tiles; each is encoded with a margin of context, and the
output pixels whose centres fall inside its core are rendered from it. Queries are computed
in the whole image's LR pixel units, so a tile gives exactly the pixels the whole image
would, as long as the margin covers the encoder's receptive field.
"""

from __future__ import annotations

import numpy as np
import torch

from lightsr.io import image_to_tensor, tensor_to_image
from lightsr.models import SRModel

DEFAULT_TILE = 128
DEFAULT_MARGIN = 16


def output_range(lr_start: int, lr_stop: int, lr_size: int, out_size: int) -> tuple[int, int]:
    """Output pixels ``[start, stop)`` whose centres lie in LR pixels ``[lr_start, lr_stop)``."""

    def first_at_or_after(edge: int) -> int:
        # Smallest i with (i + 0.5) * lr_size / out_size >= edge, in integers.
        return max(0, -((-(2 * edge * out_size - lr_size)) // (2 * lr_size)))

    stop = out_size if lr_stop >= lr_size else first_at_or_after(lr_stop)
    return first_at_or_after(lr_start), stop


@torch.inference_mode()
def upscale_array_to(
    model: SRModel,
    image: np.ndarray,
    size: tuple[int, int],
    scale: tuple[float, float] | None = None,
    tile: int = DEFAULT_TILE,
    margin: int = DEFAULT_MARGIN,
) -> np.ndarray:
    """Upscale ``image`` (H×W×3 float in [0, 1]) to ``size`` = (H', W') tile by tile;
    returns H'×W'×3 float32, unclamped."""
    lr_h, lr_w = image.shape[:2]
    out_h, out_w = size
    result = np.empty((out_h, out_w, 3), np.float32)
    module = model.module
    for top in range(0, lr_h, tile):
        for left in range(0, lr_w, tile):
            bottom, right = min(top + tile, lr_h), min(left + tile, lr_w)
            rows = output_range(top, bottom, lr_h, out_h)
            cols = output_range(left, right, lr_w, out_w)
            if rows[0] >= rows[1] or cols[0] >= cols[1]:
                continue
            r0, c0 = max(0, top - margin), max(0, left - margin)
            r1, c1 = min(lr_h, bottom + margin), min(lr_w, right + margin)
            crop = image_to_tensor(image[r0:r1, c0:c1])
            crop = crop.to(device=model.device, dtype=model.dtype)
            features = module.encode(crop, (r0, c0), (lr_h, lr_w))
            out = module.render(features, (out_h, out_w), rows, cols, scale)
            result[rows[0] : rows[1], cols[0] : cols[1]] = tensor_to_image(out[0].float())
    return result
