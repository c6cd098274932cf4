"""NCNN forms of the networks: the same functions, written with ops that NCNN can express.

An NCNN blob has at most four axes (w, h, d, c) and no batch axis; shapes that depend on the
input size can only be written as the shape expressions of ``Reshape`` and ``Crop``
(see ncnn's ``docs/developer-guide/expression.md``), and ``Padding`` has fixed amounts.
The faithful graphs of the transformer networks break these rules (6-D patch and window
partitions, padding by an amount that depends on the size). :func:`ncnn_form` returns a copy
of a network in which the offending parts are replaced by equivalent modules, used only for
the NCNN export; tests check them against the faithful forward in torch.

* FMEN: no change of ops; the attention branches are balanced (:meth:`FMEN.balance_`,
  same function) so that no activation exceeds fp16's range (the official deploy weights
  reach 5e7 inside the branches, which fp16 storage on a GPU turns into ``inf``).
* DITN: each UFONE's patch-local operations are done on the full map. Every pointwise op
  (1×1 convs, tanh, GELU, residuals) commutes with the patch partition. The attention
  inside each 8×8 patch gathers the patches with reshapes and permutes of at most four
  axes (:func:`patch_attention`). The FFN's depthwise 3×3 conv, which sees zero padding at
  every patch border, runs on the map spread out with a one-pixel zero gap around each
  patch (fixed pads of 3-axis views), then the gaps are cut away.
* EMT (:class:`NcnnEMT`): each striped-window attention slice is reflect-padded to its
  window grid by a fixed pad and a crop (so inputs need the longest window side, 32 px),
  rolled by crops and concats (:func:`roll2d`), and attended per window and head with
  views of at most four axes (:func:`window_tokens`, :func:`heads_attention`). The
  one-pixel channel shifts are the official one-hot depthwise convs (the PixelMixer's
  circular pad as crops and concats); BatchNorm of the qv conv and the output mean shift
  are folded into convs.
* ESC and ESC-Real (:class:`NcnnESC`): the image is padded to the window, so the blocks'
  own padding is a no-op; window attention as for EMT, its relative-position bias built in
  the graph from the small table (:meth:`NcnnWindowAttention.bias`, no ``MemoryData``);
  the large kernel is a plain conv, the dynamic 3×3 depthwise conv nine shifted crops
  times per-channel kernel entries; ESC's nearest-upsampled input is added before the
  ``PixelShuffle``. ESC-FP has no form (see :data:`UNSUPPORTED`).

The input padding of :meth:`lightsr.models.SRModel.forward` (reflect, to a multiple of the
window) has an amount that depends on the size; :class:`NcnnNetwork` pads by the largest
amount (``multiple - 1``, fixed) and crops to the padded size with a shape expression,
which gives the same pixels (reflect padding by less is a prefix of it). That needs inputs
of at least ``multiple`` pixels per side.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lightsr.errors import ExportError
from lightsr.models import SRModel

# Variants without an NCNN form, and why (the export refuses them with this reason).
UNSUPPORTED = {
    "esc_fp": (
        "its bicubic image residual would be an NCNN Interp layer, which chaiNNer counts as "
        "a second upsampling, and its decomposed ConvAttn has no NCNN form in lightsr yet"
    ),
}


class NcnnNetwork(nn.Module):
    """``model`` with RGB [0, 1] input and output as NCNN needs it (batch 1, see module doc).

    The network's value range and test-time padding are inside; the output is cropped to
    ``scale`` × the input size.
    """

    def __init__(self, model: SRModel) -> None:
        super().__init__()
        self.network = model.module
        self.scale = model.scale
        self.input_range = float(model.spec.input_range)
        self.multiple = int(model.spec.pad_multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.multiple > 1:
            x = reflect_pad_to_multiple(x, self.multiple)
        if self.input_range != 1.0:
            x = x * self.input_range
        y = self.network(x)
        if self.input_range != 1.0:
            y = y / self.input_range
        if self.multiple > 1:
            y = y[:, :, : h * self.scale, : w * self.scale]
        return y


def reflect_pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """:func:`lightsr.archs.blocks.pad_to_multiple` with a fixed pad and a cropping shape
    expression (inputs of at least ``multiple`` pixels per side; see the module doc)."""
    h, w = x.shape[-2:]
    x = F.pad(x, (0, multiple - 1, 0, multiple - 1), mode="reflect")
    return x[
        :,
        :,
        : (h + multiple - 1) // multiple * multiple,
        : (w + multiple - 1) // multiple * multiple,
    ]


def min_side(model: SRModel) -> int:
    """Smallest input side the NCNN export of ``model`` takes (EMT: its longest window side,
    which its fixed reflect pads need)."""
    patch = getattr(model.module, "patch_size", 1) if model.family == "ditn" else 1
    if model.family == "emt":
        patch = max(max(window) for window in model.module.body[0].sa_list[0].windows)
    return max(model.spec.min_size, model.spec.pad_multiple, patch)


def ncnn_form(model: SRModel) -> SRModel:
    """A copy of ``model`` (fp32, CPU, deploy form) in its NCNN form (see the module doc).

    Raises:
        ExportError: the family has no NCNN form.
    """
    if model.variant in UNSUPPORTED:
        raise ExportError(f"{model.variant}: no NCNN export: {UNSUPPORTED[model.variant]}")
    module = copy.deepcopy(model.module).float().cpu().eval()
    if model.family == "fmen":
        if hasattr(module, "balance_") and model.spec.form_of(module) == "deploy":
            module.balance_()
    elif model.family == "ditn":
        _swap_ditn(module)
        module = NcnnDITN(module)
    elif model.family == "emt":
        module = NcnnEMT(module)
    elif model.family == "esc":
        module = NcnnESC(module)
    return model.with_module(module)


# ----------------------------------------------------------------------------------- DITN


def _swap_ditn(module: nn.Module) -> None:
    from lightsr.archs.ditn import SDA, UFONE

    for name, child in list(module.named_children()):
        _swap_ditn(child)
        if isinstance(child, UFONE):
            setattr(module, name, NcnnUFONE(child))
        elif isinstance(child, SDA):
            setattr(module, name, NcnnSDA(child))


class NcnnSDA(nn.Module):
    """:class:`lightsr.archs.ditn.SDA` with ``scale`` folded into ``proj_last`` (a per-channel
    constant would be an NCNN ``MemoryData`` layer, which chaiNNer refuses)."""

    def __init__(self, sda: nn.Module) -> None:
        super().__init__()
        self.DConvs = sda.DConvs
        self.proj_first = sda.proj_first
        last = sda.proj_last[0]
        self.proj_last = nn.Conv2d(last.in_channels, last.out_channels, 1)
        with torch.no_grad():
            scale = sda.scale.reshape(-1)
            self.proj_last.weight.copy_(last.weight * scale.reshape(-1, 1, 1, 1))
            self.proj_last.bias.copy_(last.bias * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention, value = self.proj_first(x).chunk(2, dim=1)
        return self.proj_last(value * self.DConvs(attention))


class NcnnDITN(nn.Module):
    """:class:`lightsr.archs.ditn.DITN` with :func:`reflect_pad_to_multiple` for its padding."""

    def __init__(self, ditn: nn.Module) -> None:
        super().__init__()
        self.ditn = ditn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.ditn
        h, w = x.shape[-2:]
        shallow = d.sft(reflect_pad_to_multiple(x, d.patch_size))
        deep = d.conv_after_body(d.UFONE(shallow)) + shallow
        return d.upsample(deep)[:, :, : h * d.scale, : w * d.scale]


class NcnnUFONE(nn.Module):
    """:class:`lightsr.archs.ditn.UFONE` without the patch stack (see the module doc)."""

    def __init__(self, ufone: nn.Module) -> None:
        super().__init__()
        self.patch = ufone.patch_size
        self.ITLs = ufone.ITLs
        self.SALs = ufone.SALs
        self.conv = ufone.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.ITLs:
            norm1, norm2 = (getattr(layer, name) for name in layer.norm_names)
            x = x + patch_attention(getattr(layer, layer.mixer_name), norm1(x), self.patch)
            x = x + patch_ffn(layer.ffn, norm2(x), self.patch)
        return self.conv(self.SALs(x))


def patch_attention(isa: nn.Module, x: torch.Tensor, patch: int) -> torch.Tensor:
    """DITN's ISA applied to every ``patch``×``patch`` patch of the map ``x`` (1, C, H, W).

    The patches are gathered with reshapes and permutes of at most four axes after the
    batch (no ``pixel_unshuffle``: chaiNNer would count the ``PixelShuffle`` that undoes
    it as upsampling).
    """
    _, c, h, w = x.shape
    p = patch
    qkv = F.conv2d(x, isa.qkv.weight[:, :, None, None], isa.qkv.bias)  # (1, 3C, H, W)
    # (1, 3C·H/p, p, W/p, p) → (1, 3C·H/p, W/p, p, p) → (1, 3C, patches, p²)
    grid = qkv.reshape(1, 3 * c * (h // p), p, w // p, p).permute(0, 1, 3, 2, 4)
    tokens = grid.reshape(1, 3 * c, -1, p * p)
    q, k, v = tokens.chunk(3, dim=1)
    q = _l2_normalized(q) * float(isa.temperature)
    k = _l2_normalized(k)
    q, k, v = (t.permute(0, 2, 1, 3) for t in (q, k, v))  # (1, patches, C, p²)
    scores = torch.softmax(torch.matmul(q, k.transpose(2, 3)), dim=-1)  # (1, patches, C, C)
    out = torch.matmul(scores, v).permute(0, 2, 1, 3)  # (1, C, patches, p²)
    out = out.reshape(1, c * (h // p), w // p, p, p).permute(0, 1, 3, 2, 4)
    return isa.project_out(out.reshape(1, c, h, w))


def _l2_normalized(x: torch.Tensor) -> torch.Tensor:
    """``F.normalize(x, dim=-1)`` (over the tokens) in elementary ops."""
    return x / torch.clamp(torch.sqrt(torch.sum(x * x, dim=-1, keepdim=True)), min=1e-12)


def patch_ffn(ffn: nn.Module, x: torch.Tensor, patch: int) -> torch.Tensor:
    """DITN's gated FFN applied to every patch of ``x``: its depthwise conv sees zeros at
    the patch borders."""
    hidden = patch_depthwise(ffn.dwconv, ffn.project_in(x), patch)
    gate, value = hidden.chunk(2, dim=1)
    return ffn.project_out(F.gelu(gate) * value)


def patch_depthwise(conv: nn.Conv2d, x: torch.Tensor, patch: int) -> torch.Tensor:
    """A "same" 3×3 ``conv`` run on each ``patch``×``patch`` patch of ``x`` (1, C, H, W)
    alone, zero-padded: the map is spread with a zero row and column around each patch,
    convolved, and the gaps are cut away. Every view has at most three axes after batch."""
    _, c, h, w = x.shape
    p, g = patch, patch + 2
    rows = F.pad(x.reshape(1, c * (h // p), p, w), (0, 0, 1, 1))  # patch rows, gapped
    spread = rows.reshape(1, c * (h // p) * g, w // p, p)
    spread = F.pad(spread, (1, 1)).reshape(1, c, h // p * g, w // p * g)
    out = conv(spread)
    out = out.reshape(1, c * (h // p) * g, w // p, g)[:, :, :, 1 : p + 1]
    out = out.reshape(1, c * (h // p), g, w)[:, :, 1 : p + 1, :]
    return out.reshape(1, c, h, w)


# ------------------------------------------------------------------------------- windows


def window_tokens(x: torch.Tensor, window: tuple[int, int], parts: int) -> torch.Tensor:
    """The (win_h × win_w) windows of ``x`` (1, C, H, W), H and W multiples of the window, as
    (1, parts, C/parts, windows, win_h·win_w) tokens: windows in row-major order, tokens
    row-major inside each window (the order of the faithful 6-D/8-D partitions). Every view
    has at most four axes after the batch."""
    _, c, h, w = x.shape
    wh, ww = window
    grid = x.reshape(1, c * (h // wh), wh, w // ww, ww).permute(0, 1, 3, 2, 4)
    return grid.reshape(1, parts, c // parts, -1, wh * ww)


def window_merge(tokens: torch.Tensor, window: tuple[int, int], h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_tokens`: (1, …, windows, win_h·win_w) with C channels in
    the leading axes → (1, C, h, w)."""
    wh, ww = window
    grid = tokens.reshape(1, -1, w // ww, wh, ww).permute(0, 1, 3, 2, 4)
    return grid.reshape(1, -1, h, w)


def heads_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax attention of (1, heads, head_dim, windows, tokens) maps, per window and head;
    returns the same layout. ``bias``: (1, heads, 1, tokens, tokens), added to the scores."""
    q = q.permute(0, 1, 3, 4, 2)  # (1, heads, windows, tokens, head_dim)
    k = k.permute(0, 1, 3, 2, 4)  # (1, heads, windows, head_dim, tokens)
    scores = torch.matmul(q, k)
    if bias is not None:
        scores = scores + bias
    out = torch.matmul(torch.softmax(scores, dim=-1), v.permute(0, 1, 3, 4, 2))
    return out.permute(0, 1, 4, 2, 3)


def reflect_pad_window(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """:func:`lightsr.archs.blocks.pad_to_multiple` (reflect) to a (win_h, win_w) grid as a
    fixed pad and a cropping shape expression (inputs of at least the window per side)."""
    h, w = x.shape[-2:]
    wh, ww = window
    x = F.pad(x, (0, ww - 1, 0, wh - 1), mode="reflect")
    return x[:, :, : (h + wh - 1) // wh * wh, : (w + ww - 1) // ww * ww]


def roll2d(x: torch.Tensor, shift: tuple[int, int]) -> torch.Tensor:
    """``torch.roll(x, shift, dims=(2, 3))`` for shifts in [0, size) as crops and concats
    (end bounds written with the size: pnnx drops slices with negative ends)."""
    h, w = x.shape[-2:]
    dy, dx = shift
    if dy:
        x = torch.cat([x[:, :, h - dy :], x[:, :, : h - dy]], dim=2)
    if dx:
        x = torch.cat([x[:, :, :, w - dx :], x[:, :, :, : w - dx]], dim=3)
    return x


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """A copy of ``conv``'s geometry with the given weight and bias."""
    out = nn.Conv2d(
        weight.shape[1] * conv.groups,
        weight.shape[0],
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=bias is not None,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out


# ------------------------------------------------------------------------------------ EMT


class NcnnEMT(nn.Module):
    """:class:`lightsr.archs.emt.EMT` with its mean shifts as convs and NCNN forms of its
    layers (see the module doc)."""

    def __init__(self, emt: nn.Module) -> None:
        super().__init__()
        from lightsr.archs.emt import StripedWindowAttention, TokenMixer

        eye = emt.sub_mean.weight
        self.sub_mean = _conv_like(nn.Conv2d(3, 3, 1), eye, emt.sub_mean.bias)
        self.head = emt.head
        conv, shuffle = emt.tail[0], emt.tail[1]
        # add_mean after the shuffle = its mean added to the bias of every sub-pixel channel.
        mean = emt.add_mean.bias.repeat_interleave(shuffle.upscale_factor**2)
        self.tail = nn.Sequential(_conv_like(conv, conv.weight, conv.bias + mean), shuffle)
        layers = []
        for block in emt.body:
            for mixer, mlp in zip(block.sa_list, block.mlp_list, strict=True):
                if isinstance(mixer, StripedWindowAttention):
                    layers.append(NcnnStripedAttention(mixer))
                elif isinstance(mixer, TokenMixer):
                    layers.append(NcnnTokenMixer(mixer))
                else:
                    raise ExportError(f"EMT mixer {type(mixer).__name__} has no NCNN form")
                layers.append(NcnnShiftMlp(mlp))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.sub_mean(x))
        body = features
        for layer in self.layers:
            body = body + layer(body)
        return self.tail(body + features)


def _shift_conv(mask: torch.Tensor, padding: int) -> nn.Conv2d:
    """EMT's one-pixel channel-group shift as the official one-hot depthwise 3×3 conv."""
    channels = mask.shape[0]
    conv = nn.Conv2d(channels, channels, 3, padding=padding, groups=channels, bias=False)
    with torch.no_grad():
        conv.weight.copy_(mask)
    return conv


class NcnnShiftMlp(nn.Module):
    """EMT's MLP: each ShiftConv1x1 as the one-hot depthwise conv (zero padding) and its 1×1
    conv (the shift multiplies by one and adds exact zeros)."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.shift1, self.fc1 = _shift_conv(mlp.fc1.mask, 1), _plain_conv(mlp.fc1)
        self.shift2, self.fc2 = _shift_conv(mlp.fc2.mask, 1), _plain_conv(mlp.fc2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.shift2(F.silu(self.fc1(self.shift1(x)))))


def _plain_conv(conv: nn.Conv2d) -> nn.Conv2d:
    return _conv_like(conv, conv.weight, conv.bias)


class NcnnTokenMixer(nn.Module):
    """EMT's TokenMixer, ``BN(PixelMixer(x) − x)``: the circular one-pixel pad as crops and
    concats, then the one-hot depthwise conv."""

    def __init__(self, mixer: nn.Module) -> None:
        super().__init__()
        self.shift = _shift_conv(mixer.token_mixer.mask, 0)
        self.norm = mixer.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        padded = torch.cat([x[:, :, h - 1 :], x, x[:, :, :1]], dim=2)
        padded = torch.cat([padded[:, :, :, w - 1 :], padded, padded[:, :, :, :1]], dim=3)
        return self.norm(self.shift(padded) - x)


class NcnnStripedAttention(nn.Module):
    """EMT's SWSA: the BatchNorm folded into the qv conv; per channel slice a fixed reflect
    pad cropped to the window grid, the roll as crops and concats, window attention with
    ≤4-axis views (:func:`window_tokens`), the roll back and the crop."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        from lightsr.archs.blocks import fold_batchnorm_after

        conv, norm = attention.attn
        self.qv = _conv_like(conv, *fold_batchnorm_after(conv, norm))
        self.proj = attention.proj[0]
        self.heads = attention.num_heads
        self.windows = list(attention.windows)
        self.shifts = list(attention.shifts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        outputs = []
        slices = self.qv(x).chunk(len(self.windows), dim=1)
        for qv, window, shift in zip(slices, self.windows, self.shifts, strict=True):
            qv = roll2d(reflect_pad_window(qv, window), shift)
            height, width = qv.shape[-2:]
            tokens = window_tokens(qv, window, 2 * self.heads)
            q, v = tokens[:, : self.heads], tokens[:, self.heads :]
            out = window_merge(heads_attention(q, q, v), window, height, width)
            if shift != (0, 0):
                out = _unroll(out, shift)
            outputs.append(out[:, :, :h, :w])
        return self.proj(torch.cat(outputs, dim=1))


def _unroll(x: torch.Tensor, shift: tuple[int, int]) -> torch.Tensor:
    """``torch.roll(x, (-dy, -dx), dims=(2, 3))`` as crops and concats (the end bounds
    written out: pnnx drops ``x[:, :, dy:]`` on a dynamic axis)."""
    h, w = x.shape[-2:]
    dy, dx = shift
    if dy:
        x = torch.cat([x[:, :, dy:h], x[:, :, :dy]], dim=2)
    if dx:
        x = torch.cat([x[:, :, :, dx:w], x[:, :, :, :dx]], dim=3)
    return x


# ------------------------------------------------------------------------------------ ESC


class NcnnESC(nn.Module):
    """:class:`lightsr.archs.esc.ESC` (and ESC-Real) in NCNN form: blocks with a baked
    large kernel (:class:`NcnnESCBlock`); ESC's nearest-upsampled input residual is added
    before the ``PixelShuffle`` (a 1×1 conv copies each colour to its s² sub-pixel
    channels), so no second upsampling layer appears (chaiNNer multiplies them all)."""

    def __init__(self, esc: nn.Module) -> None:
        super().__init__()
        from lightsr.archs.esc import ESCReal, d4_average

        kernel = d4_average(esc.plk_filter.detach())
        self.proj, self.last = esc.proj, esc.last
        self.blocks = nn.ModuleList(NcnnESCBlock(block, kernel) for block in esc.blocks)
        self.real = isinstance(esc, ESCReal)
        self.to_img = esc.to_img
        if self.real:
            self.skip = esc.skip
            return
        self.scale = esc.scale
        s2 = self.scale**2
        self.expand = nn.Conv2d(3, 3 * s2, 1, bias=False, dtype=kernel.dtype)
        with torch.no_grad():
            self.expand.weight.zero_()
            for colour in range(3):
                self.expand.weight[colour * s2 : (colour + 1) * s2, colour] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.proj(x)
        features = shallow
        for block in self.blocks:
            features = block(features)
        features = self.last(features) + shallow
        if self.real:
            return self.to_img(features + self.skip(x))
        return F.pixel_shuffle(self.to_img(features) + self.expand(x), self.scale)


def _layer_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ESC's LayerNorm2d (over the channels of each pixel), or an identity."""
    if isinstance(norm, nn.Identity):
        return x
    normed = F.layer_norm(
        x.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias, norm.eps
    )
    return normed.permute(0, 3, 1, 2)


def _conv_ffn(ffn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ESC's ConvFFN without in-place ops."""
    hidden = F.gelu(ffn.proj(x))
    return ffn.aggr(F.gelu(ffn.dwc(hidden)) + hidden)


class NcnnESCBlock(nn.Module):
    """An ESC block: :class:`NcnnWindowAttention`, and ConvAttns whose shared large kernel is
    a conv of their own (:class:`NcnnConvAttn`)."""

    def __init__(self, block: nn.Module, kernel: torch.Tensor) -> None:
        super().__init__()
        self.ln_proj, self.proj, self.ln_attn = block.ln_proj, block.proj, block.ln_attn
        self.attn = NcnnWindowAttention(block.attn)
        self.lns, self.convffns = block.lns, block.convffns
        self.pconvs = nn.ModuleList(NcnnConvAttn(p.plk, p.aggr, kernel) for p in block.pconvs)
        self.ln_out, self.conv_out = block.ln_out, block.conv_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = _conv_ffn(self.proj, _layer_norm(self.ln_proj, x))
        features = features + self.attn(_layer_norm(self.ln_attn, features))
        for norm, pconv, ffn in zip(self.lns, self.pconvs, self.convffns, strict=True):
            features = features + pconv(_conv_ffn(ffn, _layer_norm(norm, features)))
        return self.conv_out(_layer_norm(self.ln_out, features)) + x


class NcnnConvAttn(nn.Module):
    """ESC's ConvAttn + ``aggr``: the D4-averaged large kernel as a conv; the per-image
    dynamic 3×3 depthwise conv as nine shifted crops scaled per channel, its kernel
    predictor's output channels reordered tap-major so each tap is a channel slice."""

    def __init__(self, plk: nn.Module, aggr: nn.Conv2d, kernel: torch.Tensor) -> None:
        super().__init__()
        from lightsr.archs.esc import DYNAMIC_KERNEL

        self.pdim = plk.pdim
        self.taps = DYNAMIC_KERNEL
        self.large = nn.Conv2d(
            self.pdim,
            self.pdim,
            kernel.shape[-1],
            padding=kernel.shape[-1] // 2,
            bias=False,
            dtype=kernel.dtype,
        )
        with torch.no_grad():
            self.large.weight.copy_(kernel)
        _pool, first, act, last = plk.dwc_proj
        self.first, self.act = first, act
        # Output channel c·9 + t (kernel-major) → t·pdim + c (tap-major).
        order = torch.arange(last.out_channels).reshape(self.pdim, -1).t().reshape(-1)
        self.last = _conv_like(last, last.weight[order], last.bias[order])
        self.aggr = aggr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        p, k = self.pdim, self.taps
        x1, x2 = x[:, :p], x[:, p:]
        kernels = self.last(self.act(self.first(F.adaptive_avg_pool2d(x1, 1))))
        mixed = self.large(x1)
        padded = F.pad(x1, (k // 2, k // 2, k // 2, k // 2))
        dynamic = None
        for i in range(k):
            for j in range(k):
                t = i * k + j
                tap = padded[:, :, i : i + h, j : j + w] * kernels[:, t * p : (t + 1) * p]
                dynamic = tap if dynamic is None else dynamic + tap
        return self.aggr(torch.cat([mixed + dynamic, x2], dim=1))


class NcnnWindowAttention(nn.Module):
    """ESC's window attention on a map whose sides are multiples of the window (the
    export pads the image to them, so the faithful padding is a no-op): the SDPA scale
    folded into the query rows of ``to_qkv``, window attention with ≤4-axis views, and the
    relative-position bias built in the graph (:meth:`bias`)."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.window = attention.window_size
        self.heads = attention.num_heads
        qkv = attention.to_qkv
        dim = qkv.in_channels
        scale = torch.ones(qkv.out_channels, dtype=qkv.weight.dtype)
        scale[:dim] = (dim // self.heads) ** -0.5
        self.to_qkv = _conv_like(qkv, qkv.weight * scale[:, None, None, None], qkv.bias * scale)
        self.to_out = attention.to_out
        # A constant in NCNN would be a MemoryData layer (which chaiNNer refuses): the table
        # is the bias of a 1×1 conv with zero weights, applied to one input pixel.
        table = attention.relative_position_bias.detach()
        self.table = nn.Conv2d(1, table.numel(), 1, dtype=table.dtype)
        with torch.no_grad():
            self.table.weight.zero_()
            self.table.bias.copy_(table.reshape(-1))

    def bias(self, x: torch.Tensor) -> torch.Tensor:
        """(1, heads, 1, w², w²) bias ``table[head, kh − qh + w − 1, kw − qw + w − 1]`` for
        query (qh, qw) and key (kh, kw), from the (heads, 2w − 1, 2w − 1) table.

        Each Toeplitz expansion along one offset axis: a zero appended (length 2w), the
        line tiled w times, cut to w·(2w − 1) and read as w rows of 2w − 1; row q, column
        k + w − 1 holds entry (k + w − 1 − q) mod 2w, the offset k − q + w − 1.
        """
        w, heads, span = self.window, self.heads, 2 * self.window - 1
        table = self.table(x[:, :1, :1, :1]).reshape(1, heads, span, span)
        # Along the column offset: (1, heads, span, qw, kw).
        cols = F.pad(table, (0, 1)).repeat(1, 1, 1, w)[:, :, :, : w * span]
        cols = cols.reshape(1, heads, span, w, span)[:, :, :, :, w - 1 :]
        # Along the row offset, (qw, kw) carried along: (1, heads·qh, kh, qw, kw).
        rows = F.pad(cols.reshape(1, heads, span, w * w), (0, 0, 0, 1)).repeat(1, 1, w, 1)
        rows = rows[:, :, : w * span].reshape(1, heads * w, span, w, w)[:, :, w - 1 :]
        # → (1, heads·qh, qw, kh, kw) = (1, heads, queries, keys).
        return rows.permute(0, 1, 3, 2, 4).reshape(1, heads, 1, w * w, w * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        window = (self.window, self.window)
        tokens = window_tokens(self.to_qkv(x), window, 3 * self.heads)
        q, k, v = tokens.chunk(3, dim=1)
        out = heads_attention(q, k, v, self.bias(x))
        return self.to_out(window_merge(out, window, h, w))
