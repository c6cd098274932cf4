"""The ``lightsr`` command line.

Each module in this package that defines ``register(subparsers)`` adds one subcommand; the
subcommand's parser sets ``func(args) -> int``. The CLI only parses arguments and prints:
the work is done by the Python API (CLI → API → engine → archs).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from lightsr import __version__
from lightsr.errors import LightSRError
from lightsr.runtime import retain_freed_memory

DESCRIPTION = """\
lightsr: efficient single-image super-resolution (DITN, ESC, FMEN, EMT).

Examples:
  lightsr upscale photo.jpg -o photo_x4.png          # built-in default model, x4
  lightsr eval --data Set5 --scale 4 --model bicubic # PSNR/SSIM on a benchmark set
  lightsr models                                     # every network, variant and scale
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lightsr",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lightsr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightsr`` script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    retain_freed_memory()
    try:
        return int(args.func(args) or 0)
    except LightSRError as exc:
        print(f"lightsr {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"lightsr {args.command}: interrupted", file=sys.stderr)
        return 130
