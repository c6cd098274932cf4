"""``lightsr bench``: params, MACs, activations, latency and memory of the networks."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from lightsr.cli.eval import parse_scale
from lightsr.cli.runtime_options import add_precision_argument, print_precision_note
from lightsr.options import (
    BACKENDS,
    BENCH_PROTOCOLS,
    DEVICE_TYPES,
    parse_size,
)

if TYPE_CHECKING:
    from lightsr.bench import BenchRow, BenchSettings

EPILOG = """\
Protocols:
  robust  (default) each network in a fresh process, torch threads pinned, warm-up, then
          --runs timed forwards on one input: median and min-max.
  ntire   NTIRE efficient-SR challenge procedure: fp32, no warm-up, one timed forward
          per image over --runs images, mean.

MACs count convolutions and matrix products, attention included; FLOPs = 2 x MACs.
Activations and convs follow the NTIRE definitions (outputs / number of Conv2d layers).
Peak memory: CUDA max_memory_allocated; on the CPU, the peak RSS rise during the forwards.

Arbitrary-scale networks (esc_lte, fmen_s_lte; S may be any number from 1 to 8 for them)
are measured in two parts, printed under the table and in --json: the encoder, which
includes the head's coef/freq 3x3 convs (they run once per LR pixel), in MACs and ms per
input; and the head's queries (phase layer + MLP on 4 neighbours, per output pixel) in
MACs and seconds per output megapixel. MACs = encoder + head at the output size. They run
on the torch backend without --compile only. --models all leaves them out at integer
scales (their head costs about 0.8 T MACs per output megapixel): name them.

