"""A tiny stand-in network for the training tests, registered as ``train_test_tiny``.

It has BatchNorm and a ``reparameterize()`` that folds it, like FMEN's training form, but
trains in milliseconds. ``run_cli.py`` imports it so that subprocesses see it too.
"""

from __future__ import annotations

import torch
from torch import nn

from lightsr.archs.registry import ArchSpec, arch_specs, register_arch

TINY = "train_test_tiny"


class TinyNet(nn.Module):
    """Nearest upscaling plus conv → BN → LReLU → conv → PixelShuffle, on [0, 255] pixels.

    ``reparameterize()`` folds the BatchNorm into the first conv, in place.
    """

    def __init__(self, scale: int = 2, feats: int = 8, deploy: bool = False) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, feats, 3, padding=1)
        self.bn = nn.Identity() if deploy else nn.BatchNorm2d(feats)
        self.tail = nn.Sequential(
            nn.Conv2d(feats, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.tail(nn.functional.leaky_relu(self.bn(self.head(x)), 0.1))
        return nn.functional.interpolate(x, scale_factor=self.scale) + residual

    @torch.no_grad()
    def reparameterize(self) -> None:
        if isinstance(self.bn, nn.BatchNorm2d):
            std = (self.bn.running_var + self.bn.eps).sqrt()
            gain = self.bn.weight / std
            self.head.weight.mul_(gain.view(-1, 1, 1, 1))
            self.head.bias.copy_((self.head.bias - self.bn.running_mean) * gain + self.bn.bias)
            self.bn = nn.Identity()


if TINY not in {spec.name for spec in arch_specs()}:
    register_arch(
        ArchSpec(name=TINY, family="tiny", builder=TinyNet, scales=(2, 3, 4), input_range=255.0)
    )
