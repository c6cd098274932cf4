"""DITN: Deployment-friendly Inner-patch Transformer Network (Liu et al., ACM MM 2023).

One implementation serves every variant; they differ only in the *norm* placed before each
token mixer and FFN and in their sizes:

* ``ditn_real`` (**official**): the only network in the public code (``DITN_Real``). Its
  "norm" is tanh followed by a 1×1 conv (the paper's deployment-friendly replacement for
  LayerNorm), stored as ``conv1``/``conv2``. Key names equal the official ones, so the
  official checkpoints load unchanged.
* ``ditn`` and ``ditn_tiny`` (**paper-derived**): the classic variants use channel
  LayerNorm (``norm1``/``norm2``, eps 1e-5, with bias) instead of tanh + conv. Their code and
  weights are not public, so the following is assumed:

  * ``ditn``: 3 UFONEs as in the paper's network figure, each ending in a conv3x3 (``conv``)
    as drawn there, and 2 ITLs + 2 SALs per UFONE (≈ 0.6 M parameters at ×4, the size class
    of the models it is compared with). Width 60, FFN factor 2 and 8×8 patches as in
    DITN-Real.
  * ``ditn_tiny``: one UFONE of 2 ITLs + 2 SALs, **without** the trailing conv: with a single
    UFONE it would sit right before ``conv_after_body`` (two back-to-back linear convs), and
    the only public single-UFONE model, DITN-Real, has none either.

Forward (all variants): reflect-pad the [0, 1] RGB input at the bottom/right to a multiple of
8 → ``sft`` conv3x3 → UFONEs → ``conv_after_body`` + long skip → conv3x3 + PixelShuffle →
crop. A UFONE unfolds the map into 8×8 patches *once*, runs its ITLs on the patch stack (so
the FFN depthwise conv sees zero padding at every patch border, as in the official code),
folds back and runs its SALs on the full map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lightsr.archs.blocks import (
    FoldedCache,
    PixelShuffleUpsampler,
    band_rows_for,
    fast_path,
    is_channels_last,
    pad_to_multiple,
    row_bands,
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


class TanhConvNorm(nn.Conv2d):
    """DITN-Real's LayerNorm substitute: ``conv1x1(tanh(x))`` (C→C, with bias)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.tanh(x))


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an (N,C,H,W) map (eps 1e-5, with bias)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


@dataclass(frozen=True)
class NormKind:
    """The norm of a variant: a factory ``dim -> module`` and the prefix of its key names."""

    prefix: str
    factory: Callable[[int], nn.Module]


TANH_CONV = NormKind("conv", TanhConvNorm)
LAYER_NORM = NormKind("norm", ChannelLayerNorm)
NORMS = {"tanh_conv": TANH_CONV, "layer_norm": LAYER_NORM}


NO_NORM = nn.Identity()  # for calling the fast paths' ``after_norm`` on an input as it is


