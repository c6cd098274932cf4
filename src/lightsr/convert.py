"""Convert any supported checkpoint into lightsr's canonical safetensors form."""

from __future__ import annotations

import os
from pathlib import Path

from lightsr.hub import origin_metadata
from lightsr.models import SRModel, load_model, save_model


def convert_checkpoint(
    source: str | os.PathLike, destination: str | os.PathLike, half: bool = False
) -> SRModel:
    """Load ``source`` (any checkpoint or published name) and save it as safetensors.

    The output holds the module's own state dict (lightsr key names, which are the official
    ones) and the model's provenance (family, variant, scale, form and config; see
    :mod:`lightsr.provenance`), so :func:`load_model` rebuilds it without guessing, and its
    origin (:func:`lightsr.hub.origin_metadata`: hash, and for published weights name, URL
    and licence).

    Args:
        source: checkpoint path or published weights name.
        destination: output path ending in ``.safetensors``.
        half: store floating tensors as float16.

    Returns:
        The loaded model.
    """
    model = load_model(source)
    origin = origin_metadata(source)
    save_model(model, destination, half=half, source=Path(str(source)).name, **origin)
    return model
