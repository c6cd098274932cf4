"""Where training batches come from: bicubic pairs or HR images degraded on the fly.

Both sources give a :class:`Batch` of float images in [0, 1] on the training device, so the
training step does not care which one it draws from.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from lightsr.io import read_rgb_uint8
from lightsr.train.config import Config, degradation_config
from lightsr.train.data import (
    ImagePair,
    PatchSampler,
    default_lr_cache,
    describe_pairs,
    list_images,
    load_training_pairs,
)
from lightsr.train.distributed import DistInfo


class Batch(NamedTuple):
    """One training batch, float32 (N, 3, H, W) in [0, 1] on the training device.

    Attributes:
        lr: network inputs.
        gt: ground truth (``lr`` times the scale in size).
        gt_usm: unsharp-masked ground truth (degraded data only), else ``None``.
        queries: arbitrary-scale training only: the (rows, cols, cell) at which the network
            is queried (:meth:`lightsr.archs.lte.LTE.forward`); ``gt`` is then (N, Q, 3).
    """

    lr: torch.Tensor
    gt: torch.Tensor
    gt_usm: torch.Tensor | None
    queries: tuple[torch.Tensor, ...] | None = None


def load_training_data(config: Config, workers: int) -> list[ImagePair] | list[np.ndarray]:
    """Bicubic training pairs, or the HR images alone when ``data.degradation`` is set."""
    data = config.data
    if data.degradation or data.scale_range:
        paths = [path for folder in data.hr_dirs for path in list_images(folder)]
        # Threads: PNG decoding releases the GIL. 0 workers: one per CPU core, as for pairs.
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            return list(pool.map(read_rgb_uint8, paths))
    cache = Path(data.lr_cache) if data.lr_cache else default_lr_cache()
    return load_training_pairs(data.hr_dirs, data.lr_dirs, config.model.scale, cache, workers)


def describe_data(config: Config, data: list[ImagePair] | list[np.ndarray]) -> str:
    """One line about the loaded training data, for the log."""
    cfg = config.data
    if not cfg.degradation and not cfg.scale_range:
        return describe_pairs(data)
    pixels = sum(image.shape[0] * image.shape[1] for image in data)
    if cfg.degradation:
        how = f"degraded on the fly ({cfg.degradation})"
    else:
        low, high = cfg.scale_range
        how = f"scales U({low:g}, {high:g}), {cfg.query_samples} queries per patch"
    return f"{len(data)} HR images, {pixels / 1e6:.1f} MP, {how}"


class PairBatches:
    """Bicubic LR/HR patches from a :class:`~lightsr.train.data.PatchSampler`; its
    generator state is checkpointed, so a resumed run sees the same batches."""

    def __init__(
        self, sampler: PatchSampler, batch_size: int, info: DistInfo, device: torch.device
    ):
        self.sampler, self.batch_size, self.info, self.device = sampler, batch_size, info, device

    @property
    def skipped(self) -> int:
        return self.sampler.skipped

    def next_batch(self) -> Batch:
        lr, hr = self.sampler.sample(self.batch_size, self.info.rank, self.info.world_size)
        lr = lr.to(self.device, non_blocking=True).float().div_(255.0)
        hr = hr.to(self.device, non_blocking=True).float().div_(255.0)
        return Batch(lr, hr, None)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.sampler.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # A checkpoint from another device type has a generator state of another kind.
        self.sampler.generator.set_state(state["generator"])

    def close(self) -> None:
        pass


class DegradedSource:
    """Real-world pairs from :class:`~lightsr.train.degraded.DegradedBatches`, which
    degrades random HR crops in a background thread.

    Its random stream cannot be checkpointed, so a resumed run draws fresh degradations
    (seeded from the iteration it resumes at) rather than the interrupted run's.
    """

    skipped = 0

    def __init__(self, batches: Any, device: torch.device) -> None:
        self.batches, self.device = batches, device

    def next_batch(self) -> Batch:
        lr, gt, gt_usm = self.batches.next_batch()
        return Batch(*(t.to(self.device, non_blocking=True) for t in (lr, gt, gt_usm)))

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        self.batches.close()


class ArbitraryScaleSource:
    """Arbitrary-scale batches (:class:`~lightsr.train.arbitrary.ArbitraryScaleBatches`);
    their generator state is checkpointed, so a resumed run sees the same batches."""

    skipped = 0

    def __init__(self, batches: Any) -> None:
        self.batches = batches

    def next_batch(self) -> Batch:
        lr, gt, queries = self.batches.next_batch()
        return Batch(lr, gt, None, queries)

    def state_dict(self) -> dict[str, Any]:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state)

    def close(self) -> None:
        pass


def make_batches(
    config: Config,
    data: list[ImagePair] | list[np.ndarray],
    info: DistInfo,
    device: torch.device,
    iteration: int,
) -> PairBatches | DegradedSource | ArbitraryScaleSource:
    """The batch source of ``config`` for a run starting at ``iteration`` (0: fresh)."""
    cfg, seed = config.data, config.train.seed
    if cfg.scale_range:
        from lightsr.train.arbitrary import ArbitraryScaleBatches

        batches = ArbitraryScaleBatches(
            data,
            cfg.lr_patch,
            cfg.scale_range,
            cfg.query_samples,
            cfg.batch_size // info.world_size,
            cfg.flip,
            device,
            seed=seed + info.rank,
        )
        return ArbitraryScaleSource(batches)
    if not cfg.degradation:
        data_device = device if cfg.on_device else torch.device("cpu")
        sampler = PatchSampler(
            data,
            config.model.scale,
            cfg.lr_patch,
            cfg.flip,
            cfg.rot90,
            cfg.sampling,
            data_device,
            seed,
        )
        return PairBatches(sampler, cfg.batch_size, info, device)
    from lightsr.train.degraded import DegradedBatches  # OpenCV: only for real-world runs

    batches = DegradedBatches(
        data,
        config.model.scale,
        cfg.lr_patch,
        cfg.batch_size // info.world_size,
        degradation_config(cfg),
        # Every process and every resumption draws its own degradations.
        seed=seed + 1_000_003 * iteration + info.rank,
        crop=cfg.degradation_crop,
        augment=cfg.flip,  # flips and rotations together (validated)
    )
    return DegradedSource(batches, device)
