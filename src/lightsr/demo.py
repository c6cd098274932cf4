"""``lightsr demo --out demo``: upscale a real photograph ×4 and compare with bicubic.

The photograph is Grace Hopper's portrait that ships with matplotlib (a lightsr
dependency), so the demo works offline. It is downscaled ×4 with MATLAB bicubic to make the
input, which leaves the original as ground truth: the demo prints PSNR-Y of bicubic and of
the network against it and writes

* ``<out>/input_x4.png``: the low-resolution input,
* ``<out>/out_x4.png``: the network's ×4 result,
* ``<out>/compare_x4.png``: bicubic | lightsr | zoomed crops (bicubic, lightsr, original).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

SCALE = 4
# Crop (output pixels) around the eyes, shown enlarged in the comparison.
ZOOM_BOX = (210, 160, 96, 96)  # x, y, width, height
ZOOM = 2
LABEL_COLOR = (255, 255, 0)
BOX_COLOR = (255, 64, 64)


def sample_photo() -> np.ndarray:
    """Grace Hopper's portrait from matplotlib's sample data, RGB uint8 (600x512)."""
    from matplotlib import cbook

    from lightsr.io import read_image

    return read_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def label(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the top-left corner of a copy of ``image``, on a dark strip."""
    out = image.copy()
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6, 1)
    out[: height + baseline + 8, : width + 10] //= 3
    cv2.putText(
        out, text, (5, height + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.6, LABEL_COLOR, 1, cv2.LINE_AA
    )
    return out


def comparison(
    bicubic: np.ndarray, restored: np.ndarray, truth: np.ndarray, name: str
) -> np.ndarray:
    """Side by side: bicubic | network | a column of zoomed crops of all three."""
    x, y, w, h = ZOOM_BOX
    crops = []
    for image, text in ((bicubic, "bicubic"), (restored, "lightsr"), (truth, "original")):
        crop = image[y : y + h, x : x + w]
        crops.append(
            label(cv2.resize(crop, None, fx=ZOOM, fy=ZOOM, interpolation=cv2.INTER_NEAREST), text)
        )
    zoom_column = np.concatenate(crops, axis=0)
    panels = []
    for image, text in ((bicubic, "bicubic x4"), (restored, f"lightsr x4 ({name})")):
        framed = image.copy()
        cv2.rectangle(framed, (x, y), (x + w - 1, y + h - 1), BOX_COLOR, 2)
        panels.append(label(framed, text))
    height = max(panels[0].shape[0], zoom_column.shape[0])
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in [*panels, zoom_column]]
    return np.concatenate(padded, axis=1)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lightsr.demo [ARGS]``: the same as ``lightsr demo [ARGS]``."""
    from lightsr.cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


def make_demo(out_dir: Path, model: str | None, weights: str | None, device: str) -> None:
    """Make the demo images in ``out_dir`` and print PSNR-Y against the original."""
    from lightsr.api import Upscaler
    from lightsr.imresize import imresize, mod_crop
    from lightsr.io import write_image
    from lightsr.metrics import psnr

    truth = mod_crop(sample_photo(), SCALE)
    low = imresize(truth, 1 / SCALE)
    upscaler = Upscaler(model=model, weights=weights, scale=SCALE, device=device)
    restored = upscaler(low)
    bicubic = imresize(low, SCALE)
    write_image(out_dir / "input_x4.png", low)
    write_image(out_dir / "out_x4.png", restored)
    write_image(out_dir / "compare_x4.png", comparison(bicubic, restored, truth, upscaler.name))
    print(
        f"Grace Hopper portrait {truth.shape[1]}x{truth.shape[0]}, "
        f"input {low.shape[1]}x{low.shape[0]}"
    )
    print(
        f"PSNR-Y vs original: bicubic {psnr(bicubic, truth, SCALE):.2f} dB, "
        f"lightsr ({upscaler.name}) {psnr(restored, truth, SCALE):.2f} dB"
    )
    print(f"wrote {out_dir / 'out_x4.png'} and {out_dir / 'compare_x4.png'}")


if __name__ == "__main__":
    sys.exit(main())
