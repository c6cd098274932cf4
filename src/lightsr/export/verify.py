"""Verification of an ONNX export: ONNX Runtime against eager torch on image-like inputs."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lightsr.errors import ExportError
from lightsr.export.trace import Trace, deployable_copy
from lightsr.models import SRModel
from lightsr.ort import INPUT_NAME, OUTPUT_NAME, create_session

# ``--verify`` sizes: different from the example and multiples of no window.
VERIFY_SIZES = ((37, 53), (64, 64), (97, 131))
TOLERANCE = {False: 1e-3, True: 2e-2}


def verify_onnx(
    path: str | os.PathLike,
    model: SRModel,
    sizes: Iterable[tuple[int, int]] = VERIFY_SIZES,
    half: bool = False,
    threads: int | None = None,
) -> dict[str, float]:
    """Compare ONNX Runtime with torch (fp32, eager) on image-like inputs (:func:`sample_image`).

    Returns:
        ``"HxW"`` → max abs difference of the [0, 1] outputs.

    Raises:
        ExportError: a difference exceeds 1e-3 (fp32) or 2e-2 (fp16).
    """
    session = create_session(path, threads=threads)
    diffs = {
        f"{height}x{width}": float(np.abs(actual - expected.numpy()).max())
        for (height, width), _, expected, actual in _torch_and_ort(session, model, sizes, seed=0)
    }
    tolerance = TOLERANCE[half]
    worst = max(diffs, key=diffs.get, default=None)
    if worst is not None and diffs[worst] > tolerance:
        raise ExportError(
            f"ONNX Runtime differs from torch by {diffs[worst]:.2e} at {worst} "
            f"(tolerance {tolerance:g})"
        )
    return diffs


def _torch_and_ort(
    session, model: SRModel, sizes: Iterable[tuple[int, int]], seed: int
) -> Iterator[tuple[tuple[int, int], torch.Tensor, torch.Tensor, np.ndarray]]:
    """For each size: the size, an image-like input (:func:`sample_image`), the output of
    ``model`` (deploy form, fp32, eager) and the output of the ONNX Runtime ``session``."""
    reference = deployable_copy(model)
    generator = torch.Generator().manual_seed(seed)
    for height, width in sizes:
        x = sample_image(height, width, generator)
        with torch.inference_mode():
            expected = reference.forward(x)
        (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        yield (height, width), x, expected, actual


def sample_image(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A (1, 3, H, W) image-like input in [0, 1]: smooth random colours plus faint noise.

    Uniform noise is no test input for attention networks: trained EMT maps it to outputs
    that change by whole units between fp32 and fp64, so no two runtimes could agree.
    """
    coarse = torch.rand(1, 3, max(2, height // 8), max(2, width // 8), generator=generator)
    smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)
    noise = torch.rand(1, 3, height, width, generator=generator) - 0.5
    return (smooth + 0.04 * noise).clamp(0.0, 1.0)


def check_witnesses(path: Path, model: SRModel, traced: Trace, half: bool) -> None:
    """Refuse the export if it is wrong where the tracer's size assumptions are false.

    "Wrong" is measured against torch's own rounding noise (fp32 against fp64), because a
    network with fresh weights can amplify rounding by whole units (EMT), and a frozen
    branch changes the output by far more than rounding.
    """
    if not traced.witnesses:
        return
    precise = model.with_module(deployable_copy(model).module.double())
    for (height, width), x, expected, actual in _torch_and_ort(
        create_session(path), model, traced.witnesses, seed=1
    ):
        with torch.inference_mode():
            noise = (precise.forward(x.double()) - expected.double()).abs().max().item()
        error = (torch.from_numpy(actual).double() - expected.double()).abs().max().item()
        allowed = max(TOLERANCE[half], 10 * noise)
        if error > allowed:
            raise ExportError(
                f"{model.variant}: the export differs from torch by {error:.2e} at "
                f"{height}x{width} (allowed {allowed:.1e}); a shape-dependent branch was frozen"
            )
