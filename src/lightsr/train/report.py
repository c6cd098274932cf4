"""Training records: ``metrics.jsonl``, ``curves.png`` and the progress display."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm


class MetricsLog:
    """Append-only JSON-lines log of loss and validation records.

    Every record has an ``iter`` field. When a run resumes from a checkpoint, records
    written after that checkpoint by the interrupted process are dropped, so the log
    continues without gaps or duplicates.
    """

    def __init__(self, path: Path, resume_iteration: int | None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if resume_iteration is not None and path.is_file():
            self.records = [r for r in _read_jsonl(path) if r.get("iter", 0) <= resume_iteration]
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in self.records)

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def plot(self, path: Path) -> None:
        """Draw the training loss and validation PSNR against iterations."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        losses = [(r["iter"], r["loss"]) for r in self.records if "loss" in r]
        psnrs = [(r["iter"], r["val_psnr"]) for r in self.records if "val_psnr" in r]
        figure, (loss_axis, psnr_axis) = plt.subplots(1, 2, figsize=(10, 4))
        if losses:
            loss_axis.plot(*zip(*losses, strict=True))
            loss_axis.set_yscale("log")
        loss_axis.set(title="training loss", xlabel="iteration")
        if psnrs:
            psnr_axis.plot(*zip(*psnrs, strict=True), marker="o")
        psnr_axis.set(title="validation PSNR-Y (dB)", xlabel="iteration")
        figure.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp.png")
        figure.savefig(tmp, dpi=80)
        plt.close(figure)
        tmp.replace(path)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a line cut short by a kill: everything after it is lost anyway
    return records


class Progress:
    """A tqdm bar on a terminal, plain log lines otherwise (e.g. when output goes to a file).

    Messages go to stdout; the bar (on a terminal) to stderr.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.interactive = enabled and sys.stderr.isatty()
        self.bar: tqdm | None = None
        self.last_psnr: float | None = None

    def start(self, initial: int, total: int | None) -> None:
        """Show the bar, starting at iteration ``initial`` of ``total`` (None: unknown)."""
        self.bar = tqdm(
            initial=initial,
            total=total,
            unit="it",
            dynamic_ncols=True,
            disable=not self.interactive,
            file=sys.stderr,
        )

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def log(self, iteration: int, loss: float, lr: float, speed: float, eta: float | None) -> None:
        """Show the latest loss; ``speed`` in it/s, ``eta`` in seconds."""
        if not self.enabled:
            return
        fields = {"loss": f"{loss:.4f}", "lr": f"{lr:.2e}"}
        if self.last_psnr is not None:
            fields["val"] = f"{self.last_psnr:.2f}dB"
        if self.interactive and self.bar is not None:
            self.bar.set_postfix(fields, refresh=False)
        else:
            eta_text = f" eta {_clock(eta)}" if eta is not None else ""
            text = " ".join(f"{k} {v}" for k, v in fields.items())
            self.message(f"iter {iteration} {text} {speed:.1f} it/s{eta_text}")

    def set_total(self, total: int) -> None:
        """Update the expected number of iterations (wall-clock budgets only know it late)."""
        if self.bar is not None:
            self.bar.total = total

    def message(self, text: str) -> None:
        if self.enabled:
            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
