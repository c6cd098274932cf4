"""VGG19 perceptual loss, with the VGG19 feature stack built here (no torchvision needed).

The loss compares VGG19 feature maps of the output and of the target, taken *before* the
ReLU of the named convolutions, on images normalised with the ImageNet mean and standard
deviation, with an L1 criterion: the ``PerceptualLoss`` of the Real-ESRGAN recipe.

The weights are read from a file in torchvision's format (keys ``features.<N>.weight`` and
``features.<N>.bias``; ``.pth`` or ``.safetensors``), e.g. torchvision's ``vgg19`` ImageNet
weights saved with ``torch.save(model.state_dict(), path)``. A loss with random VGG weights is
not a meaningful perceptual loss: :func:`save_random_vgg19` exists for smoke tests only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from lightsr.checkpoint import read_state_dict, save_safetensors
from lightsr.errors import CheckpointError, ConfigError

# Channels of the VGG19 convolutions per block; every block ends with a 2x2 max pool.
_VGG19_BLOCKS = ((64, 64), (128, 128), (256, 256, 256, 256), (512,) * 4, (512,) * 4)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv_layout() -> dict[str, tuple[int, int, int]]:
    """``{"conv1_1": (index in features, in channels, out channels), ...}`` as torchvision
    numbers the layers of ``vgg19().features`` (conv, ReLU, ..., max pool per block)."""
    layout, index, channels = {}, 0, 3
    for block, widths in enumerate(_VGG19_BLOCKS, start=1):
        for position, width in enumerate(widths, start=1):
            layout[f"conv{block}_{position}"] = (index, channels, width)
            index, channels = index + 2, width  # the conv and its ReLU
        index += 1  # the max pool
    return layout


VGG19_CONVS = _conv_layout()


def vgg19_features(until: str = "conv5_4") -> nn.Sequential:
    """VGG19's ``features`` stack, torchvision's layer numbering, up to conv ``until``.

    The ReLUs are not in place, so that the conv outputs can be read before them.
    """
    last = VGG19_CONVS[until][0]
    layers: list[nn.Module] = []
    for index, in_ch, out_ch in VGG19_CONVS.values():
        if index > last:
            break
        while len(layers) < index:  # the max pool that ends the previous block
            layers.append(nn.MaxPool2d(2, 2))
        layers += [nn.Conv2d(in_ch, out_ch, 3, 1, 1), nn.ReLU()]
    return nn.Sequential(*layers[: last + 1])


def save_random_vgg19(path: str | os.PathLike, seed: int = 0) -> Path:
    """Write a VGG19 ``features`` state dict with *random* weights in torchvision's format.

    For smoke tests of the GAN stage where the ImageNet weights are not at hand: the file
    loads like the real one, but the perceptual loss it gives measures nothing perceptual.
    The format follows the suffix: ``.safetensors``, otherwise a ``torch.save`` pickle.
    """
    torch.manual_seed(seed)
    state = {f"features.{k}": v for k, v in vgg19_features().state_dict().items()}
    path = Path(path)
    if path.suffix == ".safetensors":
        return save_safetensors(state, path, {"note": "random VGG19 weights, for tests only"})
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def load_vgg19_features(path: str, until: str) -> nn.Sequential:
    """VGG19 features up to conv ``until`` with the weights of a torchvision-format file,
    frozen and in eval mode.

    Raises:
        ConfigError: the file is missing or unreadable, or a VGG19 feature tensor is absent
            or has another shape (e.g. VGG16 weights).
    """
    try:
        state_dict, _ = read_state_dict(path)
    except CheckpointError as exc:
        raise ConfigError(f"gan.vgg_weights: {exc}") from None
    features = vgg19_features(until)
    own = {f"features.{k}": v for k, v in features.state_dict().items()}
    _check_vgg_tensors(state_dict, own, path)
    features.load_state_dict({k.removeprefix("features."): state_dict[k] for k in own})
    return features.eval().requires_grad_(False)


def _check_vgg_tensors(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], path: str
) -> None:
    """Refuse the file unless every needed tensor is there, with VGG19's shape."""
    for key, want in expected.items():
        value = state_dict.get(key)
        if value is None:
            raise ConfigError(
                f"gan.vgg_weights {path}: no tensor {key!r}; expected torchvision VGG19 "
                "weights (keys features.<N>.weight/bias)"
            )
        if value.shape != want.shape or not value.is_floating_point():
            raise ConfigError(
                f"gan.vgg_weights {path}: {key!r} has shape {tuple(value.shape)}, VGG19 has "
                f"{tuple(want.shape)} (not VGG19 weights?)"
            )


class PerceptualLoss(nn.Module):
    """Weighted L1 distance between VGG19 features (before ReLU) of output and target.

    Args:
        features: VGG19 features reaching the deepest layer of ``layer_weights``
            (:func:`load_vgg19_features`).
        layer_weights: ``{"conv5_4": 1.0, ...}``, the weight of each compared layer.

    Shape:
        output and target (N, 3, H, W) RGB in [0, 1]; returns a scalar.
    """

    def __init__(self, features: nn.Sequential, layer_weights: Mapping[str, float]) -> None:
        super().__init__()
        self.features = features
        taps = sorted((VGG19_CONVS[name][0], float(w)) for name, w in layer_weights.items())
        self.taps = dict(taps)  # in stack order, the order in which _taps finds them
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def _taps(self, image: torch.Tensor) -> list[torch.Tensor]:
        x = (image - self.mean) / self.std
        found = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                found.append(x)
            if index == max(self.taps):
                break  # deeper layers do not contribute
        return found

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # the target is fixed: no graph for its features
            wanted = self._taps(target)
        got = self._taps(output)
        weights = self.taps.values()
        terms = [
            w * F.l1_loss(a.float(), b.float())
            for w, a, b in zip(weights, got, wanted, strict=True)
        ]
        return torch.stack(terms).sum()


def deepest_layer(layer_weights: Mapping[str, float]) -> str:
    """The layer of ``layer_weights`` furthest down the VGG19 stack."""
    return max(layer_weights, key=lambda name: VGG19_CONVS[name][0])
