"""Building blocks shared by several networks.

Anything used by more than one network lives here, so architectures never copy each other.
"""

from __future__ import annotations

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


class PixelShuffleUpsampler(nn.Sequential):
    """conv3x3(dim → out·s²) followed by PixelShuffle(s): the common one-step upsampler.

    Its first conv is ``<name>.0`` in state dicts, matching the official networks.
    """

    def __init__(self, dim: int, scale: int, out_channels: int = 3, bias: bool = True) -> None:
        super().__init__(
            nn.Conv2d(dim, out_channels * scale * scale, 3, 1, 1, bias=bias),
            nn.PixelShuffle(scale),
        )
