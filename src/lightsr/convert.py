"""Convert any supported checkpoint into lightsr's canonical safetensors form."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lightsr import __version__
from lightsr.archs.registry import detectors
from lightsr.checkpoint import save_safetensors
from lightsr.errors import UsageError
from lightsr.hub import origin_metadata
from lightsr.models import SRModel, load_model


def convert_checkpoint(
    source: str | os.PathLike, destination: str | os.PathLike, half: bool = False
) -> SRModel:
    """Load ``source`` (any checkpoint or published name) and save it as safetensors.

    The output holds the module's own state dict (lightsr key names, which are the official
    ones) and metadata ``network``, ``variant`` and ``scale``, plus ``form``/``overrides``
    when the architecture differs from the variant's defaults, so :func:`load_model` rebuilds
    it without guessing. The origin is recorded too (see :func:`lightsr.hub.origin_metadata`).

    Args:
        source: checkpoint path or published weights name.
        destination: output path ending in ``.safetensors``.
        half: store floating tensors as float16.

    Returns:
        The loaded model.
    """
    destination = Path(destination)
    if destination.suffix != ".safetensors":
        raise UsageError(f"{destination}: output must end in .safetensors")
    model = load_model(source)
    state_dict = model.module.state_dict()
    metadata: dict[str, Any] = {
        "network": model.name,
        "variant": model.variant,
        "scale": model.scale,
        "source": Path(str(source)).name,
        "lightsr_version": __version__,
        **origin_metadata(source),
    }
    overrides = _architecture_overrides(model, state_dict)
    if overrides.pop("deploy", False):
        metadata["form"] = "deploy"
    if overrides:
        metadata["overrides"] = json.dumps(overrides, sort_keys=True)
    save_safetensors(state_dict, destination, metadata, half=half)
    return model


def _architecture_overrides(model: SRModel, state_dict: dict) -> dict[str, Any]:
    """Builder arguments that the family's detector reads from the canonical state dict."""
    detector = detectors().get(model.name)
    detection = detector(state_dict) if detector else None
    return dict(detection.overrides) if detection else {}
