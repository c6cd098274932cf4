"""Quality-versus-speed chart of a benchmark run (``lightsr bench --plot``).

Each network is a bubble: latency on x, PSNR-Y of its published weights on a test set on y,
bubble area proportional to its parameters, one colour per network family. PSNR comes from
:func:`lightsr.evaluate.evaluate` and is cached per weights file, so a chart costs one
evaluation per checkpoint, ever.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightsr.bench.settings import BenchRow
from lightsr.errors import LightSRError, UsageError
from lightsr.paths import cache_dir, replaced_atomically, shared_dir

DEFAULT_SET = "Set5"
# Bubble area in points² per thousand parameters: ~170 pt² for a 340K-parameter network.
AREA_PER_KPARAM = 0.5
BACKEND_MARKERS = {"torch": "o", "onnxruntime": "s", "ncnn": "^"}


@dataclass(frozen=True)
class PlotResult:
    """What :func:`plot_bench` drew: PSNR per variant and one note per variant left out."""

    psnr: dict[str, float]
    notes: list[str]


def resolve_test_set(name: str) -> Path:
    """A test-set folder: ``name`` itself if it is a folder, else ``<shared>/data/<name>``.

    Raises:
        UsageError: neither exists.
    """
    path = Path(name)
    if path.is_dir():
        return path
    shared = shared_dir() / "data" / name
    if shared.is_dir():
        return shared
    raise UsageError(f"test set {name!r} not found (not a folder, not in {shared.parent})")


def eval_cache_path(weights_sha256: str, set_name: str, scale: int) -> Path:
    """``cache_dir()/eval/<sha256-of-weights>_<set>_x<scale>.json``."""
    return cache_dir() / "eval" / f"{weights_sha256}_{set_name}_x{scale}.json"


def weights_psnr(weights: str | os.PathLike, data_dir: Path, scale: int) -> float:
    """Mean PSNR-Y of the checkpoint ``weights`` on the test set, cached per file content."""
    from lightsr.hub import file_sha256

    cache = eval_cache_path(file_sha256(weights), data_dir.name, scale)
    if cache.is_file():
        return float(json.loads(cache.read_text())["psnr"])
    from lightsr.evaluate import evaluate
    from lightsr.models import load_model

    result = evaluate(data_dir, scale, load_model(weights), progress=False)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(cache) as temporary:
        temporary.write_text(json.dumps({**result.to_dict(), "weights": str(weights)}))
    return result.psnr


def official_psnr(variant: str, scale: int, data_dir: Path) -> float:
    """PSNR-Y of ``variant``'s published weights at ``scale`` (see :func:`weights_psnr`).

    Raises:
        LightSRError: no published weights, or they cannot be fetched.
    """
    from lightsr.hub import fetch_weights, find_official

    name = find_official(variant, scale)
    if name is None:
        raise LightSRError(f"no published x{scale} weights")
    return weights_psnr(fetch_weights(name, progress=False), data_dir, scale)


def plot_bench(
    rows: Sequence[BenchRow], path: str | os.PathLike, test_set: str = DEFAULT_SET
) -> PlotResult:
    """Draw PSNR-Y on ``test_set`` against latency for ``rows`` into the image ``path``.

    Networks without published weights, and failed rows, are left out: they are named under
    the chart, and the returned notes say why.
    """
    data_dir = resolve_test_set(test_set)
    psnr: dict[str, float] = {}
    notes: list[str] = []
    for variant, scale in dict.fromkeys((row.variant, row.scale) for row in rows if not row.error):
        try:
            psnr[variant] = official_psnr(variant, scale, data_dir)
        except LightSRError as exc:
            notes.append(f"{variant}: not plotted ({exc})")
    notes += [f"{row.variant}: not plotted (failed: {row.error})" for row in rows if row.error]
    plotted = [row for row in rows if row.variant in psnr and row.latency_s is not None]
    left_out = sorted({row.variant for row in rows} - {row.variant for row in plotted})
    _draw(plotted, psnr, left_out, Path(path), data_dir.name)
    return PlotResult(psnr=psnr, notes=notes)


def _draw(
    rows: Sequence[BenchRow],
    psnr: dict[str, float],
    left_out: Sequence[str],
    path: Path,
    set_name: str,
) -> None:
    # The object-oriented API renders with Agg and leaves pyplot's global state alone.
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    figure = Figure(figsize=(8, 5.5), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    families = sorted({row.model for row in rows})
    colours = {family: f"C{index % 10}" for index, family in enumerate(families)}
    backends = sorted({row.backend for row in rows})
    for row in rows:
        latency_ms = row.latency_s * 1000
        label = row.variant if len(backends) == 1 else f"{row.variant} ({row.backend})"
        axes.scatter(
            latency_ms,
            psnr[row.variant],
            s=(row.params or 0) / 1000 * AREA_PER_KPARAM,
            color=colours[row.model],
            marker=BACKEND_MARKERS.get(row.backend, "o"),
            alpha=0.6,
            edgecolors="black",
            linewidths=0.8,
        )
        axes.annotate(
            label,
            (latency_ms, psnr[row.variant]),
            xytext=(6, 6),
            textcoords="offset points",
            fontsize=9,
        )
    handles = [
        Line2D([], [], marker="o", linestyle="", color=colours[family], label=family)
        for family in families
    ]
    if handles:
        axes.legend(handles=handles, title="family (area ∝ params)", loc="best")
    axes.set_xlabel(_latency_label(rows))
    scale = rows[0].scale if rows else ""
    axes.set_ylabel(f"PSNR-Y on {set_name} x{scale} (dB)")
    axes.set_title("lightsr bench: quality vs latency")
    axes.grid(True, alpha=0.3)
    latencies = [row.latency_s for row in rows]
    if latencies and max(latencies) > 10 * min(latencies):
        axes.set_xscale("log")
    if left_out:
        note = f"not plotted (no published weights or failed): {', '.join(left_out)}"
        figure.text(0.01, 0.005, note, fontsize=8, va="bottom", ha="left")
        figure.get_layout_engine().set(rect=(0, 0.03, 1, 0.97))
    if not rows:
        axes.text(
            0.5, 0.5, "no network with published weights", ha="center", transform=axes.transAxes
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


def _latency_label(rows: Sequence[BenchRow]) -> str:
    if not rows:
        return "latency (ms)"
    row = rows[0]
    statistic = "mean" if row.protocol == "ntire" else "median"
    return (
        f"latency, {statistic} (ms): {row.input} input, {row.device}, {row.precision}, "
        f"{row.threads} threads, {row.protocol} protocol"
    )
