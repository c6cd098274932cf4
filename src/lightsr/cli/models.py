"""``lightsr models``: every registered variant and the published official weights."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from lightsr.options import MAX_SCALE, MIN_SCALE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list networks, variants, scales and official weights",
        description="List every network variant with its scales and parameter counts, and "
        "every known published checkpoint.",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lightsr.catalog import catalog

    info = catalog()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(_format(info))
    return 0


def _scales(variant: dict[str, Any]) -> str:
    if variant["arbitrary_scale"]:
        return f"any x{MIN_SCALE:g}-x{MAX_SCALE:g}"
    return ",".join(f"x{s}" for s in variant["scales"])


def _params(variant: dict[str, Any]) -> str:
    counts = variant["params"]
    if variant["arbitrary_scale"]:  # one network for every scale
        return f"{next(iter(counts.values())):,}"
    return "  ".join(f"x{s} {n:,}" for s, n in counts.items())


def _format(info: dict[str, list[dict[str, Any]]]) -> str:
    variants = [
        (
            v["name"],
            v["family"],
            _scales(v),
            _params(v),
            f"0-{v['input_range']:g}",
            "paper-derived" if v["paper_derived"] else v["description"],
        )
        for v in info["variants"]
    ]
    weights = [
        (
            w["name"],
            w["variant"],
            f"x{w['scale']}",
            f"{w['size'] / 1e6:.1f} MB" if w["size"] else "-",
            w["licence"],
            _status(w),
        )
        for w in info["official_weights"]
    ]
    return "\n".join(
        [
            "Variants (trainable parameters in inference form):",
            _table(("VARIANT", "FAMILY", "SCALES", "PARAMS", "RANGE", "NOTES"), variants),
            "",
            "Official weights (lightsr download NAME, or --model NAME):",
            _table(("NAME", "VARIANT", "SCALE", "SIZE", "LICENCE", "STATUS"), weights),
        ]
    )


def _status(weights: dict[str, Any]) -> str:
    if not weights["available"]:
        return f"manual download: {weights['url']}"
    return "downloaded" if weights["cached"] else "downloadable"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]
    return "\n".join("  " + line for line in lines)
