"""lightsr: efficient single-image super-resolution with DITN, ESC, FMEN and EMT."""

from __future__ import annotations

import importlib
import sys
import types
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


class _Package(types.ModuleType):
    """The ``lightsr`` module, whose public names never turn into submodules.

    Importing a submodule binds it as an attribute of its package. ``lightsr.imresize`` is
    both a function of the public API and the module defining it, so without this guard
    ``lightsr.imresize`` would be the function before ``import lightsr.imresize`` and the
    module after it.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return  # the import system binding a submodule: keep the public name
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
