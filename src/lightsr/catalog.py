"""What lightsr offers: every registered variant with its sizes, and the published weights.

This is the data behind ``lightsr models``; it works with whatever variants are registered.
"""

from __future__ import annotations

from typing import Any

from lightsr.archs.registry import ArchSpec, arch_specs, build_on_meta
from lightsr.hub import OfficialWeights, official_weights, weights_dir


def trainable_parameters(name: str, scale: int, **overrides: Any) -> int:
    """Trainable parameter count of ``build_model(name, scale, **overrides)`` (counted on
    the meta device: no memory, no initialisation)."""
    module = build_on_meta(name, scale, **overrides)
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def describe_weights(entry: OfficialWeights) -> dict[str, Any]:
    """JSON-ready description of one published checkpoint."""
    local = weights_dir() / entry.path
    return {
        "name": entry.name,
        "family": entry.family,
        "variant": entry.variant,
        "scale": entry.scale,
        "available": entry.available,
        "cached": entry.available and local.is_file() and local.stat().st_size == entry.size,
        "size": entry.size,
        "sha256": entry.sha256,
        "licence": entry.licence,
        "url": entry.url,
        "path": entry.path,
        "note": entry.note,
    }


def describe_variant(spec: ArchSpec) -> dict[str, Any]:
    """JSON-ready description of one registered variant.

    ``params`` counts trainable parameters per scale in the form used for inference (the
    deploy form when the variant has one); ``params_train`` is the training form's count
    and appears only for variants with a deploy form. ``arbitrary_scale`` marks networks
    that upscale by any factor (``scales`` are then those they are evaluated at; their
    parameters do not depend on the scale).
    """
    inference = spec.form_arguments("deploy")
    info: dict[str, Any] = {
        "name": spec.name,
        "family": spec.family,
        "scales": list(spec.scales),
        "arbitrary_scale": spec.arbitrary_scale,
        "params": {str(s): trainable_parameters(spec.name, s, **inference) for s in spec.scales},
        "input_range": spec.input_range,
        "min_size": spec.min_size,
        "paper_derived": spec.paper_derived,
        "description": spec.description,
        "official_weights": [w.name for w in official_weights() if w.variant == spec.name],
    }
    if spec.has_deploy_form:
        info["params_train"] = {str(s): trainable_parameters(spec.name, s) for s in spec.scales}
    return info


def catalog() -> dict[str, list[dict[str, Any]]]:
    """Every registered variant and every known published checkpoint."""
    return {
        "variants": [describe_variant(spec) for spec in arch_specs()],
        "official_weights": [describe_weights(entry) for entry in official_weights()],
    }
