"""Hostile checkpoints: wrong dtypes and shapes, NaNs, pickles that would run code, damage.

Each one is refused with exit code 2 and one line naming the file (and the key and dtype
where there is one), by every command that loads weights.
"""

from __future__ import annotations

import pytest
import torch

from lightsr.checkpoint import save_safetensors
from lightsr.errors import CheckpointError
from lightsr.io import write_image
from lightsr.models import load_model
from lightsr.train.checkpoints import TrainingState, newest_valid_checkpoint, save_checkpoint
from tests.hostile import corpus

SPOILED = [
    ("int8", "key 'head.weight' holds int8 values, expected float32"),
    ("complex", "key 'head.weight' holds complex64 values, expected float32"),
    ("nan", "key 'head.weight' holds NaN or infinite values"),
    ("shape", "'head.weight'"),
    ("scalar", "matches no known network"),
]


@pytest.mark.parametrize(("kind", "message"), SPOILED)
@pytest.mark.parametrize("command", ["upscale", "convert", "export"])
def test_spoiled_weights_fail_on_one_line(tmp_path, cli, kind, message, command):
    weights = corpus.bad_checkpoint(tmp_path / f"{kind}.pth", kind)
    write_image(tmp_path / "in.png", corpus.photo())
    args = {
        "upscale": ("upscale", tmp_path / "in.png", "-o", tmp_path / "o.png", "--weights", weights),
        "convert": ("convert", weights, tmp_path / "o.safetensors"),
        "export": ("export", "--weights", weights, "-o", tmp_path / "o.onnx"),
    }[command]
    code, _, err = cli(*args)
    assert code == 2
    assert len(err) == 1 and f"{kind}.pth" in err[0] and message in err[0]
    assert not any(p.name.startswith("o.") for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    ("make", "protocol", "message"),
    [
        (corpus.code_pickle, 2, "refused: the pickle would call posix.system"),
        (corpus.code_pickle, 5, "refused: the pickle holds more than tensors"),
        (corpus.torch_code_pickle, None, "refused: the pickle would call posix.system"),
    ],
)
def test_pickles_that_would_run_code_are_refused(tmp_path, cli, make, protocol, message):
    marker = tmp_path / "pwned"
    weights = make(tmp_path / "evil.pth", marker, protocol)
    code, _, err = cli("convert", weights, tmp_path / "o.safetensors")
    assert code == 2 and len(err) == 1
    assert f"evil.pth: {message}" in err[0]
    # torch's advice to turn weights_only off is not repeated.
    reason = err[0].split("evil.pth: ")[1]
    assert "weights_only" not in reason and len(reason) < 120
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("cut.pth", "truncate", "truncated or damaged"),
        ("junk.safetensors", b"\xff" * 100, "not a readable safetensors file"),
        ("empty.pth", b"", "truncated or damaged"),
    ],
)
def test_damaged_files(tmp_path, cli, name, content, message):
    path = tmp_path / name
    if content == "truncate":
        torch.save(corpus.state_dict(), path)
        content = path.read_bytes()[:4000]
    path.write_bytes(content)
    code, _, err = cli("reparam", path, tmp_path / "o.safetensors")
    assert code == 2 and len(err) == 1 and name in err[0] and message in err[0]


def test_integer_safetensors_named_by_key(tmp_path):
    weights = {k: v.to(torch.int32) for k, v in corpus.state_dict().items()}
    path = save_safetensors(weights, tmp_path / "ints.safetensors")
    with pytest.raises(CheckpointError, match=r"key '[\w.]+' holds int32 values, expected float32"):
        load_model(path)


def test_resume_auto_falls_back_to_the_newest_valid_checkpoint(tmp_path):
    weights = corpus.state_dict()
    for iteration in (100, 200):
        state = TrainingState(iteration, 1.0, weights, None, {"optimizer": {}})
        save_checkpoint(tmp_path, state, {}, keep=5)
    newest = tmp_path / "checkpoints" / "iter_00000200"
    (newest / "state.pt").write_bytes(b"damaged")
    skipped: list[str] = []
    assert newest_valid_checkpoint(tmp_path, skipped.append) == newest.with_name("iter_00000100")
    assert len(skipped) == 1 and "iter_00000200" in skipped[0] and "\n" not in skipped[0]


def test_damaged_onnx_cache_is_exported_again(tmp_path, monkeypatch, shared):
    from lightsr.api import Upscaler

    monkeypatch.setenv("LIGHTSR_CACHE", str(tmp_path))
    weights = shared("weights/official/FMEN/test_weights.pt")
    Upscaler(weights=weights, backend="onnxruntime")
    (cached,) = (tmp_path / "onnx").glob("*.onnx")
    size = cached.stat().st_size
    cached.write_bytes(cached.read_bytes()[: size // 3])  # a copy cut short
    upscaler = Upscaler(weights=weights, backend="onnxruntime")
    assert cached.stat().st_size == size
    assert upscaler(corpus.photo(20, 24)).shape == (80, 96, 3)
