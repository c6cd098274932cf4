"""Memory probes remembered across processes.

The CPU tiler models a network's working memory from a forward pass on the ``meta`` device
(:func:`lightsr.inference.estimate_bytes_per_pixel`). The first operation on a meta tensor
imports ``torch._dynamo`` (about 2 s on a 2-core machine), which a one-shot
``lightsr upscale`` would pay every time. The result depends only on the network's
structure, the value type and the versions of torch and lightsr, so it is stored in the
user cache (``probes.json`` in :func:`lightsr.paths.cache_dir`) and read back by later
processes. A missing, unreadable or unwritable file only means the probe runs again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lightsr import __version__
from lightsr.paths import cache_dir, replaced_atomically

# Bump when what a probe measures changes (its factors, its probe size).
PROBE_FORMAT = 1
FILE_NAME = "probes.json"


def probe_key(model: Any, kind: str, dtype: torch.dtype) -> str:
    """What a probe's result depends on, hashed: the runner (an :class:`SRModel` or an
    ONNX Runtime model), the network's structure and sizes, the value type, the probe kind
    and the versions."""
    config = getattr(model, "full_config", {})
    parts = {
        "kind": kind,
        "runner": type(model).__name__,
        "variant": model.variant,
        "scale": model.scale,
        "form": getattr(model, "form", ""),
        "config": {key: repr(value) for key, value in sorted(config.items())},
        "dtype": str(dtype),
        "torch": torch.__version__,
        "lightsr": __version__,
        "format": PROBE_FORMAT,
    }
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _path() -> Path:
    return cache_dir() / FILE_NAME


def _read() -> dict[str, float]:
    try:
        found = json.loads(_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: float(v) for k, v in found.items() if isinstance(v, (int, float))}


def _write(values: dict[str, float]) -> None:
    path = _path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(path) as temporary:
            temporary.write_text(json.dumps(values, indent=0, sort_keys=True), encoding="utf-8")
    except OSError:
        pass  # a read-only cache: the probe just runs again next time


def remembered(model: Any, kind: str, dtype: torch.dtype, probe: Callable[[], float]) -> float:
    """The stored result of ``probe`` for this network, kind and dtype, or ``probe()``,
    stored for the next process."""
    key = probe_key(model, kind, dtype)
    values = _read()
    if key in values:
        return values[key]
    result = float(probe())
    values = _read()  # another process may have added entries meanwhile
    values[key] = result
    _write(values)
    return result
