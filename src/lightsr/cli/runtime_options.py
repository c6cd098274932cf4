"""Helpers of the commands that run networks: precision option and notes, thread count."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from lightsr.errors import UsageError
from lightsr.options import AUTO_PRECISION, INFERENCE_PRECISIONS

if TYPE_CHECKING:
    from lightsr.api import Upscaler

# How ``--precision`` help describes each value.
PRECISION_HELP = {
    AUTO_PRECISION: "auto (bf16 where this CPU runs it natively and it keeps PSNR, else fp32)",
    "fp32": "fp32",
    "fp16": "fp16",
    "bf16": "bf16 (torch)",
    "int8": "int8 (onnxruntime: calibrated export)",
}


def add_precision_argument(
    parser: argparse.ArgumentParser, default: str = "fp32", auto: bool = True
) -> None:
    """``--precision``: every inference precision, and ``auto`` unless ``auto`` is False."""
    choices = (AUTO_PRECISION, *INFERENCE_PRECISIONS) if auto else INFERENCE_PRECISIONS
    described = [PRECISION_HELP[c] + (" [default]" if c == default else "") for c in choices]
    parser.add_argument("--precision", default=default, choices=choices, help=", ".join(described))


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


def print_precision_choice(command: str, upscaler: Upscaler, verbose: bool) -> None:
    """Under ``--verbose``, say on stderr which precision ``auto`` chose and why (one line)."""
    if verbose and upscaler.precision_reason:
        print(f"lightsr {command}: precision auto: {upscaler.precision_reason}", file=sys.stderr)


def print_precision_note(command: str, precision: str, device_type: str) -> None:
    """Print :func:`lightsr.runtime.precision_note` as one line on stderr, if any."""
    from lightsr.runtime import precision_note

    note = precision_note(precision, device_type)
    if note:
        print(f"lightsr {command}: note: {note}", file=sys.stderr)
