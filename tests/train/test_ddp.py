"""Two CPU processes under torchrun (gloo) train exactly like one process with the same batch.

The network is FMEN-S in its deploy form, which has no BatchNorm: with BatchNorm each
process would normalise with the statistics of its half batch, a genuine (and expected)
difference from single-process training.
"""

from __future__ import annotations

import subprocess
import sys

import torch

from lightsr.checkpoint import read_state_dict
from lightsr.train import train
from lightsr.train.config import config_from_dict
from tests.train.conftest import TINY_FMEN, tiny_config, write_toml
from tests.train.test_kill_resume import child_env


def test_two_gloo_processes_match_one_process(tiny_data, tmp_path):
    raw = tiny_config(
        tiny_data,
        tmp_path / "ddp",
        model={"options": {**TINY_FMEN, "deploy": True}},
        data={"batch_size": 4},
        val={"interval": 4},
        train={"total_iters": 6, "checkpoint_interval": 3},
    )
    config_path = write_toml(tmp_path / "config.toml", raw)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "lightsr",
        "train",
        str(config_path),
    ]
    done = subprocess.run(
        command, env=child_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "x 2 processes" in done.stdout

    raw["output_dir"] = str(tmp_path / "single")
    single = train(config_from_dict(raw), progress=False)
    ddp_run = tmp_path / "ddp" / "tiny"
    for name in ("final.safetensors", "final_ema.safetensors"):
        expected, _ = read_state_dict(single.run_dir / name)
        actual, _ = read_state_dict(ddp_run / name)
        for key, value in expected.items():
            torch.testing.assert_close(actual[key], value, rtol=1e-4, atol=1e-6, msg=key)
    # The weights did move: the comparison is not between two untrained networks.
    initial = train(
        config_from_dict({**raw, "name": "untrained", "train": {**raw["train"], "total_iters": 1}}),
        progress=False,
    )
    moved, _ = read_state_dict(initial.run_dir / "final.safetensors")
    assert not torch.allclose(moved["head.weight"], expected["head.weight"])
