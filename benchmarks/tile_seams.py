"""Seam report: how far tiled inference departs from a whole-image forward.

For every network and every image of a test set, the LR input is upscaled once whole and
once in tiles; the table gives the largest and mean absolute difference (8-bit levels) over
the image and within ``scale`` output pixels of the tile boundaries ("seam"), and the PSNR
of the tiled result against the whole one. Convolution-only networks should show 0;
attention networks small numbers with no excess at the seams.

    PYTHONPATH=src python benchmarks/tile_seams.py --models fmen_s emt esc ditn_real
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from lightsr.archs import build_model, get_arch, list_models
from lightsr.inference import DEFAULT_TILE_OVERLAP, plan_tiles, prepare_model, upscale_array
from lightsr.io import read_rgb_uint8
from lightsr.models import SRModel, load_model
from lightsr.paths import shared_dir

# Official checkpoints in the shared folder, used when they exist; other networks run
# with random initialisation (the tiling arithmetic is the same).
OFFICIAL = {
    ("emt", 4): "weights/official/EMT/EMT_LSR_x4.pth",
    ("ditn_real", 4): "weights/official/DITN/DITN_Real_x4.pth",
    ("fmen_s", 4): "weights/official/FMEN/test_weights.pt",
}


def load(name: str, scale: int) -> tuple[SRModel, str]:
    checkpoint = OFFICIAL.get((name, scale))
    if checkpoint and (shared_dir() / checkpoint).is_file():
        return load_model(shared_dir() / checkpoint), "official"
    module = build_model(name, scale).eval()
    return SRModel(module=module, spec=get_arch(name), scale=scale), "random init"


def seam_mask(height: int, width: int, model: SRModel, tile: int, overlap: int) -> np.ndarray:
    """True within ``scale`` output pixels of an interior tile boundary."""
    plan = plan_tiles(height, width, model, tile, overlap)
    s = model.scale
    mask = np.zeros((height * s, width * s), dtype=bool)
    for span in plan.rows[1:]:
        mask[(span.start - 1) * s : (span.start + 1) * s, :] = True
    for span in plan.cols[1:]:
        mask[:, (span.start - 1) * s : (span.start + 1) * s] = True
    return mask


def compare(model: SRModel, image: np.ndarray, tile: int, overlap: int) -> dict[str, float]:
    whole = upscale_array(model, image).astype(np.float64)
    tiled = upscale_array(model, image, tile=tile, overlap=overlap).astype(np.float64)
    diff = np.abs(tiled - whole)
    seams = seam_mask(*image.shape[:2], model, tile, overlap)
    mse = float(np.mean(diff**2))
    return {
        "max": float(diff.max()),
        "mean": float(diff.mean()),
        "seam_max": float(diff[seams].max()) if seams.any() else 0.0,
        "seam_mean": float(diff[seams].mean()) if seams.any() else 0.0,
        "psnr": math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["fmen_s", "ditn_real", "emt", "esc"])
    parser.add_argument("--data", type=Path, default=shared_dir() / "data" / "Set14")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--overlap", type=int, default=DEFAULT_TILE_OVERLAP)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write the per-image numbers here")
    args = parser.parse_args()
    lr_dir = args.data / "LR_bicubic" / f"X{args.scale}"
    images = sorted(lr_dir.glob("*.png"))
    report = {}
    print(f"{args.data.name} x{args.scale}, tile {args.tile}, overlap {args.overlap}")
    print(
        f"{'model':12} {'weights':12} {'max':>5} {'mean':>8} {'seam max':>8} "
        f"{'seam mean':>9} {'min PSNR':>9}"
    )
    for name in args.models:
        if name not in list_models():
            print(f"{name:12} (not registered)")
            continue
        model, weights = load(name, args.scale)
        prepare_model(model, args.device, "fp32")
        rows = {p.stem: compare(model, read_rgb_uint8(p), args.tile, args.overlap) for p in images}
        report[name] = {"weights": weights, "images": rows}
        print(
            f"{name:12} {weights:12} {max(r['max'] for r in rows.values()):5.0f} "
            f"{np.mean([r['mean'] for r in rows.values()]):8.4f} "
            f"{max(r['seam_max'] for r in rows.values()):8.0f} "
            f"{np.mean([r['seam_mean'] for r in rows.values()]):9.4f} "
            f"{min(r['psnr'] for r in rows.values()):9.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
