"""Model registry: network name → builder, scales, value range and checkpoint detection.

Each network module under :mod:`lightsr.archs` registers its variants with
:func:`register_arch` and a checkpoint reader with :func:`register_reader`.
Everything else (``build_model``, ``load_model``, the CLI) goes through this registry, so a
new network is one module and nothing more.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
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
        builder: ``builder(scale=s, **config) -> nn.Module``.
        scales: upscale factors the variant is defined for.
        input_range: pixel range the module itself expects and returns (1.0 or 255.0).
            :meth:`lightsr.models.SRModel.upscale` hides it from users.
        pad_multiple: reflect-pad the LR image to a multiple of this before the forward
            and crop after, as the official *test pipeline* does (ESC: 32). 1 means none.
        min_size: smallest input side the network accepts (reflect padding limits).
        description: one line for ``lightsr models``.
        paper_derived: True when no official code exists and the module follows the paper.
        defaults: the variant's architecture arguments (builder keywords). Checkpoint
            detection reads these sizes from tensor shapes and keeps those that differ
            as overrides; ``build_model`` fills in the rest from here.
        deploy_arg: for a network that trains in one form and folds into a faster deploy
            form (FMEN), the builder flag that builds the deploy form, which the module
            also exposes as an attribute of that name; None for a network with one form.
        arbitrary_scale: the network upscales by any factor (an LTE head); ``scales`` are
            then the integer factors it is evaluated at, not the only ones it runs.
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
    deploy_arg: str | None = None
    arbitrary_scale: bool = False

    @property
    def has_deploy_form(self) -> bool:
        """Whether the network has a separate deploy form (see ``deploy_arg``)."""
        return self.deploy_arg is not None

    def form_of(self, module: nn.Module) -> str:
        """The form of ``module``, a network of this spec: ``train``, ``deploy`` or ``single``."""
        if self.deploy_arg is None:
            return "single"
        return "deploy" if getattr(module, self.deploy_arg, False) else "train"

    def form_arguments(self, form: str) -> dict[str, Any]:
        """The builder arguments that select ``form``."""
        return {self.deploy_arg: True} if form == "deploy" and self.deploy_arg else {}


@dataclass(frozen=True)
class Reading:
    """What a family's reader saw in a state dict: every size it could read from shapes.

    Attributes:
        family: network family.
        scale: upscale factor.
        config: architecture arguments read from tensor shapes and key counts.
        state_dict: the state dict with lightsr's key names, ready to load strictly.
        form: ``train``, ``deploy`` or ``single`` (see :mod:`lightsr.provenance`).
        variants: the variants it can be (default: every variant of the family).
    """

    family: str
    scale: int
    config: Mapping[str, Any]
    state_dict: StateDict
    form: str = "single"
    variants: tuple[str, ...] = ()


@dataclass(frozen=True)
class Detection:
    """A checkpoint matched to a variant.

    Attributes:
        name: registry name of the variant.
        scale: upscale factor.
        state_dict: the state dict rewritten to lightsr's key names, ready for
            ``load_state_dict(strict=True)``.
        overrides: architecture arguments that differ from the variant's defaults.
        form: ``train``, ``deploy`` or ``single``.
    """

    name: str
    scale: int
    state_dict: StateDict
    overrides: Mapping[str, Any] = field(default_factory=dict)
    form: str = "single"


Reader = Callable[[StateDict], Reading | None]

_ARCHS: dict[str, ArchSpec] = {}
_READERS: dict[str, Reader] = {}


def register_arch(spec: ArchSpec) -> ArchSpec:
    """Add a variant to the registry (called at import time by network modules)."""
    if spec.name in _ARCHS:
        raise ValueError(f"architecture {spec.name!r} registered twice")
    _ARCHS[spec.name] = spec
    return spec


def register_reader(family: str, reader: Reader) -> Reader:
    """Register the checkpoint reader of a network family (see :func:`detect`)."""
    _READERS[family] = reader
    return reader


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


def build_model(name: str, scale: float = 4, **overrides: Any) -> nn.Module:
    """Build variant ``name`` at ``scale`` with freshly initialised weights.

    Args:
        name: registry name (see :func:`list_models`).
        scale: upscale factor; must be one the variant defines (any number ≥ 1 for an
            arbitrary-scale variant: the factor its ``forward`` upscales by).
        **overrides: constructor arguments that replace the variant's defaults.
    """
    spec = get_arch(name)
    if not spec.arbitrary_scale:
        check_scale(spec.name, spec.scales, scale)
    elif scale < 1:
        raise UsageError(f"{spec.name} upscales by factors of 1 or more, not x{scale:g}")
    kwargs = {**spec.defaults, **overrides}
    return spec.builder(scale=scale, **kwargs)


def build_on_meta(name: str, scale: int = 4, **overrides: Any) -> nn.Module:
    """:func:`build_model` on the meta device: shapes only, no memory, no initialisation."""
    with torch.device("meta"):
        return build_model(name, scale, **overrides)


# ----------------------------------------------------------------------- detection


def detect(state_dict: StateDict) -> Detection | None:
    """Match a state dict to a variant by tensor shapes and key counts alone.

    Each family's reader reads every size it can see (widths, depths, scale); the result
    is the family's variant whose defaults differ in the fewest arguments, and those
    differences become the overrides, so any configuration of a family loads.
    """
    _ensure_loaded()
    for reader in _READERS.values():
        try:
            reading = reader(state_dict)
        except (IndexError, KeyError, TypeError, ValueError):  # a tensor of the wrong rank
            continue
        if reading is not None:
            return _closest_variant(reading)
    return None


def _closest_variant(reading: Reading) -> Detection:
    names = reading.variants or [s.name for s in _ARCHS.values() if s.family == reading.family]
    best: Detection | None = None
    for name in names:
        defaults = _ARCHS[name].defaults
        overrides = {
            key: value for key, value in reading.config.items() if defaults.get(key) != value
        }
        if best is None or len(overrides) < len(best.overrides):
            best = Detection(name, reading.scale, reading.state_dict, overrides, reading.form)
    if best is None:
        raise ValueError(f"no variant registered for family {reading.family!r}")
    return best


def count_indexed(keys: Iterable[str], template: str) -> int:
    """Number of consecutive indices ``i`` from 0 with a key starting with
    ``template.format(i)`` (``count_indexed(keys, "blocks.{}.")``: the number of blocks)."""
    keys = list(keys)
    count = 0
    while any(key.startswith(template.format(count)) for key in keys):
        count += 1
    return count


def scale_from_shuffle(out_channels: int, colours: int = 3) -> int | None:
    """The upscale factor of a pixel-shuffle conv with ``out_channels`` outputs
    (``colours`` × scale²), or None when it is not of that form."""
    scale = math.isqrt(out_channels // colours)
    return scale if scale >= 1 and colours * scale * scale == out_channels else None


def _ensure_loaded() -> None:
    # Importing the package imports every network module, which registers itself.
    import lightsr.archs  # noqa: F401
