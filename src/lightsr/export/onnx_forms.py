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
* EMT: the striped-window attention (no bias) runs over all windows in one fused call.
* ESC: the window attention (relative-position bias) runs in :data:`ESC_GROUPS` groups of
  windows, so one call's probabilities stay small (16 MiB at 256×256).
* DITN: the UFONE keeps the fast path's structure: its ITLs (which never mix patches) run
  on :data:`DITN_BANDS` bands of patch rows one after another, the whole ITL stack per
  band, and each SAL's gated FFN runs on bands of rows with one row of context on each
  side for its depthwise 3×3 conv (which makes each band exactly the whole-map result).
  So the FFN's 4×-wide hidden maps and the patch stack's attention maps exist for one
  band at a time. The bands are symbolic in the input size (some may be empty for small
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

from lightsr.models import SRModel

# Domain and op of ONNX Runtime's fused attention.
ATTENTION_DOMAIN = "com.microsoft"
ATTENTION_OP = "MultiHeadAttention"
# Window groups of ESC's attention: 64 windows of 32×32 at 256×256 → 4 per group, one call
# holds 4 windows × 4 heads × 1024² probabilities (64 MiB) at a time.
ESC_GROUPS = 16
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
    """:class:`lightsr.archs.emt.StripedWindowAttention` with one fused attention call per
    slice (q·qᵀ, unscaled, no bias: ONNX Runtime's flash kernel)."""

    def _attend_slice(
        self, qv: torch.Tensor, window: tuple[int, int], shift: tuple[int, int]
    ) -> torch.Tensor:
        n, channels, h, w = qv.shape
        win_h, win_w = window
        rows, cols = (h + win_h - 1) // win_h, (w + win_w - 1) // win_w
        height, width = rows * win_h, cols * win_w
        qv = F.pad(qv, (0, width - w, 0, height - h), mode="reflect")
        if shift != (0, 0):
            qv = torch.roll(qv, shifts=shift, dims=(2, 3))
        heads, head_dim = self.num_heads, channels // (2 * self.num_heads)
        # (n, qv, head, c, rows, win_h, cols, win_w) → (qv, n·head·rows·cols, win_h·win_w, c)
        tokens = (
            qv.view(n, 2, heads, head_dim, rows, win_h, cols, win_w)
            .permute(1, 0, 2, 4, 6, 5, 7, 3)
            .reshape(2, n * heads * rows * cols, win_h * win_w, head_dim)
        )
        q, v = tokens.unbind(0)
        out = fused_attention(q, q, v, None, 1, 1.0)
        out = (
            out.view(n, heads, rows, cols, win_h, win_w, head_dim)
            .permute(0, 1, 6, 2, 4, 3, 5)
            .reshape(n, heads * head_dim, height, width)
        )
        if shift != (0, 0):
            out = torch.roll(out, shifts=(-shift[0], -shift[1]), dims=(2, 3))
        return out[..., :h, :w]


# ------------------------------------------------------------------------------------ ESC


def _esc_attention_class():
    from lightsr.archs.esc import WindowAttention

    return WindowAttention


class OnnxWindowAttention(_esc_attention_class()):
    """:class:`lightsr.archs.esc.WindowAttention` with its windows attended in
    :data:`ESC_GROUPS` fused calls (the relative-position bias as attention bias)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from lightsr.archs.blocks import pad_to_multiple

        height, width = x.shape[-2:]
        qkv = self.to_qkv(pad_to_multiple(x, self.window_size, mode="reflect"))
        batch, channels3, padded_h, padded_w = qkv.shape
        win, heads = self.window_size, self.num_heads
        head_dim = channels3 // (3 * heads)
        rows, cols = padded_h // win, padded_w // win
        # Channels [q | k | v], each heads × head_dim → (3, windows, tokens, heads·head_dim).
        qkv = qkv.view(batch, 3, heads, head_dim, rows, win, cols, win)
        qkv = qkv.permute(1, 0, 4, 6, 5, 7, 2, 3).reshape(
            3, batch * rows * cols, win * win, heads * head_dim
        )
        query, key, value = qkv.unbind(0)
        bias = self.bias_matrix().to(query.dtype)
        windows = query.shape[0]
        outputs = []
        for group in range(ESC_GROUPS):
            # Symbolic bounds (see lightsr.archs.blocks.grouped_attention).
            start = windows * group // ESC_GROUPS
            end = windows * (group + 1) // ESC_GROUPS
            q, k, v = (t.narrow(0, start, end - start) for t in (query, key, value))
            outputs.append(fused_attention(q, k, v, bias, heads, head_dim**-0.5))
        out = torch.cat(outputs, dim=0)  # (windows, tokens, heads·head_dim)
        out = out.view(batch, rows, cols, win, win, heads * head_dim)
        out = out.permute(0, 5, 1, 3, 2, 4).reshape(batch, heads * head_dim, padded_h, padded_w)
        return self.to_out(out[:, :, :height, :width])


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
        count = patches.shape[0]
        outputs = []
        for group in range(DITN_BANDS):
            # Symbolic bounds (see lightsr.archs.blocks.grouped_attention); patches are in
            # row-major order, so a group is a band of patch rows.
            start = count * group // DITN_BANDS
            end = count * (group + 1) // DITN_BANDS
            outputs.append(self.ITLs(patches.narrow(0, start, end - start)))
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
    """
    if ffn.project_in.bias is not None:
        return ffn(x)
    height = x.shape[2]
    padded = F.pad(x, (0, 0, 1, 1))
    dwconv = ffn.dwconv
    outputs = []
    for band in range(bands):
        start = height * band // bands
        end = height * (band + 1) // bands
        hidden = ffn.project_in(padded.narrow(2, start, end - start + 2))
        hidden = F.conv2d(hidden, dwconv.weight, dwconv.bias, padding=(0, 1), groups=dwconv.groups)
        gate, value = hidden.chunk(2, dim=1)
        outputs.append(ffn.project_out(F.gelu(gate) * value))
    return torch.cat(outputs, dim=2)
