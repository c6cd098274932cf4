"""``lightsr demo``: upscale a real photograph ×4 and compare with bicubic (works offline)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lightsr.options import DEVICE_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="upscale a sample photograph x4 and compare with bicubic",
        description=(
            "Downscale Grace Hopper's portrait (matplotlib sample data) x4, upscale it back "
            "and write input_x4.png, out_x4.png and compare_x4.png; print PSNR-Y of bicubic "
            "and of the network against the original."
        ),
    )
    parser.add_argument("--out", default="demo", type=Path, help="output folder (default: demo)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--model", metavar="NAME", help="network or checkpoint name (default: built-in)"
    )
    which.add_argument("--weights", metavar="PATH", help="checkpoint file")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightsr.demo import make_demo

    make_demo(args.out, args.model, args.weights, args.device)
    return 0
