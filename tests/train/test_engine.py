from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open

from lightsr.checkpoint import read_state_dict
from lightsr.errors import CheckpointError, UsageError
from lightsr.models import load_model
from lightsr.train import train
from lightsr.train.config import config_from_dict, load_config
from tests.train.conftest import TINY_FMEN, tiny_config


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_cpu_run_writes_every_artefact(tiny_data, tmp_path):
    config = config_from_dict(tiny_config(tiny_data, tmp_path / "runs"))
    result = train(config, progress=False)
    run = result.run_dir
    assert result.iterations == 20
    for name in ("config.toml", "curves.png", "previews/val0.png", "final.safetensors"):
        assert (run / name).is_file(), name
    assert load_config(run / "config.toml") == config
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["iter_00000010", "iter_00000020"]
    for name in ("model.safetensors", "ema.safetensors", "state.pt"):
        assert (run / "checkpoints" / "iter_00000020" / name).is_file()

    records = read_metrics(run)
    assert [r["iter"] for r in records if "loss" in r] == [5, 10, 15, 20]
    assert [r["iter"] for r in records if "val_psnr" in r] == [10, 20, 20]
    assert records[-1]["deploy_psnr"] == pytest.approx(result.deploy_psnr)

    # The deploy file is float16, re-parameterised (no BatchNorm) and self-describing.
    deploy = run / "deploy_fp16.safetensors"
    with safe_open(str(deploy), "pt") as f:
        metadata = f.metadata()
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118
        keys = set(f.keys())
    assert metadata["form"] == "deploy" and metadata["variant"] == "fmen_s"
    assert metadata["scale"] == "2" and metadata["family"] == "fmen"
    assert json.loads(metadata["config"]) == TINY_FMEN
    assert dtypes == {torch.float16} and not any(".bn" in k for k in keys)
    loaded = load_model(deploy)
    assert (loaded.variant, loaded.scale, loaded.module.deploy) == ("fmen_s", 2, True)
    trained = load_model(run / "final_ema.safetensors")
    assert trained.module.deploy is False
    assert result.deploy_psnr == pytest.approx(result.val_psnr, abs=0.05)

    # The EMA weights are what gets deployed, and they differ from the raw weights.
    raw, _ = read_state_dict(run / "final.safetensors")
    ema, _ = read_state_dict(run / "final_ema.safetensors")
    assert not torch.equal(raw["head.weight"], ema["head.weight"])
    assert any(".bn" in k for k in raw)


def test_resume_continues_exactly(tiny_data, tmp_path):
    raw = tiny_config(tiny_data, tmp_path / "a", val={"interval": 0})
    straight = train(config_from_dict(raw), progress=False)

    # Pretend the process died after the checkpoint at iteration 10.
    resumed_out = tmp_path / "b"
    shutil.copytree(straight.run_dir, resumed_out / "tiny")
    shutil.rmtree(resumed_out / "tiny" / "checkpoints" / "iter_00000020")
    (resumed_out / "tiny" / "final.safetensors").unlink()
    raw["output_dir"] = str(resumed_out)
    resumed = train(config_from_dict(raw), resume="auto", progress=False)

    assert resumed.iterations == 20
    for name in ("final.safetensors", "final_ema.safetensors"):
        expected, _ = read_state_dict(straight.run_dir / name)
        actual, _ = read_state_dict(resumed.run_dir / name)
        for key, value in expected.items():
            torch.testing.assert_close(actual[key], value, rtol=0, atol=0, msg=key)
    iterations = [r["iter"] for r in read_metrics(resumed.run_dir) if "loss" in r]
    assert iterations == [5, 10, 15, 20]


def test_existing_run_needs_resume(tiny_data, tmp_path):
    raw = tiny_config(tiny_data, tmp_path, train={"total_iters": 10})
    train(config_from_dict(raw), progress=False)
    with pytest.raises(UsageError, match="--resume auto"):
        train(config_from_dict(raw), progress=False)
    # A finished run resumed again stops at once and keeps its results.
    assert train(config_from_dict(raw), resume="auto", progress=False).iterations == 10


def test_mixed_precision_and_other_recipes(tiny_data, tmp_path):
    raw = tiny_config(
        tiny_data,
        tmp_path,
        model={"options": {**TINY_FMEN, "n_feats": 4}},
        val={"dir": "", "interval": 0},
        optim={"name": "adamw", "betas": [0.9, 0.9], "weight_decay": 1e-4, "grad_clip": 0.5},
        schedule={"name": "multistep", "milestones": [2, 3]},
        train={"total_iters": 4, "precision": "bf16", "loss": "charbonnier", "ema_decay": 0.0},
    )
    result = train(config_from_dict(raw), progress=False)
    assert result.iterations == 4 and result.deploy_psnr is None
    assert not (result.run_dir / "final_ema.safetensors").exists()
    state, _ = read_state_dict(result.run_dir / "final.safetensors")
    assert state["head.weight"].shape[0] == 4 and torch.isfinite(state["head.weight"]).all()


def test_fine_tune_from_deploy_weights(tiny_data, tmp_path):
    first = train(config_from_dict(tiny_config(tiny_data, tmp_path / "a")), progress=False)
    deploy = first.run_dir / "deploy_fp16.safetensors"
    raw = tiny_config(
        tiny_data,
        tmp_path / "b",
        model={"options": {**TINY_FMEN, "deploy": True}, "init_weights": str(deploy)},
        val={"interval": 0},
        optim={"lr": 1e-12},
        train={"total_iters": 2},
    )
    tuned = train(config_from_dict(raw), progress=False)
    start, _ = read_state_dict(deploy)
    end, _ = read_state_dict(tuned.run_dir / "final.safetensors")
    for key, value in start.items():
        torch.testing.assert_close(end[key], value.float(), rtol=0, atol=1e-6, msg=key)
    assert tuned.deploy_psnr == pytest.approx(first.deploy_psnr, abs=0.01)

    raw["model"]["options"]["deploy"] = False
    with pytest.raises(CheckpointError, match="does not fit"):
        train(config_from_dict({**raw, "name": "mismatch"}), progress=False)


def test_non_finite_gradient_skips_the_step(tiny_data, tmp_path, monkeypatch, capsys):
    # One NaN loss must not poison the weights or Adam's moments (bf16 kernels on CPU
    # produced one now and then): that step is skipped and training goes on.
    from lightsr.train.engine import Trainer

    pixel_loss, calls = Trainer._pixel_loss, []

    def nan_on_third(self, output, target, batch):
        calls.append(None)
        loss = pixel_loss(self, output, target, batch)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(Trainer, "_pixel_loss", nan_on_third)
    result = train(config_from_dict(tiny_config(tiny_data, tmp_path / "runs")), progress=True)
    assert result.iterations == 20
    weights, _ = read_state_dict(result.run_dir / "final.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
    captured = capsys.readouterr()
    assert "iteration 3: non-finite generator gradient, step skipped" in captured.out + captured.err
    assert result.val_psnr > 0
