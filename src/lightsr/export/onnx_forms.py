"""ONNX forms of the networks: the same functions, as graphs ONNX Runtime runs in little memory.

A traced network takes its faithful path (see :func:`lightsr.archs.blocks.fast_path`), and
ONNX Runtime runs that graph as written: every attention becomes MatMul → Softmax → MatMul,
which holds the score matrices of all the windows it attends at once, and every map is a
whole map, where lightsr's torch fast path works in bands. :func:`onnx_form` returns a copy
of a network in which those parts are replaced by equivalent modules, used only for the
fp32 ONNX export; tests check them against the faithful forward in torch.

* Attention goes through :func:`fused_attention`, a custom op exported as ONNX Runtime's
  ``com.microsoft.MultiHeadAttention`` (a contrib op of stock ONNX Runtime, fp32 on the
  CPU). Without an additive bias its CPU kernel is a flash kernel that holds a few score
  tiles per thread and no score matrix; with one it holds one (windows, heads, N, N)
  probability buffer per call (no separate MatMul, Add and Softmax outputs).
* Windows are gathered, not permuted. Permuting windows out of an NCHW map moves the
  H·W-strided channels innermost, which ONNX Runtime's Transpose does element by element;
  the EMT and ESC forms transpose a map to NHWC once (a 4-D transpose, which ONNX Runtime
  does fast or folds into a conv's output reorder) and take the windows' tokens from its
  pixel rows with a Gather, reflect padding and roll in the indices
  (:func:`window_indices`); another Gather puts the attended tokens back.
* EMT: per slice, the q and v rows of each (pixel, head) of the qv conv's output are
  gathered with the heads folded into the windows (no transpose in the attention kernel),
  one fused call over all windows; one Gather merges all slices back for ``proj``.
* ESC: the window attention (relative-position bias) runs in :data:`ESC_GROUPS` groups of
  windows, so one call's probabilities stay small (32 MiB at 256×256). Each group gathers
  its windows' input pixels and computes its q, k and v with Gemms (``to_qkv``'s weights),
  so the whole qkv map never exists; ``to_out`` is a Gemm on the merged pixels.
* DITN: the UFONE keeps the fast path's structure: its ITLs (which never mix patches) run
  on :data:`DITN_BANDS` bands of patch rows one after another, the whole ITL stack per
  band, and each SAL's gated FFN runs on bands of rows with one row of context on each
  side for its depthwise 3×3 conv (which makes each band exactly the whole-map result).
  So the FFN's 4×-wide hidden maps and the patch stack's attention maps exist for one
  band at a time; their gate and value halves come from convs of their own (no split). The
  bands are symbolic in the input size (some may be empty for small
  inputs).
* FMEN: no change (no attention, no wide maps).

fp16 exports keep the faithful graph: ONNX Runtime has no fp16 CPU kernel of
``MultiHeadAttention``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lightsr.archs.blocks import symbolic_splits
from lightsr.models import SRModel

# Domain and op of ONNX Runtime's fused attention.
ATTENTION_DOMAIN = "com.microsoft"
ATTENTION_OP = "MultiHeadAttention"
# Window groups of ESC's attention: 64 windows of 32×32 at 256×256 → 2 per group, one call
# holds 2 windows × 4 heads × 1024² probabilities (32 MiB) at a time. ONNX Runtime's kernel
# with a bias attends a window faster in small calls (ESC-light at 256×256, attention: 676 ms
# in 16 groups, 500 ms in 64); 32 groups are as fast as 64 over the whole forward (1.65-1.74 s
# both), with less memory (159 vs 183 MiB) and an export about a third shorter.
ESC_GROUPS = 32
# Bands of DITN's patch rows (ITLs) and of rows (SAL FFNs): 32 rows each at 256×256, as
# the torch fast path's cache-sized bands.
DITN_BANDS = 8


@torch.library.custom_op("lightsr_onnx::attention", mutates_args=())
def fused_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    bias: torch.Tensor | None,
    heads: int,
    scale: float,
) -> torch.Tensor:
    """Multi-head attention in ``MultiHeadAttention``'s layout: (B, S, heads·D) queries,
    (B, L, heads·D) keys, (B, L, heads·Dv) values, optional additive ``bias`` (1 or B, heads,
    S, L); returns (B, S, heads·Dv). Exported as one ``com.microsoft.MultiHeadAttention``."""
    batch, length = query.shape[0], query.shape[1]
    q, k, v = (t.unflatten(2, (heads, -1)).transpose(1, 2) for t in (query, key, value))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    return out.transpose(1, 2).reshape(batch, length, value.shape[2])


@fused_attention.register_fake
def _fused_attention_shape(query, key, value, bias, heads, scale):
    return query.new_empty(query.shape[0], query.shape[1], value.shape[2])


def translation_table() -> dict:
    """``custom_translation_table`` of :func:`torch.onnx.export` for the ops of this module."""
    return {torch.ops.lightsr_onnx.attention.default: _attention_to_onnx()}


def _attention_to_onnx():
    import onnxscript

    _register_attention_schema()
    op = onnxscript.values.Op(onnxscript.values.Opset(ATTENTION_DOMAIN, 1), ATTENTION_OP)

    def attention(query, key, value, bias, heads: int, scale: float):
        if bias is None:
            return op(query, key, value, num_heads=heads, scale=scale)
        return op(query, key, value, None, None, bias, num_heads=heads, scale=scale)

    return attention


def _register_attention_schema() -> None:
    """Declare ``com.microsoft.MultiHeadAttention`` to the ``onnx`` package (which has no
    schemas of ONNX Runtime's contrib ops), so the exporter can write the node."""
    import onnx
    from onnx.defs import OpSchema

    if onnx.defs.has(ATTENTION_OP, ATTENTION_DOMAIN):
        return
    optional = OpSchema.FormalParameterOption.Optional
    inputs = [OpSchema.FormalParameter(name, "T") for name in ("query", "key", "value")]
    inputs += [
        OpSchema.FormalParameter(name, "T", param_option=optional)
        for name in ("bias", "key_padding_mask", "attention_bias")
    ]
    onnx.defs.register_schema(
        OpSchema(
            ATTENTION_OP,
            ATTENTION_DOMAIN,
            1,
            inputs=inputs,
            outputs=[OpSchema.FormalParameter("output", "T")],
            type_constraints=[("T", ["tensor(float)"], "float32")],
            attributes=[
                OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "heads"),
                OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, "score scale"),
            ],
        )
    )


