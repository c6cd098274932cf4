"""``lightsr convert``: any supported checkpoint → canonical safetensors with metadata."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a checkpoint to canonical safetensors",
        description=(
            "Load a checkpoint (.pth/.pt/.safetensors, any supported network, or a published "
            "weights name) and save it as .safetensors with its provenance metadata "
            "(family, variant, scale, form, config)."
        ),
    )
    parser.add_argument("source", metavar="IN", help="checkpoint file or published name")
    parser.add_argument("destination", metavar="OUT", help="output .safetensors file")
    parser.add_argument("--half", action="store_true", help="store float tensors as float16")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightsr.convert import convert_checkpoint
    from lightsr.paths import check_output_path

    check_output_path(args.destination, args.overwrite, ".safetensors")
    model = convert_checkpoint(args.source, args.destination, half=args.half)
    print(f"{args.destination}: {model.variant} x{model.scale}")
    return 0
