"""Locations lightsr reads from and writes to."""

from __future__ import annotations

import os
from pathlib import Path


def shared_dir() -> Path:
    """The project's shared data folder: ``$LIGHTSR_SHARED`` or ``../shared`` beside the repo."""
    env = os.environ.get("LIGHTSR_SHARED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared"


def cache_dir() -> Path:
    """Where downloaded weights and exported models go: ``$LIGHTSR_CACHE`` or the user cache."""
    env = os.environ.get("LIGHTSR_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lightsr"


def package_weights_dir() -> Path:
    """The built-in default weights shipped inside the package."""
    return Path(__file__).resolve().parent / "weights"
