"""``lightsr models`` data: variants, parameter counts and published weights."""

from __future__ import annotations

import json

import lightsr
from lightsr.archs.registry import list_models
from lightsr.catalog import catalog, trainable_parameters
from lightsr.cli import main
from lightsr.hub import official_names


def test_catalog_lists_every_registered_variant_and_weights():
    info = catalog()
    assert [v["name"] for v in info["variants"]] == list_models()
    assert [w["name"] for w in info["official_weights"]] == official_names()
    emt = next(v for v in info["variants"] if v["name"] == "emt")
    assert emt["params"] == {"2": 670_572, "3": 678_687, "4": 690_048}
    assert emt["official_weights"] == ["emt_x2_official", "emt_x3_official", "emt_x4_official"]
    assert emt["input_range"] == 255.0 and emt["paper_derived"] is False
    assert "params_train" not in emt  # EMT has no separate deploy form
    assert emt["arbitrary_scale"] is False
    for name in ("esc_lte", "fmen_s_lte"):
        lte = next(v for v in info["variants"] if v["name"] == name)
        assert lte["arbitrary_scale"] is True
        assert len(set(lte["params"].values())) == 1  # one network for every scale


def test_meta_device_count_equals_a_real_build():
    module = lightsr.build_model("emt", 4, n_blocks=1)
    assert trainable_parameters("emt", 4, n_blocks=1) == sum(
        p.numel() for p in module.parameters() if p.requires_grad
    )


def test_cli_models_json_and_text(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("LIGHTSR_CACHE", str(tmp_path))
    assert main(["models", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    esc = next(w for w in info["official_weights"] if w["name"] == "esc_x4_official")
    assert esc["available"] is False and esc["sha256"] is None
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "x2 670,572  x3 678,687  x4 690,048" in text
    assert "emt_x4_official" in text and "manual download" in text
    # One network for every scale: its range and a single parameter count.
    lte = next(line for line in text.splitlines() if line.split()[:1] == ["fmen_s_lte"])
    assert "any x1-x8" in lte and "x2 " not in lte
