"""Model registry: network name → builder, scales, value range and checkpoint detection.

Each network module under :mod:`lightsr.archs` registers its variants with
:func:`register_arch` and, optionally, a checkpoint detector with :func:`register_detector`.
Everything else (``build_model``, ``load_model``, the CLI) goes through this registry, so a
new network is one module and nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightsr.errors import UsageError
from lightsr.options import check_scale

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class ArchSpec:
    """Everything lightsr needs to know about one network variant.

    Attributes:
        name: registry name, lowercase (``"fmen_s"``).
        family: network family (``"fmen"``); several variants share one family.
        builder: ``builder(scale=s, **overrides) -> nn.Module``.
        scales: upscale factors the variant is defined for.
        input_range: pixel range the module itself expects and returns (1.0 or 255.0).
            :meth:`lightsr.models.SRModel.upscale` hides it from users.
        pad_multiple: reflect-pad the LR image to a multiple of this before the forward
            and crop after, as the official *test pipeline* does (ESC: 32). 1 means none.
        min_size: smallest input side the network accepts (reflect padding limits).
        description: one line for ``lightsr models``.
        paper_derived: True when no official code exists and the module follows the paper.
    """

    name: str
    family: str
    builder: Callable[..., nn.Module]
    scales: tuple[int, ...] = (2, 3, 4)
    input_range: float = 1.0
    pad_multiple: int = 1
    min_size: int = 1
    description: str = ""
    paper_derived: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Detection:
    """What a detector found in a state dict.

    Attributes:
        name: registry name of the variant.
        scale: upscale factor.
        overrides: builder keyword arguments implied by the checkpoint (e.g. ``deploy``).
        state_dict: the state dict rewritten to lightsr's key names, ready for
            ``load_state_dict(strict=True)``.
    """

    name: str
    scale: int
    state_dict: StateDict
    overrides: Mapping[str, Any] = field(default_factory=dict)


Detector = Callable[[StateDict], Detection | None]

_ARCHS: dict[str, ArchSpec] = {}
_DETECTORS: dict[str, Detector] = {}


def register_arch(spec: ArchSpec) -> ArchSpec:
    """Add a variant to the registry (called at import time by network modules)."""
    if spec.name in _ARCHS:
        raise ValueError(f"architecture {spec.name!r} registered twice")
    _ARCHS[spec.name] = spec
    return spec


def register_detector(family: str, detector: Detector) -> Detector:
    """Register the checkpoint detector of a network family."""
    _DETECTORS[family] = detector
    return detector


def get_arch(name: str) -> ArchSpec:
    """Return the spec of ``name``; raise :class:`UsageError` listing valid names if unknown."""
    _ensure_loaded()
    try:
        return _ARCHS[name.lower()]
    except KeyError:
        valid = ", ".join(sorted(_ARCHS))
        raise UsageError(f"unknown model {name!r}; choose one of: {valid}") from None


def list_models() -> list[str]:
    """Names of every registered variant, sorted."""
    _ensure_loaded()
    return sorted(_ARCHS)


def arch_specs() -> list[ArchSpec]:
    """Every registered spec, sorted by name."""
    _ensure_loaded()
    return [_ARCHS[name] for name in sorted(_ARCHS)]


def detectors() -> dict[str, Detector]:
    """Registered detectors by family."""
    _ensure_loaded()
    return dict(_DETECTORS)


def build_model(name: str, scale: int = 4, **overrides: Any) -> nn.Module:
    """Build variant ``name`` at ``scale`` with freshly initialised weights.

    Args:
        name: registry name (see :func:`list_models`).
        scale: upscale factor; must be one the variant defines.
        **overrides: constructor arguments that replace the variant's defaults.
    """
    spec = get_arch(name)
    check_scale(spec.name, spec.scales, scale)
    kwargs = {**spec.defaults, **overrides}
    return spec.builder(scale=scale, **kwargs)


def _ensure_loaded() -> None:
    # Importing the package imports every network module, which registers itself.
    import lightsr.archs  # noqa: F401
