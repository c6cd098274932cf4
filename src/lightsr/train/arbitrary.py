"""Training batches for arbitrary-scale networks (``data.scale_range``).

The official LIIF/LTE recipe ("sr-implicit-downsampled"): each sample draws a scale s from
U(low, high), cuts an HR crop of ``round(patch · s)`` pixels, downscales it to the LR patch,
and keeps ``query_samples`` random HR pixels as targets, with their coordinates and the
output cell. lightsr downscales with MATLAB-exact bicubic on uint8 (:mod:`lightsr.imresize`),
the same kernel as its evaluation LR, where the official code uses PIL's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lightsr.archs.lte import cell_for
from lightsr.imresize import imresize


class ArbitraryScaleBatches:
    """Batches of (LR patch, query rows, query cols, cell, target RGB).

    Args:
        images: HR training images, uint8 H×W×3.
        patch: LR patch side.
        scale_range: (low, high) of the uniform scale distribution.
        queries: HR pixels per sample kept as targets.
        batch_size: samples per batch.
        augment: random flips and transpositions of the HR crop.
        device: where batches are put.
        seed: seed of the batch generator (its state is checkpointed).
    """

    skipped = 0

    def __init__(
        self,
        images: Sequence[np.ndarray],
        patch: int,
        scale_range: Sequence[float],
        queries: int,
        batch_size: int,
        augment: bool,
        device: torch.device,
        seed: int,
    ) -> None:
        self.images, self.patch, self.queries = list(images), patch, queries
        self.low, self.high = float(scale_range[0]), float(scale_range[1])
        self.batch_size, self.augment, self.device = batch_size, augment, device
        self.generator = torch.Generator().manual_seed(seed)
        self.min_sides = np.array([min(image.shape[:2]) for image in self.images])
        if self.min_sides.max(initial=0) < round(patch * self.low):
            raise ValueError(f"no training image is {round(patch * self.low)} pixels wide")

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator, dtype=torch.float64))

    def _integer(self, high: int) -> int:
        return int(torch.randint(high, (), generator=self.generator))

    def _sample(self) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, float, np.ndarray]:
        largest = min(self.high, self.min_sides.max() / self.patch)
        scale = self.low + (largest - self.low) * self._uniform()
        crop = round(self.patch * scale)
        candidates = np.flatnonzero(self.min_sides >= crop)
        image = self.images[candidates[self._integer(len(candidates))]]
        top = self._integer(image.shape[0] - crop + 1)
        left = self._integer(image.shape[1] - crop + 1)
        hr = image[top : top + crop, left : left + crop]
        if self.augment:
            flips = self._integer(8)
            hr = hr[::-1] if flips & 1 else hr
            hr = hr[:, ::-1] if flips & 2 else hr
            hr = hr.transpose(1, 0, 2) if flips & 4 else hr
        hr = np.ascontiguousarray(hr)
        lr = imresize(hr, output_shape=(self.patch, self.patch))
        picked = torch.randperm(crop * crop, generator=self.generator)[: self.queries]
        rows, cols = (picked // crop).double(), (picked % crop).double()
        step = self.patch / crop
        target = hr.reshape(-1, 3)[picked.numpy()]
        return lr, (rows + 0.5) * step, (cols + 0.5) * step, cell_for(self.patch, crop), target

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """LR (N,3,p,p) and targets (N,Q,3) in [0, 1], and the queries (rows, cols: (N,Q)
        float64 in LR pixels; cell: (N,1,2))."""
        samples = [self._sample() for _ in range(self.batch_size)]
        lr = torch.from_numpy(np.stack([s[0] for s in samples])).permute(0, 3, 1, 2)
        rows = torch.stack([s[1] for s in samples])
        cols = torch.stack([s[2] for s in samples])
        cell = torch.tensor([[[s[3], s[3]]] for s in samples], dtype=torch.float32)
        target = torch.from_numpy(np.stack([s[4] for s in samples]))
        device = self.device
        lr = lr.to(device).float().div_(255.0)
        target = target.to(device).float().div_(255.0)
        return lr, target, (rows.to(device), cols.to(device), cell.to(device))

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
