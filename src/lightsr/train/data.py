"""Training data: HR/LR image pairs held in memory and random patches cut on the device.

All training images are loaded once. LR images are either read from paired folders or made
from the mod-cropped HR with MATLAB-exact bicubic downscaling; those are computed in
parallel and cached on disk, keyed by the HR file's hash and the scale, so later runs skip
the work. The pairs are then packed into one flat ``uint8`` buffer per resolution on the
training device, and a batch of augmented patches is a single gather: crop position,
flips and transposition are all folded into the gather indices. There is no DataLoader
and no per-sample Python work, so even small networks are not starved on a GPU.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lightsr.errors import ConfigError, ImageError
from lightsr.evaluate import find_lr_file
from lightsr.imresize import imresize, mod_crop
from lightsr.io import read_rgb_uint8
from lightsr.options import IMAGE_SUFFIXES
from lightsr.paths import cache_dir, replaced_atomically

# Bump when the LR generation changes, so that stale cache entries are never reused.
LR_CACHE_VERSION = "matlab-bicubic-v1"


@dataclass
class ImagePair:
    """One training or validation image: mod-cropped HR and its LR, uint8 (H, W, 3)."""

    name: str
    hr: np.ndarray
    lr: np.ndarray


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"image folder not found: {folder}")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ConfigError(f"no images in {folder}")
    return images


def load_paired(hr_path: Path, lr_path: Path, scale: int) -> ImagePair:
    """Read an HR/LR pair from disk, mod-crop the HR and check that the sizes agree."""
    hr = mod_crop(read_rgb_uint8(hr_path), scale)
    lr = read_rgb_uint8(lr_path)
    expected = (hr.shape[0] // scale, hr.shape[1] // scale)
    if lr.shape[:2] != expected:
        raise ImageError(f"{lr_path}: size {lr.shape[:2]} should be {expected} for x{scale}")
    return ImagePair(hr_path.stem, hr, lr)


def make_lr_pair(hr_path: Path, scale: int, cache: Path | None) -> ImagePair:
    """Read an HR image and downscale it (MATLAB bicubic), reusing ``cache`` when possible."""
    data = hr_path.read_bytes()
    hr = mod_crop(read_rgb_uint8(hr_path), scale)
    cache_file = None
    if cache is not None:
        digest = hashlib.sha256(data).hexdigest()[:32]
        cache_file = cache / f"{digest}_x{scale}.npy"
        if cache_file.is_file():
            try:
                lr = np.load(cache_file, allow_pickle=False)
                if lr.shape == (hr.shape[0] // scale, hr.shape[1] // scale, 3):
                    return ImagePair(hr_path.stem, hr, lr)
            except (OSError, ValueError):
                pass  # unreadable or partial entry: recompute and overwrite it
    lr = imresize(hr, 1 / scale)
    if cache_file is not None:
        _save_npy_atomically(cache_file, lr)
    return ImagePair(hr_path.stem, hr, lr)


def _save_npy_atomically(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with replaced_atomically(path) as temporary, open(temporary, "wb") as f:
            np.save(f, array, allow_pickle=False)
    except OSError:
        pass  # a read-only cache only costs recomputation


def default_lr_cache() -> Path:
    """Where precomputed training LR images are cached by default."""
    return cache_dir() / "train_lr" / LR_CACHE_VERSION


def load_training_pairs(
    hr_dirs: Sequence[str],
    lr_dirs: Sequence[str],
    scale: int,
    cache: Path | None,
    workers: int,
) -> list[ImagePair]:
    """Load every training pair; downscale (in ``workers`` processes) when no LR is given."""
    jobs = []
    for index, hr_dir in enumerate(hr_dirs):
        for hr_path in list_images(hr_dir):
            if lr_dirs:
                lr_path = find_lr_file(Path(lr_dirs[index]), hr_path, scale)
                jobs.append((load_paired, (hr_path, lr_path, scale)))
            else:
                jobs.append((make_lr_pair, (hr_path, scale, cache)))
    workers = min(workers or os.cpu_count() or 1, len(jobs))
    if workers <= 1:
        return [fn(*args) for fn, args in jobs]
    # Threads suffice: PNG decoding and the numpy resize passes release the GIL, and unlike
    # worker processes they are safe after CUDA or a process group has been initialised.
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda job: job[0](*job[1]), jobs))


# ----------------------------------------------------------------------------- patch sampling


class PackedImages:
    """Images of different sizes in one flat ``uint8`` buffer (C, H, W order per image)."""

    def __init__(self, images: Sequence[np.ndarray], device: torch.device) -> None:
        sizes = [image.shape[0] * image.shape[1] * 3 for image in images]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        # Filled image by image: large sets (DF2K is ~30 GB) must not be copied twice.
        flat = torch.empty(sum(sizes), dtype=torch.uint8)
        for image, start, size in zip(images, offsets, sizes, strict=True):
            chw = np.ascontiguousarray(image.transpose(2, 0, 1))
            flat[start : start + size] = torch.from_numpy(chw).view(-1)
        self.buffer = flat.to(device)
        self.offsets = torch.from_numpy(offsets).to(device)
        self.heights = torch.tensor([im.shape[0] for im in images], device=device)
        self.widths = torch.tensor([im.shape[1] for im in images], device=device)

    def gather(self, index: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Pixels ``[b, c, u, v] = image[index[b]][c, rows[b,u,v], cols[b,u,v]]``.

        Returns:
            ``uint8`` tensor (B, 3, P, P) where ``rows``/``cols`` are (B, P, P).
        """
        height, width = self.heights[index], self.widths[index]
        base = self.offsets[index].view(-1, 1, 1, 1)
        channel = torch.arange(3, device=index.device).view(1, 3, 1, 1)
        plane = (height * width).view(-1, 1, 1, 1)
        pixel = (rows * width.view(-1, 1, 1) + cols).unsqueeze(1)
        return self.buffer[base + channel * plane + pixel]


