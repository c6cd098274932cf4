"""Print the ONNX ops each network exports to, as the Markdown table of ``docs/deploy.md``.

Usage: PYTHONPATH=src python benchmarks/onnx_ops.py [--models all] [--scale 4]

Exports every network (fresh weights, seed 0, deploy form, fp32, dynamic sizes) through
:func:`lightsr.export.cached_export`, so exports that ``lightsr bench --backend onnxruntime``
already made are reused, and lists the op types of each graph (local functions inlined).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from lightsr.archs.registry import build_model, get_arch
from lightsr.bench import select_models
from lightsr.export import cached_export, onnx_ops
from lightsr.models import SRModel


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="all", help="all or a comma-separated list")
    parser.add_argument("--scale", type=int, default=4)
    args = parser.parse_args(argv)
    print("| network | ONNX ops (opset 18) |")
    print("|---|---|")
    for variant in select_models(args.models, args.scale):
        torch.manual_seed(0)  # the same weights as `lightsr bench`, so its exports are reused
        module = build_model(variant, args.scale).eval()
        model = SRModel(module=module, spec=get_arch(variant), scale=args.scale)
        ops = onnx_ops(cached_export(model))
        print(f"| `{variant}` | {', '.join(ops)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
