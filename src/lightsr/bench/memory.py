"""Peak memory of a stretch of code: CUDA allocator statistics or the CPU's peak RSS."""

from __future__ import annotations

import contextlib
import re
import resource
import sys
from pathlib import Path

import psutil
import torch

MIB = 2**20


class MemoryProbe:
    """Peak memory of the code run between :meth:`start` and :meth:`peak_mib`.

    CUDA: ``max_memory_allocated`` (absolute). CPU: peak RSS minus the RSS at
    :meth:`start`. The kernel's high-water mark is reset at :meth:`start` through
    ``/proc/self/clear_refs``; where that is impossible the lifetime ``ru_maxrss`` is used,
    which over-reports if the process was ever larger before :meth:`start`.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.baseline = 0

    @property
    def metric(self) -> str:
        """What :meth:`peak_mib` reports, for the ``memory_metric`` field."""
        if self.device.type == "cuda":
            return "cuda_max_memory_allocated"
        return "cpu_peak_rss_increase"

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        _reset_peak_rss()
        self.baseline = psutil.Process().memory_info().rss

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / MIB
        return max(0, _peak_rss_bytes() - self.baseline) / MIB


def _reset_peak_rss() -> None:
    # Writing 5 resets VmHWM (Linux ≥ 4.0); elsewhere the lifetime peak has to do.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_bytes() -> int:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        status = ""
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    if match:
        return int(match.group(1)) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere
