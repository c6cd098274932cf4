"""Process-wide settings that make CPU inference faster.

These change the whole process, so the library never applies them on import: the ``lightsr``
command line and the benchmark workers call :func:`retain_freed_memory` at start-up, and
programs using the Python API may call it themselves.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

# Blocks up to this size come from the reusable heap; larger ones are still mapped afresh.
RETAINED_BLOCK_BYTES = 1 << 30
# Free memory at the top of the heap kept for reuse rather than given back to the OS.
RETAINED_TOP_BYTES = 1 << 30

DISABLE_VARIABLE = "LIGHTSR_RETAIN_MEMORY"


def retain_freed_memory() -> bool:
    """Keep freed tensor memory in the process for reuse instead of unmapping it.

    By default glibc serves every allocation above a threshold (128 KiB, raised on the fly
    up to 32 MiB) with a fresh ``mmap`` and unmaps it on free, and trims the top of its heap.
    A network's forward pass allocates and frees full-size feature maps many times, so each
    one pays for page faults and for the kernel zeroing its pages again: a third of
    DITN-Real's CPU time at ×4 on a 256×256 input. With higher mmap and trim thresholds a
    freed map is simply reused, as PyTorch's CUDA caching allocator does on GPUs (and as
    jemalloc/tcmalloc preloading does for Intel's CPU launcher). Peak memory moves within
    run-to-run noise in the benchmarks (about +6% on a 4096² ×4 tiled upscale); the
    process keeps its peak heap until it exits.

    Does nothing (and returns False) off glibc or when the environment variable
    ``LIGHTSR_RETAIN_MEMORY`` is ``0``.

    Returns:
        Whether the settings took effect.
    """
    if os.environ.get(DISABLE_VARIABLE, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        # The C library is already loaded: look the symbol up in the process itself
        # (``find_library`` would spawn ``ldconfig`` at every CLI start).
        mallopt = ctypes.CDLL(None).mallopt
    except AttributeError:  # a C library without mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(
        mallopt(_M_MMAP_THRESHOLD, RETAINED_BLOCK_BYTES)
        and mallopt(_M_TRIM_THRESHOLD, RETAINED_TOP_BYTES)
    )


THREADS_VARIABLE = "LIGHTSR_THREADS"
# A core counts as free when other processes used less than this share of it lately.
_SAMPLE_SECONDS = 0.1


def free_cores() -> int:
    """CPU cores this process may use that other processes are not keeping busy (at least 1).

    Sums the idle share of each core in the process's affinity set over a short sample
    (``psutil.cpu_percent``), so a core held by a competing busy process does not count.
    """
    import psutil

    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    busy = psutil.cpu_percent(interval=_SAMPLE_SECONDS, percpu=True)
    cores = [busy[i] for i in allowed if i < len(busy)] if allowed else busy
    return max(1, round(sum(100.0 - share for share in cores) / 100.0))


def default_threads() -> int:
    """Intra-op threads for inference: ``$LIGHTSR_THREADS`` if set, else :func:`free_cores`.

    Parallel regions of a network's forward synchronise all their threads, so one thread
    that shares its core with another process stalls all the others: on a busy machine
    fewer threads than cores are faster (FMEN-S ×4 on 2 cores with one competing busy
    process: see ``docs/benchmarks.md``).

    Raises:
        ValueError: ``$LIGHTSR_THREADS`` is not a positive integer.
    """
    env = os.environ.get(THREADS_VARIABLE, "").strip()
    if env:
        try:
            threads = int(env)
        except ValueError:  # not a number: the same one-line error as a bad one
            threads = 0
        if threads < 1:
            raise ValueError(f"{THREADS_VARIABLE} must be a positive integer, got {env!r}")
        return threads
    return free_cores()


def has_native_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX), per ``/proc/cpuinfo``."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


BF16_NOTE = (
    "this CPU has no native bf16 (AVX-512 BF16 / AMX); bf16 runs emulated in fp32 "
    "arithmetic and is slower than fp32"
)


def precision_note(precision: str, device_type: str) -> str | None:
    """A one-line note for the user about ``precision`` on this machine, or ``None``."""
    if precision == "bf16" and device_type == "cpu" and not has_native_bf16():
        return BF16_NOTE
    return None
