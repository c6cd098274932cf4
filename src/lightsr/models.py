"""Loaded models: :class:`SRModel` and :func:`load_model` with checkpoint auto-detection."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightsr import __version__
from lightsr.archs.blocks import pad_to_multiple
from lightsr.archs.registry import (
    ArchSpec,
    Detection,
    arch_specs,
    build_model,
    build_on_meta,
    detect,
    get_arch,
)
from lightsr.checkpoint import check_tensors, read_state_dict, save_safetensors
from lightsr.errors import CheckpointError, UsageError
from lightsr.identity import NamedBySpec
from lightsr.provenance import Provenance, read_provenance

StateDictLike = Mapping[str, torch.Tensor]


@dataclass
class SRModel(NamedBySpec):
    """A network with its identity, its provenance and its pixel-range conventions.

    ``module`` takes input exactly as the official network does (same value range, same
    mean handling), so it is a drop-in replacement. :meth:`upscale` takes and returns float
    RGB in [0, 1] and hides those conventions.

    Attributes:
        module: the network.
        spec: its variant's registry entry (:attr:`family`, :attr:`variant` come from it).
        scale: upscale factor.
        source: where the weights came from (a path or name; ``""`` for none).
        config: architecture arguments that differ from the variant's defaults
            (``{"n_feats": 48}``), so that the same network can be rebuilt and saved.
        form: ``"train"``, ``"deploy"`` or ``"single"`` (see :mod:`lightsr.provenance`);
            read from ``module`` when not given.
    """

    module: nn.Module
    spec: ArchSpec
    scale: int
    source: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    form: str = ""

    def __post_init__(self) -> None:
        if not self.form:
            self.form = self.spec.form_of(self.module)

    @property
    def full_config(self) -> dict[str, Any]:
        """Every architecture argument: the variant's defaults updated with :attr:`config`."""
        return {**self.spec.defaults, **self.config}

    @property
    def provenance(self) -> Provenance:
        """Family, variant, scale, form and config, as files record them."""
        return Provenance(self.family, self.variant, self.scale, self.form, dict(self.config))

    def with_module(self, module: nn.Module) -> SRModel:
        """The same model around another ``module`` (a copy or another form of it)."""
        return dataclasses.replace(self, module=module, form="")

    @property
    def input_range(self) -> float:
        return self.spec.input_range

    def to(self, *args: Any, **kwargs: Any) -> SRModel:
        self.module.to(*args, **kwargs)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    @torch.inference_mode()
    def upscale(self, image: torch.Tensor) -> torch.Tensor:
        """Super-resolve ``image``: float RGB in [0, 1], shape (3,H,W) or (N,3,H,W).

        Returns the unclamped network output in [0, 1] units, shape (…,3,sH,sW). The official
        test-pipeline padding (``spec.pad_multiple``) is applied and cropped away.
        """
        batched = image.dim() == 4
        x = image if batched else image.unsqueeze(0)
        y = self.forward(x.to(device=self.device, dtype=self.dtype))
        return y if batched else y.squeeze(0)

    @property
    def arbitrary_scale(self) -> bool:
        """Whether the network upscales by any factor (see :meth:`upscale_to`)."""
        return self.spec.arbitrary_scale

    @torch.inference_mode()
    def upscale_to(
        self,
        image: torch.Tensor,
        size: tuple[int, int],
        scale: tuple[float, float] | None = None,
    ) -> torch.Tensor:
        """Arbitrary-scale networks only: super-resolve ``image`` ((N,)3,h,w in [0, 1]) to
        ``size`` = (H, W) in one piece; ``scale`` is the nominal factor per axis (default
        H/h, W/w). Tiled inference is :func:`lightsr.anyscale.upscale_array_to`."""
        if not self.arbitrary_scale:
            raise UsageError(f"{self.variant} upscales by x{self.scale} only")
        batched = image.dim() == 4
        x = image if batched else image.unsqueeze(0)
        y = self.module.upscale_to(x.to(device=self.device, dtype=self.dtype), size, scale)
        return y if batched else y.squeeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`upscale` on an (N,3,H,W) tensor already on the module's device and dtype.

        No autograd mode, device move or Python branch on sizes: this is the function that
        ``torch.export`` traces for ONNX, so exported graphs hold the same range conversion
        and padding as eager inference.
        """
        h, w = x.shape[-2:]
        if self.spec.pad_multiple > 1:
            x = pad_to_multiple(x, self.spec.pad_multiple, mode="reflect")
        y = self.module(x * self.spec.input_range) / self.spec.input_range
        return y[..., : h * self.scale, : w * self.scale]


def model_from_state_dict(
    state_dict: StateDictLike, metadata: Mapping[str, str] | None = None, source: str = ""
) -> SRModel:
    """Identify the network in ``state_dict``, build it and load the weights strictly.

    The provenance in ``metadata`` (see :mod:`lightsr.provenance`) names the variant and its
    config when present; otherwise tensor shapes and key counts do (:func:`detect`). When
    the recorded config does not fit the tensors (files that older versions of ``lightsr
    convert`` wrote without it), the shapes decide.
    """
    state_dict = dict(state_dict)
    detection = detect(state_dict)
    provenance = read_provenance(metadata or {})
    if provenance is None:
        if detection is None:
            raise CheckpointError(_mismatch_message(state_dict, source))
        return _built(detection, source)
    try:
        return _built(_from_provenance(provenance, detection, state_dict), source)
    except CheckpointError:
        if detection is None or detection.name != provenance.variant:
            raise
        return _built(detection, source)


def _built(detection: Detection, source: str) -> SRModel:
    """The model that ``detection`` describes, with its weights loaded strictly."""
    spec = get_arch(detection.name)
    form = detection.form if spec.has_deploy_form else "single"
    overrides = {**detection.overrides, **spec.form_arguments(form)}
    try:
        module = build_model(spec.name, detection.scale, **overrides)
    except (RuntimeError, TypeError, ValueError) as exc:  # sizes read from hostile shapes
        raise CheckpointError(
            f"{source or 'checkpoint'} looks like {spec.name} x{detection.scale} but its "
            f"tensor shapes do not make one ({str(exc).strip().splitlines()[0][:120]})"
        ) from None
    _load_strict(module, detection.state_dict, f"{source or 'checkpoint'} ({spec.name})")
    module.eval()
    return SRModel(module, spec, detection.scale, source, dict(detection.overrides), form)


def _from_provenance(
    provenance: Provenance, detected: Detection | None, state_dict: dict
) -> Detection:
    """The detection that the file's metadata states; tensors fill in an unrecorded form."""
    try:
        get_arch(provenance.variant)
    except UsageError:
        raise CheckpointError(f"metadata names unknown variant {provenance.variant!r}") from None
    form = provenance.form or (detected.form if detected else "train")
    keys = detected.state_dict if detected else state_dict
    return Detection(provenance.variant, provenance.scale, keys, provenance.config, form)


