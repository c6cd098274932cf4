"""The ``lightsr`` command line.

Each module in this package that defines ``register(subparsers)`` adds one subcommand; the
subcommand's parser sets ``func(args) -> int``. The CLI only parses arguments and prints:
the work is done by the Python API (CLI → API → engine → archs).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from lightsr import __version__
from lightsr.errors import (
    EXIT_CODES_HELP,
    EXIT_ERROR,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    LightSRError,
)
from lightsr.quiet import set_verbose
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
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lightsr {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    for subparser in subparsers.choices.values():
        subparser.add_argument(
            "--verbose",
            action="store_true",
            help="show third-party warnings (libpng, torch) and tracebacks of internal errors",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightsr`` script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    retain_freed_memory()
    set_verbose(args.verbose)
    try:
        return int(args.func(args) or 0)
    except LightSRError as exc:
        return _fail(args.command, f"error: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        return _fail(args.command, "interrupted", EXIT_INTERRUPTED)
    except MemoryError:
        return _fail(args.command, "error: out of memory", EXIT_ERROR)
    except Exception as exc:  # a bug: one line, the traceback only when asked for
        if args.verbose:
            raise
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        message = f"internal error: {type(exc).__name__}: {first} (--verbose shows where)"
        return _fail(args.command, message, EXIT_INTERNAL)


def run() -> NoReturn:
    """The ``lightsr`` script and ``python -m lightsr``: :func:`main`, then exit with its code.

    After Ctrl-C the process leaves at once, skipping interpreter shutdown: everything lightsr
    writes has been removed or renamed into place by then, while third-party threads the
    interrupt cut short (FFmpeg's, oneDNN's) can make that shutdown end the process by a
    signal (exit status -2 or -11 instead of 130) on a loaded machine.
    """
    code = main()
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _fail(command: str, message: str, code: int) -> int:
    print(f"lightsr {command}: {message}", file=sys.stderr)
    return code
