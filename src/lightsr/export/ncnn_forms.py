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
* EMT and ESC: no NCNN form yet (see :data:`UNSUPPORTED`).

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

# Families without an NCNN form, and why (the export refuses them with this reason).
UNSUPPORTED = {
    "emt": (
        "its striped-window attention (32×8 and 8×32 windows per channel slice, reflect "
        "padding and roll by amounts that depend on the input size) has no NCNN form in "
        "lightsr yet"
    ),
    "esc": (
        "its window attention (6-D window partitions, size-dependent padding inside the "
        "blocks) has no NCNN form in lightsr yet"
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
    """Smallest input side the NCNN export of ``model`` takes."""
    patch = getattr(model.module, "patch_size", 1) if model.family == "ditn" else 1
    return max(model.spec.min_size, model.spec.pad_multiple, patch)


def ncnn_form(model: SRModel) -> SRModel:
    """A copy of ``model`` (fp32, CPU, deploy form) in its NCNN form (see the module doc).

    Raises:
        ExportError: the family has no NCNN form.
    """
    if model.family in UNSUPPORTED:
        raise ExportError(f"{model.variant}: no NCNN export: {UNSUPPORTED[model.family]}")
    module = copy.deepcopy(model.module).float().cpu().eval()
    if model.family == "fmen":
        if hasattr(module, "balance_") and model.spec.form_of(module) == "deploy":
            module.balance_()
    elif model.family == "ditn":
        _swap_ditn(module)
        module = NcnnDITN(module)
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
