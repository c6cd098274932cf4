"""Loaded models: :class:`SRModel` and :func:`load_model` with checkpoint auto-detection."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightsr.archs.blocks import pad_to_multiple
from lightsr.archs.registry import ArchSpec, Detection, arch_specs, build_model, detectors, get_arch
from lightsr.checkpoint import METADATA_KEYS, check_tensors, read_state_dict
from lightsr.errors import CheckpointError

StateDictLike = Mapping[str, torch.Tensor]


class NamedBySpec:
    """``name`` and ``variant`` read from the ``spec`` (:class:`ArchSpec`) of a model."""

    spec: ArchSpec

    @property
    def name(self) -> str:
        """Network family (``"fmen"``)."""
        return self.spec.family

    @property
    def variant(self) -> str:
        """Registry name of the variant (``"fmen_s"``)."""
        return self.spec.name


@dataclass
class SRModel(NamedBySpec):
    """A network with its identity and pixel-range conventions.

    ``module`` takes input exactly as the official network does (same value range, same
    mean handling), so it is a drop-in replacement. :meth:`upscale` takes and returns float
    RGB in [0, 1] and hides those conventions.
    """

    module: nn.Module
    spec: ArchSpec
    scale: int
    source: str = ""

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
    """Detect the network in ``state_dict``, build it and load the weights strictly."""
    state_dict = dict(state_dict)
    detection = _detect_from_metadata(state_dict, metadata or {}) or _detect(state_dict)
    if detection is None:
        raise CheckpointError(_mismatch_message(state_dict, source))
    spec = get_arch(detection.name)
    try:
        module = build_model(spec.name, detection.scale, **detection.overrides)
    except (RuntimeError, TypeError, ValueError) as exc:  # sizes read from hostile shapes
        raise CheckpointError(
            f"{source or 'checkpoint'} looks like {spec.name} x{detection.scale} but its "
            f"tensor shapes do not make one ({str(exc).strip().splitlines()[0][:120]})"
        ) from None
    missing, unexpected = _load_strict(module, detection.state_dict, source or "checkpoint")
    if missing or unexpected:
        first = (missing or unexpected)[0]
        kind = "missing" if missing else "unexpected"
        raise CheckpointError(
            f"{source or 'checkpoint'} looks like {spec.name} x{detection.scale} "
            f"but key {first!r} is {kind}"
        )
    module.eval()
    return SRModel(module=module, spec=spec, scale=detection.scale, source=source)


def load_model(checkpoint: str | os.PathLike | StateDictLike) -> SRModel:
    """Load a model from a checkpoint path, an official-weights name or a state dict.

    Accepts ``.pth``/``.pt``/``.safetensors`` files, plain or wrapped state dicts
    (``params``, ``params_ema``, ``state_dict``, ``model``) and names of published
    checkpoints (``"emt_x2_official"``, see ``lightsr models``). The network, variant and
    scale are detected from key names and tensor shapes alone.

    Raises:
        CheckpointError: the file is unreadable or matches no known network; the message
            names the closest network and the first mismatching key.
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


def _detect_from_metadata(state_dict: dict, metadata: Mapping[str, str]) -> Detection | None:
    """Use the metadata that ``lightsr convert`` writes, when present."""
    if not all(k in metadata for k in METADATA_KEYS):
        return None
    try:
        overrides = dict(json.loads(metadata.get("overrides", "{}")))
    except (ValueError, TypeError):
        raise CheckpointError(f"bad 'overrides' metadata: {metadata['overrides']!r}") from None
    if metadata.get("form") == "deploy":
        overrides["deploy"] = True
    return Detection(
        name=metadata["variant"],
        scale=int(metadata["scale"]),
        state_dict=state_dict,
        overrides=overrides,
    )


def _detect(state_dict: dict) -> Detection | None:
    for detector in detectors().values():
        try:
            found = detector(state_dict)
        except (IndexError, KeyError, TypeError, ValueError):  # a tensor of the wrong rank
            continue
        if found is not None:
            return found
    return None


def _load_strict(
    module: nn.Module, state_dict: StateDictLike, source: str
) -> tuple[list[str], list[str]]:
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        return missing, unexpected
    check_tensors(state_dict, expected, source)
    module.load_state_dict(state_dict, strict=True)
    return [], []


def _mismatch_message(state_dict: StateDictLike, source: str) -> str:
    """Name the registered variant whose keys overlap most with ``state_dict``."""
    keys = set(state_dict)
    best: tuple[float, str, str] | None = None
    for spec in arch_specs():
        expected = list(build_model(spec.name, spec.scales[-1]).state_dict())
        overlap = len(keys.intersection(expected)) / max(len(expected), 1)
        first_bad = next((k for k in expected if k not in keys), None) or next(iter(keys), "")
        if best is None or overlap > best[0]:
            best = (overlap, spec.name, first_bad)
    where = source or "checkpoint"
    if best is None or best[0] == 0.0:
        return f"{where}: matches no known network (first key {next(iter(keys), '')!r})"
    return (
        f"{where}: matches no known network; closest is {best[1]} "
        f"({best[0]:.0%} of its keys), first mismatching key {best[2]!r}"
    )


def default_weights_path(scale: int) -> Path:
    """Path of the built-in default weights for ``scale`` (shipped inside the package)."""
    from lightsr.paths import package_weights_dir

    return package_weights_dir() / f"default_x{scale}.safetensors"


def load_default_model(scale: int) -> SRModel:
    """The built-in default model for ``scale``; works offline."""
    path = default_weights_path(scale)
    if not path.is_file():
        raise CheckpointError(f"no built-in default model for x{scale}")
    return load_model(path)


def resolve_model(model: str | None, weights: str | os.PathLike | None, scale: int) -> SRModel:
    """Turn the CLI's ``--model``/``--weights`` pair into a loaded model.

    ``weights`` wins when given. Otherwise ``model`` may be ``None``/``"default"`` (the
    built-in default weights), the name of a published checkpoint (``"emt_x2_official"``) or
    a variant name (``"emt"``), which resolves to its published weights at ``scale``.
    """
    if weights is not None:
        loaded = load_model(weights)
    elif model is None or model == "default":
        return load_default_model(scale)
    else:
        from lightsr.hub import find_official, official_names

        name = model if model in official_names() else find_official(get_arch(model).name, scale)
        if name is None:
            raise CheckpointError(f"no published weights for {model} x{scale}; pass --weights PATH")
        loaded = load_model(name)
    if loaded.scale != scale:
        raise CheckpointError(f"{loaded.source} is a x{loaded.scale} model, not x{scale}")
    return loaded
