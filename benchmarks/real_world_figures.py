"""The pictures of docs/real-world.md: real photos upscaled by several models, and what the
degradation presets do to a clean image.

    python benchmarks/real_world_figures.py --out docs
    python benchmarks/real_world_figures.py --out docs --model "FMEN-S real=final_ema.safetensors"

Writes ``real-world-crops.png`` (per row: one RealSRSet photo's crop as the input, enlarged
by pixel repetition, then each model's ×4 output of it) and ``real-world-degrade.png`` (a
Set14 crop, then its degraded ×4 input under each preset, enlarged by pixel repetition).
Every model runs in fp32. Needs the shared data (``$LIGHTSR_SHARED``, else ../shared).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from lightsr.api import Upscaler
from lightsr.degrade import PRESETS, degrade, image_rng
from lightsr.io import read_rgb_uint8, write_image
from lightsr.paths import shared_dir

SCALE = 4
# (RealSRSet image, top, left) of each 48×48 input crop: faces, print, text, fur.
CROPS = (("oldphoto2", 40, 56), ("Lincoln", 50, 56), ("comic1", 20, 40), ("dog", 150, 150))
CROP = 48
# A Set14 crop for the degradation picture (HR pixels, a multiple of SCALE).
DEGRADE_IMAGE, DEGRADE_BOX = "Set14/HR/comic.png", (80, 40, 192)
LABEL_HEIGHT = 22


def labelled(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` with a white strip above it holding ``text``."""
    strip = np.full((LABEL_HEIGHT, image.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, image])


def enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    """Pixel repetition, so that the input's own pixels stay visible."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def grid(rows: list[list[np.ndarray]], gap: int = 6) -> np.ndarray:
    """Rows of equally sized tiles on a white background."""
    height, width = rows[0][0].shape[:2]
    canvas = np.full(
        (len(rows) * (height + gap) + gap, len(rows[0]) * (width + gap) + gap, 3), 255, np.uint8
    )
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            top, left = gap + r * (height + gap), gap + c * (width + gap)
            canvas[top : top + height, left : left + width] = tile
    return canvas


def crops_figure(models: dict[str, str]) -> np.ndarray:
    """Input crop and each model's output of it, one RealSRSet photo per row."""
    upscalers = {
        name: Upscaler(model=_model(m), weights=_weights(m), precision="fp32")
        for name, m in models.items()
    }
    rows = []
    for name, top, left in CROPS:
        photo = read_rgb_uint8(shared_dir() / "data" / "RealSRSet" / f"{name}.png")
        window = photo[top : top + CROP, left : left + CROP]
        row = [labelled(enlarge(window, SCALE), f"{name}: input")]
        for label, upscaler in upscalers.items():
            output = upscaler(photo)
            box = output[top * SCALE : (top + CROP) * SCALE, left * SCALE : (left + CROP) * SCALE]
            row.append(labelled(box, label))
        rows.append(row)
    return grid(rows)


def degrade_figure(seed: int = 0) -> np.ndarray:
    """A clean crop and its degraded ×4 input under each preset."""
    top, left, size = DEGRADE_BOX
    hr = read_rgb_uint8(shared_dir() / "data" / DEGRADE_IMAGE)[top : top + size, left : left + size]
    row = [labelled(hr, "clean HR")]
    for preset, config in PRESETS.items():
        pair = degrade(hr, SCALE, config, image_rng(seed, DEGRADE_IMAGE))
        lr = np.clip(np.rint(pair.lr * 255), 0, 255).astype(np.uint8)
        row.append(labelled(enlarge(lr, SCALE), f"{preset}, seed {seed}"))
    return grid([row])


def _model(spec: str) -> str | None:
    return None if Path(spec).suffix else spec


def _weights(spec: str) -> str | None:
    return spec if Path(spec).suffix else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder for the PNGs")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="LABEL=MODEL",
        help="another column: a --model name or a weights file (default columns: default, real)",
    )
    args = parser.parse_args()
    models = {"default (fmen_s)": "default", "--quality real": "real"}
    models.update(dict(item.split("=", 1) for item in args.model))
    write_image(args.out / "real-world-crops.png", crops_figure(models))
    write_image(args.out / "real-world-degrade.png", degrade_figure())


if __name__ == "__main__":
    main()