def onnx_form(model: SRModel) -> SRModel:
    """A copy of ``model`` (deploy form, fp32) in its ONNX form (see the module doc); the
    model itself when its family has none."""
    if model.family not in ("emt", "esc", "ditn"):
        return model
    module = copy.deepcopy(model.module)
    if model.family == "emt":
        from lightsr.archs.emt import StripedWindowAttention

        _swap_class(module, StripedWindowAttention, OnnxStripedWindowAttention)
    elif model.family == "esc":
        from lightsr.archs.esc import WindowAttention

        _swap_class(module, WindowAttention, OnnxWindowAttention)
    else:
        from lightsr.archs.ditn import UFONE

        for name, child in list(module.named_children()):
            if isinstance(child, nn.Sequential) and all(isinstance(u, UFONE) for u in child):
                setattr(module, name, nn.Sequential(*(OnnxUFONE(u) for u in child)))
    return model.with_module(module)


def _swap_class(module: nn.Module, kind: type, form: type) -> None:
    for child in module.modules():
        if type(child) is kind:
            child.__class__ = form


# ------------------------------------------------------------------------------------ EMT


def _emt_attention_class():
    from lightsr.archs.emt import StripedWindowAttention

    return StripedWindowAttention


class OnnxStripedWindowAttention(_emt_attention_class()):
    """:class:`lightsr.archs.emt.StripedWindowAttention` with its windows gathered from pixel
    rows (channels innermost), one fused attention call per slice (q·qᵀ, unscaled, no bias:
    ONNX Runtime's flash kernel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, dim, h, w = x.shape
        heads, slices = self.num_heads, len(self.windows)
        head_dim = dim // (slices * heads)
        # One NCHW→NHWC transpose (a fast 4-D one) for all slices: rows of head_dim channels,
        # per pixel (slice, q|v, head). Permuting windows straight from NCHW would move the
        # H·W-strided channels innermost, which ONNX Runtime transposes element by element.
        qv = self.attn(x).permute(0, 2, 3, 1).reshape(-1, head_dim)
        head = torch.arange(heads, device=x.device)
        outputs, merges, offset = [], [], 0
        for index, (window, shift) in enumerate(zip(self.windows, self.shifts, strict=True)):
            partition, merge = window_indices(n, h, w, window, shift, x.device)
            windows, tokens = partition.shape
            # Heads folded into the windows, (windows·heads, tokens, head_dim): no transpose
            # in the attention kernel.
            rows = partition.view(windows, 1, tokens) * (2 * slices * heads) + head.view(-1, 1)
            query, value = (
                qv.index_select(0, (rows + (2 * index + part) * heads).flatten()).view(
                    windows * heads, tokens, head_dim
                )
                for part in (0, 1)
            )
            outputs.append(fused_attention(query, query, value, None, 1, 1.0).flatten(0, 1))
            # Row of (pixel, head) in the outputs, all slices' outputs concatenated.
            merged = (merge.view(-1, 1) // tokens * heads + head) * tokens + merge.view(
                -1, 1
            ) % tokens
            merges.append(offset + merged)
            offset = offset + windows * heads * tokens
        # One gather merges all slices back to pixels, channels (slice, head, c) as proj reads.
        out = torch.cat(outputs).index_select(0, torch.cat(merges, dim=1).flatten())
        return self.proj(out.view(n, h, w, dim).permute(0, 3, 1, 2))


def window_indices(
    batch: int,
    h: int,
    w: int,
    window: tuple[int, int],
    shift: tuple[int, int],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather indices between the pixels of a (batch, h, w) map, flattened, and its windows.

    The map is reflect-padded at the bottom and right to whole ``window``s and rolled by
    ``shift`` (as ``torch.roll``, each 0 ≤ shift < window); windows are ordered (batch, row,
    column), their tokens row-major. Returns ``partition``, (windows, tokens): the pixel each
    token reads, and ``merge``, (batch·h·w,): the token (flattened over windows) that each
    pixel of the unpadded map reads back after the roll is undone. Symbolic in the sizes,
    without a modulo by a symbolic size (which the ONNX exporter cannot translate).
    """
    if not all(0 <= roll < win for roll, win in zip(shift, window, strict=True)):
        raise ValueError(f"shift {shift} must lie in [0, window {window})")
    win_h, win_w = window
    rows, cols = (h + win_h - 1) // win_h, (w + win_w - 1) // win_w
    tokens = win_h * win_w

    def source(size: int, padded: int, roll: int) -> torch.Tensor:
        # Rolled position → padded position (one wrap: roll < window ≤ padded) → pixel
        # (reflected about the last one, as reflect padding).
        position = torch.arange(padded, device=device) - roll
        position = torch.where(position < 0, position + padded, position)
        return (size - 1) - ((size - 1) - position).abs()

    def place(size: int, padded: int, win: int, roll: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Pixel → rolled position (one wrap) → (window row or column, offset in the window).
        position = torch.arange(size, device=device) + roll
        position = torch.where(position < padded, position, position - padded)
        return position // win, position % win

    pixel = source(h, rows * win_h, shift[0]).view(rows, 1, win_h, 1) * w + source(
        w, cols * win_w, shift[1]
    ).view(1, cols, 1, win_w)
    row, y = place(h, rows * win_h, win_h, shift[0])
    col, x = place(w, cols * win_w, win_w, shift[1])
    token = (row * (cols * tokens) + y * win_w).view(-1, 1) + (col * tokens + x).view(1, -1)
    images = torch.arange(batch, device=device).view(-1, 1)
    partition = (images * (h * w) + pixel.view(1, -1)).view(-1, tokens)
    merge = (images * (rows * cols * tokens) + token.view(1, -1)).view(-1)
    return partition, merge


# ------------------------------------------------------------------------------------ ESC


def _esc_attention_class():
    from lightsr.archs.esc import WindowAttention

    return WindowAttention


class OnnxWindowAttention(_esc_attention_class()):
    """:class:`lightsr.archs.esc.WindowAttention` on pixel rows (channels innermost): one
    NCHW→NHWC transpose in, one back out; its windows gathered (padding included) in
    :data:`ESC_GROUPS` groups, each group's q, k and v computed on them (``to_qkv`` as three
    Gemms) and attended in one fused call (the relative-position bias as attention bias);
    the outputs gathered back to pixels and ``to_out`` as a Gemm on them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, dim, h, w = x.shape
        win, heads = self.window_size, self.num_heads
        partition, merge = window_indices(n, h, w, (win, win), (0, 0), x.device)
        weights = self.to_qkv.weight.flatten(1).chunk(3)
        biases = self.to_qkv.bias.chunk(3)
        bias = self.bias_matrix().to(x.dtype)
        # to_qkv acts on each pixel alone, so it commutes with the padding and the windows.
        pixels = x.permute(0, 2, 3, 1).reshape(n * h * w, dim)
        windows, tokens = partition.shape
        outputs = []
        for start, length in symbolic_splits(windows, ESC_GROUPS):
            pixel_rows = pixels.index_select(0, partition.narrow(0, start, length).flatten())
            q, k, v = (
                F.linear(pixel_rows, weight, part).view(length, tokens, dim)
                for weight, part in zip(weights, biases, strict=True)
            )
            outputs.append(fused_attention(q, k, v, bias, heads, (dim // heads) ** -0.5))
        out = torch.cat(outputs, dim=0).flatten(0, 1).index_select(0, merge)
        out = F.linear(out, self.to_out.weight.flatten(1), self.to_out.bias)
        return out.view(n, h, w, dim).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------------- DITN


class OnnxUFONE(nn.Module):
    """:class:`lightsr.archs.ditn.UFONE` in bands (see the module doc)."""

    def __init__(self, ufone: nn.Module) -> None:
        super().__init__()
        self.patch_size = ufone.patch_size
        self.ITLs = ufone.ITLs
        self.SALs = ufone.SALs
        for layer in self.SALs:
            layer.SDA = OnnxSDA(layer.SDA)
        self.conv = ufone.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from lightsr.archs.ditn import fold_patches, unfold_patches

        patches = unfold_patches(x, self.patch_size)
        # Patches are in row-major order, so a group is a band of patch rows.
        outputs = [
            self.ITLs(patches.narrow(0, start, length))
            for start, length in symbolic_splits(patches.shape[0], DITN_BANDS)
        ]
        x = fold_patches(torch.cat(outputs, dim=0), x)
        for layer in self.SALs:
            norm1, norm2 = (getattr(layer, name) for name in layer.norm_names)
            x = x + getattr(layer, layer.mixer_name)(norm1(x))
            x = x + banded_ffn(layer.ffn, norm2(x))
        return self.conv(x)


class OnnxSDA(nn.Module):
    """:class:`lightsr.archs.ditn.SDA` with ``proj_first`` as two convs (no 2C-wide map and
    no split) and ``scale`` folded into ``proj_last``, as its fast path computes it."""

    def __init__(self, sda: nn.Module) -> None:
        super().__init__()
        first, last = sda.proj_first[0], sda.proj_last[0]
        dim = first.out_channels // 2
        self.to_attention = nn.Conv2d(first.in_channels, dim, 1)
        self.to_value = nn.Conv2d(first.in_channels, dim, 1)
        self.DConvs = sda.DConvs
        self.proj_last = nn.Conv2d(last.in_channels, last.out_channels, 1)
        with torch.no_grad():
            self.to_attention.weight.copy_(first.weight[:dim])
            self.to_attention.bias.copy_(first.bias[:dim])
            self.to_value.weight.copy_(first.weight[dim:])
            self.to_value.bias.copy_(first.bias[dim:])
            scale = sda.scale.reshape(-1)
            self.proj_last.weight.copy_(last.weight * scale.reshape(-1, 1, 1, 1))
            self.proj_last.bias.copy_(last.bias * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention = self.DConvs(self.to_attention(x))
        return self.proj_last(self.to_value(x) * attention)


def banded_ffn(ffn: nn.Module, x: torch.Tensor, bands: int = DITN_BANDS) -> torch.Tensor:
    """``ffn(x)`` for DITN's gated FFN, computed on ``bands`` bands of rows.

    Each band is computed from its rows and one more on each side (zero rows at the map's
    borders, where the depthwise conv pads with zeros), which makes it exactly the whole-map
    result. The zero rows are zeros of ``x``: ``project_in`` has no bias in any DITN, so
    they stay zero up to the depthwise conv. ``x`` needs at least ``bands`` rows (DITN's maps
    have a multiple of its 8-pixel patches, and :data:`DITN_BANDS` is 8).

    The gate and value halves of the hidden map are made by convolutions of their own
    (the halves of ``project_in``'s and ``dwconv``'s weights), so no map is split.
    """
    if ffn.project_in.bias is not None:
        return ffn(x)
    height = x.shape[2]
    padded = F.pad(x, (0, 0, 1, 1))
    halves = [_hidden_half(ffn, half) for half in (0, 1)]
    outputs = []
    for start, length in symbolic_splits(height, bands):
        rows = padded.narrow(2, start, length + 2)
        gate, value = (
            F.conv2d(F.conv2d(rows, w_in), w_dw, b_dw, padding=(0, 1), groups=w_dw.shape[0])
            for w_in, w_dw, b_dw in halves
        )
        outputs.append(ffn.project_out(F.gelu(gate) * value))
    return torch.cat(outputs, dim=2)


def _hidden_half(
    ffn: nn.Module, half: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``project_in``'s and ``dwconv``'s weights (and ``dwconv``'s bias) of the gate (0) or
    value (1) half of a gated FFN's hidden channels."""
    hidden = ffn.project_out.in_channels
    part = slice(half * hidden, (half + 1) * hidden)
    bias = ffn.dwconv.bias if ffn.dwconv.bias is None else ffn.dwconv.bias[part]
    return ffn.project_in.weight[part], ffn.dwconv.weight[part], bias
