"""Video upscaling throughput, time outside the network and peak memory.

Usage: PYTHONPATH=src:. python benchmarks/video.py [--threads 2] [--json rows.json]
       [--seconds 2] [--emt-seconds 0.5] [--long 10,60] [--long-rate 30] [--long-threads 1]
       [--update-doc docs/benchmarks.md] [--rows saved.json ...]

Writes real H.264 + AAC clips (moving texture, sine tone) with PyAV and upscales each in
its own process with :func:`lightsr.video.transcode` (default H.264 output), recording
frames/s, the busy time of the decode, network and encode stages, and the process's peak
RSS. *Time outside the network* is given three ways: **CPU**, the CPU time a frame costs
around the network (the same clip through the same pipeline with a bicubic stand-in for the
network) over that plus the network's own CPU time a frame (alone); **busy**, the decoder's
and encoder's busy wall-clock time over all three stages'; and **wall**, the part of the
run in which the network was not computing. Cases: 320×180 → ×4 (1280×720) with the default
model and with EMT (EMT on a shorter clip: it takes seconds per frame on two cores), and 10
s and 60 s clips at 64×36 → ×4 with the default model, whose peak RSS shows whether memory
grows with the video's length.
``--update-doc`` replaces the video section of the benchmarks page with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from tempfile import TemporaryDirectory

from lightsr.paths import shared_dir

MARK_BEGIN = "<!-- video benchmarks: begin (benchmarks/video.py --update-doc) -->"
MARK_END = "<!-- video benchmarks: end -->"
RATE = 30


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--seconds", type=float, default=2.0, help="default-model clip length")
    parser.add_argument("--emt-seconds", type=float, default=0.5, help="EMT clip length")
    parser.add_argument("--long", default="10,60", help="clip lengths (s) for the RSS check")
    parser.add_argument(
        "--long-threads", type=int, default=1, help="torch threads for the RSS-check clips"
    )
    parser.add_argument(
        "--long-rate", type=int, default=RATE, help="frame rate of the RSS-check clips"
    )
    parser.add_argument("--json", type=Path, help="also save the rows here")
    parser.add_argument(
        "--rows", type=Path, nargs="+", help="render these saved rows (--json files); no runs"
    )
    parser.add_argument("--update-doc", type=Path, help="Markdown page to put the table in")
    parser.add_argument(
        "--worker", nargs=3, metavar=("CLIP", "MODEL", "THREADS"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def worker(clip: str, model: str, threads: int) -> None:
    """Upscale ``clip`` in this process and print one JSON row.

    After the run, the network alone is timed on the clip's first frames (warm), to tell
    how much the other stages slowed it down.
    """
    import torch

    from lightsr.api import Upscaler
    from lightsr.video.pipeline import transcode

    torch.set_num_threads(threads)
    if Path(model).is_file():
        upscaler = Upscaler(weights=model, device="cpu")
    else:
        upscaler = Upscaler(None if model == "default" else model, device="cpu")
    target = Path(clip).with_name(Path(clip).stem + "_out.mp4")
    report = transcode(upscaler, clip, target)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    row = {**report.to_dict(), "model": upscaler.name, "peak_rss_mib": peak_kib / 1024}
    row["network_alone_s"], row["network_cpu_s"] = network_alone(upscaler, clip)
    row["outside_cpu_s"] = outside_alone(upscaler.scale, clip)
    row["threads"] = threads
    print(json.dumps(row))


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def network_alone(upscaler, clip: str, frames: int = 4) -> tuple[float, float]:
    """Wall-clock and CPU seconds per frame of the network alone on the first ``frames``
    frames of ``clip``."""
    import time

    import av
    import numpy as np

    from lightsr.video.color import ColorTags, frame_to_rgb

    with av.open(clip) as container:
        decoded = [f for _, f in zip(range(frames), container.decode(video=0), strict=False)]
    images = [frame_to_rgb(f, ColorTags.of(f), np.dtype(np.uint8)) for f in decoded]
    started, cpu = time.perf_counter(), cpu_seconds()
    for image in images:
        upscaler(image)
    return (time.perf_counter() - started) / len(images), (cpu_seconds() - cpu) / len(images)


class BicubicUpscaler:
    """Stands in for the network (OpenCV's bicubic, a few ms a frame, smooth like a
    network's output) to measure what the pipeline costs around it."""

    def __init__(self, scale: int) -> None:
        import torch

        self.scale, self.network, self.device = scale, None, torch.device("cpu")

    def __call__(self, image):
        import cv2

        height, width = image.shape[:2]
        size = (width * self.scale, height * self.scale)
        return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC)


