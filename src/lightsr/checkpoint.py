"""Reading and writing checkpoint files (.pth/.pt/.safetensors), independent of networks."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lightsr.errors import CheckpointError
from lightsr.paths import replaced_atomically

# Keys under which training frameworks wrap the weights, most preferred first
# (BasicSR test configs load the EMA weights when both are present).
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net", "network")


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load the tensors of a checkpoint file and its metadata (empty unless safetensors).

    Unwraps ``params_ema``/``params``/``state_dict``/``model`` containers and strips the
    ``module.`` prefix that DataParallel/DDP adds. Pickles are loaded with
    ``weights_only=True`` so a checkpoint cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        try:
            tensors = load_file(str(path))
            with open(path, "rb") as f:
                header_len = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(header_len))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
        return normalize_state_dict(tensors), dict(header.get("__metadata__", {}) or {})
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe pickles
        raise CheckpointError(f"{path}: {load_failure(exc)}") from None
    return normalize_state_dict(obj), {}


def load_failure(exc: Exception) -> str:
    """One line for a failed ``torch.load(weights_only=True)``, without torch's advice to
    turn ``weights_only`` off (which would let the file run code)."""
    text = str(exc).strip()
    if text.startswith("Weights only load failed"):
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found:
            return (
                f"refused: the pickle would call {found[1]}, and a checkpoint may hold "
                "only tensors (it could run code)"
            )
        paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
        detail = paragraphs[1].splitlines()[0] if len(paragraphs) > 2 else "unsupported content"
        return f"refused: the pickle holds more than tensors ({detail})"
    first = text.splitlines()[0] if text else type(exc).__name__
    return f"not a readable PyTorch checkpoint: truncated or damaged ({first})"


def check_tensors(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str
) -> None:
    """Check that every tensor of ``state_dict`` can stand in for its ``expected`` one.

    Weights of another dtype kind (integers, booleans, complex numbers where floats are
    expected) or with NaN/infinite values load without complaint in torch and give black or
    wrong images, so they are refused here.

    Raises:
        CheckpointError: naming the first bad key and its dtype or shape.
    """
    for key, value in state_dict.items():
        want = expected.get(key)
        if want is None:
            continue
        if value.is_floating_point() != want.is_floating_point() or value.is_complex():
            raise CheckpointError(
                f"{source}: key {key!r} holds {str(value.dtype).removeprefix('torch.')} "
                f"values, expected {str(want.dtype).removeprefix('torch.')}"
            )
        if value.shape != want.shape:
            raise CheckpointError(
                f"{source}: key {key!r} has shape {tuple(value.shape)}, "
                f"expected {tuple(want.shape)}"
            )
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{source}: key {key!r} holds NaN or infinite values")


def normalize_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Unwrap a checkpoint container into a flat ``{key: tensor}`` dict."""
    while isinstance(obj, Mapping):
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError("checkpoint holds no state dict")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError("checkpoint holds no tensors")
    return {_strip_module(k): v for k, v in tensors.items()}


def _strip_module(key: str) -> str:
    return key[len("module.") :] if key.startswith("module.") else key


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: Mapping[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write ``state_dict`` atomically as safetensors with string metadata.

    Args:
        half: store floating tensors as float16 (halves the size; fine for inference).
    """
    path = Path(path)
    tensors = {}
    for key, value in state_dict.items():
        value = value.detach().cpu().contiguous()
        if half and value.is_floating_point():
            value = value.half()
        tensors[key] = value
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as temporary:
        save_file(tensors, temporary, metadata=meta)
    return path
