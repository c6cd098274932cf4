"""Rate of real-world degradation on the CPU against the FMEN-S training step it feeds.

Usage: PYTHONPATH=src python benchmarks/degrade_rate.py [--seconds 10] [--threads 2]

Degrades 400-px HR crops of the T91 training images (x4: LR 100 px, then a 256-px target
and 64-px input are cut, as in the official recipe) and times FMEN-S training steps
(forward, L1 backward and Adam, batch 16 of 64x64 inputs, channels-last like the trainer on
a CPU), in alternating rounds. Prints both pair rates and their ratio: degradation should
run at least 3x faster than training consumes pairs, so one worker thread keeps up.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from lightsr import build_model
from lightsr.archs.blocks import to_inference_layout
from lightsr.degrade import PRESETS, degrade
from lightsr.io import read_rgb_uint8
from lightsr.paths import shared_dir

SCALE, CROP, LR_PATCH, BATCH = 4, 400, 64, 16
TARGET_RATIO = 3.0
ROUNDS = 5


def load_crops(count: int) -> list[np.ndarray]:
    """Reflect-padded 400x400 crops of the first T91 images (most are smaller than 400)."""
    folder = shared_dir() / "data" / "train" / "T91" / "HR"
    crops = []
    for path in sorted(Path(folder).iterdir())[:count]:
        image = read_rgb_uint8(path)
        pad_h, pad_w = max(0, CROP - image.shape[0]), max(0, CROP - image.shape[1])
        image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        crops.append(np.ascontiguousarray(image[:CROP, :CROP]))
    return crops


def degrade_rate(crops: list[np.ndarray], rng: np.random.Generator, seconds: float) -> float:
    """Pairs per second of :func:`degrade` plus the paired crop, for about ``seconds``."""
    config = PRESETS["realesrgan"]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        pair = degrade(crops[done % len(crops)], SCALE, config, rng)
        top, left = rng.integers(0, CROP // SCALE - LR_PATCH + 1, size=2)
        _ = pair.lr[top : top + LR_PATCH, left : left + LR_PATCH]
        done += 1
    return done / (time.perf_counter() - start)


class TrainingStep:
    """One FMEN-S training step (forward, L1 backward, Adam) at batch 16 of 64x64 inputs,
    channels-last like the trainer on a CPU."""

    def __init__(self) -> None:
        self.model = to_inference_layout(build_model("fmen_s", scale=SCALE)).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=2e-4)
        self.lr = torch.rand(BATCH, 3, LR_PATCH, LR_PATCH)
        self.hr = torch.rand(BATCH, 3, LR_PATCH * SCALE, LR_PATCH * SCALE)

    def __call__(self) -> float:
        """Seconds of one step."""
        begin = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.l1_loss(self.model(self.lr), self.hr).backward()
        self.optimizer.step()
        return time.perf_counter() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time of degradation")
    parser.add_argument("--threads", type=int, default=2, help="OpenCV and torch threads")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    crops, rng, step_once = load_crops(10), np.random.default_rng(0), TrainingStep()
    degrade_rate(crops, rng, 0.5)  # warm-ups: lazy initialisation, first allocations
    step_once()
    # Alternating rounds, medians: on a shared machine both rates then see the same load.
    rates, steps = [], []
    for _ in range(ROUNDS):
        rates.append(degrade_rate(crops, rng, args.seconds / ROUNDS))
        steps.append(step_once())
    pairs_per_s, step = float(np.median(rates)), float(np.median(steps))
    train_pairs_per_s = BATCH / step
    ratio = pairs_per_s / train_pairs_per_s
    print(f"degradation: {pairs_per_s:.1f} pairs/s (400-px HR crops, x4, {args.threads} threads)")
    print(f"FMEN-S training step: {step * 1000:.0f} ms at batch {BATCH}", end=" ")
    print(f"= {train_pairs_per_s:.1f} pairs/s")
    verdict = "ok" if ratio >= TARGET_RATIO else f"below the {TARGET_RATIO:.0f}x target"
    print(f"ratio: {ratio:.1f}x ({verdict})")


if __name__ == "__main__":
    main()
