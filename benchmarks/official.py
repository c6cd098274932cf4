"""lightsr against the official code, side by side, through one protocol.

Each measurement is a fresh process that builds one network (seed-0 random weights on both
sides: speed and memory do not depend on the values), then runs ``lightsr bench``'s robust
protocol on a 256×256 input at ×4: a small priming forward, ``--warmup`` forwards, then
``--runs`` timed forwards, of which the median is kept; peak memory is the rise of the
process's peak RSS over the forwards (:class:`lightsr.bench.memory.MemoryProbe`). The two
sides alternate (official, lightsr, official, ... with the order swapped every round), and a
row keeps the median over ``--rounds`` processes per side.

The official networks come from a folder the user unpacked and names with ``--official``;
they are run as their authors ship them (ESC with its default Flex attention, the
geometric-ensemble kernel recomputed at every forward, no re-parameterisation beyond the
published FMEN test form), and nothing of them is part of lightsr::

    OFFICIAL/FMEN   github.com/NJU-Jet/FMEN           (test_fmen.py: TEST_FMEN, Args)
    OFFICIAL/DITN   github.com/yongliuy/DITN          (models/DITN_Real.py)
    OFFICIAL/EMT    github.com/Fried-Rice-Lab/EMT     (archs/emt_arch.py, options/EMT.yml)
    OFFICIAL/ESC    github.com/dslisleedh/ESC         (esc/archs/esc_arch.py, options/test)

They need ``einops`` (``pip install einops``). Their training frameworks are not needed:
``basicsr``'s registry and ``torchsummaryX`` are replaced by empty stand-ins when missing
(the networks only import them).

Allocator settings (``--allocators``): ``both`` gives both processes the glibc thresholds the
``lightsr`` command sets for itself (:func:`lightsr.runtime.retain_freed_memory`),
``neither`` gives it to none, ``shipped`` to lightsr only (as each is used out of the box).
Loads (``--loads``): ``idle``, and ``busy`` with one competing ``while True: pass`` process.

    PYTHONPATH=src python benchmarks/official.py --official ~/official --rounds 3 \\
        --markdown docs/official_table.md --json official.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NETWORKS = ("fmen_s", "ditn_real", "emt", "esc_light", "esc")
ALLOCATORS = ("both", "neither", "shipped")
LOADS = ("idle", "busy")
ESC_TEST = {  # options/test/ESC_light_X4.yaml and ESC_DIV2K_X4.yaml
    "dim": 64,
    "pdim": 16,
    "kernel_size": 13,
    "conv_blocks": 5,
    "window_size": 32,
    "num_heads": 4,
    "upscaling_factor": 4,
    "exp_ratio": 1.25,
    "attn_type": "Flex",
}
EMT_TEST = {  # options/EMT.yml with options/LSR_x4.yml
    "upscale": 4,
    "num_in_ch": 3,
    "num_out_ch": 3,
    "task": "lsr",
    "dim": 60,
    "n_blocks": 6,
    "n_layers": 6,
    "num_heads": 3,
    "mlp_ratio": 2,
    "n_GTLs": 2,
    "window_list": [[32, 8], [8, 32]],
    "shift_list": [[16, 4], [4, 16]],
}


# ----------------------------------------------------------------- the official networks


def _stand_in_modules() -> None:
    """Empty ``basicsr`` registry and ``torchsummaryX`` where they are not installed."""

    class Registry:
        def register(self, obj: Any = None) -> Any:
            return (lambda cls: cls) if obj is None else obj

    def scandir(folder: str, suffix: Any = None, recursive: bool = False) -> Iterator[str]:
        yield from sorted(entry.name for entry in os.scandir(folder) if entry.is_file())

    for name, attrs in (
        ("basicsr.utils.registry", {"ARCH_REGISTRY": Registry()}),
        ("torchsummaryX", {"summary": None}),
    ):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
            continue
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
    if isinstance(sys.modules.get("basicsr.utils.registry"), types.ModuleType) and (
        "basicsr" not in sys.modules
    ):
        utils = types.ModuleType("basicsr.utils")
        utils.registry = sys.modules["basicsr.utils.registry"]  # type: ignore[attr-defined]
        utils.scandir = scandir  # type: ignore[attr-defined]
        package = types.ModuleType("basicsr")
        package.utils = utils  # type: ignore[attr-defined]
        sys.modules.update({"basicsr": package, "basicsr.utils": utils})


def official_network(variant: str, root: Path) -> Any:
    """The official module of ``variant`` (×4), built from the checkout under ``root``."""
    _stand_in_modules()
    folder = {"fmen_s": "FMEN", "ditn_real": "DITN", "emt": "EMT"}.get(variant, "ESC")
    sys.path.insert(0, str(root / folder))
    if variant == "fmen_s":
        test_fmen = importlib.import_module("test_fmen")
        return test_fmen.TEST_FMEN(test_fmen.Args())
    if variant == "ditn_real":
        return importlib.import_module("models.DITN_Real").DITN_Real(upscale=4)
    if variant == "emt":
        return importlib.import_module("archs.emt_arch").EMT(**EMT_TEST)
    # The file alone: the package imports every other network of the repository.
    spec = importlib.util.spec_from_file_location(
        "esc_arch", root / folder / "esc/archs/esc_arch.py"
    )
    esc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(esc)
    return esc.ESC(n_blocks=3 if variant == "esc_light" else 5, **ESC_TEST)


# ------------------------------------------------------------------------- one process


def measure(side: str, variant: str, args: argparse.Namespace) -> dict[str, float]:
    """Median latency (s) and peak memory (MiB) of one network in this process."""
    import torch

    from lightsr.archs.registry import get_arch
    from lightsr.bench import BenchSettings
    from lightsr.bench.memory import MemoryProbe
    from lightsr.bench.protocol import Runner, measure_network, pin_threads, run_protocol

    settings = BenchSettings(
        size=(args.size, args.size),
        precision=args.precision,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
    )
    if side == "lightsr":
        row = measure_network(variant, settings)
        return {"median_s": row.latency_median_s, "peak_mib": row.peak_memory_mib}
    pin_threads(args.threads)
    torch.manual_seed(0)
    module = official_network(variant, args.official).eval()
    spec = get_arch(variant)

    def make_input(height: int, width: int) -> torch.Tensor:
        # As lightsr bench does: the network's value range, reflect-padded beforehand to
        # the test-time multiple (ESC's window), as the official test pipelines pad.
        x = torch.rand(1, 3, height, width) * spec.input_range
        pad_h, pad_w = (-side % spec.pad_multiple for side in (height, width))
        return (
            torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
            if pad_h or pad_w
            else x
        )

    probe = MemoryProbe(torch.device("cpu"))
    with torch.inference_mode():
        times = run_protocol(Runner(forward=module, make_input=make_input), spec, settings, probe)
    return {"median_s": statistics.median(times), "peak_mib": probe.peak_mib()}


def worker(args: argparse.Namespace) -> None:
    if args.retain:
        from lightsr.runtime import retain_freed_memory

        retain_freed_memory()
    print(json.dumps(measure(args.side, args.network, args)))


# -------------------------------------------------------------------------- orchestration


@contextlib.contextmanager
def competing_process(load: str) -> Iterator[None]:
    """One process spinning on a core for the block when ``load`` is ``busy``."""
    if load != "busy":
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def run_one(side: str, variant: str, precision: str, retain: bool, args: argparse.Namespace):
    command = [
        sys.executable,
        __file__,
        "--worker",
        side,
        "--network",
        variant,
        "--precision",
        precision,
        "--official",
        str(args.official),
        *("--size", str(args.size), "--runs", str(args.runs), "--warmup", str(args.warmup)),
        *("--threads", str(args.threads)),
        *(["--retain"] if retain else []),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"  {side} {variant} failed: {last}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(results: list[dict[str, float] | None], key: str) -> float | None:
    values = [result[key] for result in results if result]
    return statistics.median(values) if values else None


def measure_condition(variant: str, allocator: str, load: str, args: argparse.Namespace):
    """One table row: both sides alternating over ``args.rounds`` fresh processes each."""
    retain = {"official": allocator == "both", "lightsr": allocator != "neither"}
    results: dict[str, list] = {"official": [], "lightsr": [], "lightsr_bf16": []}
    with competing_process(load):
        for round_index in range(args.rounds):
            order = ("official", "lightsr") if round_index % 2 == 0 else ("lightsr", "official")
            for side in order:
                results[side].append(run_one(side, variant, "fp32", retain[side], args))
            if args.bf16:
                results["lightsr_bf16"].append(
                    run_one("lightsr", variant, "bf16", retain["lightsr"], args)
                )
    row: dict[str, Any] = {"network": variant, "allocator": allocator, "load": load}
    for side, side_results in results.items():
        row[f"{side}_s"] = _median(side_results, "median_s")
        row[f"{side}_mib"] = _median(side_results, "peak_mib")
    return row


def _ratio(numerator: float | None, denominator: float | None) -> str:
    return f"{numerator / denominator:.2f}" if numerator and denominator else "–"


def _value(value: float | None, fmt: str) -> str:
    return "failed" if value is None else format(value, fmt)


def markdown(rows: list[dict[str, Any]], machine: dict[str, str]) -> str:
    lines = [
        f"CPU: {machine.get('cpu', '?')}; torch {machine.get('torch', '?')}; "
        f"threads {machine.get('threads')}; flags: {machine.get('flags', '?')}",
        "",
        "| network | allocator | load | official fp32 (s) | lightsr fp32 (s) | official / lightsr "
        "| lightsr bf16 (s) | official fp32 / lightsr bf16 | peak MiB official / lightsr "
        "| lightsr / official memory |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        official, own, bf16 = row["official_s"], row["lightsr_s"], row["lightsr_bf16_s"]
        lines.append(
            f"| {row['network']} | {row['allocator']} | {row['load']} "
            f"| {_value(official, '.3f')} | {_value(own, '.3f')} | {_ratio(official, own)} "
            f"| {_value(bf16, '.3f') if bf16 else '–'} | {_ratio(official, bf16)} "
            f"| {_value(row['official_mib'], '.0f')} / {_value(row['lightsr_mib'], '.0f')} "
            f"| {_ratio(row['lightsr_mib'], row['official_mib'])} |"
        )
    return "\n".join(lines) + "\n"


def machine() -> dict[str, str]:
    import torch

    from lightsr.bench.protocol import machine_info

    info = dict(machine_info())
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[-1].split("\n", 1)[0]
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    info["flags"] = " ".join(flag for flag in wanted if f" {flag}" in flags) or "none listed"
    info["torch"] = torch.__version__
    return info


def _choices(text: str, allowed: tuple[str, ...]) -> list[str]:
    chosen = [item.strip() for item in text.split(",") if item.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown:
        raise SystemExit(f"official.py: unknown {', '.join(unknown)}; choose from {allowed}")
    return chosen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="folder of checkouts")
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--allocators", default=",".join(ALLOCATORS))
    parser.add_argument("--loads", default=",".join(LOADS))
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per side")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip lightsr bf16")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--worker", choices=("official", "lightsr"), help=argparse.SUPPRESS)
    parser.add_argument("--network", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--retain", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        args.side = args.worker
        worker(args)
        return
    args.official = args.official.expanduser().resolve()
    networks = _choices(args.networks, NETWORKS)
    conditions = [
        (allocator, load)
        for allocator in _choices(args.allocators, ALLOCATORS)
        for load in _choices(args.loads, LOADS)
    ]
    rows = []
    for allocator, load in conditions:
        for variant in networks:
            print(f"{variant}: allocator {allocator}, {load}", file=sys.stderr, flush=True)
            rows.append(measure_condition(variant, allocator, load, args))
    info = {**machine(), "threads": str(args.threads)}
    table = markdown(rows, info)
    print(table)
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
