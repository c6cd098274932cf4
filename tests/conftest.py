"""Shared fixtures. Tests read real data from ``$LIGHTSR_SHARED``, by default ``../shared``
beside the repository root (set here, before any test runs, so that the library and
subprocesses started by tests find the same folder from any working directory).

Under CI (``CI=true``) a missing shared file is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("LIGHTSR_SHARED", str(Path(__file__).resolve().parents[2] / "shared"))

from lightsr.io import read_image
from lightsr.paths import shared_dir

if TYPE_CHECKING:
    import torch

SHARED = shared_dir()


def randomise_esc_zero_init(module: torch.nn.Module) -> None:
    """Give ESC's zero-initialised dynamic-kernel layers (the golden files' seeded weights
    leave them at zero) random weights, so that every path of the network carries signal."""
    import torch

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if ".plk." in name and param.abs().sum() == 0:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)


def shared_file(relative: str) -> Path:
    """Path of a file under the shared folder; skip locally, fail under CI, if it is missing."""
    path = SHARED / relative
    if not path.exists():
        message = f"shared file missing: {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def shared():
    """The ``shared_file`` helper as a fixture."""
    return shared_file


@pytest.fixture
def set5(shared):
    """The Set5 folder (``HR/`` and ``LR_bicubic/``) of the shared data."""
    return shared("data/Set5/HR").parent


@pytest.fixture
def lr_folder_no_hr(tmp_path, set5):
    """Two small LR images directly in a folder, as a real-world set without ground truth."""
    for name in ("baby", "bird"):
        shutil.copy(set5 / "LR_bicubic" / "X4" / f"{name}x4.png", tmp_path / f"{name}.png")
    return tmp_path


@pytest.fixture(scope="session")
def baby_lr():
    """Set5 'baby' x4 LR input, 128x128 uint8 RGB (tiler tests)."""
    return read_image(shared_file("data/Set5/LR_bicubic/X4/babyx4.png"))
