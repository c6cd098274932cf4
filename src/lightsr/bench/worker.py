"""Subprocess entry point of :func:`lightsr.bench.run_bench`: one network, one fresh process.

Usage: ``python -m lightsr.bench.worker VARIANT SETTINGS_JSON RESULT_PATH [--prepare]``.
Writes the :class:`lightsr.bench.BenchRow` as JSON to ``RESULT_PATH``; on failure prints one
line to stderr and exits non-zero, and the parent turns that line into the row's ``error``.
With ``--prepare`` it only makes the files the backend loads (an export), in a process of
its own so that the measuring one starts cold.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lightsr.bench.protocol import PREPARE_FLAG, measure_network, prepare_network
from lightsr.bench.settings import settings_from_json
from lightsr.errors import LightSRError
from lightsr.runtime import retain_freed_memory


def main(argv: list[str]) -> int:
    variant, settings_json, result_path, *flags = argv
    retain_freed_memory()
    settings = settings_from_json(settings_json)
    try:
        if PREPARE_FLAG in flags:
            prepare_network(variant, settings)
            return 0
        row = measure_network(variant, settings)
    except LightSRError as exc:
        print(exc, file=sys.stderr)
        return exc.exit_code
    Path(result_path).write_text(json.dumps(row.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
