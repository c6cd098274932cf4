"""Latency of every network while one competing busy process holds a core.

Starts ``python -c 'while True: pass'`` and keeps it running while each network is measured
with ``lightsr bench``'s robust protocol (fresh process per network, ×4, 256×256 input,
fp32, torch backend) twice: with the thread count lightsr picks on its own
(:func:`lightsr.runtime.default_threads`: the cores free now, read while the busy process
runs) and with a fixed 2 threads (what eager PyTorch, and the official code, use on a 2-core
machine). ``--official-json`` adds a column of the official code's latencies measured the
same way (``{variant: seconds}``); the official code is not part of lightsr.

    PYTHONPATH=src python benchmarks/busy.py --models fmen_s,ditn_real --runs 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from lightsr.bench import BenchSettings, run_bench, select_models
from lightsr.runtime import default_threads

NETWORKS = "fmen_s,ditn_real,emt,esc_light,esc"


@contextlib.contextmanager
def busy_process() -> Iterator[subprocess.Popen]:
    """A process spinning on one core for the duration of the block."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield spinner
    finally:
        spinner.kill()
        spinner.wait()


def load_average() -> str:
    """``/proc/loadavg``'s 1-, 5- and 15-minute averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _seconds(value: float | None) -> str:
    return "failed" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=NETWORKS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--official-json", type=Path, help="{variant: seconds} to compare with")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    official = json.loads(args.official_json.read_text()) if args.official_json else {}
    base = BenchSettings(runs=args.runs, warmup=args.warmup)
    results = []
    with busy_process():
        print(f"load average at start: {load_average()}", file=sys.stderr)
        for variant in select_models(args.models, base.scale):
            auto = default_threads()
            row = {"variant": variant, "auto_threads": auto}
            for label, threads in (("auto", auto), ("two", 2)):
                (measured,) = run_bench([variant], replace(base, threads=threads))
                row[f"{label}_s"] = measured.latency_s
                row[f"{label}_error"] = measured.error
            row["official_s"] = official.get(variant)
            print(json.dumps(row), file=sys.stderr)
            results.append(row)
        print(f"load average at end: {load_average()}", file=sys.stderr)
    print("| network | lightsr, auto threads (s) | lightsr, 2 threads (s) | official (s) |")
    print("|---|---:|---:|---:|")
    for row in results:
        auto, two, theirs = (_seconds(row[key]) for key in ("auto_s", "two_s", "official_s"))
        print(f"| {row['variant']} | {auto} ({row['auto_threads']}) | {two} | {theirs} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
