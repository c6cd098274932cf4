"""Models remember how they were built: save → convert → reparam → load → export round-trips."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from lightsr.archs.registry import arch_specs, build_model, detect
from lightsr.checkpoint import save_safetensors
from lightsr.cli import main
from lightsr.convert import convert_checkpoint
from lightsr.deploy import reparameterize_checkpoint, reparameterize_model
from lightsr.errors import CheckpointError
from lightsr.models import SRModel, load_model
from lightsr.provenance import Provenance, read_provenance

# A non-default configuration of each family (and of every ESC class).
NON_DEFAULT = [
    ("fmen_s", 2, {"n_feats": 48}),
    ("fmen", 3, {"down_blocks": 2, "up_blocks": (1, 2, 1)}),
    ("ditn_real", 2, {"ufone_blocks": 2}),
    ("ditn_tiny", 3, {"dim": 32, "ffn_expansion": 1.5, "bias": True}),
    ("esc", 2, {"n_blocks": 2, "conv_blocks": 3}),
    ("esc_fp", 3, {"n_blocks": 1}),
    ("esc_real", 4, {"n_blocks": 2}),
    ("emt", 2, {"n_blocks": 2, "n_layers": 4}),
]
# Arbitrary-scale weights serve every scale; their files say x4 (the nominal scale).
CASES = [
    (spec.name, 4 if spec.arbitrary_scale else spec.scales[0], {}) for spec in arch_specs()
] + NON_DEFAULT


def _built(variant: str, scale: int, config: dict) -> torch.nn.Module:
    """Fresh weights, with non-trivial BatchNorm statistics where there are BatchNorms."""
    torch.manual_seed(0)
    module = build_model(variant, scale, **config)
    for norm in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.running_var.uniform_(0.5, 2.0)
    return module.eval()


def _max_diff(a: SRModel, b: SRModel) -> float:
    x = torch.rand(1, 3, 26, 29, generator=torch.Generator().manual_seed(1))  # ESC-XL: >= 25
    return (a.upscale(x) - b.upscale(x)).abs().max().item()


@pytest.mark.parametrize(("variant", "scale", "config"), CASES, ids=lambda v: str(v))
def test_save_convert_reparam_load_round_trip(tmp_path, variant, scale, config):
    module = _built(variant, scale, config)
    source = tmp_path / "plain.pth"  # no metadata: the network is read from its shapes
    torch.save({"params": module.state_dict()}, source)
    converted = convert_checkpoint(source, tmp_path / "converted.safetensors")
    expected_form = "train" if converted.spec.has_deploy_form else "single"
    assert (converted.variant, converted.scale) == (variant, scale)
    assert (dict(converted.config), converted.form) == (config, expected_form)

    loaded = load_model(tmp_path / "converted.safetensors")
    assert loaded.provenance == converted.provenance
    assert _max_diff(converted, loaded) <= 1e-5
    if converted.spec.has_deploy_form:
        deployed = reparameterize_checkpoint(
            tmp_path / "converted.safetensors", tmp_path / "deploy.safetensors"
        )
        reloaded = load_model(tmp_path / "deploy.safetensors")
        assert (reloaded.form, dict(reloaded.config)) == ("deploy", config)
        assert _max_diff(deployed, reloaded) <= 1e-5
        assert _max_diff(converted, reloaded) <= 1e-3  # folding changes float rounding only


def test_fmen_s_with_48_features_trained_elsewhere_converts_and_loads(tmp_path):
    """Bug: convert used to re-detect and drop ``n_feats`` from the written metadata."""
    module = _built("fmen_s", 4, {"n_feats": 48})
    trained = tmp_path / "trained.safetensors"
    provenance = Provenance("fmen", "fmen_s", 4, "train", {"n_feats": 48})
    save_safetensors(module.state_dict(), trained, provenance.to_metadata())
    assert main(["convert", str(trained), str(tmp_path / "out.safetensors")]) == 0
    with safe_open(str(tmp_path / "out.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["config"]) == {"n_feats": 48}
    loaded = load_model(tmp_path / "out.safetensors")
    assert loaded.module.head.out_channels == 48
    assert _max_diff(load_model(trained), loaded) == 0.0


def test_codec_writes_one_vocabulary_and_reads_older_files():
    provenance = Provenance("ditn", "ditn_real", 2, "single", {"ufone_blocks": 2})
    metadata = provenance.to_metadata(source="x.pth")
    assert metadata == {
        "family": "ditn",
        "variant": "ditn_real",
        "scale": "2",
        "form": "single",
        "config": '{"ufone_blocks": 2}',
        "source": "x.pth",
    }
    assert read_provenance(metadata) == provenance
    legacy = {"network": "emt", "variant": "emt", "scale": "3", "overrides": '{"n_blocks": 2}'}
    assert read_provenance(legacy) == Provenance("emt", "emt", 3, "", {"n_blocks": 2})
    assert read_provenance({"network": "esc", "variant": "esc", "scale": "2", "form": "standard"})
    assert read_provenance({"variant": "esc"}) is None
    with pytest.raises(CheckpointError, match="unknown form"):
        read_provenance({"variant": "esc", "scale": "2", "form": "folded"})
    with pytest.raises(ValueError):
        Provenance("esc", "esc", 2, "standard")


@pytest.mark.parametrize(
    ("variant", "config", "expected"),
    [
        ("fmen_s", {"n_feats": 40, "mid_feats": 12}, ("fmen_s", {"n_feats": 40, "mid_feats": 12})),
        ("fmen", {"backbone_ratio": 3}, ("fmen", {"backbone_ratio": 3})),
        ("ditn", {"ufone_blocks": 1}, ("ditn", {"ufone_blocks": 1})),
        (
            "ditn_real",
            {"itl_blocks": 2, "sal_blocks": 3},
            ("ditn_real", {"itl_blocks": 2, "sal_blocks": 3}),
        ),
        ("emt", {"dim": 30, "mlp_ratio": 3}, ("emt", {"dim": 30, "mlp_ratio": 3})),
        ("esc_light", {"conv_blocks": 2}, ("esc_light", {"conv_blocks": 2})),
    ],
)
def test_detection_reads_any_configuration_of_a_family(variant, config, expected):
    detection = detect(build_model(variant, 2, **config).state_dict())
    assert (detection.name, dict(detection.overrides)) == expected


def test_a_checkpoint_of_no_known_network_names_the_closest_variant():
    state_dict = build_model("emt", 2, n_blocks=1, n_layers=2).state_dict()
    del state_dict["head.weight"]
    with pytest.raises(CheckpointError) as info:
        load_model(state_dict)  # every variant is built on the meta device to compare
    message = str(info.value)
    assert "closest is emt" in message and "key 'head.weight' is missing" in message
    assert "\n" not in message


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "scale", "config"),
    [
        ("fmen_s", 2, {"n_feats": 48}),
        ("ditn_real", 2, {"ufone_blocks": 2}),
        ("emt", 2, {"n_blocks": 1, "n_layers": 2}),
    ],
    ids=["fmen_s-n_feats48", "ditn_real-ufone2", "emt-1x2"],
)
def test_converted_non_default_configurations_export_and_verify(
    tmp_path, capsys, variant, scale, config
):
    """Representative configurations only: each export takes seconds to minutes."""
    torch.save({"params": _built(variant, scale, config).state_dict()}, tmp_path / "m.pth")
    converted = tmp_path / "m.safetensors"
    convert_checkpoint(tmp_path / "m.pth", converted)
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(converted), "-o", str(onnx_file), "--verify"]) == 0
    assert "verified 97x131" in capsys.readouterr().out
    from lightsr.ort import load_onnx_model

    exported = load_onnx_model(onnx_file)
    assert dict(exported.provenance.config) == config
    assert exported.provenance.form == ("deploy" if variant == "fmen_s" else "single")
    # The memory model of the ONNX backend builds the exported configuration and form.
    deployed = reparameterize_model(load_model(converted)).module
    assert _count(exported.module) == _count(deployed)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_files_with_a_config_that_does_not_fit_their_tensors_load_by_shape(tmp_path):
    """What older ``lightsr convert`` wrote for an FMEN-S with 48 features: no config."""
    module = _built("fmen_s", 2, {"n_feats": 48})
    path = tmp_path / "old.safetensors"
    legacy = {"network": "fmen", "variant": "fmen_s", "scale": "2"}
    save_safetensors(module.state_dict(), path, legacy)
    loaded = load_model(path)
    assert (dict(loaded.config), loaded.form) == ({"n_feats": 48}, "train")
