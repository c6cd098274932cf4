"""Start-up time of the ``lightsr`` command line: ``--help`` must not pay for torch.

Usage: PYTHONPATH=src python benchmarks/startup.py [--runs 10]

Times fresh processes (median of ``--runs``, interleaved): a bare interpreter, ``lightsr
--help``, ``lightsr upscale --help`` and, for scale, ``import torch``. The numbers go into
the "CLI start-up" section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "lightsr --help": ["-m", "lightsr", "--help"],
    "lightsr upscale --help": ["-m", "lightsr", "upscale", "--help"],
    "python -c 'import torch'": ["-c", "import torch"],
}


def wall_seconds(arguments: list[str]) -> float:
    """Seconds one fresh ``python ARGUMENTS`` process takes, output discarded."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *arguments], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per command (default: 10)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {label: [] for label in COMMANDS}
    for _ in range(args.runs):  # interleaved, so load changes hit every command alike
        for label, arguments in COMMANDS.items():
            times[label].append(wall_seconds(arguments))
    print(f"median of {args.runs} runs, load average {os.getloadavg()[0]:.1f}:")
    for label, values in times.items():
        print(f"  {label:28s} {statistics.median(values) * 1000:7.0f} ms")


if __name__ == "__main__":
    main()