def norm_without_conv(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` less a :class:`TanhConvNorm`'s 1×1 conv, which the fast path folds into
    the per-pixel linear layer that reads the norm (see :func:`first_layer_after`)."""
    return torch.tanh(x) if isinstance(norm, TanhConvNorm) else norm(x)


def first_layer_after(
    norm: nn.Module, layer: nn.Conv2d | nn.Linear, cache: FoldedCache
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Weight and bias of ``layer`` (a 1×1 conv or a Linear that reads ``norm``'s output)
    with a :class:`TanhConvNorm`'s conv folded in, so that it reads
    :func:`norm_without_conv` instead: two per-pixel linear maps make one. DITN-Real has
    one such norm before each ISA, SDA and FFN: 16 convs fewer per forward."""
    if not isinstance(norm, TanhConvNorm):
        return layer.weight, layer.bias

    def fold() -> tuple[torch.Tensor, torch.Tensor]:
        outer = layer.weight.reshape(layer.weight.shape[0], -1).double()
        inner = norm.weight.reshape(norm.out_channels, -1).double()
        bias = outer @ norm.bias.double()
        if layer.bias is not None:
            bias = bias + layer.bias.double()
        weight = (outer @ inner).reshape(layer.weight.shape)
        return weight.to(layer.weight.dtype), bias.to(layer.weight.dtype)

    sources = [layer.weight, norm.weight, norm.bias]
    return cache.get(sources + ([layer.bias] if layer.bias is not None else []), fold)


# Pixels per band of the fast path's banded FFN (see GatedDConvFFN.add_to): 32 rows of a
# 256-pixel-wide map, whose 4×-wide hidden maps (8 MiB) stay in the CPU's cache between the
# convs. Narrower bands multiply small ops for no gain.
FFN_BAND_PIXELS = 32 * 256


class GatedDConvFFN(nn.Module):
    """Gated depthwise-conv FFN: 1×1 → dw3×3 → gelu(a)·b → 1×1 (exact-erf GELU)."""

    def __init__(self, dim: int, expansion: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)
        self._folded = FoldedCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path():
            return self._hidden_to_out(self.dwconv(self.project_in(x)))
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)

    def add_to(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """``x += self(norm(x))`` in place (gradients off; ``x`` must be the caller's own).

        A large single map goes through in bands of rows, so the normed input and the
        4×-wide hidden maps exist one band at a time. Each band is computed with one extra
        row on each side for the depthwise conv, which makes it exactly the whole-map
        result, and is added only after the next band has read its last row.
        """
        height, width = x.shape[-2:]
        band = band_rows_for(width, FFN_BAND_PIXELS)
        weight, bias = first_layer_after(norm, self.project_in, self._folded)

        def hidden_of(rows: torch.Tensor) -> torch.Tensor:
            return self.dwconv(F.conv2d(norm_without_conv(norm, rows), weight, bias))

        if x.shape[0] > 1 or height <= band:
            return x.add_(self._hidden_to_out(hidden_of(x)))
        pending = None
        for rows, context, crop in row_bands(height, band):
            hidden = hidden_of(x[:, :, context])
            out = self._hidden_to_out(hidden[:, :, crop])
            hidden = None
            if pending is not None:
                x[:, :, pending[0]].add_(pending[1])
            pending = (rows, out)
        x[:, :, pending[0]].add_(pending[1])
        return x

    def _hidden_to_out(self, hidden: torch.Tensor) -> torch.Tensor:
        gate, value = hidden.chunk(2, dim=1)
        gate = F.gelu(gate)
        return self.project_out(gate.mul_(value))


def normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """``F.normalize(x, dim=-1)`` (eps 1e-12), written with a broadcasting division: the
    same arithmetic, but ``F.normalize``'s ``expand_as`` becomes a materialised ``Expand``
    of the norms in an ONNX export (27 ms of DITN-Real's ONNX Runtime forward at 256²)."""
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(1e-12)


class ISA(nn.Module):
    """Inner-patch self-attention: one-head channel attention inside each patch.

    softmax_over_channels(q̂·k̂ᵀ·t)·v with q̂, k̂ the tokens-axis L2-normalised queries and
    keys and t a learned temperature. t is folded into q̂ so that
    ``scaled_dot_product_attention`` runs with ``scale=1``.
    """

    def __init__(self, dim: int, bias: bool) -> None:
        super().__init__()
        self.temperature = nn.Parameter(torch.ones(1, 1, 1))
        self.qkv = nn.Linear(dim, dim * 3)  # with bias whatever ``bias`` says, as official
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)
        self._folded = FoldedCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path():
            return self.after_norm(x, NO_NORM)
        # The per-token Linear is a 1×1 conv on the (N,C,p,p) patch; no transposes needed.
        weight = self.qkv.weight[:, :, None, None]
        q, k, v = F.conv2d(x, weight, self.qkv.bias).flatten(2).chunk(3, dim=1)  # (N,C,p²)
        q = normalize_rows(q) * self.temperature
        k = normalize_rows(k)
        # One head as an explicit axis: ONNX's attention conversion needs 4-D inputs.
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=1.0)
        return self.project_out(out.view_as(x))

    def after_norm(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """``self(norm(x))`` with gradients off, the norm's conv folded into ``qkv``."""
        weight, bias = first_layer_after(norm, self.qkv, self._folded)
        return self.project_out(self._attend_fast(norm_without_conv(norm, x), weight, bias))

    def _attend_fast(
        self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """The attention of channels_last patches as batched matrix products.

        q, k and v come out token-contiguous, (N, C, p²), so their normalisation over the
        tokens reads contiguous rows (the 1×1-conv form leaves the tokens strided, which is
        eight times slower to normalise). The C×C score matrices are tiny, so the fused
        kernel gains nothing; the output is computed transposed, (N, p², C), which is the
        channels_last patch map ``project_out`` takes.
        """
        n, c, p, _ = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(n, p * p, c)
        weight = weight.expand(n, -1, -1)
        q, k, v = torch.baddbmm(bias[:, None], weight, tokens.mT).chunk(3, dim=1)
        q = F.normalize(q, dim=-1).mul_(self.temperature)
        attention = torch.bmm(q, F.normalize(k, dim=-1).mT).softmax(dim=-1)  # (N, C, C)
        out = torch.bmm(v.mT, attention.mT)  # (N, p², C)
        return out.mT.view_as(x)


class SDA(nn.Module):
    """Spatial-aware attention: ``proj_last(x' · DConvs(a)) · scale`` with (a, x') = proj_first(x).

    DConvs = dw5×5 → dw7×7 (dilation 3) → 1×1. ``scale`` starts at zero, so a fresh SDA is
    the zero map and its layer starts as the identity.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.DConvs = nn.Sequential(
            nn.Conv2d(dim, dim, 5, padding=2, groups=dim),
            nn.Conv2d(dim, dim, 7, padding=9, groups=dim, dilation=3),
            nn.Conv2d(dim, dim, 1),
        )
        self.proj_first = nn.Sequential(nn.Conv2d(dim, dim * 2, 1))
        self.proj_last = nn.Sequential(nn.Conv2d(dim, dim, 1))
        self._folded = FoldedCache()
        self._folded_first = FoldedCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path():
            return self.after_norm(x, NO_NORM)
        attention, value = self.proj_first(x).chunk(2, dim=1)
        if self.training:
            # The dilated conv by phases when training: besides being faster, it avoids
            # oneDNN's dilated depthwise weight gradient, which in bf16 on channels_last
            # maps returns inf/NaN now and then (AMX CPUs, torch 2.13). Not when exporting:
            # the phase sizes would put guards on the traced input size.
            dense, dilated, pointwise = self.DConvs
            attention = pointwise(dilated_depthwise_conv(dense(attention), dilated))
        else:
            attention = self.DConvs(attention)
        return self.proj_last(value * attention) * self.scale

    def after_norm(self, x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
        """``self(norm(x))`` with gradients off: the norm's conv folded into ``proj_first``,
        ``proj_first`` as two convs (dense halves, one freed early), the dilated conv by
        phases, the product in place and ``scale`` folded into ``proj_last``."""
        x = norm_without_conv(norm, x)
        first_weight, first_bias = first_layer_after(norm, self.proj_first[0], self._folded_first)
        dim = first_weight.shape[0] // 2
        dense, dilated, pointwise = self.DConvs
        # Step by step, so that each full-size map is freed as soon as the next exists.
        attention = dense(F.conv2d(x, first_weight[:dim], first_bias[:dim]))
        grid = map_to_phases(attention, dilated.dilation[0])
        attention = None
        grid = conv_on_phases(grid, dilated)
        attention = phases_to_map(grid, x.shape)
        grid = None
        # The 1×1 convs in place, in bands: no other full-size map is needed.
        band = band_rows_for(x.shape[-1], FFN_BAND_PIXELS)
        update_in_bands_(attention, pointwise, attention, band, halo=0)
        value_half = (first_weight[dim:], first_bias[dim:])
        update_in_bands_(
            attention, lambda rows: F.conv2d(rows, *value_half), x, band, 0, torch.Tensor.mul_
        )
        weight, bias = self._folded.get(
            (self.proj_last[0].weight, self.proj_last[0].bias, self.scale), self._scaled_last
        )
        return update_in_bands_(
            attention, lambda rows: F.conv2d(rows, weight, bias), attention, band, 0
        )

    def _scaled_last(self) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.scale.view(-1)
        last = self.proj_last[0]
        return last.weight * scale.view(-1, 1, 1, 1), last.bias * scale


def dilated_depthwise_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a depthwise, dilated, "same"-padded ``conv``, as a dense conv.

    oneDNN has no fast kernel for dilated depthwise convs (about 8× slower than dense ones
    here). A dilation-d conv only ever mixes pixels of the same phase (row mod d, column
    mod d), so the map is split into its d² phases, zero-padded to a common size, and laid
    side by side as channels: one dense depthwise conv with the kernel repeated d² times
    then computes every phase at once. Only multiplications by zero padding differ from
    ``conv``, so the result is equal.
    """
    return phases_to_map(conv_on_phases(map_to_phases(x, conv.dilation[0]), conv), x.shape)


def map_to_phases(x: torch.Tensor, d: int) -> torch.Tensor:
    """(n, c, h, w) → its d² phases side by side, (n·d, d·c, ⌈h/d⌉, ⌈w/d⌉) channels_last."""
    n, c, h, w = x.shape
    rows, cols = -(-h // d), -(-w // d)
    # (n, row phase, rows, cols, column phase, c): as (n·d, d·c, rows, cols) channels_last.
    phases = x.new_zeros(n, d, rows, cols, d, c)
    pixels = x.permute(0, 2, 3, 1)
    for r in range(d):
        for s in range(d):
            part = pixels[:, r::d, s::d]
            phases[:, r, : part.shape[1], : part.shape[2], s] = part
    return phases.view(n * d, rows, cols, d * c).permute(0, 3, 1, 2)


def conv_on_phases(grid: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The dilated depthwise ``conv`` as a dense one on :func:`map_to_phases`'s grid."""
    d = conv.dilation[0]
    bias = None if conv.bias is None else conv.bias.repeat(d)
    padding = tuple((k - 1) // 2 for k in conv.kernel_size)
    groups = grid.shape[1]
    return F.conv2d(grid, conv.weight.repeat(d, 1, 1, 1), bias, padding=padding, groups=groups)


def phases_to_map(grid: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`map_to_phases` for a map of ``shape``, channels_last."""
    n, c = shape[:2]
    d = grid.shape[0] // n
    rows, cols = grid.shape[-2:]
    phases = grid.permute(0, 2, 3, 1).reshape(n, d, rows, cols, d, c)
    result = torch.empty(
        shape, dtype=grid.dtype, device=grid.device, memory_format=torch.channels_last
    )
    result_pixels = result.permute(0, 2, 3, 1)
    for r in range(d):
        for s in range(d):
            part = result_pixels[:, r::d, s::d]
            part.copy_(phases[:, r, : part.shape[1], : part.shape[2], s])
    return result


class PreNormLayer(nn.Module):
    """``x + mixer(norm1(x))`` then ``x + ffn(norm2(x))``: the body of an ITL and a SAL.

    The norms are registered as ``<prefix>1``/``<prefix>2`` (``conv1``/``conv2`` for
    DITN-Real, ``norm1``/``norm2`` for the LayerNorm variants) and the mixer under
    ``mixer_name``, which keeps the official key names.
    """

    def __init__(
        self,
        dim: int,
        mixer_name: str,
        mixer: nn.Module,
        norm: NormKind,
        ffn_expansion: float,
        bias: bool,
    ) -> None:
        super().__init__()
        self.mixer_name = mixer_name
        self.norm_names = (f"{norm.prefix}1", f"{norm.prefix}2")
        self.add_module(mixer_name, mixer)
        for name in self.norm_names:
            self.add_module(name, norm.factory(dim))
        self.ffn = GatedDConvFFN(dim, ffn_expansion, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path():
            return self.update_(x.clone(memory_format=torch.channels_last))
        norm1, norm2 = (getattr(self, name) for name in self.norm_names)
        x = x + getattr(self, self.mixer_name)(norm1(x))
        return x + self.ffn(norm2(x))

    def update_(self, x: torch.Tensor) -> torch.Tensor:
        """The layer applied to ``x`` in place (gradients off; ``x`` must be the caller's
        own): no map is allocated for either residual sum."""
        norm1, norm2 = (getattr(self, name) for name in self.norm_names)
        x.add_(getattr(self, self.mixer_name).after_norm(x, norm1))
        return self.ffn.add_to(x, norm2)


class ITL(PreNormLayer):
    """Inner-patch transformer layer (ISA + FFN); runs on a stack of patches."""

    def __init__(self, dim: int, norm: NormKind, ffn_expansion: float, bias: bool) -> None:
        super().__init__(dim, "attn", ISA(dim, bias), norm, ffn_expansion, bias)


class SAL(PreNormLayer):
    """Spatial-aware layer (SDA + FFN); runs on the full feature map."""

    def __init__(self, dim: int, norm: NormKind, ffn_expansion: float, bias: bool) -> None:
        super().__init__(dim, "SDA", SDA(dim), norm, ffn_expansion, bias)


def unfold_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """(B,C,H,W) → (B·H/p·W/p, C, p, p), patches in row-major order.

    A channels_last map gives channels_last patches (no layout change on the way).
    """
    b, c, h, w = x.shape
    x = x.view(b, c, h // patch, patch, w // patch, patch)
    if is_channels_last(x):
        return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, patch, patch, c).permute(0, 3, 1, 2)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(-1, c, patch, patch)


def fold_patches(patches: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`unfold_patches` for a map shaped like ``like`` (same layout rule)."""
    b, c, h, w = like.shape
    patch = patches.shape[-1]
    if is_channels_last(patches):
        x = patches.permute(0, 2, 3, 1).reshape(b, h // patch, w // patch, patch, patch, c)
        return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c).permute(0, 3, 1, 2)
    x = patches.view(b, h // patch, w // patch, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


# Pixels per band of patch rows in the fast path's ITLs (see UFONE._forward_fast); the
# same cache-sized bands as the FFN's.
ITL_BAND_PIXELS = 32 * 256


class UFONE(nn.Module):
    """UnFolding ONce is Enough: ITLs on 8×8 patches, then SALs on the full map.

    Args:
        dim: channels.
        itl_blocks: number of ITLs.
        sal_blocks: number of SALs.
        norm: norm of the ITLs/SALs.
        ffn_expansion: FFN hidden factor.
        bias: bias of the FFN convs and of ISA's ``project_out``.
        patch_size: side of the square patches.
        end_conv: end with a conv3x3 (``conv``), as the paper's figure draws it.
    """

    def __init__(
        self,
        dim: int,
        itl_blocks: int,
        sal_blocks: int,
        norm: NormKind,
        ffn_expansion: float = 2.0,
        bias: bool = False,
        patch_size: int = 8,
        end_conv: bool = False,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.ITLs = nn.Sequential(*(ITL(dim, norm, ffn_expansion, bias) for _ in range(itl_blocks)))
        self.SALs = nn.Sequential(*(SAL(dim, norm, ffn_expansion, bias) for _ in range(sal_blocks)))
        self.conv = nn.Conv2d(dim, dim, 3, padding=1) if end_conv else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path():
            return self._forward_fast(x)
        local = self.ITLs(unfold_patches(x, self.patch_size))
        return self.conv(self.SALs(fold_patches(local, x)))

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Gradients off: the ITLs see one band of patch rows at a time (patches never
        interact there), so only a band's attention and FFN maps exist at once."""
        patch = self.patch_size
        band = band_rows_for(x.shape[-1] * patch, ITL_BAND_PIXELS) * patch
        local = torch.empty_like(x, memory_format=torch.channels_last)
        for start in range(0, x.shape[-2], band):
            rows = slice(start, start + band)
            patches = unfold_patches(x[:, :, rows], patch)
            if patches.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
                # One patch row in channels_last unfolds as a view: the layers must not
                # write into ``x``.
                patches = patches.clone(memory_format=torch.channels_last)
            for layer in self.ITLs:
                layer.update_(patches)
            local[:, :, rows] = fold_patches(patches, local[:, :, rows])
        patches = None
        for layer in self.SALs:
            layer.update_(local)
        return self.conv(local)


class DITN(nn.Module):
    """DITN / DITN-Tiny / DITN-Real; input and output RGB in [0, 1], any size ≥ 5 px.

    Args:
        scale: upscale factor.
        dim: channels.
        ufone_blocks: number of UFONEs.
        itl_blocks: ITLs per UFONE.
        sal_blocks: SALs per UFONE.
        ffn_expansion: FFN hidden factor.
        bias: bias of the FFN convs and of ISA's ``project_out``.
        patch_size: ITL patch side (the input is padded to a multiple of it; the official
            code hard-codes 8, which equals the default).
        norm: ``"tanh_conv"`` (DITN-Real) or ``"layer_norm"`` (DITN, DITN-Tiny).
        unit_conv: end every UFONE with a conv3x3.
        in_channels: image channels.
    """

    def __init__(
        self,
        scale: int = 4,
        dim: int = 60,
        ufone_blocks: int = 1,
        itl_blocks: int = 4,
        sal_blocks: int = 4,
        ffn_expansion: float = 2.0,
        bias: bool = False,
        patch_size: int = 8,
        norm: str = "tanh_conv",
        unit_conv: bool = False,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.patch_size = patch_size
        self.sft = nn.Conv2d(in_channels, dim, 3, padding=1)
        self.UFONE = nn.Sequential(
            *(
                UFONE(
                    dim,
                    itl_blocks,
                    sal_blocks,
                    NORMS[norm],
                    ffn_expansion=ffn_expansion,
                    bias=bias,
                    patch_size=patch_size,
                    end_conv=unit_conv,
                )
                for _ in range(ufone_blocks)
            )
        )
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        self.upsample = PixelShuffleUpsampler(dim, scale, in_channels)

    # oneDNN's NHWC depthwise and 1×1 convolutions are faster here (see
    # lightsr.archs.blocks.to_inference_layout).
    prefers_channels_last = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        shallow = self.sft(pad_to_multiple(x, self.patch_size))
        deep = self.conv_after_body(self.UFONE(shallow))
        deep = deep.add_(shallow) if fast_path() else deep + shallow
        shallow = None  # the upsampler's output is the largest map; free this one first
        return self.upsample(deep)[..., : h * self.scale, : w * self.scale]


# Width, FFN and image channels shared by every variant (the class defaults).
_COMMON = {"dim": 60, "ffn_expansion": 2.0, "bias": False, "in_channels": 3}
DITN_REAL_CONFIG = {
    "ufone_blocks": 1,
    "itl_blocks": 4,
    "sal_blocks": 4,
    "norm": "tanh_conv",
    "unit_conv": False,
    **_COMMON,
}
DITN_CONFIG = {
    "ufone_blocks": 3,
    "itl_blocks": 2,
    "sal_blocks": 2,
    "norm": "layer_norm",
    "unit_conv": True,
    **_COMMON,
}
DITN_TINY_CONFIG = {
    "ufone_blocks": 1,
    "itl_blocks": 2,
    "sal_blocks": 2,
    "norm": "layer_norm",
    "unit_conv": False,
    **_COMMON,
}
_VARIANT_CONFIGS = {
    "ditn_real": DITN_REAL_CONFIG,
    "ditn": DITN_CONFIG,
    "ditn_tiny": DITN_TINY_CONFIG,
}
_DESCRIPTIONS = {
    "ditn_real": ("DITN-Real (official code): 1 UFONE, tanh+conv norm, 0.44M params", False),
    "ditn": ("DITN (paper-derived): 3 UFONEs with LayerNorm, sizes assumed", True),
    "ditn_tiny": ("DITN-Tiny (paper-derived): 1 UFONE with LayerNorm, sizes assumed", True),
}
for _name, (_description, _paper_derived) in _DESCRIPTIONS.items():
    register_arch(
        ArchSpec(
            name=_name,
            family="ditn",
            builder=DITN,
            min_size=5,  # reflect padding to a multiple of 8 needs pad < size
            description=_description,
            paper_derived=_paper_derived,
            defaults=_VARIANT_CONFIGS[_name],
        )
    )


def read_ditn(state_dict: StateDict) -> Reading | None:
    """Read a DITN-family checkpoint: depths from key counts, widths from shapes."""
    needed = (
        "sft.weight",
        "UFONE.0.ITLs.0.attn.qkv.weight",
        "conv_after_body.weight",
        "upsample.0.weight",
        "UFONE.0.ITLs.0.ffn.project_out.weight",
    )
    if not all(k in state_dict for k in needed):
        return None
    dim, in_channels = state_dict["sft.weight"].shape[:2]
    scale = scale_from_shuffle(state_dict["upsample.0.weight"].shape[0], in_channels)
    norm = next(
        (n for n, kind in NORMS.items() if f"UFONE.0.ITLs.0.{kind.prefix}1.weight" in state_dict),
        None,
    )
    if scale is None or norm is None:
        return None
    config = {
        "ufone_blocks": count_indexed(state_dict, "UFONE.{}."),
        "itl_blocks": count_indexed(state_dict, "UFONE.0.ITLs.{}."),
        "sal_blocks": count_indexed(state_dict, "UFONE.0.SALs.{}."),
        "norm": norm,
        "unit_conv": "UFONE.0.conv.weight" in state_dict,
        "dim": dim,
        "ffn_expansion": state_dict["UFONE.0.ITLs.0.ffn.project_out.weight"].shape[1] / dim,
        "bias": "UFONE.0.ITLs.0.attn.project_out.bias" in state_dict,
        "in_channels": in_channels,
    }
    return Reading("ditn", scale, config, state_dict)


register_reader("ditn", read_ditn)