def outside_alone(scale: int, clip: str) -> float:
    """CPU seconds per frame of the whole pipeline (decode, Y'CbCr→RGB, RGB→Y'CbCr, encode,
    mux) around a bicubic stand-in for the network: what a frame costs outside it."""
    from lightsr.video.pipeline import transcode

    target = Path(clip).with_name(Path(clip).stem + "_bicubic.mp4")
    cpu = cpu_seconds()
    report = transcode(BicubicUpscaler(scale), clip, target)
    return (cpu_seconds() - cpu) / report.frames


def measure(clip: Path, model: str, threads: int) -> dict:
    command = [sys.executable, __file__, "--worker", str(clip), model, str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def load() -> str:
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def table(rows: list[dict]) -> str:
    lines = [
        "| case | model | threads | frames | input → output | frames/s | network s/frame "
        "(alone) | outside the network: CPU / busy / wall | peak RSS (MiB) | load before → after |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        w, h = row["input_size"]
        ow, oh = row["output_size"]
        wall = 1 - row["network_seconds"] / row["seconds"]
        cpu = row["outside_cpu_s"] / (row["outside_cpu_s"] + row["network_cpu_s"])
        lines.append(
            f"| {row['case']} | {row['model']} | {row['threads']} | {row['frames']} | "
            f"{w}×{h} → {ow}×{oh} | {row['frames_per_s']:.2f} | "
            f"{row['network_seconds'] / row['frames']:.3f} ({row['network_alone_s']:.3f}) | "
            f"{100 * cpu:.1f} % / {100 * row['outside_network']:.1f} % / {100 * wall:.1f} % | "
            f"{row['peak_rss_mib']:.0f} | {row['load_before']} → {row['load_after']} |"
        )
    return "\n".join(lines)


def update_doc(path: Path, text: str) -> None:
    page = path.read_text() if path.exists() else ""
    section = f"{MARK_BEGIN}\n{text}\n{MARK_END}"
    if MARK_BEGIN in page:
        head, rest = page.split(MARK_BEGIN, 1)
        page = head + section + rest.split(MARK_END, 1)[1]
    else:
        page = page.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(page)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        clip, model, threads = args.worker
        worker(clip, model, int(threads))
        return 0
    if args.rows:
        rows = [row for path in args.rows for row in json.loads(path.read_text())]
        return finish(rows, args)
    from tests.video_clips import Clip, make_clip

    long_seconds = [float(s) for s in args.long.split(",") if s]
    emt = shared_dir() / "weights" / "official" / "EMT" / "EMT_LSR_x4.pth"
    emt_model = str(emt) if emt.exists() else "emt"
    cases = [
        ("320×180 ×4", 320, 180, args.seconds, RATE, "default", args.threads),
        ("320×180 ×4, short clip", 320, 180, args.emt_seconds, RATE, emt_model, args.threads),
        *[
            (f"{s:g} s clip", 64, 36, s, args.long_rate, "default", args.long_threads)
            for s in long_seconds
        ],
    ]
    rows = []
    with TemporaryDirectory() as folder:
        for name, width, height, seconds, rate, model, threads in cases:
            frames = round(seconds * rate)
            if not frames:
                continue
            clip = make_clip(
                Path(folder) / f"clip_{width}x{height}_{frames}.mp4",
                Clip(width=width, height=height, frames=frames, rate=rate),
            )
            before = load()
            row = measure(clip, model, threads)
            row.update(case=name, load_before=before, load_after=load())
            row["model"] = "emt" if model.endswith(".pth") else row["model"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return finish(rows, args)


def finish(rows: list[dict], args: argparse.Namespace) -> int:
    """Print the table and put it in ``--update-doc``'s page."""
    text = table(rows)
    print(text)
    if args.update_doc:
        update_doc(args.update_doc, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
