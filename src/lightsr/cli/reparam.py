"""``lightsr reparam``: fold a training-form checkpoint (e.g. FMEN) into its deploy form."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reparam",
        help="fold a training-form checkpoint into its deploy form",
        description=(
            "Load a training-form checkpoint of a re-parameterisable network (FMEN, FMEN-S: "
            "RRRBs and BatchNorms), fold it into plain convolutions and save the deploy form "
            "as .safetensors with its provenance metadata (form: deploy). The outputs are equal "
            "up to float rounding."
        ),
    )
    parser.add_argument("source", metavar="IN", help="training-form checkpoint or published name")
    parser.add_argument("destination", metavar="OUT", help="output .safetensors file")
    parser.add_argument("--half", action="store_true", help="store float tensors as float16")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightsr.deploy import reparameterize_checkpoint
    from lightsr.paths import check_output_path

    check_output_path(args.destination, args.overwrite, ".safetensors")
    model = reparameterize_checkpoint(args.source, args.destination, half=args.half)
    n_params = sum(p.numel() for p in model.module.parameters())
    print(f"{args.destination}: {model.variant} x{model.scale}, deploy form, {n_params:,} params")
    return 0
