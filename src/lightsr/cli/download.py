"""``lightsr download``: fetch published official weights into the cache, verified by SHA-256."""

from __future__ import annotations

import argparse

from lightsr.errors import UsageError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download",
        help="download published official weights",
        description=(
            "Download published official checkpoints into the lightsr cache and verify their "
            "SHA-256. Names are listed by `lightsr models`. Set LIGHTSR_WEIGHTS_URL to "
            "download from a mirror."
        ),
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="e.g. emt_x4_official")
    parser.add_argument("--all", action="store_true", help="every downloadable checkpoint")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightsr.hub import fetch_weights, official_weights

    if args.all == bool(args.names):
        raise UsageError("give one or more NAMEs or --all (see `lightsr models`)")
    names = [w.name for w in official_weights() if w.available] if args.all else args.names
    for name in names:
        print(f"{name}\t{fetch_weights(name)}")
    return 0
