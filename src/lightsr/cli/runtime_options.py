"""Options shared by the commands that run networks: precision, backend, device, threads."""

from __future__ import annotations

import argparse
import sys

from lightsr.errors import UsageError

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
BACKENDS = ("torch", "onnxruntime")


def add_runtime_options(parser: argparse.ArgumentParser, device_default: str = "auto") -> None:
    """Add ``--precision``, ``--device``, ``--backend`` and ``--threads`` to ``parser``."""
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="fp32 (default), fp16, bf16 (torch) or int8 (onnxruntime: calibrated export)",
    )
    parser.add_argument("--device", default=device_default, help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--backend", default="torch", choices=BACKENDS)
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="intra-op threads (default: $LIGHTSR_THREADS, else the cores free now)",
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
