"""FMEN / FMEN-S: official outputs, folding, detection and parameter counts."""

from __future__ import annotations

import cv2
import pytest
import torch
from safetensors.torch import load_file

from lightsr import load_model
from lightsr.archs import build_model
from lightsr.archs.fmen import FMEN, reparameterize
from tests.conftest import shared_file

TOLERANCE = 1e-4  # on outputs divided by 255 (FMEN works in [0, 255])


def _golden(name: str) -> dict[str, torch.Tensor]:
    return load_file(str(shared_file(f"golden/{name}.safetensors")))


def _embedded(golden: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in golden.items() if k.startswith(prefix)}


def _max_diff(module: torch.nn.Module, golden: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        return max(
            ((module(golden[f"input_{c}"]) - golden[f"output_{c}"]) / 255).abs().max().item()
            for c in "ab"
        )


def _lr_crop(size: int = 40) -> torch.Tensor:
    """A real image: Set5 bird ×4 LR, top-left crop, RGB in [0, 255]."""
    bgr = cv2.imread(str(shared_file("data/Set5/LR_bicubic/X4/birdx4.png")))
    rgb = torch.from_numpy(bgr[:size, :size, ::-1].copy()).permute(2, 0, 1).float()
    return rgb.unsqueeze(0)


def _n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_official_deploy_weights_match_golden():
    golden = _golden("fmen_s_x4")
    model = load_model(shared_file("weights/official/FMEN/test_weights.pt"))
    assert (model.variant, model.scale, model.module.deploy) == ("fmen_s", 4, True)
    assert _max_diff(model.module, golden) <= TOLERANCE


@pytest.mark.parametrize("name", ["fmen_s_train_x4", "fmen_s_train_bnstats_x4"])
def test_train_form_matches_golden_before_and_after_folding(name):
    golden = _golden(name)
    model = load_model(_embedded(golden, "state_dict."))
    assert (model.variant, model.scale, model.module.deploy) == ("fmen_s", 4, False)
    assert _max_diff(model.module, golden) <= TOLERANCE
    assert _max_diff(reparameterize(model.module), golden) <= TOLERANCE


def test_folded_weights_equal_official_reparameterisation():
    golden = _golden("fmen_s_train_bnstats_x4")
    official = _embedded(golden, "reparam_state_dict.")
    deployed = load_model(official)
    assert deployed.module.deploy
    assert _max_diff(deployed.module, golden) <= TOLERANCE
    ours = load_model(_embedded(golden, "state_dict.")).module.reparameterize().state_dict()
    assert ours.keys() == official.keys()
    assert max((ours[k] - official[k]).abs().max().item() for k in ours) < 1e-5


def test_reparameterize_is_exact_with_nontrivial_batchnorm():
    torch.manual_seed(0)
    model = build_model("fmen_s", 4)
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-2, 2)
        bn.running_var.uniform_(0.5, 3)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-1, 1)
    model.eval()
    deployed = reparameterize(model)
    assert isinstance(deployed, FMEN) and deployed.deploy
    image = _lr_crop()
    with torch.no_grad():
        diff = ((model(image) - deployed(image)) / 255).abs().max().item()
    assert diff <= 1e-5


def test_team03_checkpoint_is_detected_as_fmen_s_deploy():
    model = load_model(shared_file("weights/official/FMEN/team03_fmen.pth"))
    assert (model.variant, model.scale, model.module.deploy) == ("fmen_s", 4, True)
    with torch.no_grad():
        out = model.module(_lr_crop(24))
    assert out.shape == (1, 3, 96, 96) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("scale", "deploy_params", "train_params"),
    [(2, 324_830, 1_029_630), (3, 331_595, 1_036_395), (4, 341_066, 1_045_866)],
)
def test_fmen_s_parameter_counts(scale, deploy_params, train_params):
    # Trainable parameters: BN affine weights count, running statistics do not.
    assert _n_params(build_model("fmen_s", scale, deploy=True)) == deploy_params
    assert _n_params(build_model("fmen_s", scale)) == train_params


@pytest.mark.parametrize("variant", ["fmen_s", "fmen"])
@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("deploy", [False, True])
def test_detection_round_trip(variant, scale, deploy):
    state = build_model(variant, scale, deploy=deploy).state_dict()
    model = load_model(state)
    assert (model.variant, model.scale, model.module.deploy) == (variant, scale, deploy)


def test_gradients_reach_every_parameter_in_train_form():
    torch.manual_seed(0)
    model = build_model("fmen_s", 2).train()
    image = _lr_crop(16).repeat(2, 1, 1, 1)
    model(image).mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_balance_keeps_the_official_function_and_evens_the_weights():
    model = load_model(shared_file("weights/official/FMEN/test_weights.pt")).module
    x = _lr_crop(24)
    with torch.no_grad():
        before = model(x)
        model.balance_()
        after = model(x)
    assert ((after - before) / 255).abs().max().item() <= TOLERANCE
    for hfab in (model.warmup[1], *model.HFABs):
        rms = torch.stack([conv.weight.pow(2).mean().sqrt() for conv in hfab.branch_convs()])
        torch.testing.assert_close(rms, rms[:1].expand_as(rms), rtol=1e-4, atol=0)
    with pytest.raises(ValueError, match="deploy form"):
        build_model("fmen_s", 4).balance_()
