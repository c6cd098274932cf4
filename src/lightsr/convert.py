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
from lightsr.models import SRModel, load_model


def convert_checkpoint(
    source: str | os.PathLike, destination: str | os.PathLike, half: bool = False
) -> SRModel:
    """Load ``source`` (any checkpoint or published name) and save it as safetensors.

    The output holds the module's own state dict (lightsr key names, which are the official
    ones) and metadata ``network``, ``variant`` and ``scale``, plus ``form``/``overrides``
    when the architecture differs from the variant's defaults, so :func:`load_model` rebuilds
    it without guessing. The origin is recorded too (see :func:`origin_metadata`).

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


def origin_metadata(source: str | os.PathLike) -> dict[str, str]:
    """Where a checkpoint comes from: ``source_sha256`` of the file and, when that is a
    published checkpoint (see ``lightsr models``), its ``source_name``, ``source_url`` and
    ``licence``, so that converted weights keep their provenance and terms."""
    from lightsr.hub import cached_path, file_sha256, official_weights

    path = Path(source)
    if not path.is_file():  # a published name, which load_model has fetched
        path = cached_path(str(source))
    digest = file_sha256(path)
    metadata = {"source_sha256": digest}
    entry = next((w for w in official_weights() if w.sha256 == digest), None)
    if entry is not None:
        metadata.update(source_name=entry.name, source_url=entry.url, licence=entry.licence)
    return metadata


def _architecture_overrides(model: SRModel, state_dict: dict) -> dict[str, Any]:
    """Builder arguments that the family's detector reads from the canonical state dict."""
    detector = detectors().get(model.name)
    detection = detector(state_dict) if detector else None
    return dict(detection.overrides) if detection else {}
