"""Size and compute of one forward pass: parameters, MACs, conv activations and layers.

Arbitrary-scale networks (LTE heads) are counted in two parts
(:func:`count_arbitrary_complexity`): what runs per LR pixel (encoder and the head's
``coef``/``freq`` convs) and what runs per output pixel (the MLP queries).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightsr.archs.blocks import faithful_path


@dataclass(frozen=True)
class Complexity:
    """Size and compute of one forward pass (see the module docstring)."""

    params: int
    macs: int
    activations: int
    convs: int
    macs_executed: int

    @property
    def flops(self) -> int:
        """2 × MACs: one multiply and one add per multiply-accumulate."""
        return 2 * self.macs


def _sdpa_flops(
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """FLOPs of Q·Kᵀ and attn·V for (batch, heads, tokens, dim) inputs (heads may be grouped)."""
    batch, heads, queries, qk_dim = query_shape
    keys, value_dim = key_shape[-2], value_shape[-1]
    return 2 * batch * heads * queries * keys * (qk_dim + value_dim)


# FlopCounterMode knows the CUDA fused attention kernels only. On the CPU,
# scaled_dot_product_attention dispatches to this kernel, which it would count as 0; the CPU
# math fallback decomposes into bmm and is counted already.
_CPU_ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def flop_counter() -> FlopCounterMode:
    """A silent :class:`FlopCounterMode` that also counts CPU fused attention."""
    return FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION_FLOPS)


def count_params(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def count_complexity(module: nn.Module, input_shape: Sequence[int]) -> Complexity:
    """Params, MACs, conv activations and conv layers of ``module`` on one input shape.

    The forward runs on the meta device (shapes only, no arithmetic), so counting a
    256×256 input is instant. A network whose forward reads tensor values cannot run there;
    it is counted on the CPU with a random input instead. ``module`` itself is not changed.
    """
    params = count_params(module)
    try:
        meta_input = torch.empty(input_shape, device="meta")
        counts = _count_forward(_frozen_copy(module, "meta"), meta_input)
    except (NotImplementedError, RuntimeError):
        counts = _count_forward(_frozen_copy(module, "cpu"), torch.rand(input_shape))
    return replace(counts, params=params)


@dataclass(frozen=True)
class ArbitraryComplexity:
    """Compute of an arbitrary-scale network (:class:`lightsr.archs.lte.LTE`), split.

    Attributes:
        total: the whole forward at one input and output size (``macs`` = encoder + head).
        encoder: the encoder *and* the head's ``coef``/``freq`` 3×3 convs: everything that
            runs once per LR pixel (activations and convs are all here).
        head_macs_per_pixel: the query side, per output pixel: the phase layer and the MLP
            for each of the four neighbours. It does not depend on the scale.
    """

    total: Complexity
    encoder: Complexity
    head_macs_per_pixel: int

    @property
    def head_macs_per_mpx(self) -> int:
        """Head MACs per output megapixel (10⁶ pixels)."""
        return self.head_macs_per_pixel * 1_000_000


class _Encode(nn.Module):
    """The per-LR-pixel part of an LTE network as one module (for counting)."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.network.encode(x)
        return features.coef, features.freq


# Output pixels rendered to count the head (any number gives the same per-pixel count).
_HEAD_PROBE_SIDE = 8


def head_macs_per_pixel(module: nn.Module) -> int:
    """MACs of an LTE head per output pixel, counted on a small render on the CPU (from
    random features: the encoder does not run)."""
    from lightsr.archs.lte import Features

    frozen = _frozen_copy(module, "cpu").eval()
    side, hidden = _HEAD_PROBE_SIDE, frozen.coef.out_channels
    with torch.inference_mode():
        coef, freq = (torch.rand(1, side * side, hidden) for _ in range(2))
        features = Features(coef, freq, torch.rand(1, 3, side, side), (0, 0), (side, side))
        out = (2 * side, 2 * side)
        with flop_counter() as counter:
            frozen.render(features, out, (0, out[0]), (0, out[1]), (2.0, 2.0))
    return counter.get_total_flops() // 2 // (out[0] * out[1])


def count_arbitrary_complexity(
    module: nn.Module, input_shape: Sequence[int], output_size: tuple[int, int]
) -> ArbitraryComplexity:
    """:func:`count_complexity` of an LTE network upscaling ``input_shape`` to
    ``output_size``, with the encoder and the head apart (see :class:`ArbitraryComplexity`)."""
    encoder = count_complexity(_Encode(module), input_shape)
    per_pixel = head_macs_per_pixel(module)
    head = per_pixel * output_size[0] * output_size[1] * input_shape[0]
    total = replace(encoder, macs=encoder.macs + head, macs_executed=encoder.macs_executed + head)
    return ArbitraryComplexity(total=total, encoder=encoder, head_macs_per_pixel=per_pixel)


def _frozen_copy(module: nn.Module, device: str) -> nn.Module:
    # FlopCounterMode's module tracker hooks autograd on forward arguments that require
    # grad, which fails under inference_mode when a parameter is passed as an argument
    # (ESC shares one between blocks); a copy without grad avoids that.
    frozen = copy.deepcopy(module).to(device=device, dtype=torch.float32)
    return frozen.requires_grad_(False)


def _count_forward(module: nn.Module, x: torch.Tensor) -> Complexity:
    """Complexity of one forward of ``module`` on ``x``, with ``params`` left at 0."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    emulated = [m for m in module.modules() if callable(getattr(m, "reference_macs", None))]
    activations = 0
    reference_macs = 0

    def add_activations(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        nonlocal activations
        activations += output.numel()

    def add_reference_macs(emulating: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        nonlocal reference_macs
        reference_macs += emulating.reference_macs(inputs[0])

    handles = [conv.register_forward_hook(add_activations) for conv in convs]
    handles += [m.register_forward_pre_hook(add_reference_macs) for m in emulated]
    try:
        # The faithful path: counts describe the network, not this package's fast path
        # (which, e.g., recomputes FMEN's long skip and runs EMT's shifts as convs).
        with torch.inference_mode(), faithful_path(), flop_counter() as counter:
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    executed = counter.get_total_flops() // 2
    return Complexity(
        params=0,
        macs=executed + reference_macs,
        activations=activations,
        convs=len(convs),
        macs_executed=executed,
    )
