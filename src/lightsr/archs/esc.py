"""ESC: Emulating Self-attention with Convolution (arXiv 2503.06671, ICCV 2025).

Written from the spec in ``specs/archs.md`` §2. Three official network classes share one
block design here:

* ``ESC`` (variants ``esc``, ``esc_light``, ``esc_xl``): window self-attention once per
  block, then ``conv_blocks`` convolutional "attention emulators" (ConvAttn) that mix the
  first ``pdim`` channels with one large dense kernel shared by the whole network plus a
  small per-sample dynamic depthwise kernel. Global residual: nearest upsample of the input.
* ``ESCFP`` (``esc_fp``): the large kernel is decomposed into a shared 1×1 channel mix and a
  shared depthwise 13×13 kernel, to which the dynamic 3×3 kernel is added. Global residual:
  bicubic upsample of the input.
* ``ESCReal`` (``esc_real``): ESC blocks plus an extra shallow ``skip`` branch and a
  Real-ESRGAN-style ×4 nearest-upsample/conv decoder, no image residual.

State-dict keys are exactly the official ones, so released BasicSR checkpoints (``params_ema``)
load with ``strict=True``. ``plk_filter`` is stored raw; every forward symmetrises it once
under the dihedral group D4 (the official "geometric re-parameterisation"). That average is
a projection, so a checkpoint whose filter was already folded by the official ``convert()``
gives the same result.

Departures from the official code that change outputs only by float rounding (≤ 3e-6 on
the golden vectors):

* attention runs through ``F.scaled_dot_product_attention`` with the relative-position bias as
  an additive float mask (fused kernel on CPU too; the official SDPA path is CUDA-only);
* the (heads, N, N) bias is gathered from the table with a vectorised index (no Python loop,
  nothing in the state dict) and cached while gradients are off, keyed on the table's
  version so an updated parameter is noticed;
* the dynamic depthwise conv is one grouped conv over the whole batch, so eval mode accepts
  any batch size (the official eval path only handles batch 1); traced graphs use an
  equivalent sum of shifted products so ONNX export keeps a dynamic batch;
* ESC-FP's per-sample 13×13 depthwise conv (shared kernel + dynamic 3×3) is computed as a
  shared 13×13 conv plus a per-sample 3×3 conv, which is the same by linearity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightsr.archs.blocks import (
    band_rows_for,
    chain,
    fast_path,
    grouped_attention,
    map_in_bands,
    memory_format_of,
    pad_to_multiple,
    pixel_shuffle_in_bands,
    update_in_bands_,
)
from lightsr.archs.registry import (
    ArchSpec,
    Reading,
    StateDict,
    count_indexed,
    register_arch,
    register_reader,
    scale_from_shuffle,
)

LN_EPS = 1e-6
# Side of the per-sample dynamic depthwise kernel of every ConvAttn.
DYNAMIC_KERNEL = 3
# Attention biases up to this size are cached between inference calls (ESC: 16 MiB per
# block). Larger ones (ESC-XL: 243 MiB per block) are rebuilt per call to bound memory.
MAX_CACHED_BIAS_BYTES = 64 * 2**20
# Pixels per band of the fast path's row-local layers (ConvFFNs, the 1×1 and 3×3 convs): a
# band's hidden maps stay small, and the halo rows cost about 3% at 256 pixels a row.
BAND_PIXELS = 64 * 256

ESC_DEFAULTS: Mapping[str, object] = {
    "dim": 64,
    "pdim": 16,
    "kernel_size": 13,
    "n_blocks": 5,
    "conv_blocks": 5,
    "window_size": 32,
    "num_heads": 4,
    "exp_ratio": 1.25,
    "use_ln": False,
}
ESC_LIGHT_DEFAULTS: Mapping[str, object] = {**ESC_DEFAULTS, "n_blocks": 3}
ESC_XL_DEFAULTS: Mapping[str, object] = {
    **ESC_DEFAULTS,
    "dim": 192,
    "pdim": 48,
    "n_blocks": 8,
    "window_size": 48,
    "num_heads": 12,
    "use_ln": True,
}
ESC_FP_DEFAULTS: Mapping[str, object] = {
    key: value for key, value in ESC_DEFAULTS.items() if key != "use_ln"
} | {"dim": 48, "num_heads": 3}
ESC_REAL_DEFAULTS: Mapping[str, object] = {
    key: value for key, value in ESC_DEFAULTS.items() if key != "use_ln"
} | {"n_blocks": 10, "exp_ratio": 2.0}


# --------------------------------------------------------------------------------------------
# Building blocks


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an (N, C, H, W) map (eps 1e-6)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(
            x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps
        )
        return normed.permute(0, 3, 1, 2)


class ConvFFN(nn.Module):
    """1×1 expand → GELU → (3×3 depthwise → GELU, plus its input) → 1×1 reduce.

    Args:
        dim: input and output channels.
        ratio: hidden width is ``int(dim * ratio)``.
    """

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.proj = nn.Conv2d(dim, hidden, 1)
        self.dwc = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.aggr = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(self.proj(x))
        # GELU's backward keeps its input, not its output, so adding in place is safe.
        hidden = F.gelu(self.dwc(hidden)).add_(hidden)
        return self.aggr(hidden)


def relative_offsets(window_size: int) -> torch.Tensor:
    """(w, w) table ``[q, k] = k − q + w − 1``: a row or column offset as a bias-table index."""
    positions = torch.arange(window_size)
    return positions[None, :] - positions[:, None] + window_size - 1


class WindowAttention(nn.Module):
    """Non-shifted w×w window self-attention with a learned relative-position bias.

    The input is reflect-padded at the bottom/right to a multiple of ``w`` and the output
    cropped back. The bias for a query at (qh, qw) and key at (kh, kw) is
    ``relative_position_bias[head, (kh−qh+w−1)·(2w−1) + (kw−qw+w−1)]`` ("key minus query").
    """

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.to_out = nn.Conv2d(dim, dim, 1)
        span = 2 * window_size - 1
        self.relative_position_bias = nn.Parameter(torch.randn(num_heads, span * span) * 1e-3)
        # Only a (w, w) offset table is kept; the (N, N) index is never materialised.
        self.register_buffer("offsets", relative_offsets(window_size), persistent=False)
        self._bias_cache: tuple[tuple, torch.Tensor] | None = None

    def bias_matrix(self) -> torch.Tensor:
        """The (1, heads, w², w²) additive attention bias, rows = queries, columns = keys.

        Four-dimensional on purpose: PyTorch's fused CPU attention kernel accepts a mask that
        broadcasts over the batch only when it has the batch axis (a 3-D one falls back to
        the unfused path, about 5× slower).
        """
        span = 2 * self.window_size - 1
        table = self.relative_position_bias.view(self.num_heads, span, span)
        rows, cols = self.offsets[:, None, :, None], self.offsets[None, :, None, :]
        # Indexed as [head, qh, qw, kh, kw].
        bias = table[:, rows, cols]
        tokens = self.window_size * self.window_size
        return bias.reshape(1, self.num_heads, tokens, tokens)

    def _bias(self, dtype: torch.dtype) -> torch.Tensor:
        """``bias_matrix()`` in ``dtype``; cached while gradients are off.

        The cache key holds the parameter's version counter and storage, so in-place updates
        (optimiser steps, ``load_state_dict``) and ``.to()`` invalidate it.
        """
        table = self.relative_position_bias
        tokens = self.window_size**2
        too_big = self.num_heads * tokens * tokens * table.element_size() > MAX_CACHED_BIAS_BYTES
        tracing = torch.compiler.is_compiling()  # the graph must compute the bias itself
        if torch.is_grad_enabled() or table.is_inference() or too_big or tracing:
            self._bias_cache = None
            return self.bias_matrix().to(dtype)
        key = (table._version, table.data_ptr(), table.device, dtype)
        if self._bias_cache is None or self._bias_cache[0] != key:
            self._bias_cache = (key, self.bias_matrix().to(dtype))
        return self._bias_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        return self._attend(pad_to_multiple(x, self.window_size, mode="reflect"))[
            :, :, :height, :width
        ]

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        """Attention within the windows of ``x``, whose sides are multiples of the window."""
        qkv = self.to_qkv(x)
        batch, channels3, padded_h, padded_w = qkv.shape
        win, heads = self.window_size, self.num_heads
        head_dim = channels3 // (3 * heads)
        rows, cols = padded_h // win, padded_w // win
        # Channels are [q | k | v], each heads × head_dim; windows ordered (batch, row, col).
        qkv = qkv.view(batch, 3, heads, head_dim, rows, win, cols, win)
        qkv = qkv.permute(1, 0, 4, 6, 2, 5, 7, 3).reshape(
            3, batch * rows * cols, heads, win * win, head_dim
        )
        query, key, value = qkv.unbind(0)
        out = grouped_attention(query, key, value, window_dim=0, attn_mask=self._bias(query.dtype))
        out = out.view(batch, rows, cols, heads, win, win, head_dim)
        out = out.permute(0, 3, 6, 1, 4, 2, 5).reshape(batch, heads * head_dim, padded_h, padded_w)
        return self.to_out(out)

    def add_to_(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """``x += self(norm(x))`` in place, one row of windows at a time (gradients off;
        ``x`` must be the caller's own): q, k, v and the output exist for one row only.

        The rows go bottom-up: the reflect padding of the last row of windows reads rows
        above it, which must not have been updated yet.
        """
        height, width = x.shape[-2:]
        win = self.window_size
        for start in reversed(range(0, height, win)):
            stop = min(start + win, height)
            band = x[:, :, start : start + win]
            if stop - start < win:  # the bottom rows, reflected as pad_to_multiple does
                index = torch.arange(start, start + win, device=x.device)
                index = torch.where(index < height, index, 2 * (height - 1) - index)
                band = x.index_select(2, index)
            band = pad_to_multiple(norm(band), win, mode="reflect")
            x[:, :, start:stop].add_(self._attend(band)[:, :, : stop - start, :width])
        return x


def kernel_predictor(pdim: int, hidden: int) -> nn.Sequential:
    """Global pool → 1×1 → GELU → 1×1 to ``pdim`` row-major 3×3 kernels (keys ``1``, ``3``)."""
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1),
        nn.Conv2d(pdim, hidden, 1),
        nn.GELU(),
        nn.Conv2d(hidden, pdim * DYNAMIC_KERNEL * DYNAMIC_KERNEL, 1),
    )


def dynamic_depthwise3x3(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Depthwise 3×3 conv of each sample with its own kernels, zero padding 1.

    Eager mode runs one grouped conv over a (1, B·C, H, W) view of the batch. An ONNX
    ``Conv`` needs a constant group count, so traced graphs (``torch.export``/``compile``)
    use :func:`depthwise3x3_by_shifts` instead, which has no batch-dependent attribute.

    Args:
        x: (B, C, H, W).
        kernels: (B, C, 3, 3) kernels, cross-correlation like ``F.conv2d``.
    """
    if torch.compiler.is_compiling():
        return depthwise3x3_by_shifts(x, kernels)
    batch, channels, height, width = x.shape
    out = F.conv2d(
        x.reshape(1, batch * channels, height, width),
        kernels.reshape(batch * channels, 1, DYNAMIC_KERNEL, DYNAMIC_KERNEL),
        padding=DYNAMIC_KERNEL // 2,
        groups=batch * channels,
    )
    return out.view(batch, channels, height, width)


def depthwise3x3_by_shifts(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """:func:`dynamic_depthwise3x3` as a sum of 9 shifted, per-sample scaled copies of ``x``."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    taps = (
        padded[:, :, i : i + height, j : j + width] * kernels[:, :, i : i + 1, j : j + 1]
        for i in range(DYNAMIC_KERNEL)
        for j in range(DYNAMIC_KERNEL)
    )
    return sum(taps, torch.zeros_like(x))


class ConvolutionalAttention(nn.Module):
    """ESC's ConvAttn on the first ``pdim`` channels; the rest pass through unchanged.

    ``x1 ← conv(x1, lk) + depthwise3×3(x1, dynamic kernels of this sample)`` where ``lk`` is
    the network's shared dense (pdim, pdim, k, k) kernel.
    """

    def __init__(self, pdim: int) -> None:
        super().__init__()
        self.pdim = pdim
        self.dwc_proj = kernel_predictor(pdim, pdim // 2)
        # Zero-initialised: training starts from the static large kernel alone.
        nn.init.zeros_(self.dwc_proj[-1].weight)
        nn.init.zeros_(self.dwc_proj[-1].bias)

    def forward(self, x: torch.Tensor, lk_filter: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.split([self.pdim, x.shape[1] - self.pdim], dim=1)
        return torch.cat([self.mix(x1, lk_filter), x2], dim=1)

    def mix(self, x1: torch.Tensor, lk_filter: torch.Tensor) -> torch.Tensor:
        """The new first ``pdim`` channels from the old ones."""
        # Both convs below would otherwise each copy the channel slice to a dense tensor.
        # In the slice's own layout: oneDNN's channels_last 13×13 conv is about 4× faster.
        x1 = x1.contiguous(memory_format=memory_format_of(x1))
        dynamic = self.dwc_proj(x1).view(-1, self.pdim, DYNAMIC_KERNEL, DYNAMIC_KERNEL)
        mixed = F.conv2d(x1, lk_filter, padding=lk_filter.shape[-1] // 2)
        return mixed + dynamic_depthwise3x3(x1, dynamic)


class DecomposedConvolutionalAttention(nn.Module):
    """ESC-FP's ConvAttn: shared 1×1 channel mix, then a per-sample depthwise k×k conv whose
    kernel is the shared ``lk_spatial`` plus the centred dynamic 3×3 kernel.

    By linearity that conv is computed as a shared depthwise k×k conv plus a per-sample
    depthwise 3×3 one, so no per-sample k×k kernels are built.
    """

    def __init__(self, pdim: int) -> None:
        super().__init__()
        self.pdim = pdim
        self.proj = kernel_predictor(pdim, pdim // 4)

    def forward(
        self, x: torch.Tensor, lk_channel: torch.Tensor, lk_spatial: torch.Tensor
    ) -> torch.Tensor:
        x1, x2 = x.split([self.pdim, x.shape[1] - self.pdim], dim=1)
        return torch.cat([self.mix(x1, lk_channel, lk_spatial), x2], dim=1)

    def mix(
        self, x1: torch.Tensor, lk_channel: torch.Tensor, lk_spatial: torch.Tensor
    ) -> torch.Tensor:
        """The new first ``pdim`` channels from the old ones."""
        dynamic = self.proj(x1).view(-1, self.pdim, DYNAMIC_KERNEL, DYNAMIC_KERNEL)
        mixed = F.conv2d(x1, lk_channel)
        spatial = F.conv2d(mixed, lk_spatial, padding=lk_spatial.shape[-1] // 2, groups=self.pdim)
        return spatial + dynamic_depthwise3x3(mixed, dynamic)


class ConvAttnWrapper(nn.Module):
    """A ConvAttn (``plk``) followed by a 1×1 conv over all channels (``aggr``)."""

    def __init__(self, dim: int, pdim: int, decomposed: bool) -> None:
        super().__init__()
        attention = DecomposedConvolutionalAttention if decomposed else ConvolutionalAttention
        self.plk = attention(pdim)
        self.aggr = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, shared: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.aggr(self.plk(x, *shared))


class Block(nn.Module):
    """One ESC block; ESC, ESC-FP and ESC-Real differ only in the arguments.

    ``x → proj(ln(x)) → +attn(ln) → conv_blocks × (+ConvAttn(ConvFFN(ln?))) → conv3×3(ln)
    → + x``. The first projection has no residual of its own.

    Args:
        proj_ratio: width ratio of the first ConvFFN (2 for ESC/Real, 1.5 for FP).
        exp_ratio: width ratio of the ConvFFNs between the ConvAttns.
        use_ln: LayerNorm before each of those ConvFFNs (``lns``); identity otherwise.
        decomposed: ESC-FP's decomposed ConvAttn instead of ESC's.
    """

    def __init__(
        self,
        dim: int,
        pdim: int,
        conv_blocks: int,
        window_size: int,
        num_heads: int,
        exp_ratio: float,
        proj_ratio: float,
        use_ln: bool,
        decomposed: bool,
    ) -> None:
        super().__init__()
        self.ln_proj = LayerNorm2d(dim)
        self.proj = ConvFFN(dim, proj_ratio)
        self.ln_attn = LayerNorm2d(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.lns = nn.ModuleList(
            LayerNorm2d(dim) if use_ln else nn.Identity() for _ in range(conv_blocks)
        )
        self.pconvs = nn.ModuleList(
            ConvAttnWrapper(dim, pdim, decomposed) for _ in range(conv_blocks)
        )
        self.convffns = nn.ModuleList(ConvFFN(dim, exp_ratio) for _ in range(conv_blocks))
        self.ln_out = LayerNorm2d(dim)
        self.conv_out = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, shared: Sequence[torch.Tensor]) -> torch.Tensor:
        """``shared``: the network-level kernels every ConvAttn of the network uses."""
        if fast_path():
            return self._forward_fast(x, shared)
        features = self.proj(self.ln_proj(x))
        features = features + self.attn(self.ln_attn(features))
        for norm, pconv, convffn in zip(self.lns, self.pconvs, self.convffns, strict=True):
            features = features + pconv(convffn(norm(features)), shared)
        return self.conv_out(self.ln_out(features)) + x

    def _forward_fast(self, x: torch.Tensor, shared: Sequence[torch.Tensor]) -> torch.Tensor:
        """Gradients off: the row-local layers in bands of rows, the attention one row of
        windows at a time and every residual sum in place, so that besides ``x`` only the
        block's features and one ConvFFN output exist in full. ``x`` is left as it was."""
        band = band_rows_for(x.shape[-1], BAND_PIXELS)
        features = map_in_bands(chain(self.ln_proj, self.proj), x, band)
        self.attn.add_to_(features, self.ln_attn)
        for norm, pconv, convffn in zip(self.lns, self.pconvs, self.convffns, strict=True):
            hidden = map_in_bands(chain(norm, convffn), features, band)
            pdim = pconv.plk.pdim
            hidden[:, :pdim] = pconv.plk.mix(hidden[:, :pdim], *shared)
            update_in_bands_(features, pconv.aggr, hidden, band, halo=0, combine=torch.Tensor.add_)
            hidden = None
        update_in_bands_(features, chain(self.ln_out, self.conv_out), features, band)
        return features.add_(x)


def d4_average(kernel: torch.Tensor) -> torch.Tensor:
    """Mean of the 8 dihedral transforms (flips and 90° rotations) of a (…, k, k) kernel.

    Summed in the official order (identity, h-, v-, hv-flip, then the same four of the
    clockwise rotation) so the result is bit-identical to the official ``_geo_ensemble``.
    """
    rotated = torch.rot90(kernel, -1, (-2, -1))
    transforms = [
        flipped
        for base in (kernel, rotated)
        for flipped in (base, base.flip(-1), base.flip(-2), base.flip((-2, -1)))
    ]
    return sum(transforms[1:], transforms[0]) / 8


def _make_blocks(n_blocks: int, **block_args: object) -> nn.ModuleList:
    return nn.ModuleList(Block(**block_args) for _ in range(n_blocks))


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


# --------------------------------------------------------------------------------------------
# Networks


class ESC(nn.Module):
    """ESC / ESC-light / ESC-XL (official class ``ESC``). Input and output RGB in [0, 1].

    Args:
        scale: upscale factor.
        dim: feature channels.
        pdim: channels seen by each ConvAttn.
        kernel_size: side of the shared large kernel ``plk_filter``.
        n_blocks: number of blocks.
        conv_blocks: ConvAttns per block.
        window_size: attention window side (the input of each attention is reflect-padded to a
            multiple of it).
        num_heads: attention heads.
        exp_ratio: width ratio of the ConvFFNs between the ConvAttns.
        use_ln: LayerNorm before those ConvFFNs (ESC-XL).
        upsampler: False builds the encoder alone (no ``to_img``), as the official
            arbitrary-scale code uses it: only :meth:`features` is then defined.
    """

    def __init__(
        self,
        scale: int = 4,
        dim: int = 64,
        pdim: int = 16,
        kernel_size: int = 13,
        n_blocks: int = 5,
        conv_blocks: int = 5,
        window_size: int = 32,
        num_heads: int = 4,
        exp_ratio: float = 1.25,
        use_ln: bool = False,
        upsampler: bool = True,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.plk_filter = nn.Parameter(torch.empty(pdim, pdim, kernel_size, kernel_size))
        # Orthogonal init stabilises the early training of the shared large kernel.
        nn.init.orthogonal_(self.plk_filter)
        self.proj = _conv3x3(3, dim)
        self.blocks = _make_blocks(
            n_blocks,
            dim=dim,
            pdim=pdim,
            conv_blocks=conv_blocks,
            window_size=window_size,
            num_heads=num_heads,
            exp_ratio=exp_ratio,
            proj_ratio=2.0,
            use_ln=use_ln,
            decomposed=False,
        )
        self.last = _conv3x3(dim, dim)
        self.out_dim = dim
        if upsampler:
            self.to_img = _conv3x3(dim, 3 * scale * scale)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Shallow conv, the blocks (sharing one D4-symmetrised kernel) and the long skip."""
        shallow = self.proj(x)
        shared = (d4_average(self.plk_filter),)
        features = shallow
        for block in self.blocks:
            features = block(features, shared)
        if fast_path() and features is not shallow:  # ``last`` in place, in bands
            band = band_rows_for(x.shape[-1], BAND_PIXELS)
            return update_in_bands_(features, self.last, features, band).add_(shallow)
        return self.last(features) + shallow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path():
            # The s²-channel map before the shuffle never exists in full, and the nearest
            # upsample of the input is added through a broadcasting view.
            out = pixel_shuffle_in_bands(self.to_img, self.scale, self.features(x))
            h, w = x.shape[-2:]
            grid = out.unflatten(3, (w, self.scale)).unflatten(2, (h, self.scale))
            grid.add_(x[:, :, :, None, :, None])
            return out
        upsampled = F.pixel_shuffle(self.to_img(self.features(x)), self.scale)
        # The official residual (input repeated s² times before PixelShuffle) is a nearest
        # upsample of the input.
        return upsampled + F.interpolate(x, scale_factor=self.scale, mode="nearest")


class ESCFP(nn.Module):
    """ESC-FP (official class ``ESCFP``): decomposed ConvAttn, LayerNorms everywhere,
    bicubic global residual. Arguments as :class:`ESC` (no ``use_ln``: always on)."""

    def __init__(
        self,
        scale: int = 4,
        dim: int = 48,
        pdim: int = 16,
        kernel_size: int = 13,
        n_blocks: int = 5,
        conv_blocks: int = 5,
        window_size: int = 32,
        num_heads: int = 3,
        exp_ratio: float = 1.25,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.lk_channel = nn.Parameter(torch.randn(pdim, pdim, 1, 1))
        self.lk_spatial = nn.Parameter(torch.empty(pdim, 1, kernel_size, kernel_size))
        nn.init.orthogonal_(self.lk_spatial)
        self.proj = _conv3x3(3, dim)
        self.blocks = _make_blocks(
            n_blocks,
            dim=dim,
            pdim=pdim,
            conv_blocks=conv_blocks,
            window_size=window_size,
            num_heads=num_heads,
            exp_ratio=exp_ratio,
            proj_ratio=1.5,
            use_ln=True,
            decomposed=True,
        )
        self.ln_last = LayerNorm2d(dim)
        self.last = _conv3x3(dim, dim)
        self.to_img = _conv3x3(dim, 3 * scale * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.proj(x)
        shared = (self.lk_channel, self.lk_spatial)
        features = shallow
        for block in self.blocks:
            features = block(features, shared)
        features = self.last(self.ln_last(features)) + shallow
        upsampled = F.pixel_shuffle(self.to_img(features), self.scale)
        # PyTorch bicubic (a = −0.75, half-pixel centres, no antialias), as the official code.
        return upsampled + F.interpolate(x, scale_factor=self.scale, mode="bicubic")


class ESCReal(ESC):
    """ESC-Real (official class ``ESCReal``): real-world ×4 model.

    ESC blocks with LayerNorms before every ConvFFN, an extra shallow ``skip`` branch
    (1×1 → 7×7 depthwise with reflect padding → LeakyReLU → 1×1) added to the features, and
    a Real-ESRGAN-style decoder (two nearest ×2 upsamplings with convs). No image residual.
    The decoder is always ×4, so ``scale`` must be 4.
    """

    def __init__(
        self,
        scale: int = 4,
        dim: int = 64,
        pdim: int = 16,
        kernel_size: int = 13,
        n_blocks: int = 10,
        conv_blocks: int = 5,
        window_size: int = 32,
        num_heads: int = 4,
        exp_ratio: float = 2.0,
    ) -> None:
        if scale != 4:
            raise ValueError(f"ESCReal is a x4 network, got scale {scale}")
        super().__init__(
            scale=scale,
            dim=dim,
            pdim=pdim,
            kernel_size=kernel_size,
            n_blocks=n_blocks,
            conv_blocks=conv_blocks,
            window_size=window_size,
            num_heads=num_heads,
            exp_ratio=exp_ratio,
            use_ln=True,
        )
        self.to_img = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv3x3(dim, dim),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv3x3(dim, dim),
            nn.LeakyReLU(0.2, inplace=True),
            _conv3x3(dim, dim),
            nn.LeakyReLU(0.2, inplace=True),
            _conv3x3(dim, 3),
        )
        wide = 2 * dim
        self.skip = nn.Sequential(
            nn.Conv2d(3, wide, 1),
            nn.Conv2d(wide, wide, 7, padding=3, groups=wide, padding_mode="reflect"),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(wide, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_img(self.features(x) + self.skip(x))


# --------------------------------------------------------------------------------------------
# Registry and checkpoint detection


def build_esc(scale: int = 4, **kwargs: object) -> ESC:
    """Registry builder for ``esc``, ``esc_light`` and ``esc_xl``."""
    return ESC(scale=scale, **kwargs)


def build_esc_fp(scale: int = 4, **kwargs: object) -> ESCFP:
    """Registry builder for ``esc_fp``."""
    return ESCFP(scale=scale, **kwargs)


def build_esc_real(scale: int = 4, **kwargs: object) -> ESCReal:
    """Registry builder for ``esc_real``."""
    return ESCReal(scale=scale, **kwargs)


def _hyperparameters(state_dict: StateDict) -> dict[str, object]:
    """Constructor arguments that the shapes and key counts of an ESC checkpoint imply."""
    attention_table = state_dict["blocks.0.attn.relative_position_bias"]
    dim = state_dict["proj.weight"].shape[0]
    # ESC/Real share one dense (pdim, pdim, k, k) kernel; ESC-FP a (pdim, 1, k, k) one.
    large_kernel = state_dict.get("plk_filter", state_dict.get("lk_spatial"))
    found = {
        "dim": dim,
        "pdim": large_kernel.shape[0],
        "kernel_size": large_kernel.shape[-1],
        "n_blocks": count_indexed(state_dict, "blocks.{}.ln_proj.weight"),
        "conv_blocks": count_indexed(state_dict, "blocks.0.pconvs.{}.aggr.weight"),
        "window_size": (math.isqrt(attention_table.shape[1]) + 1) // 2,
        "num_heads": attention_table.shape[0],
        "exp_ratio": state_dict["blocks.0.convffns.0.proj.weight"].shape[0] / dim,
    }
    if "lk_channel" not in state_dict and "skip.0.weight" not in state_dict:
        found["use_ln"] = "blocks.0.lns.0.weight" in state_dict  # ESC/light/XL only
    return found


def read_esc(state_dict: StateDict) -> Reading | None:
    """Read ESC, ESC-light, ESC-XL, ESC-FP and ESC-Real checkpoints: sizes and scale."""
    required = ("proj.weight", "blocks.0.attn.relative_position_bias", "blocks.0.ln_proj.weight")
    if not all(key in state_dict for key in required):
        return None
    if "plk_filter" not in state_dict and "lk_spatial" not in state_dict:
        return None
    found = _hyperparameters(state_dict)
    if "skip.0.weight" in state_dict and "to_img.8.weight" in state_dict:
        return Reading("esc", 4, found, state_dict, variants=("esc_real",))
    if "to_img.weight" not in state_dict:
        return None
    scale = scale_from_shuffle(state_dict["to_img.weight"].shape[0])
    if scale is None:
        return None
    variants = ("esc_fp",) if "lk_channel" in state_dict else ("esc", "esc_light", "esc_xl")
    return Reading("esc", scale, found, state_dict, variants=variants)


def _register(
    name: str,
    builder: Callable[..., nn.Module],
    defaults: Mapping[str, object],
    description: str,
    scales: tuple[int, ...] = (2, 3, 4),
) -> None:
    window = int(defaults["window_size"])
    register_arch(
        ArchSpec(
            name=name,
            family="esc",
            builder=builder,
            scales=scales,
            input_range=1.0,
            # The official test pipeline reflect-pads the LR image to a multiple of the window.
            pad_multiple=window,
            # Reflect padding to the window needs every side larger than half a window.
            min_size=window // 2 + 1,
            description=description,
            defaults=defaults,
        )
    )


_register("esc", build_esc, ESC_DEFAULTS, "ESC: window attention + shared large-kernel ConvAttn")
_register("esc_light", build_esc, ESC_LIGHT_DEFAULTS, "ESC-light: ESC with 3 blocks")
_register("esc_xl", build_esc, ESC_XL_DEFAULTS, "ESC-XL: 192 channels, 8 blocks, 48-px windows")
_register("esc_fp", build_esc_fp, ESC_FP_DEFAULTS, "ESC-FP: fast ESC with decomposed ConvAttn")
_register("esc_real", build_esc_real, ESC_REAL_DEFAULTS, "ESC-Real: real-world x4 ESC", scales=(4,))
register_reader("esc", read_esc)
