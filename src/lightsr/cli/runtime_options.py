"""Helpers of the commands that run networks: precision option and notes, thread count."""

from __future__ import annotations

import argparse
import sys

from lightsr.errors import UsageError
from lightsr.options import INFERENCE_PRECISIONS


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision``: every inference precision, fp32 by default."""
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=INFERENCE_PRECISIONS,
        help="fp32 (default), fp16, bf16 (torch) or int8 (onnxruntime: calibrated export)",
    )


def resolve_threads(threads: int | None) -> int:
    """``--threads``, else :func:`lightsr.runtime.default_threads` (one-line errors)."""
    from lightsr.runtime import default_threads

    if threads is not None:
        if threads < 1:
            raise UsageError(f"--threads must be positive, got {threads}")
        return threads
    try:
        return default_threads()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def print_precision_note(command: str, precision: str, device_type: str) -> None:
    """Print :func:`lightsr.runtime.precision_note` as one line on stderr, if any."""
    from lightsr.runtime import precision_note

    note = precision_note(precision, device_type)
    if note:
        print(f"lightsr {command}: note: {note}", file=sys.stderr)
