"""``lightsr degrade``: a test set of realistically degraded inputs from clean HR images."""

from __future__ import annotations

import argparse
import json

EPILOG = """\
Each HR image goes through the second-order degradation model of Real-ESRGAN (two rounds of
blur, random resize, Gaussian or Poisson noise and JPEG, then a resize to 1/S with an
optional ringing filter). OUT gets the layout `lightsr eval` reads:
  OUT/HR/<name>.png                   the HR image cropped to a multiple of S
  OUT/LR_degraded/X<S>/<name>x<S>.png its degraded input
Each image's randomness comes from --seed and its file name only: the same seed gives
byte-identical files on any run, whatever other images are in HR_DIR. Presets: realesrgan
(the official recipe, for web images and old photos) and mild (weaker blur, noise and JPEG,
for clean sources); see docs/real-world.md. A non-empty OUT needs --overwrite.

Examples:
  lightsr degrade shared/data/Set14/HR -o Set14_real --scale 4
  lightsr degrade photos/ -o photos_mild --preset mild --seed 1 --json
  lightsr eval --data Set14_real --scale 4 --model bicubic
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "degrade",
        help="make degraded LR inputs from HR images (Real-ESRGAN model)",
        description="Degrade HR images into a real-world test set (HR/ and LR_degraded/X<S>/).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("hr_dir", metavar="HR_DIR", help="folder of clean HR images")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    parser.add_argument("--scale", type=int, default=4, metavar="S", help="downscaling factor")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (>= 0)")
    parser.add_argument(
        "--preset", default="realesrgan", help="degradation strength: realesrgan or mild"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace files in OUT")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary on stdout")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `lightsr --help` does not pay for torch (lightsr.io imports it).
    from lightsr.degrade import degradation_preset, degrade_folder

    config = degradation_preset(args.preset)
    summary = degrade_folder(
        args.hr_dir,
        args.output,
        args.scale,
        config,
        seed=args.seed,
        overwrite=args.overwrite,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps({**summary.to_dict(), "preset": args.preset}))
    else:
        print(
            f"{len(summary.images)} images degraded x{summary.scale} ({args.preset}, seed "
            f"{summary.seed}) into {summary.output} in {summary.seconds:.1f} s"
        )
    return 0
