"""``lightsr upscale ... --ray [ADDRESS]``: the upscale command's Ray options and run.

The work is :func:`lightsr.distributed.upscale_dataset`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lightsr.errors import UsageError

LOCAL = "local"
HELP = """\
run on Ray (pip install 'lightsr[ray]'): ADDRESS of a cluster ('auto', 'ray://head:10001'),
or none to start Ray here. Resumable: complete outputs are skipped, unless --overwrite.
INPUT may then be a URI (s3://bucket/prefix, gs://...). Give --ray after the INPUTs."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--ray`` and the ``--ray-*`` options to the upscale parser."""
    group = parser.add_argument_group("Ray (many machines)")
    group.add_argument("--ray", nargs="?", const=LOCAL, metavar="ADDRESS", help=HELP)
    group.add_argument(
        "--ray-actors", type=int, metavar="N", help="actors, each with a model (default: CPUs/T)"
    )
    group.add_argument(
        "--ray-threads", type=int, metavar="T", help="CPUs and threads per actor (default: 1)"
    )
    group.add_argument(
        "--ray-gpus", type=float, metavar="G", help="GPUs per actor, for --device cuda (default: 0)"
    )


def run_on_ray(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """Run ``lightsr upscale`` with the ``--ray`` options and ``Upscaler`` ``options``.

    Returns the exit status: 0 all written, 1 some image failed.
    """
    from lightsr.distributed import upscale_dataset

    display = _Display(quiet=args.json)
    try:
        report = upscale_dataset(
            args.inputs,
            args.output,
            address=None if args.ray == LOCAL else args.ray,
            actors=args.ray_actors,
            threads_per_actor=args.ray_threads or options.pop("threads") or 1,
            gpus_per_actor=args.ray_gpus or 0,
            suffix=args.suffix,
            output_format=args.format,
            recursive=args.recursive,
            quality=args.quality,
            max_pixels=args.max_pixels,
            overwrite=args.overwrite,
            on_start=display.start,
            on_result=display.on_result,
            **options,
        )
    finally:
        display.close()
    if args.json:
        print(json.dumps(report.to_dict()))
    elif report.skipped == report.images:
        print(f"nothing to do: all {report.images} images are already done")
    else:
        failed = f", {len(report.failures)} failed" if report.failures else ""
        print(
            f"upscaled {report.written} of {report.images} images on {report.actors} Ray "
            f"actors ({report.skipped} already done{failed}) in {report.seconds:.1f} s "
            f"({report.images_per_second:.2f} images/s)"
        )
    return 1 if report.failures else 0


def check_arguments(args: argparse.Namespace) -> None:
    """Raise :class:`UsageError` for Ray options that are given wrongly."""
    for name in ("ray_actors", "ray_threads", "ray_gpus"):
        value = getattr(args, name)
        flag = "--" + name.replace("_", "-")
        if value is not None and args.ray is None:
            raise UsageError(f"{flag} needs --ray")
        if value is not None and value <= 0:
            raise UsageError(f"{flag} must be positive, got {value}")


class _Display:
    """One progress bar on stderr: images done, images/s and ETA; a line per failure."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Any = None

    def start(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="img", file=sys.stderr, disable=self.quiet or None)

    def on_result(self, record: dict[str, Any]) -> None:
        self.bar.update(1)
        if record["error"] and not self.quiet:
            self.bar.write(f"lightsr upscale: failed: {record['error']}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
