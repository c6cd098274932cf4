"""lightsr: efficient single-image super-resolution with DITN, ESC, FMEN and EMT."""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public API, imported lazily so that ``import lightsr`` (and the CLI's start-up) stays fast.
_EXPORTS = {
    "build_model": "lightsr.archs.registry",
    "list_models": "lightsr.archs.registry",
    "load_model": "lightsr.models",
    "SRModel": "lightsr.models",
    "imresize": "lightsr.imresize",
    "upscale": "lightsr.api",
    "upscale_video": "lightsr.video.pipeline",
    "retain_freed_memory": "lightsr.runtime",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lightsr' has no attribute {name!r}")
