"""PSNR-Y of an arbitrary-scale model against the fixed-scale baselines (the model card table).

For each set and scale: the arbitrary-scale model; the built-in default fixed-scale model
where it has that scale (×2, ×3, ×4); otherwise the ×4 default followed by MATLAB bicubic
to the target size (what ``lightsr upscale --outscale`` gives); and plain bicubic. All in
fp32 through :func:`lightsr.evaluate.evaluate` (official LR files at ×2–×4, the LIIF/LTE
size rule at ×6 and ×8).

    PYTHONPATH=src python benchmarks/anyscale_table.py --weights src/lightsr/weights/anyscale.safetensors
"""

from __future__ import annotations

import argparse
import json
import time

from lightsr.evaluate import evaluate
from lightsr.models import load_default_model, load_model

SETS = ("Set5", "Set14", "B100")
SCALES = (2, 3, 4, 6, 8)
FIXED = (2, 3, 4)


def row(data: str, scale: int, anyscale, with_bicubic: bool) -> dict[str, float]:
    found = {"anyscale": evaluate(data, scale, anyscale, progress=False).psnr}
    if scale in FIXED:
        found["default"] = evaluate(data, scale, load_default_model(scale), progress=False).psnr
    else:
        baseline = evaluate(data, scale, load_default_model(4), progress=False, outscale_from=4)
        found["default_x4_bicubic"] = baseline.psnr
    if with_bicubic:
        found["bicubic"] = evaluate(data, scale, None, progress=False).psnr
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="arbitrary-scale model file")
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--scales", default=",".join(map(str, SCALES)))
    parser.add_argument("--bicubic", action="store_true", help="add a bicubic column")
    args = parser.parse_args()
    model = load_model(args.weights)
    for data in args.sets.split(","):
        for scale in map(int, args.scales.split(",")):
            start = time.monotonic()
            found = row(data, scale, model, args.bicubic)
            found = {key: round(value, 3) for key, value in found.items()}
            seconds = round(time.monotonic() - start, 1)
            print(json.dumps({"set": data, "scale": scale, **found, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    main()