def save_model(
    model: SRModel,
    destination: str | os.PathLike,
    half: bool = False,
    source: str = "",
    **extra: str,
) -> Path:
    """Write ``model``'s weights as ``.safetensors`` with its provenance metadata.

    :func:`load_model` rebuilds exactly this network (variant, config, form) from the file.

    Args:
        half: store floating tensors as float16.
        source: name of the file the weights came from, recorded as ``source``.
        extra: more metadata keys (e.g. :func:`lightsr.hub.origin_metadata`).
    """
    destination = Path(destination)
    if destination.suffix != ".safetensors":
        raise UsageError(f"{destination}: output must end in .safetensors")
    metadata = model.provenance.to_metadata(source=source, lightsr_version=__version__, **extra)
    return save_safetensors(model.module.state_dict(), destination, metadata, half=half)


def load_model(checkpoint: str | os.PathLike | StateDictLike) -> SRModel:
    """Load a model from a checkpoint path, an official-weights name or a state dict.

    Accepts ``.pth``/``.pt``/``.safetensors`` files, plain or wrapped state dicts
    (``params``, ``params_ema``, ``state_dict``, ``model``) and names of published
    checkpoints (``"emt_x2_official"``, see ``lightsr models``). The network, variant,
    configuration, form and scale come from the file's lightsr metadata when it has some,
    and otherwise from key names and tensor shapes alone: any configuration of a known
    family loads.

    Raises:
        CheckpointError: the file is unreadable or matches no known network; the message
            names the closest variant and the first mismatching key.
    """
    if isinstance(checkpoint, Mapping):
        from lightsr.checkpoint import normalize_state_dict

        return model_from_state_dict(normalize_state_dict(checkpoint), source="state dict")
    path = Path(checkpoint)
    if not path.exists() and _looks_like_weights_name(str(checkpoint)):
        from lightsr.hub import fetch_weights

        path = fetch_weights(str(checkpoint))
    state_dict, metadata = read_state_dict(path)
    return model_from_state_dict(state_dict, metadata, source=str(path))


