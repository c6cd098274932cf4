"""A training process killed with SIGKILL resumes from its last checkpoint, losing nothing else."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lightsr
from lightsr.checkpoint import read_state_dict
from lightsr.train import train
from lightsr.train.checkpoints import list_checkpoints, load_checkpoint
from lightsr.train.config import config_from_dict
from tests.train.conftest import tiny_config, write_toml

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

TOTAL, EVERY = 200, 10


def child_env() -> dict[str, str]:
    """Environment in which ``python -m lightsr`` imports this checkout's package."""
    src = str(Path(lightsr.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def wait_for_checkpoint(
    run_dir: Path, process: subprocess.Popen, log_path: Path, at_least: int
) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list_checkpoints(run_dir)
        if found and int(found[-1].name.split("_")[1]) >= at_least:
            return
        if process.poll() is not None:
            pytest.fail(f"training exited early: {log_path.read_text()}")
        time.sleep(0.05)
    pytest.fail("no checkpoint appeared")


def train_until_killed(config_path: Path, run_dir: Path, log_path: Path, at_least: int) -> int:
    """Run ``lightsr train config_path`` in a child process, SIGKILL it once a checkpoint of
    iteration ``at_least`` or later exists, and return its exit code."""
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "lightsr", "train", str(config_path)],
            env=child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_checkpoint(run_dir, process, log_path, at_least)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return process.returncode


def test_sigkill_then_resume_auto(tiny_data, tmp_path):
    raw = tiny_config(
        tiny_data,
        tmp_path / "killed",
        val={"interval": 0},
        train={"total_iters": TOTAL, "checkpoint_interval": EVERY},
    )
    config_path = write_toml(tmp_path / "config.toml", raw)
    run_dir = tmp_path / "killed" / "tiny"
    code = train_until_killed(config_path, run_dir, tmp_path / "train.log", at_least=3 * EVERY)
    assert code == -signal.SIGKILL
    survivors = list_checkpoints(run_dir)
    assert survivors and not (run_dir / "final.safetensors").exists()
    last = load_checkpoint(survivors[-1]).iteration
    assert last % EVERY == 0 and 3 * EVERY <= last < TOTAL

    resumed = train(config_from_dict(raw), resume="auto", progress=False)
    assert resumed.iterations == TOTAL
    for checkpoint in list_checkpoints(run_dir):
        load_checkpoint(checkpoint)  # every remaining checkpoint is complete and readable
    assert not list((run_dir / "checkpoints").glob(".*"))  # partial writes were cleaned up
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r["iter"] for r in records if "loss" in r]
    assert logged == list(range(5, TOTAL + 1, 5))

    # The interrupted run ends with the same weights as one that was never interrupted.
    raw["output_dir"] = str(tmp_path / "straight")
    straight = train(config_from_dict(raw), progress=False)
    expected, _ = read_state_dict(straight.run_dir / "final.safetensors")
    actual, _ = read_state_dict(resumed.run_dir / "final.safetensors")
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, msg=key)
