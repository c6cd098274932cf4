"""How a model was built, and the one codec that writes and reads it as file metadata.

Every file lightsr writes for a network (``lightsr convert``, ``lightsr reparam``, training
checkpoints and weights, ONNX exports) carries the same string metadata, so that
:func:`lightsr.load_model` rebuilds exactly that network without guessing:

========== ================================================================================
key        value
========== ================================================================================
family     network family: ``ditn``, ``emt``, ``esc`` or ``fmen``
variant    registry name of the variant (``fmen_s``, ``ditn_real``, ...)
scale      upscale factor (``"4"``)
form       ``train``: the training form of a network that folds into a deploy form (FMEN's
           RRRBs and BatchNorms); ``deploy``: that folded form; ``single``: a network with
           one form, used for both
config     JSON object: the architecture arguments that differ from the variant's defaults
           (``{"n_feats": 48}``); ``{}`` for the variant as registered
========== ================================================================================

plus optional ``source`` (file the weights came from) and ``lightsr_version``. ONNX exports
add their own keys (precision, opset, sizes) beside these. Files written by earlier
versions are read too: ``network`` (the family), ``overrides`` (the config) and the form
``standard`` (now ``single``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightsr.errors import CheckpointError

FORMS = ("train", "deploy", "single")
KEYS = ("family", "variant", "scale", "form", "config")
# Earlier spellings, read but never written.
_LEGACY_KEYS = {"network": "family", "overrides": "config"}
_LEGACY_FORMS = {"standard": "single"}


@dataclass(frozen=True)
class Provenance:
    """Identity of a built network: what :func:`lightsr.load_model` needs to rebuild it.

    Attributes:
        family: network family (``"fmen"``).
        variant: registry name of the variant (``"fmen_s"``).
        scale: upscale factor.
        form: one of :data:`FORMS`; ``""`` when read from an older file that did not
            record it (the loader then reads the form from the tensors).
        config: architecture arguments that differ from the variant's defaults.
    """

    family: str
    variant: str
    scale: int
    form: str
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.form not in (*FORMS, ""):
            raise ValueError(f"form must be one of {', '.join(FORMS)}, got {self.form!r}")

    def to_metadata(self, **extra: object) -> dict[str, str]:
        """The string metadata of a file holding this network, plus ``extra`` keys."""
        if not self.form:
            raise ValueError("the form must be known to be written")
        metadata = {
            "family": self.family,
            "variant": self.variant,
            "scale": str(self.scale),
            "form": self.form,
            "config": json.dumps(dict(self.config), sort_keys=True),
        }
        return {**metadata, **{key: str(value) for key, value in extra.items()}}


def read_provenance(metadata: Mapping[str, str]) -> Provenance | None:
    """The :class:`Provenance` stored in file ``metadata``; None when it names no variant.

    A missing ``form`` is returned as ``""`` (older files wrote it for the deploy form only).

    Raises:
        CheckpointError: the metadata names a variant but its values cannot be read.
    """
    values = {_LEGACY_KEYS.get(key, key): value for key, value in metadata.items()}
    if "variant" not in values or "scale" not in values:
        return None
    try:
        scale = int(values["scale"])
        config = json.loads(values.get("config") or "{}")
    except ValueError:
        raise CheckpointError(f"unreadable lightsr metadata: {dict(metadata)}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"metadata 'config' is not a JSON object: {values['config']!r}")
    form = _LEGACY_FORMS.get(values.get("form", ""), values.get("form", ""))
    if form and form not in FORMS:
        raise CheckpointError(f"unknown form {form!r} in metadata (known: {', '.join(FORMS)})")
    return Provenance(
        family=values.get("family", ""),
        variant=values["variant"],
        scale=scale,
        form=form,
        config={key: _tuples(value) for key, value in config.items()},
    )


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples that builders take (``up_blocks``, ``windows``)."""
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value
