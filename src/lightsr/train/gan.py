"""Adversarial training pieces of the Real-ESRGAN recipe: U-Net discriminator and GAN loss.

The discriminator follows the design of Real-ESRGAN (Wang et al., ICCVW 2021, "UNet
discriminator with spectral normalization"): a three-level U-Net that judges every pixel
rather than the whole image, so that it can give per-pixel feedback on local artefacts, with
spectral normalisation on every convolution but the first and the last to keep the training
stable. It has no BatchNorm, so its results do not depend on the batch split under DDP.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from lightsr.train.config import GanConfig, OptimConfig
from lightsr.train.optim import make_optimizer
from lightsr.train.perceptual import PerceptualLoss

# Slope of every LeakyReLU of the discriminator (as in Real-ESRGAN).
_SLOPE = 0.2


def _sn_conv(in_ch: int, out_ch: int, kernel: int, stride: int) -> nn.Module:
    """A bias-free conv with spectral normalisation (stride 2 halves the size, 4x4 kernel)."""
    return spectral_norm(nn.Conv2d(in_ch, out_ch, kernel, stride, padding=1, bias=False))


class UNetDiscriminatorSN(nn.Module):
    """U-Net discriminator with spectral normalisation; one real/fake logit per pixel.

    Args:
        in_channels: colour channels of the judged images.
        num_feat: channels of the first level (doubled at each of the three downsamplings).
        skip_connection: add the encoder features to the decoder features of each level.

    Shape:
        input (N, C, H, W) with H and W multiples of 8; output (N, 1, H, W) logits.
    """

    def __init__(self, in_channels: int = 3, num_feat: int = 64, skip_connection: bool = True):
        super().__init__()
        self.skip_connection = skip_connection
        widths = [num_feat, num_feat * 2, num_feat * 4, num_feat * 8]
        self.first = nn.Conv2d(in_channels, num_feat, 3, 1, 1)
        self.down = nn.ModuleList(_sn_conv(a, b, 4, 2) for a, b in pairwise(widths))
        self.up = nn.ModuleList(_sn_conv(a, b, 3, 1) for a, b in pairwise(widths[::-1]))
        self.refine = nn.Sequential(
            _sn_conv(num_feat, num_feat, 3, 1),
            nn.LeakyReLU(_SLOPE),
            _sn_conv(num_feat, num_feat, 3, 1),
            nn.LeakyReLU(_SLOPE),
        )
        self.last = nn.Conv2d(num_feat, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.first(x), _SLOPE)
        skips = [x]
        for conv in self.down:
            x = F.leaky_relu(conv(x), _SLOPE)
            skips.append(x)
        skips.pop()  # the bottleneck is not added to itself
        for conv in self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = F.leaky_relu(conv(x), _SLOPE)
            skip = skips.pop()
            if self.skip_connection:
                x = x + skip
        return self.last(self.refine(x))


def build_discriminator(config: GanConfig) -> nn.Module:
    """The discriminator of ``[gan]`` (``"unet_sn"``, the only one so far)."""
    return UNetDiscriminatorSN(3, config.num_feat)


def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Vanilla GAN loss: binary cross-entropy of the logits against all-real or all-fake."""
    target = torch.full_like(logits, 1.0 if real else 0.0)
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


class Adversary:
    """The discriminator, its optimiser and the generator's adversarial and perceptual losses.

    Args:
        config: the ``[gan]`` section.
        perceptual: the VGG19 perceptual loss, or ``None`` (``perceptual_weight`` 0).
        device: where the discriminator and the perceptual loss run.

    Attributes:
        net: the discriminator as its own step calls it; the trainer may replace it with a
            DDP wrapper of :attr:`discriminator`.
    """

    def __init__(
        self, config: GanConfig, perceptual: PerceptualLoss | None, device: torch.device
    ) -> None:
        self.config = config
        self.discriminator = build_discriminator(config).to(device).train()
        self.net: nn.Module = self.discriminator
        self.perceptual = perceptual.to(device) if perceptual is not None else None
        if device.type == "cpu":
            # oneDNN runs these full-resolution convs 1.3-3x faster in NHWC (bf16: 3x).
            for module in (self.discriminator, self.perceptual):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        optim = OptimConfig(name="adam", lr=config.d_lr, betas=list(config.d_betas))
        self.optimizer = make_optimizer(self.discriminator, optim)

    def set_learning_rate(self, factor: float) -> None:
        """Set the rate to ``d_lr * factor`` (the generator's schedule, as a fraction)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.d_lr * factor

    def generator_losses(
        self, output: torch.Tensor, target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Weighted ``g_percep`` (against ``target``) and ``g_gan`` losses of the output.

        The discriminator is frozen: the gradients reach the generator only.
        """
        self.discriminator.requires_grad_(False)
        losses = {}
        if self.perceptual is not None:
            losses["g_percep"] = self.config.perceptual_weight * self.perceptual(output, target)
        logits = self.discriminator(output)
        losses["g_gan"] = self.config.gan_weight * gan_loss(logits, real=True)
        return losses

    def discriminator_losses(
        self, fake: torch.Tensor, real: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``d_real`` and ``d_fake`` losses of the (detached) output and the HR.

        Both halves go through one forward pass, which under DDP keeps to one forward per
        backward; without BatchNorm the logits are those of two separate passes.
        """
        self.discriminator.requires_grad_(True)
        logits = self.net(torch.cat([real, fake]))
        real_logits, fake_logits = logits.chunk(2)
        return {"d_real": gan_loss(real_logits, True), "d_fake": gan_loss(fake_logits, False)}

    def load_state_dict(self, weights: dict[str, torch.Tensor], optimizer: dict) -> None:
        """Restore the discriminator and its optimiser from a checkpoint."""
        self.discriminator.load_state_dict(weights)
        self.optimizer.load_state_dict(optimizer)
