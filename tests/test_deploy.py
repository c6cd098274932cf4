"""Deploy form: reparameterize_model, reparameterize_checkpoint and ``lightsr reparam``."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lightsr.archs import build_model
from lightsr.cli import main
from lightsr.deploy import deploy_module, reparameterize_checkpoint, reparameterize_model
from lightsr.errors import UsageError
from lightsr.models import load_model


def _train_form_fmen(scale: int = 2) -> dict[str, torch.Tensor]:
    """A training-form FMEN-S state dict with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    module = build_model("fmen_s", scale)
    for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.bias.data.uniform_(-0.5, 0.5)
    return module.state_dict()


@pytest.fixture
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(1, 3, 20, 17)


def test_reparameterize_model_keeps_outputs(image):
    model = load_model(_train_form_fmen())
    deployed = reparameterize_model(model)
    assert deployed.module.deploy and not model.module.deploy
    assert (deployed.variant, deployed.scale) == ("fmen_s", 2)
    assert (deployed.upscale(image) - model.upscale(image)).abs().max().item() < 1e-5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deployed.module.modules())


def test_networks_without_split_are_returned_unchanged():
    model = load_model(build_model("ditn_tiny", 2).state_dict())
    assert reparameterize_model(model) is model
    assert deploy_module(model.module) is model.module


def test_reparameterize_checkpoint_writes_loadable_deploy_file(tmp_path, image):
    source = tmp_path / "fmen_train.pth"
    torch.save({"params": _train_form_fmen(3)}, source)
    out = tmp_path / "fmen_deploy.safetensors"
    reparameterize_checkpoint(source, out)
    with safe_open(str(out), "pt") as f:
        metadata = f.metadata()
    keys = set(load_file(str(out)))
    assert not any(".bn" in k or "expand_conv" in k for k in keys)
    assert "ERBs.0.conv1.rep_conv.weight" in keys
    assert metadata["form"] == "deploy"
    assert (metadata["family"], metadata["variant"], metadata["scale"]) == ("fmen", "fmen_s", "3")
    reloaded, original = load_model(out), load_model(source)
    assert reloaded.module.deploy and reloaded.scale == 3
    assert (reloaded.upscale(image) - original.upscale(image)).abs().max().item() < 1e-5


def test_reparameterize_checkpoint_half(tmp_path):
    source = tmp_path / "fmen_train.pth"
    torch.save(_train_form_fmen(), source)
    out = tmp_path / "fmen_deploy_fp16.safetensors"
    reparameterize_checkpoint(source, out, half=True)
    assert {t.dtype for t in load_file(str(out)).values()} == {torch.float16}
    assert load_model(out).module.deploy


def test_reparameterize_checkpoint_rejects_bad_requests(tmp_path):
    source = tmp_path / "fmen_train.pth"
    torch.save(_train_form_fmen(), source)
    with pytest.raises(UsageError, match=r"\.safetensors"):
        reparameterize_checkpoint(source, tmp_path / "out.pth")
    ditn = tmp_path / "ditn.pth"
    torch.save(build_model("ditn_tiny", 2).state_dict(), ditn)
    with pytest.raises(UsageError, match="no separate training form"):
        reparameterize_checkpoint(ditn, tmp_path / "out.safetensors")


def test_cli_reparam(tmp_path, capsys):
    source = tmp_path / "fmen_train.pth"
    torch.save(_train_form_fmen(4), source)
    out = tmp_path / "deploy.safetensors"
    assert main(["reparam", str(source), str(out)]) == 0
    assert "fmen_s x4, deploy form, 341,066 params" in capsys.readouterr().out
    assert load_model(out).module.deploy


def test_cli_reparam_reports_user_errors(tmp_path, capsys):
    ditn = tmp_path / "ditn.pth"
    torch.save(build_model("ditn_tiny", 2).state_dict(), ditn)
    assert main(["reparam", str(ditn), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lightsr reparam: error:") and "Traceback" not in err


@pytest.mark.parametrize("variant", ["fmen_s", "fmen"])
def test_cli_reparam_training_checkpoints_of_both_sizes(tmp_path, image, variant):
    torch.manual_seed(0)
    module = build_model(variant, 4)
    for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    source, out = tmp_path / "train.pth", tmp_path / "deploy.safetensors"
    torch.save({"params": module.state_dict()}, source)
    assert main(["reparam", str(source), str(out)]) == 0
    deployed, original = load_model(out), load_model(source)
    assert deployed.module.deploy and deployed.variant == variant
    assert (deployed.upscale(image) - original.upscale(image)).abs().max().item() < 1e-4
