"""Fixtures of the training tests: a tiny image set and configs for a tiny FMEN-S."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lightsr.io import write_image


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread, like the subprocesses these tests start (``OMP_NUM_THREADS=1``).

    Results must match bit for bit across processes, and other test modules (bench) change
    the thread count of the pytest process; one thread also avoids oversubscription stalls.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# FMEN-S with every block present but 8 channels: trains in milliseconds per step on a CPU.
TINY_FMEN = {"n_feats": 8, "mid_feats": 8, "down_blocks": 1, "up_blocks": [1, 1]}


def smooth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A uint8 RGB image with some structure (so that bicubic is not trivially exact)."""
    y, x = np.mgrid[0:height, 0:width]
    phase = rng.uniform(0, 6, size=3)
    base = [np.sin(x / (3 + c) + phase[c]) * np.cos(y / (4 + c)) for c in range(3)]
    image = 127 + 90 * np.stack(base, axis=-1) + rng.normal(0, 8, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """``train/`` with four HR images and ``val/HR`` with two (odd sizes: mod-crop matters)."""
    root = tmp_path_factory.mktemp("tiny_data")
    rng = np.random.default_rng(0)
    for index, (h, w) in enumerate([(37, 41), (44, 34), (30, 52), (40, 40)]):
        write_image(root / "train" / f"img{index}.png", smooth_image(rng, h, w))
    for index, (h, w) in enumerate([(33, 29), (26, 38)]):
        write_image(root / "val" / "HR" / f"val{index}.png", smooth_image(rng, h, w))
    return root


def tiny_config(root: Path, out: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A raw config dict for a fast CPU run; ``sections`` update the defaults per section."""
    raw: dict[str, Any] = {
        "name": "tiny",
        "output_dir": str(out),
        "model": {"network": "fmen_s", "scale": 2, "options": dict(TINY_FMEN)},
        "data": {
            "hr_dirs": [str(root / "train")],
            "lr_patch": 8,
            "batch_size": 4,
            "workers": 1,
            "lr_cache": str(out / "lr_cache"),
        },
        "val": {"dir": str(root / "val"), "interval": 10, "previews": 1, "preview_size": 16},
        "optim": {"lr": 2e-3},
        "schedule": {"warmup_iters": 2},
        "train": {
            "total_iters": 20,
            "precision": "none",
            "device": "cpu",
            "log_interval": 5,
            "checkpoint_interval": 10,
        },
    }
    for section, values in sections.items():
        raw[section].update(values)
    return raw


def write_toml(path: Path, raw: dict[str, Any]) -> Path:
    """Write a raw config dict as TOML through the package's own writer."""
    from lightsr.train.config import config_from_dict, config_to_toml

    path.write_text(config_to_toml(config_from_dict(raw)), encoding="utf-8")
    return path
