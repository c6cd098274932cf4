"""Starting a network from another one's weights: ``model.init_from`` and the teacher.

``init_from`` copies every tensor whose key and shape both match, so the body of a ×4
checkpoint can start a ×2 network. A one-step sub-pixel upsampler, whose conv differs in
shape, is resampled from the other scale's rather than left random. What was loaded,
resampled and skipped is reported, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from lightsr.archs.blocks import PixelShuffleUpsampler
from lightsr.errors import CheckpointError
from lightsr.models import SRModel, load_model


@dataclass
class InitReport:
    """Outcome of :func:`load_matching`.

    Attributes:
        loaded: keys of the network filled from the checkpoint.
        resampled: keys of sub-pixel upsampler convs filled from another scale's
            (:meth:`~lightsr.archs.blocks.PixelShuffleUpsampler.load_resampled_`).
        mismatched: keys present in both but with other shapes (left as initialised).
        missing: keys of the network absent from the checkpoint (left as initialised).
        unused: keys of the checkpoint that the network does not have.
    """

    loaded: list[str] = field(default_factory=list)
    resampled: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self, source: str) -> str:
        """One line for the training log: counts, then the skipped keys by name."""
        parts = [f"init_from {source}: loaded {len(self.loaded)} tensors"]
        for label, keys in (
            ("resampled from another scale", self.resampled),
            ("shape differs", self.mismatched),
            ("not in checkpoint", self.missing),
            ("unused", self.unused),
        ):
            if keys:
                parts.append(f"{label}: {', '.join(keys)}")
        return "; ".join(parts)


@torch.no_grad()
def load_matching(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> InitReport:
    """Copy into ``module`` every tensor of ``state_dict`` whose key and shape match, and
    resample sub-pixel upsampler convs of another scale.

    Raises:
        CheckpointError: nothing matches (almost certainly the wrong file or network).
    """
    report = InitReport()
    own = module.state_dict()
    for key, target in own.items():
        source = state_dict.get(key)
        if source is None:
            report.missing.append(key)
        elif source.shape != target.shape:
            report.mismatched.append(key)
        else:
            target.copy_(source)
            report.loaded.append(key)
    report.unused = [key for key in state_dict if key not in own]
    _resample_upsamplers(module, state_dict, report)
    if not report.loaded:
        raise CheckpointError("no tensor of the checkpoint matches the network (key and shape)")
    return report


def _resample_upsamplers(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], report: InitReport
) -> None:
    """Fill one-step sub-pixel upsamplers whose conv only differs in scale."""
    for name, upsampler in module.named_modules():
        if not isinstance(upsampler, PixelShuffleUpsampler):
            continue
        weight_key, bias_key = f"{name}.0.weight", f"{name}.0.bias"
        if weight_key not in report.mismatched:
            continue
        try:
            upsampler.load_resampled_(state_dict[weight_key], state_dict.get(bias_key))
        except ValueError:
            continue  # not a sub-pixel conv of the same colours and inputs: left random
        for key in (weight_key, bias_key):
            if key in report.mismatched:
                report.mismatched.remove(key)
                report.resampled.append(key)


def load_reference(checkpoint: str, device: torch.device) -> SRModel:
    """A checkpoint (file or published name) as a frozen model in eval mode on ``device``.

    Going through :func:`lightsr.load_model` detects the network and renames official keys
    to this package's, so ``init_from`` and the teacher accept every format it reads.
    """
    model = load_model(checkpoint).to(device)
    model.module.eval().requires_grad_(False)
    return model
