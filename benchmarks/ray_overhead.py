"""Throughput of `lightsr upscale --ray` against plain `lightsr upscale` on this machine.

Usage: PYTHONPATH=src python benchmarks/ray_overhead.py [--data DIR] [--images 40]
       [--rounds 3] [--configs single,single-1t,ray-2x1,ray-1x2]

Each run is a fresh process that upscales the first ``--images`` images of ``--data``
(default: B100 x4 LR) with the built-in x4 model into a new folder: ``single`` through
:func:`lightsr.batch.run_jobs` (one process, torch's default threads; ``single-1t``: one
thread), ``ray-AxT`` through
:func:`lightsr.distributed.upscale_dataset` on a local Ray with A actors of T threads.
Configurations alternate within each round, so that the load of a shared machine falls on
all alike. Per run it reports the wall time of the whole process (imports, model loading
and Ray start-up included) and the steady throughput: images/s between the first and the
last output written (file modification times, so delivery to the driver does not count).
The load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from lightsr.paths import shared_dir


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=shared_dir() / "data/B100/LR_bicubic/X4")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", default="single,single-1t,ray-2x1,ray-1x2")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return _worker(args.worker, args.data, args.images)
    print(f"load before: {os.getloadavg()}", flush=True)
    rows = []
    for round_index in range(args.rounds):
        for config in args.configs.split(","):
            row = _measure(config, args.data, args.images)
            rows.append({"round": round_index, **row})
            print(json.dumps(rows[-1]), flush=True)
    print(f"load after: {os.getloadavg()}", flush=True)
    for config in args.configs.split(","):
        mine = [row for row in rows if row["config"] == config]
        steady = sorted(row["steady_images_per_s"] for row in mine)
        wall = sorted(row["wall_s"] for row in mine)
        print(
            f"{config}: steady {steady[len(steady) // 2]:.3f} images/s (median; all {steady}), "
            f"wall {wall[len(wall) // 2]:.1f} s (median; all {wall})"
        )
    return 0


def _measure(config: str, data: Path, images: int) -> dict:
    command = [sys.executable, __file__, "--worker", config, "--data", str(data)]
    start = time.perf_counter()
    result = subprocess.run(
        [*command, "--images", str(images)], capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - start
    return {"config": config, "wall_s": round(wall, 2), **json.loads(result.stdout)}


def _worker(config: str, data: Path, images: int) -> int:
    """Upscale the images one way; print the steady throughput as JSON."""
    with tempfile.TemporaryDirectory() as folder:
        inputs = Path(folder) / "in"
        inputs.mkdir()
        for source in sorted(data.iterdir())[:images]:
            (inputs / source.name).symlink_to(source.resolve())
        out = Path(folder) / "out"
        if config.startswith("single"):
            import torch

            from lightsr.api import Upscaler
            from lightsr.batch import plan_jobs, run_jobs

            if config == "single-1t":
                torch.set_num_threads(1)
            run_jobs(Upscaler(), plan_jobs([str(inputs)], out, "_x4"))
        else:
            from lightsr.distributed import upscale_dataset

            actors, threads = (int(n) for n in config.removeprefix("ray-").split("x"))
            upscale_dataset(str(inputs), out, actors=actors, threads_per_actor=threads, num_cpus=2)
        stamps = sorted(path.stat().st_mtime for path in out.glob("*.png"))
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    print(json.dumps({"images": len(stamps), "steady_images_per_s": round(steady, 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
