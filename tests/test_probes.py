"""Memory probes remembered across processes: a later ``lightsr upscale`` does not pay the
``torch._dynamo`` import that a meta-device probe costs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from lightsr.inference import estimate_bytes_per_pixel
from lightsr.models import load_default_model
from lightsr.probes import FILE_NAME, probe_key

CHILD = """
import sys
from lightsr.inference import estimate_bytes_per_pixel
from lightsr.models import load_default_model
print(estimate_bytes_per_pixel(load_default_model(4)), "torch._dynamo" in sys.modules)
"""


def _child(cache) -> tuple[float, bool]:
    env = {**os.environ, "LIGHTSR_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), out[1] == "True"


def test_second_process_reads_the_probe_instead_of_running_it(tmp_path):
    first, imported_first = _child(tmp_path)
    second, imported_second = _child(tmp_path)
    assert imported_first and not imported_second
    assert first == second > 0
    assert len(json.loads((tmp_path / FILE_NAME).read_text())) == 1


def test_unreadable_file_means_probing_again(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTSR_CACHE", str(tmp_path))
    (tmp_path / FILE_NAME).write_text("{not json")
    model = load_default_model(4)
    assert estimate_bytes_per_pixel(model) > 0
    assert len(json.loads((tmp_path / FILE_NAME).read_text())) == 1


def test_key_follows_structure_and_dtype():
    x2, x4 = load_default_model(2), load_default_model(4)
    assert probe_key(x4, "k", torch.float32) == probe_key(load_default_model(4), "k", torch.float32)
    assert probe_key(x4, "k", torch.float32) != probe_key(x4, "k", torch.bfloat16)
    assert probe_key(x4, "k", torch.float32) != probe_key(x2, "k", torch.float32)
    assert probe_key(x4, "k", torch.float32) != probe_key(x4, "other", torch.float32)
