"""A tiny convolution-only SR network for engine tests (known receptive field, fast)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lightsr.archs.registry import ArchSpec
from lightsr.models import SRModel

TINY_DEPTH = 6  # 3x3 convs: receptive-field radius in input pixels


class TinySR(nn.Module):
    """Nearest upscaling plus a small learned correction: outputs stay near [0, 1]."""

    def __init__(self, scale: int = 4, width: int = 8, depth: int = TINY_DEPTH) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1)]
        for _ in range(depth - 2):
            layers += [nn.LeakyReLU(0.1), nn.Conv2d(width, width, 3, padding=1)]
        layers += [nn.LeakyReLU(0.1), nn.Conv2d(width, 3 * scale * scale, 3, padding=1)]
        self.body = nn.Sequential(*layers)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return base + 0.2 * torch.tanh(self.shuffle(self.body(x)))


def tiny_model(scale: int = 4, pad_multiple: int = 1, min_size: int = 1, seed: int = 0) -> SRModel:
    """A random-init :class:`TinySR` wrapped as an SRModel (not registered)."""
    torch.manual_seed(seed)
    spec = ArchSpec(
        name="tiny",
        family="tiny",
        builder=TinySR,
        scales=(scale,),
        pad_multiple=pad_multiple,
        min_size=min_size,
    )
    return SRModel(module=TinySR(scale).eval(), spec=spec, scale=scale, source="test")
