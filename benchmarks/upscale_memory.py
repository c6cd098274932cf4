"""Peak memory and speed of upscaling one large image (default 4096x4096 x4 on the CPU).

The input is Grace Hopper's portrait (matplotlib sample data) resized to SIZE x SIZE. The
script prints the tile plan, the time, the output megapixels per second and the process's
peak resident memory (VmHWM), which includes Python, torch, the input and the output array
(16384x16384x3 uint8 = 768 MiB at the default size). The target is < 2 GiB.

    PYTHONPATH=src python benchmarks/upscale_memory.py --model fmen_s --deploy
    PYTHONPATH=src python benchmarks/upscale_memory.py --weights w.safetensors --write big.png
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import cv2
import psutil
import torch
from tqdm import tqdm

from lightsr.api import Upscaler
from lightsr.archs import build_model, get_arch
from lightsr.demo import sample_photo
from lightsr.inference import estimate_bytes_per_pixel, plan_tiles
from lightsr.io import write_image
from lightsr.models import SRModel, load_model

MIB = 1 << 20


def peak_rss() -> int:
    """The process's peak resident set size in bytes (Linux VmHWM)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--model", default="fmen_s", help="registry name (random init)")
    parser.add_argument("--deploy", action="store_true", help="build the deploy form")
    parser.add_argument("--weights", help="checkpoint to load instead of a random init")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--tile", type=int)
    parser.add_argument("--max-memory", type=int, metavar="MiB")
    parser.add_argument("--write", type=Path, help="also write the result (PNG, ...)")
    args = parser.parse_args()

    if args.weights:
        model = load_model(args.weights)
    else:
        overrides = {"deploy": True} if args.deploy else {}
        module = build_model(args.model, args.scale, **overrides).eval()
        model = SRModel(module=module, spec=get_arch(args.model), scale=args.scale)
    image = cv2.resize(sample_photo(), (args.size, args.size), interpolation=cv2.INTER_CUBIC)
    max_memory = None if args.max_memory is None else args.max_memory * MIB
    upscaler = Upscaler(
        model=model,
        tile=args.tile,
        max_memory=max_memory,
        precision=args.precision,
        device=args.device,
    )
    plan = plan_tiles(args.size, args.size, model, args.tile, upscaler.tile_overlap, max_memory)
    print(
        f"{model.variant} x{model.scale} on {upscaler.device} ({args.precision}), input "
        f"{args.size}x{args.size}: {len(plan.rows)}x{len(plan.cols)} tiles, core "
        f"{plan.rows[0].end - plan.rows[0].start} px, estimate "
        f"{estimate_bytes_per_pixel(model):.0f} B/px, {torch.get_num_threads()} threads"
    )
    baseline = psutil.Process().memory_info().rss
    bar = tqdm(total=plan.count, unit="tile")
    start = time.perf_counter()
    out = upscaler(image, progress=lambda done, total: bar.update(done - bar.n))
    seconds = time.perf_counter() - start
    bar.close()
    megapixels = out.shape[0] * out.shape[1] / 1e6
    print(
        f"output {out.shape[1]}x{out.shape[0]} {out.dtype} ({out.nbytes / MIB:.0f} MiB) in "
        f"{seconds:.1f} s, {megapixels / seconds:.2f} MP/s; RSS before {baseline / MIB:.0f} MiB, "
        f"peak {peak_rss() / MIB:.0f} MiB"
    )
    if args.write:
        start = time.perf_counter()
        write_image(args.write, out)
        print(
            f"wrote {args.write} in {time.perf_counter() - start:.1f} s; "
            f"peak RSS {peak_rss() / MIB:.0f} MiB"
        )


if __name__ == "__main__":
    main()
