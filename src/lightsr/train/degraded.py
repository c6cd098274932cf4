"""Training batches of synthetic real-world pairs, degraded on the fly in a background thread.

Each sample follows the official Real-ESRGAN data path: a random HR image, flipped and
rotated at random, cut (or reflect-padded) to a ``crop``-pixel square, degraded whole by
:func:`lightsr.degrade.degrade`, and then a random ``lr_patch`` window of the input is
paired with the matching target windows. One worker thread prepares the next batches while
the training step runs: OpenCV releases the GIL, so the two overlap.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from lightsr.degrade import DegradationConfig, degrade
from lightsr.errors import ConfigError

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
# Batches prepared ahead of the one being trained on.
PREFETCH = 2
# How often (seconds) a worker blocked on a full queue checks for close().
_POLL_S = 0.1


class DegradedBatches:
    """Endless batches of (lr, gt, gt_usm) from HR images, deterministic given ``seed``.

    Args:
        images: HR uint8 (H, W, 3) RGB images.
        scale: upscaling factor.
        lr_patch: side of the LR input patches; targets are ``lr_patch * scale``.
        batch_size: pairs per batch.
        config: the degradation model (see :data:`lightsr.degrade.PRESETS`).
        seed: seed of every random choice (image, augmentation, crop, degradation).
        crop: side of the HR square that is degraded (official: 400), rounded down to a
            multiple of ``scale``; smaller images are reflect-padded to it.
        augment: random horizontal flips and 90° rotations.

    :meth:`next_batch` returns float32 NCHW tensors in [0, 1]; the input is on 8-bit levels.
    Call :meth:`close` (or use it as a context manager) to stop the worker thread.

    Raises:
        ConfigError: no images, or patch sizes that do not fit in ``crop``.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        scale: int,
        lr_patch: int,
        batch_size: int,
        config: DegradationConfig,
        seed: int,
        crop: int = 400,
        augment: bool = True,
    ) -> None:
        if not images:
            raise ConfigError("no training images to degrade")
        crop -= crop % scale
        if lr_patch < 1 or batch_size < 1 or lr_patch * scale > crop:
            raise ConfigError(
                f"lr_patch {lr_patch} x{scale} needs crop >= {lr_patch * scale} (got {crop}); "
                f"lr_patch and batch_size must be positive"
            )
        self.images, self.scale, self.lr_patch = list(images), scale, lr_patch
        self.batch_size, self.config, self.crop, self.augment = batch_size, config, crop, augment
        self._rng = np.random.default_rng(seed)
        self._queue: queue.Queue[Batch | BaseException] = queue.Queue(maxsize=PREFETCH)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="degraded-batches", daemon=True)
        self._thread.start()

    def next_batch(self) -> Batch:
        """The next (lr, gt, gt_usm) batch: (N, 3, p, p) and twice (N, 3, p·s, p·s).

        Raises:
            RuntimeError: after :meth:`close`.
            Exception: whatever stopped the worker (re-raised here).
        """
        if self._stop.is_set():
            raise RuntimeError("DegradedBatches is closed")
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        return item

    def close(self) -> None:
        """Stop the worker thread and drop prepared batches; safe to call twice."""
        self._stop.set()
        while self._thread.is_alive():
            self._drain()
            self._thread.join(_POLL_S)
        self._drain()

    def __enter__(self) -> DegradedBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drain(self) -> None:
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def _work(self) -> None:
        """The worker: batches in order from one generator, so the sequence is the seed's."""
        try:
            while not self._stop.is_set():
                self._put(self._make_batch())
        except Exception as exc:  # handed to the trainer's thread by next_batch
            self._put(exc)

    def _put(self, item: Batch | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _make_batch(self) -> Batch:
        samples = [self._make_sample() for _ in range(self.batch_size)]
        return tuple(torch.from_numpy(np.stack(arrays)) for arrays in zip(*samples, strict=True))

    def _make_sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One (lr, gt, gt_usm) triple as CHW float32 arrays."""
        rng = self._rng
        hr = _cut_square(self.images[rng.integers(len(self.images))], self.crop, rng)
        if self.augment:
            hr = _flip_rotate(hr, rng)
        pair = degrade(hr, self.scale, self.config, rng)
        limit = self.crop // self.scale - self.lr_patch
        top, left = (int(v) for v in rng.integers(0, limit + 1, size=2))
        patch, s = self.lr_patch, self.scale
        lr = pair.lr[top : top + patch, left : left + patch]
        hr_window = (slice(top * s, (top + patch) * s), slice(left * s, (left + patch) * s))
        return tuple(
            np.ascontiguousarray(a.transpose(2, 0, 1))
            for a in (lr, pair.gt[hr_window], pair.gt_usm[hr_window])
        )


def _cut_square(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size``-pixel square of ``image``, reflect-padded at the bottom/right first
    where ``image`` is smaller (as officially)."""
    height, width = image.shape[:2]
    if height < size or width < size:
        pad_h, pad_w = max(0, size - height), max(0, size - width)
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        height, width = image.shape[:2]
    top = int(rng.integers(height - size + 1))
    left = int(rng.integers(width - size + 1))
    return image[top : top + size, left : left + size]


def _flip_rotate(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the 8 flips/rotations of a square, uniformly."""
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return np.ascontiguousarray(np.rot90(image, int(rng.integers(4))))
