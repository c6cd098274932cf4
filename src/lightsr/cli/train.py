"""``lightsr train CONFIG.toml``: train a network from a TOML configuration."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  lightsr train configs/default_x4.toml
  lightsr train configs/default_x4.toml --set train.max_minutes=8 --set name=x4_run2
  lightsr train configs/default_x4.toml --resume auto        # continue the newest checkpoint
  torchrun --nproc_per_node 4 -m lightsr train configs/esc_fp.toml   # DDP, one GPU each
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a network from a TOML config",
        description="Train a super-resolution network; see configs/ for examples.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="TOML configuration file")
    parser.add_argument(
        "--resume",
        metavar="auto|PATH",
        help="continue from the newest checkpoint of the run (auto) or from a checkpoint folder",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.total_iters=2000 (repeatable)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightsr.train import load_config, train

    config = load_config(args.config, args.overrides)
    result = train(config, resume=args.resume, progress=not args.quiet)
    if result.deploy_psnr is not None and not args.quiet:
        print(f"deploy PSNR-Y: {result.deploy_psnr:.3f} dB")
    return 0
