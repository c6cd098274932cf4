"""Load test of ``lightsr serve`` on this machine: many clients at once, nothing lost.

Usage: PYTHONPATH=src python benchmarks/serve_load.py [--requests 200] [--concurrency 16]

Starts ``lightsr serve`` on 127.0.0.1 (a free port) and sends ``--requests`` upscale requests,
``--concurrency`` at a time, each with a different image (a Set5 crop with the request's
number written into its first pixels). Meanwhile it asks ``/healthz`` every 0.1 s and samples
the server's resident memory. It checks that every request got its own 200 answer (one job
id per request, all different, every image the right size and all different) and reports
latency percentiles, throughput, ``/healthz`` latency, memory and the machine's load. Every
loop is bounded (``--timeout``); the server is stopped at the end. The numbers go into
``docs/serve.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from lightsr.io import decode_image, encode_image, read_image
from lightsr.paths import shared_dir

IMAGE = "data/Set5/LR_bicubic/X4/babyx4.png"
URL_LINE = re.compile(r"lightsr serve: (http://\S+/) ")
SAMPLE_S = 0.1


def make_images(count: int, side: int) -> list[bytes]:
    """``count`` distinct PNGs: a ``side``² crop of Set5 "baby" with the index in its corner."""
    base = read_image(shared_dir() / IMAGE)[:side, :side]
    images = []
    for index in range(count):
        image = base.copy()
        bits = [(index >> b) & 1 for b in range(16)]
        image[0, :16] = np.array(bits, dtype=np.uint8)[:, None] * 255
        images.append(encode_image(image, ".png").tobytes())
    return images


def start_server(options: list[str]) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "lightsr", "serve", "--port", "0", "--log-level", "warning"]
    process = subprocess.Popen([*command, *options], stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        if match := URL_LINE.search(line):
            return process, match.group(1)
    raise SystemExit(f"lightsr serve did not start (exit status {process.wait()})")


def memory_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1))


async def wait_healthy(client: httpx.AsyncClient, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if (await client.get("healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(SAMPLE_S)
    raise SystemExit("the server never answered /healthz")


async def load(args: argparse.Namespace, url: str, pid: int) -> dict:
    images = make_images(args.requests, args.side)
    deadline = time.monotonic() + args.timeout
    limits = httpx.Limits(max_connections=args.concurrency + 2)
    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits) as client:
        await wait_healthy(client, deadline)
        await client.post("v1/upscale", files={"image": ("warm.png", images[0])})  # first use
        baseline = memory_kib(pid, "VmRSS")
        slots = asyncio.Semaphore(args.concurrency)
        done = asyncio.Event()
        health: list[tuple[int, float]] = []
        rss: list[int] = []

        async def one(index: int) -> tuple[int, float, str | None, str | None, tuple | None]:
            async with slots:
                start = time.perf_counter()
                files = {"image": (f"{index}.png", images[index])}
                try:
                    response = await client.post("v1/upscale", files=files)
                except httpx.HTTPError as exc:
                    return index, time.perf_counter() - start, None, repr(exc), None
                seconds = time.perf_counter() - start
                if response.status_code != 200:
                    return index, seconds, None, response.text, None
                digest = hashlib.sha256(response.content).hexdigest()
                shape = decode_image(response.content).shape
                return index, seconds, response.headers["x-job-id"], digest, shape

        async def watch() -> None:
            while not done.is_set():
                start = time.perf_counter()
                try:
                    status = (await client.get("healthz", timeout=10)).status_code
                except httpx.HTTPError:
                    status = 0
                health.append((status, time.perf_counter() - start))
                rss.append(memory_kib(pid, "VmRSS"))
                await asyncio.sleep(SAMPLE_S)

        watcher = asyncio.create_task(watch())
        start = time.perf_counter()
        results = await asyncio.wait_for(
            asyncio.gather(*(one(i) for i in range(args.requests))), args.timeout
        )
        wall = time.perf_counter() - start
        done.set()
        await watcher
        end = memory_kib(pid, "VmRSS")
    return summarize(args, results, wall, health, rss, baseline, end, memory_kib(pid, "VmHWM"))


def summarize(args, results, wall, health, rss, baseline, end, peak) -> dict:
    ok = [r for r in results if r[2] is not None]
    latencies = sorted(r[1] for r in ok)
    expected_shape = (args.side * 4, args.side * 4, 3)
    health_seconds = sorted(s for _, s in health)
    return {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "image": f"{args.side}x{args.side} -> x4",
        "ok": len(ok),
        "failed": [r[3] for r in results if r[2] is None][:5],
        "unique_job_ids": len({r[2] for r in ok}),
        "unique_images": len({r[3] for r in ok}),
        "right_size": sum(r[4] == expected_shape for r in ok),
        "every_request_answered_once": sorted(r[0] for r in results) == list(range(args.requests)),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
        "max_s": round(latencies[-1], 3) if latencies else None,
        "wall_s": round(wall, 1),
        "requests_per_s": round(len(ok) / wall, 2),
        "healthz_checks": len(health),
        "healthz_failed": sum(status != 200 for status, _ in health),
        "healthz_p95_ms": round(1000 * health_seconds[int(0.95 * (len(health) - 1))], 1),
        "healthz_max_ms": round(1000 * health_seconds[-1], 1),
        "rss_before_mib": round(baseline / 1024, 1),
        "rss_peak_sampled_mib": round(max(rss, default=baseline) / 1024, 1),
        "rss_after_mib": round(end / 1024, 1),
        "vmhwm_mib": round(peak / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests in all (200)")
    parser.add_argument("--concurrency", type=int, default=16, help="at once (16)")
    parser.add_argument("--side", type=int, default=64, help="input image side (64 pixels)")
    parser.add_argument("--timeout", type=float, default=900.0, help="for the whole run (900 s)")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    load_before = os.getloadavg()
    process, url = start_server(["--max-waiting", str(args.concurrency * 2)])
    try:
        report = asyncio.run(load(args, url, process.pid))
    finally:
        process.terminate()
        process.wait(timeout=30)
    report["load_before"] = [round(x, 2) for x in load_before]
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    report["cpus"] = os.cpu_count()
    print(json.dumps(report, indent=None if args.json else 2))
    complete = report["ok"] == report["unique_job_ids"] == report["unique_images"] == args.requests
    if not (complete and report["right_size"] == args.requests and not report["healthz_failed"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