def _looks_like_weights_name(text: str) -> bool:
    return os.sep not in text and "." not in text


def _load_strict(module: nn.Module, state_dict: StateDictLike, where: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with a one-line error naming the
    first missing, unexpected, misshapen or unusable tensor."""
    expected = module.state_dict()
    problem = _first_mismatch(expected, state_dict)
    if problem:
        raise CheckpointError(f"{where}: {problem}")
    check_tensors(state_dict, expected, where)  # shapes, dtype kinds, finite values
    module.load_state_dict(state_dict, strict=True)


def _first_mismatch(expected: StateDictLike, state_dict: StateDictLike) -> str | None:
    """The first key of ``expected`` missing from ``state_dict`` or the first one too many."""
    missing = next((key for key in expected if key not in state_dict), None)
    if missing is not None:
        return f"key {missing!r} is missing"
    unexpected = next((key for key in state_dict if key not in expected), None)
    if unexpected is not None:
        return f"key {unexpected!r} is unexpected"
    return None


def _mismatch_message(state_dict: StateDictLike, source: str) -> str:
    """Name the registered variant whose keys overlap most with ``state_dict`` and the
    first key that does not fit it (variants are built on the meta device: no weights)."""
    keys = set(state_dict)
    best: tuple[float, str, str] | None = None
    for spec in arch_specs():
        for form in ("train", "deploy") if spec.has_deploy_form else ("single",):
            expected = build_on_meta(spec.name, spec.scales[-1], **spec.form_arguments(form))
            expected = expected.state_dict()
            overlap = len(keys.intersection(expected)) / max(len(expected), 1)
            if best is None or overlap > best[0]:
                best = (overlap, spec.name, _first_mismatch(expected, state_dict) or "")
    where = source or "checkpoint"
    if best is None or best[0] == 0.0:
        return f"{where}: matches no known network (first key {next(iter(keys), '')!r})"
    return (
        f"{where}: matches no known network; closest is {best[1]} "
        f"({best[0]:.0%} of its keys), {best[2]}"
    )


# Models shipped inside the package, by the name ``--model`` takes: file name pattern and
# what each is for. ``default`` is bicubic-trained FMEN-S (fast, faithful on clean images);
# ``real`` is a real-world GAN model for noisy, blurry or JPEG-damaged photos (MODEL_CARD.md);
# ``anyscale`` is FMEN-S + LTE, one file for every scale from 1 to 8, integer or not. A
# pattern without ``{scale}`` is one scale-independent (arbitrary-scale) file.
BUILTIN_MODELS = {
    "default": "default_x{scale}.safetensors",
    "real": "real_x{scale}.safetensors",
    "anyscale": "anyscale.safetensors",
}
# The built-in model for non-integer scales and explicit output sizes.
ANYSCALE_MODEL = "anyscale"


def builtin_is_arbitrary(name: str) -> bool:
    """Whether built-in model ``name`` is one file for every scale (an arbitrary-scale net)."""
    return "{scale}" not in BUILTIN_MODELS[name]


def builtin_weights_path(name: str, scale: float = 4) -> Path:
    """Path of built-in model ``name`` (a key of :data:`BUILTIN_MODELS`) at ``scale`` (any
    scale for a scale-independent model)."""
    from lightsr.paths import package_weights_dir

    if builtin_is_arbitrary(name):
        return package_weights_dir() / BUILTIN_MODELS[name]
    return package_weights_dir() / BUILTIN_MODELS[name].format(scale=scale)


def builtin_scales(name: str) -> tuple[int, ...]:
    """The integer scales built-in model ``name`` ships weights for (all of 1-8 for an
    arbitrary-scale model, which also takes the scales between)."""
    return tuple(s for s in range(1, 9) if builtin_weights_path(name, s).is_file())


def default_weights_path(scale: int) -> Path:
    """Path of the built-in default weights for ``scale`` (shipped inside the package)."""
    return builtin_weights_path("default", scale)


def load_builtin_model(name: str, scale: float) -> SRModel:
    """Built-in model ``name`` for ``scale``; works offline. An arbitrary-scale model
    (``"anyscale"``) loads for any scale; its :attr:`SRModel.scale` stays that of its file.

    Raises:
        CheckpointError: no weights of that model at ``scale``.
    """
    path = builtin_weights_path(name, scale)
    if builtin_is_arbitrary(name):
        if not path.is_file():
            raise CheckpointError(f"the built-in {name} model is missing ({path})")
        return load_model(path)
    if scale != int(scale):
        raise CheckpointError(
            f"no built-in {name} model for x{scale:g}; for non-integer scales leave --model "
            f"out or use --model {ANYSCALE_MODEL}"
        )
    scale = int(scale)
    if not path.is_file():
        scales = ", ".join(f"x{s}" for s in builtin_scales(name))
        hint = " (use --outscale for other sizes)" if name != "default" else ""
        raise CheckpointError(f"no built-in {name} model for x{scale}; it has {scales}{hint}")
    return load_model(path)


def load_default_model(scale: int) -> SRModel:
    """The built-in default model for ``scale``; works offline."""
    return load_builtin_model("default", scale)


def resolve_model(model: str | None, weights: str | os.PathLike | None, scale: float) -> SRModel:
    """Turn the CLI's ``--model``/``--weights`` pair into a loaded model.

    ``weights`` wins when given. Otherwise ``model`` may be ``None``/``"default"`` (the
    built-in default weights; the built-in ``anyscale`` model when ``scale`` is not an
    integer), ``"real"`` (the built-in real-photo model), ``"anyscale"`` (the built-in
    arbitrary-scale model), the name of a published checkpoint (``"emt_x2_official"``) or a
    variant name (``"emt"``), which resolves to its published weights at ``scale``. An
    arbitrary-scale network takes any ``scale``; others must have been trained at it.
    """
    if weights is not None:
        loaded = load_model(weights)
    elif model is None:
        if scale != int(scale):
            return load_builtin_model(ANYSCALE_MODEL, scale)
        return load_default_model(int(scale))
    elif model in BUILTIN_MODELS:
        return load_builtin_model(model, scale)
    else:
        from lightsr.hub import find_official, official_names

        if model in official_names():
            name = model
        elif scale == int(scale):
            name = find_official(get_arch(model).name, int(scale))
        else:
            name = None
        if name is None:
            raise CheckpointError(
                f"no published weights for {model} x{scale:g}; pass --weights PATH"
            )
        loaded = load_model(name)
    if not loaded.arbitrary_scale and loaded.scale != scale:
        raise CheckpointError(f"{loaded.source} is a x{loaded.scale} model, not x{scale:g}")
    return loaded