Examples:
  lightsr bench --models fmen_s,ditn_real --runs 3
  lightsr bench --models all --input 320x180 --json > bench.json
  lightsr bench --device cuda --precision fp16 --plot bench.png
  lightsr bench --backend all --threads 4
  lightsr bench --models fmen_s,ditn_real --backend ncnn   # NCNN export on the CPU
  lightsr bench --models fmen_s --compile    # torch.compile; compile time reported apart
  lightsr bench --models fmen_s_lte --scale 6 --input 64x64 --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="params, MACs, latency and memory of every network",
        description="Benchmark the registered networks (fresh weights, deploy form).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models", default="all", metavar="all|NAME,...", help="networks (default: all)"
    )
    parser.add_argument(
        "--scale",
        type=parse_scale,
        default=4,
        metavar="S",
        help="upscale factor (default 4; any number 1-8 for arbitrary-scale networks)",
    )
    parser.add_argument(
        "--input", default="256x256", metavar="HxW", help="LR input size (default: 256x256)"
    )
    parser.add_argument("--device", default="cpu", choices=DEVICE_TYPES)
    parser.add_argument(
        "--backend",
        default="torch",
        choices=(*BACKENDS, "all"),
        help="torch (default), onnxruntime, ncnn (their cached exports, CPU), or all",
    )
    add_precision_argument(parser, auto=False)  # rows compare precisions: name one
    parser.add_argument("--protocol", default="robust", choices=BENCH_PROTOCOLS)
    parser.add_argument(
        "--runs", type=int, default=10, metavar="N", help="timed runs / images (default: 10)"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, metavar="N", help="warm-up runs, robust (default: 3)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, metavar="N", help="intra-op threads (default: 2)"
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each network first (torch backend); compile time reported apart",
    )
    parser.add_argument("--json", action="store_true", help="print only a JSON list of rows")
    parser.add_argument("--plot", metavar="PNG", help="also draw PSNR-Y vs latency to PNG")
    parser.add_argument(
        "--plot-set", default="Set5", metavar="SET", help="test set for --plot (default: Set5)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `lightsr --help` does not pay for torch.
    from lightsr.bench import BenchSettings, run_bench, select_models

    backends = BACKENDS if args.backend == "all" else (args.backend,)
    all_settings = [
        BenchSettings(
            scale=args.scale,
            size=parse_size(args.input, "--input"),
            device=args.device,
            backend=backend,
            precision=args.precision,
            protocol=args.protocol,
            runs=args.runs,
            warmup=args.warmup,
            threads=args.threads,
            compile=args.compile,
        )
        for backend in backends
    ]
    for settings in all_settings:
        settings.validate()
    print_precision_note("bench", args.precision, args.device)
    # Arbitrary-scale networks run on some backends only: selected per backend.
    selections = [(select_models(args.models, args.scale, s), s) for s in all_settings]
    rows: list[BenchRow] = []
    for variants, settings in selections:
        rows += run_bench(variants, settings, on_row=_print_progress)
    if args.json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
    else:
        _print_table(rows, all_settings[0])
    if args.plot:
        from lightsr.bench.plot import plot_bench

        result = plot_bench(rows, args.plot, args.plot_set)
        for note in result.notes:
            print(f"note: {note}", file=sys.stderr)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 1 if any(row.error for row in rows) else 0


def _print_progress(row: BenchRow) -> None:
    status = f"failed: {row.error}" if row.error else f"{row.latency_s * 1000:.1f} ms"
    print(f"bench {row.variant} [{row.backend}]: {status}", file=sys.stderr)


def _print_table(rows: list[BenchRow], settings: BenchSettings) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from lightsr.bench import machine_info

    console = Console()
    if not console.is_terminal:  # piped: do not squeeze the table into 80 columns
        console = Console(width=160)
    statistic = "mean" if settings.protocol == "ntire" else "median"
    table = Table(
        title=f"x{settings.scale:g}, {settings.input_label} input, {settings.device}, "
        f"{settings.precision}, {settings.threads} threads, {settings.protocol} protocol",
    )
    table.add_column("network")
    table.add_column("backend")
    for header in ("params", "MACs (G)", "FLOPs (G)", "acts (M)", "convs"):
        table.add_column(header, justify="right")
    table.add_column(f"{statistic} ms", justify="right")
    table.add_column("min-max ms", justify="right")
    table.add_column("peak MiB", justify="right")
    for row in rows:
        table.add_row(*_table_cells(row))
    console.print(table)
    for row in rows:
        if row.error:
            failure = escape(f"{row.variant} ({row.backend}) failed: {row.error}")
            console.print(f"[red]{failure}[/red]")
    for row in rows:
        if row.head_macs_per_mpx is not None and not row.error:
            console.print(escape(_arbitrary_note(row)))
    info = machine_info(settings.device)
    console.print(f"[dim]{', '.join(f'{key} {value}' for key, value in info.items())}[/dim]")
    memory = "CUDA max_memory_allocated" if settings.device == "cuda" else "peak RSS increase"
    console.print(f"[dim]FLOPs = 2 x MACs; fresh weights, deploy form; memory: {memory}[/dim]")


def _arbitrary_note(row: BenchRow) -> str:
    """One line on the two parts of an arbitrary-scale network (see BenchRow)."""
    return (
        f"{row.variant} ({row.backend}) to {row.output}: encoder incl. coef/freq convs "
        f"{row.encoder_macs / 1e9:.2f} G MACs, {row.encoder_latency_s * 1000:.1f} ms; "
        f"head {row.head_macs_per_mpx / 1e9:.1f} G MACs and "
        f"{row.head_s_per_mpx:.2f} s per output megapixel"
    )


def _table_cells(row: BenchRow) -> list[str]:
    name = row.variant + (" (deploy)" if row.form == "deploy" else "")
    backend = f"{row.backend} (compiled in {row.compile_s:.0f} s)" if row.compiled else row.backend
    if row.error:
        return [name, row.backend, "[red]failed[/red]", *[""] * 7]
    return [
        name,
        backend,
        f"{row.params:,}",
        f"{row.macs / 1e9:.2f}",
        f"{row.flops / 1e9:.2f}",
        f"{row.activations / 1e6:.2f}",
        str(row.convs),
        f"{row.latency_s * 1000:.1f}",
        f"{row.latency_min_s * 1000:.1f}-{row.latency_max_s * 1000:.1f}",
        f"{row.peak_memory_mib:.1f}",
    ]
