"""Resumable checkpoints in the run folder, written atomically.

A checkpoint is a folder ``checkpoints/iter_<NNNNNNNN>/`` holding ``model.safetensors``,
``ema.safetensors`` (when EMA is on), ``discriminator.safetensors`` (GAN training) and
``state.pt`` (optimizers, gradient scaler, data generator, iteration, elapsed time). It is
written under a temporary name, flushed to disk and renamed into place, so a process killed
at any moment leaves either a complete checkpoint or none; leftovers of an interrupted write
are removed on the next save.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lightsr.checkpoint import load_failure, read_state_dict, save_safetensors
from lightsr.errors import CheckpointError

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^iter_(\d{8})$")


@dataclass
class TrainingState:
    """What a checkpoint restores.

    Attributes:
        iteration: number of completed optimizer steps.
        elapsed: seconds spent in the training loop so far (the wall-clock budget).
        model: weights of the trained network.
        ema: EMA weights, or ``None``.
        extra: optimizer, gradient-scaler and generator states (see ``engine``).
        discriminator: weights of the GAN discriminator, or ``None``.
    """

    iteration: int
    elapsed: float
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    extra: dict[str, Any]
    discriminator: dict[str, torch.Tensor] | None = None


def checkpoint_dir(run_dir: Path, iteration: int) -> Path:
    return run_dir / CHECKPOINTS / f"iter_{iteration:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = run_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: p.name)


def save_checkpoint(
    run_dir: Path, state: TrainingState, metadata: Mapping[str, str], keep: int
) -> Path:
    """Write ``state`` as a new checkpoint atomically; keep only the ``keep`` newest."""
    final = checkpoint_dir(run_dir, state.iteration)
    tmp = final.with_name(f".{final.name}.tmp")
    _remove_partial_writes(final.parent)
    tmp.mkdir(parents=True)
    meta = {**metadata, "iteration": str(state.iteration)}
    save_safetensors(state.model, tmp / "model.safetensors", meta)
    for name, tensors in (("ema", state.ema), ("discriminator", state.discriminator)):
        if tensors is not None:
            save_safetensors(tensors, tmp / f"{name}.safetensors", meta)
    extra = {"iteration": state.iteration, "elapsed": state.elapsed, **state.extra}
    with open(tmp / "state.pt", "wb") as f:
        torch.save(extra, f)
    for path in tmp.iterdir():
        _fsync(path)
    if final.exists():  # re-saving the same iteration (a resumed run that stopped at once)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(final.parent)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> TrainingState:
    """Read a checkpoint folder written by :func:`save_checkpoint`."""
    if not (path / "state.pt").is_file() or not (path / "model.safetensors").is_file():
        raise CheckpointError(f"{path}: not a training checkpoint folder")
    try:
        extra = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        iteration, elapsed = int(extra.pop("iteration")), float(extra.pop("elapsed"))
    except Exception as exc:  # torch raises many types for corrupt pickles
        raise CheckpointError(f"{path / 'state.pt'}: {load_failure(exc)}") from None
    model, _ = read_state_dict(path / "model.safetensors")
    ema = _read_optional(path / "ema.safetensors")
    discriminator = _read_optional(path / "discriminator.safetensors")
    return TrainingState(iteration, elapsed, model, ema, extra, discriminator)


def _read_optional(path: Path) -> dict[str, torch.Tensor] | None:
    return read_state_dict(path)[0] if path.is_file() else None


def newest_valid_checkpoint(
    run_dir: Path, on_skip: Callable[[str], None] | None = None
) -> Path | None:
    """The newest checkpoint of the run that loads, or ``None``.

    Damaged ones (a copy cut short, a full disk, files edited by hand) are passed over,
    each reported to ``on_skip`` with the reason.
    """
    for path in reversed(list_checkpoints(run_dir)):
        try:
            load_checkpoint(path)
        except CheckpointError as exc:
            if on_skip is not None:
                on_skip(f"skipping damaged checkpoint: {exc}")
            continue
        return path
    return None


def _remove_partial_writes(folder: Path) -> None:
    if folder.is_dir():
        for leftover in folder.glob(".iter_*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
