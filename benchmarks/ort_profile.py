"""Where ONNX Runtime spends a forward: time per op type of an exported lightsr network.

Runs the export once to warm up, then once with ONNX Runtime's profiler on, and prints the
share of the kernel time each op type takes (top 12), e.g. to see whether an int8 graph's
time goes to its quantised convolutions or to the QuantizeLinear / DequantizeLinear and
layout transposes around them.

    PYTHONPATH=src python benchmarks/ort_profile.py model.onnx --input 256x256 --threads 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np


def op_type_times(path: Path, height: int, width: int, threads: int) -> Counter:
    """Microseconds of kernel time per op type in one profiled forward of ``path``."""
    import onnxruntime

    from lightsr.export import INPUT_NAME, OUTPUT_NAME

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = onnxruntime.InferenceSession(str(path), options, ["CPUExecutionProvider"])
        x = np.random.default_rng(0).random((1, 3, height, width), dtype=np.float32)
        session.run([OUTPUT_NAME], {INPUT_NAME: x})  # warm-up, also profiled: skipped below
        session.run([OUTPUT_NAME], {INPUT_NAME: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = [e for e in events if e.get("name") == "model_run"]
    last_start = runs[-1]["ts"] if runs else 0
    times: Counter = Counter()
    for event in events:
        kernel = event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
        if kernel and event["ts"] >= last_start:
            times[event["args"]["op_name"]] += event["dur"]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("onnx", type=Path)
    parser.add_argument("--input", default="256x256", help="HxW")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    height, width = (int(side) for side in args.input.lower().split("x"))
    times = op_type_times(args.onnx, height, width, args.threads)
    total = sum(times.values())
    print(f"{args.onnx.name}: {total / 1e3:.0f} ms of kernel time at {args.input}")
    for op, micros in times.most_common(12):
        print(f"  {op:24s} {micros / 1e3:9.1f} ms  {100 * micros / total:5.1f}%")


if __name__ == "__main__":
    main()
