"""Process-wide settings that make CPU inference faster, and the CPU's bf16 support.

These change the whole process, so the library never applies them on import: the ``lightsr``
command line and the benchmark workers call :func:`retain_freed_memory` at start-up, and
programs using the Python API may call it themselves.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightsr.models import SRModel

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


def cpu_flags() -> set[str]:
    """The CPU's feature flags as ``/proc/cpuinfo`` lists them (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return set(next((line for line in cpuinfo if line.startswith("flags")), "").split())
    except OSError:
        return set()


# CPU flag → what it is called in messages, best first: AMX tiles beat AVX-512 BF16 vectors.
BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX-512 BF16"}


def native_bf16_feature() -> str | None:
    """The CPU feature that computes bfloat16 natively (``"AMX-BF16"``), or ``None``."""
    flags = cpu_flags()
    return next((name for flag, name in BF16_FLAGS.items() if flag in flags), None)


def has_native_bf16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX-512 BF16 or AMX), per ``/proc/cpuinfo``."""
    return native_bf16_feature() is not None


BF16_NOTE = (
    "this CPU has no native bf16 (AVX-512 BF16 / AMX); bf16 runs emulated in fp32 "
    "arithmetic and is slower than fp32"
)


# ``precision="auto"`` runs a network in bf16 only with weights whose Set5 and Set14 PSNR-Y
# moved by at most this many dB from fp32 in bf16.
BF16_MAX_PSNR_CHANGE = 0.05

# PSNR-Y change of bf16 against fp32 (dB, bf16 − fp32) on Set5 and Set14 at the weights'
# scale, by weights: `lightsr eval --data SetN --scale S --precision bf16|fp32 --json` on an
# AMX CPU unless noted (docs/benchmarks.md#precision-auto). Keyed by weights, not by variant:
# DITN-Real's PSNR weights move 0.003 dB, its GAN weights (and the built-in ``real``)
# 0.07-0.08. Weights not listed (own training, ESC: no published weights here, re-encoded
# files) stay fp32.
BF16_PSNR_CHANGE: dict[str, tuple[float, float]] = {
    "default_x2": (-0.0231, -0.0179),  # built-in FMEN-S
    "default_x3": (-0.0201, -0.0100),
    "default_x4": (-0.0088, -0.0110),  # the values of fmen_s_x4_official
    "fmen_s_x4_ntire22": (-0.0140, -0.0090),
    "ditn_real_x4_official": (-0.0025, -0.0005),
    "ditn_real_gan_x4_official": (+0.0825, +0.0529),
    # Built-in, DITN-Real GAN fine-tuned here; measured on an AVX2-only AMD EPYC, where
    # torch runs bf16 without native instructions (same rounding, slower).
    "real_x4": (+0.0728, +0.0527),
    "emt_x2_official": (-0.0252, -0.0276),
    "emt_x3_official": (-0.0123, -0.0132),
    "emt_x4_official": (-0.0045, -0.0021),
}
# SHA-256 of each measured weights file → its row above (a published file and lightsr's
# safetensors copy of it hold the same values, so they share a row).
MEASURED_WEIGHTS: dict[str, str] = {
    "eed3fce1c52f14541bcd8ccf2558f715a1985f37502d5dea6cf2cb359870dc6e": "default_x2",
    "bba4ddb109b5c17069c1555430f5d9361ebd22db7b0c4065fbf78520d694d597": "default_x3",
    "611cbfa321a99212bbed357fd028009c0334763e8ca4b8679b7b21c771ea85e7": "default_x4",
    "d5534eba1feacfdd4043d9175d3bf0730b1ab4c91ba5c3f40a2282cd496fb4a5": "default_x4",
    "f20cde0828068c5f50d3b64aa82c8a363fe6abc8d536d1a9fd4d09899f019bea": "fmen_s_x4_ntire22",
    "989dc21e2379c6924a6bd32696df0f1fa8cfd43dd557e1ae4126b97708695b5a": "ditn_real_x4_official",
    "5b461bb77f24eff3500c1cb8e9c27c652a45afa25a75473cfafdb61872d2064d": "ditn_real_gan_x4_official",
    "a103f07b5c605c2e23c23bfe44a880e10e7c019388a516f657fb13b0e7df1097": "ditn_real_gan_x4_official",
    "085f2391339ce60a290dabc05331dd0a4d736807765d500ea0fa8ac8322e8282": "real_x4",
    "a0ccded9cac60a55a23bc43c08dcaef84887530ac14724f07a0c12e8a928f36e": "emt_x2_official",
    "04991327b0eaca4f3d59b7ca7f348484d6993626051b0152443464e0d11cfcf5": "emt_x3_official",
    "c66235c55c92bc753098372cfe6d53c8b259c302adeac48aace9b154ed9f872e": "emt_x4_official",
}


def bf16_psnr_change(weights: str | os.PathLike) -> tuple[str, float] | None:
    """The name of weights file ``weights`` and bf16's largest PSNR change on Set5 and Set14
    (dB, either way), or ``None`` when those weights were not measured."""
    from lightsr.hub import file_sha256

    if not os.path.isfile(weights):  # a model built in memory, or "state dict"
        return None
    name = MEASURED_WEIGHTS.get(file_sha256(weights))
    return None if name is None else (name, max(map(abs, BF16_PSNR_CHANGE[name])))


def auto_precision(model: SRModel | None, device_type: str, backend: str) -> tuple[str, str]:
    """What ``precision="auto"`` means for ``model`` (``None``: bicubic), and why.

    bf16 where the CPU computes it natively (:func:`native_bf16_feature`) and bf16 changes
    the model's PSNR by at most :data:`BF16_MAX_PSNR_CHANGE` (:data:`BF16_PSNR_CHANGE`);
    fp32 otherwise. On CUDA fp32 too: fp16/bf16 there have not been measured, so they are
    only run when asked for.

    Returns:
        The precision, and the reason as a few words (``"fp32 (...)"``) for ``--verbose``.
    """
    if backend != "torch" or model is None:
        return "fp32", "fp32 (auto picks bf16 for torch networks only)"
    if device_type != "cpu":
        return "fp32", f"fp32 (auto picks bf16 on CPUs only, not {device_type})"
    feature = native_bf16_feature()
    if feature is None:
        return "fp32", "fp32 (this CPU has no AVX-512 BF16 or AMX)"
    measured = bf16_psnr_change(model.source)
    if measured is None:
        return "fp32", f"fp32 (bf16 accuracy of these {model.variant} weights is not measured)"
    name, change = measured
    moves = f"{model.variant} ({name}) changes PSNR by {change:.3f} dB in bf16"
    if change > BF16_MAX_PSNR_CHANGE:
        return "fp32", f"fp32 ({moves}, over {BF16_MAX_PSNR_CHANGE})"
    return "bf16", f"bf16 (CPU has {feature}; {moves})"


def precision_note(precision: str, device_type: str) -> str | None:
    """A one-line note for the user about ``precision`` on this machine, or ``None``."""
    if precision == "bf16" and device_type == "cpu" and not has_native_bf16():
        return BF16_NOTE
    return None