class PatchSampler:
    """Draws random, aligned and augmented LR/HR patch batches on the data device.

    The random numbers for the *global* batch are drawn from one generator, identical on
    every process, and each process cuts only its own slice of that batch. The data order
    therefore depends on the seed and the global batch size alone, not on the number of
    processes, and saving the generator state makes a resumed run see the same batches.
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair],
        scale: int,
        lr_patch: int,
        flip: bool,
        rot90: bool,
        sampling: str,
        device: torch.device,
        seed: int,
    ) -> None:
        for pair in pairs:
            if pair.hr.shape[:2] != (pair.lr.shape[0] * scale, pair.lr.shape[1] * scale):
                raise ValueError(f"{pair.name}: HR {pair.hr.shape} is not x{scale} of the LR")
        usable = [p for p in pairs if min(p.lr.shape[:2]) >= lr_patch]
        if not usable:
            raise ConfigError(f"no training image is large enough for data.lr_patch = {lr_patch}")
        self.skipped = len(pairs) - len(usable)
        self.scale, self.lr_patch, self.flip, self.rot90 = scale, lr_patch, flip, rot90
        self.device = device
        self.lr = PackedImages([p.lr for p in usable], device)
        self.hr = PackedImages([p.hr for p in usable], device)
        positions = (self.lr.heights - lr_patch + 1) * (self.lr.widths - lr_patch + 1)
        weights = positions if sampling == "area" else torch.ones_like(positions)
        self.weights = weights.double()
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        # Built once: a small host-to-device copy per batch would stall the CUDA stream.
        self._allowed_flips = torch.tensor([flip, flip, rot90], device=device)
        self._lr_grid = self._grid(lr_patch)
        self._hr_grid = self._grid(lr_patch * scale)

    @property
    def num_images(self) -> int:
        return len(self.lr.offsets)

    def _grid(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        ramp = torch.arange(size, device=self.device)
        return ramp.view(1, size, 1).expand(1, size, size), ramp.view(1, 1, size).expand(
            1, size, size
        )

    def sample(
        self, batch_size: int, rank: int = 0, world_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a global batch of ``batch_size`` patches and return this rank's share.

        Returns:
            ``(lr, hr)`` uint8 tensors (b, 3, p, p) and (b, 3, p*s, p*s) with
            ``b = batch_size // world_size``.
        """
        gen, dev = self.generator, self.device
        index = torch.multinomial(self.weights, batch_size, replacement=True, generator=gen)
        span_y = (self.lr.heights[index] - self.lr_patch + 1).double()
        span_x = (self.lr.widths[index] - self.lr_patch + 1).double()
        top = torch.rand(batch_size, generator=gen, device=dev, dtype=torch.float64) * span_y
        left = torch.rand(batch_size, generator=gen, device=dev, dtype=torch.float64) * span_x
        flips = torch.rand(batch_size, 3, generator=gen, device=dev) < 0.5
        flips &= self._allowed_flips
        share = slice(rank * batch_size // world_size, (rank + 1) * batch_size // world_size)
        index, flips = index[share], flips[share]
        top, left = top[share].long(), left[share].long()
        lr = self._cut(self.lr, index, top, left, flips, self._lr_grid)
        hr = self._cut(self.hr, index, top * self.scale, left * self.scale, flips, self._hr_grid)
        return lr, hr

    @staticmethod
    def _cut(
        images: PackedImages,
        index: torch.Tensor,
        top: torch.Tensor,
        left: torch.Tensor,
        flips: torch.Tensor,
        grid: tuple[torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """Gather patches with vertical flip, horizontal flip and transposition applied."""
        rows, cols = grid
        size = rows.shape[-1]
        vflip, hflip, transpose = (flips[:, k].view(-1, 1, 1) for k in range(3))
        rows, cols = torch.where(transpose, cols, rows), torch.where(transpose, rows, cols)
        rows = torch.where(vflip, size - 1 - rows, rows)
        cols = torch.where(hflip, size - 1 - cols, cols)
        return images.gather(index, rows + top.view(-1, 1, 1), cols + left.view(-1, 1, 1))


def describe_pairs(pairs: Sequence[ImagePair]) -> str:
    """One line about a loaded dataset, for the log."""
    pixels = sum(p.hr.shape[0] * p.hr.shape[1] for p in pairs)
    return f"{len(pairs)} images, {pixels / 1e6:.1f} MP of HR"


def warn(message: str) -> None:
    """Print a non-fatal problem to stderr."""
    print(f"lightsr train: warning: {message}", file=sys.stderr)
