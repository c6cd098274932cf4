"""Validation during training: PSNR-Y/SSIM-Y on a test set and preview crops.

The conventions are those of ``lightsr eval``: the HR is mod-cropped, the LR is the set's
``LR_bicubic/X<s>`` file or MATLAB bicubic downscaling, network outputs are clamped and
rounded to uint8, and the metrics skip ``scale`` border pixels on the Y channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lightsr.archs.registry import ArchSpec
from lightsr.evaluate import find_hr_images, find_lr_file, lr_folder, score, super_resolve
from lightsr.imresize import imresize, mod_crop
from lightsr.io import (
    read_rgb_uint8,
    write_image,
)
from lightsr.models import SRModel
from lightsr.train.data import ImagePair, load_paired


@dataclass
class ValidationResult:
    """Mean metrics over the validation set, and the super-resolved images."""

    psnr: float
    ssim: float | None
    outputs: list[np.ndarray]


def load_validation_set(folder: str | Path, scale: int) -> list[ImagePair]:
    """HR/LR pairs of a test-set folder (``HR/`` and optionally ``LR_bicubic/X<s>/``)."""
    folder = Path(folder)
    lr_dir = lr_folder(folder, scale)
    pairs = []
    for hr_path in find_hr_images(folder, scale):
        if lr_dir.is_dir():
            pairs.append(load_paired(hr_path, find_lr_file(lr_dir, hr_path, scale), scale))
        else:
            hr = mod_crop(read_rgb_uint8(hr_path), scale)
            pairs.append(ImagePair(hr_path.stem, hr, imresize(hr, 1 / scale)))
    return pairs


def validate(
    module: nn.Module,
    spec: ArchSpec,
    scale: int,
    pairs: list[ImagePair],
    with_ssim: bool = True,
) -> ValidationResult:
    """Super-resolve every pair with ``module`` (in eval mode) and score it."""
    was_training = module.training
    module.eval()
    model = SRModel(module=module, spec=spec, scale=scale)
    outputs, psnrs, ssims = [], [], []
    try:
        for pair in pairs:
            sr = super_resolve(pair.lr, scale, model)
            outputs.append(sr)
            scores = score(sr, pair.hr, scale, with_ssim)
            psnrs.append(scores.psnr)
            if with_ssim:
                ssims.append(scores.ssim)
    finally:
        module.train(was_training)
    mean_ssim = float(np.mean(ssims)) if ssims else None
    return ValidationResult(float(np.mean(psnrs)), mean_ssim, outputs)


def write_previews(
    folder: Path, pairs: list[ImagePair], outputs: list[np.ndarray], scale: int, size: int
) -> list[Path]:
    """Save ``bicubic | SR | HR`` centre crops of the first validation images."""
    written = []
    for pair, sr in zip(pairs, outputs, strict=False):
        bicubic = imresize(pair.lr, scale)
        height, width = pair.hr.shape[:2]
        crop_h, crop_w = min(size, height), min(size, width)
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
        window = (slice(top, top + crop_h), slice(left, left + crop_w))
        panel = np.concatenate([bicubic[window], sr[window], pair.hr[window]], axis=1)
        written.append(write_image(folder / f"{pair.name}.png", panel))
    return written


def sync_device(device: torch.device) -> None:
    """Wait for queued work on ``device`` (for honest timings and clean shutdown)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
