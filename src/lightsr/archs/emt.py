"""EMT: Efficient Mixed Transformer for lightweight super-resolution (arXiv 2305.11403).

Written from the spec in ``specs/archs.md`` §4; state-dict keys match the official
``EMT_LSR_x{2,3,4}.pth`` checkpoints exactly, so they load with ``strict=True``.

The network works in the [0, 255] range and subtracts/adds the DF2K mean itself
(``sub_mean``/``add_mean``). Its body is 6 Mixed Transformer Blocks; each has 2 global
layers (striped-window self-attention, SWSA) and 4 local layers (PixelMixer), every one
followed by an MLP whose 1×1 convs see a one-pixel shift of the input channels.

The official code applies those fixed one-pixel shifts as depthwise 3×3 convs with one-hot
``mask`` kernels. Here the shifts are pad-and-slice copies (same result, no multiply-adds);
the masks stay in the state dict as buffers so checkpoints round-trip, and loading verifies
that they hold the expected one-hot pattern. The fast inference path (gradients off, see
:mod:`lightsr.archs.blocks`) does use them as convs again: on channels_last maps one
depthwise conv is faster than five strided channel-group copies, and still bit-exact.
It also folds the attention BatchNorm into the qv conv and adds residuals in place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightsr.archs.blocks import (
    FoldedCache,
    PixelShuffleUpsampler,
    fast_path,
    fold_batchnorm_after,
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
from lightsr.errors import CheckpointError

# RGB mean of DF2K (DIV2K + Flickr2K, images 1-3450) that the official model removes.
DF2K_MEAN = (0.4690, 0.4490, 0.4036)

# (dy, dx) source offset of each of the five channel groups: group k of the output at (i, j)
# reads the input at (i + dy, j + dx). Right, left, below, above neighbour, then identity.
SHIFT_OFFSETS = ((0, 1), (0, -1), (1, 0), (-1, 0), (0, 0))

EMT_DEFAULTS: Mapping[str, object] = {
    "dim": 60,
    "n_blocks": 6,
    "n_layers": 6,
    "n_gtls": 2,
    "num_heads": 3,
    "mlp_ratio": 2,
}


def one_hot_shift_mask(channels: int, interleaved: bool) -> torch.Tensor:
    """The official depthwise 3×3 kernel that realises :data:`SHIFT_OFFSETS`.

    Args:
        channels: number of channels (a multiple of 5).
        interleaved: channel ``c`` belongs to group ``c % 5`` (PixelMixer); otherwise the
            groups are contiguous fifths (ShiftConv2d1x1).

    Returns:
        Tensor (channels, 1, 3, 3) with one 1 per channel at ``(1 + dy, 1 + dx)``.
    """
    mask = torch.zeros(channels, 1, 3, 3)
    group_size = channels // 5
    for channel in range(channels):
        group = channel % 5 if interleaved else channel // group_size
        dy, dx = SHIFT_OFFSETS[group]
        mask[channel, 0, 1 + dy, 1 + dx] = 1.0
    return mask


def shift_channel_groups(
    x: torch.Tensor, interleaved: bool, pad_mode: str, mask: torch.Tensor
) -> torch.Tensor:
    """Move each fifth of the channels by one pixel as given by :data:`SHIFT_OFFSETS`.

    Equal to the official depthwise conv with ``mask`` (:func:`one_hot_shift_mask`) after
    padding by 1 with ``pad_mode`` (``"constant"`` = zeros, ``"circular"`` = wrap around), but
    done as one pad and five slices. Traced graphs (``torch.export``, ONNX) use that conv: the
    same values (one-hot taps add exact zeros), and one op instead of fifteen views with
    symbolic sizes makes tracing several times faster.
    """
    n, c, h, w = x.shape
    padded = F.pad(x, (1, 1, 1, 1), mode=pad_mode)
    if torch.compiler.is_compiling():
        return F.conv2d(padded, mask, groups=c)
    # Expose the group index as its own dimension: (n, 5, c/5, …) or (n, c/5, 5, …).
    group_dim = 2 if interleaved else 1
    grouped_shape = (n, c // 5, 5) if interleaved else (n, 5, c // 5)
    grouped = padded.view(*grouped_shape, h + 2, w + 2)
    shifted = [
        grouped.select(group_dim, k)[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        for k, (dy, dx) in enumerate(SHIFT_OFFSETS)
    ]
    return torch.stack(shifted, dim=group_dim).reshape(n, c, h, w)


def shift_conv_macs(x: torch.Tensor) -> int:
    """Multiply-adds of a depthwise 3×3 conv over ``x``: what the official shift costs."""
    return x.numel() * 9


def shift_channel_groups_fast(
    x: torch.Tensor, mask: torch.Tensor, interleaved: bool, circular: bool
) -> torch.Tensor:
    """:func:`shift_channel_groups` as the official one-hot depthwise conv (``mask``).

    Bit-exact for finite inputs (one product by 1, the rest by 0), and on channels_last
    maps a single vectorised pass, where slicing out channel groups is not. Circular
    padding: the conv pads with zeros and the wrapped border lines are copied in after.
    """
    channels = x.shape[1]
    out = F.conv2d(x, mask.to(x.dtype), padding=1, groups=channels)
    if not circular:
        return out
    n, _, h, w = x.shape
    group_dim = 2 if interleaved else 1
    grouped_shape = (n, channels // 5, 5) if interleaved else (n, 5, channels // 5)
    groups_in, groups_out = x.view(*grouped_shape, h, w), out.view(*grouped_shape, h, w)
    for k, (dy, dx) in enumerate(SHIFT_OFFSETS):
        src, dst = groups_in.select(group_dim, k), groups_out.select(group_dim, k)
        if dy:
            edge = h - 1 if dy > 0 else 0
            dst[..., edge : edge + 1, :] = src[..., h - 1 - edge : h - edge, :]
        if dx:
            edge = w - 1 if dx > 0 else 0
            dst[..., :, edge : edge + 1] = src[..., :, w - 1 - edge : w - edge]
    return out


def copy_rolled(dst: torch.Tensor, src: torch.Tensor, offset: tuple[int, int]) -> None:
    """``dst[..., i, j] = src[..., (i + dy) % H, (j + dx) % W]`` for (dy, dx) = ``offset``.

    ``torch.roll(src, (-dy, -dx))`` cropped to ``dst``'s size (at most ``src``'s), done as
    at most four block copies straight into ``dst``.
    """
    row_blocks = _wrapped_blocks(dst.shape[-2], src.shape[-2], offset[0])
    col_blocks = _wrapped_blocks(dst.shape[-1], src.shape[-1], offset[1])
    for dst_rows, src_rows in row_blocks:
        for dst_cols, src_cols in col_blocks:
            dst[..., dst_rows, dst_cols] = src[..., src_rows, src_cols]


def _wrapped_blocks(size: int, period: int, offset: int) -> list[tuple[slice, slice]]:
    """(destination, source) index ranges of ``dst[i] = src[(i + offset) % period]``."""
    start = offset % period
    first = min(size, period - start)
    blocks = [(slice(0, first), slice(start, start + first))]
    if first < size:
        blocks.append((slice(first, size), slice(0, size - first)))
    return blocks


def _register_shift_mask(module: nn.Module, channels: int, interleaved: bool) -> None:
    """Give ``module`` the official ``mask`` entry and check it whenever weights are loaded."""
    if channels % 5:
        raise ValueError(f"channel count {channels} must be a multiple of 5")
    module.register_buffer("mask", one_hot_shift_mask(channels, interleaved))

    def check_mask(loaded: nn.Module, _incompatible: object) -> None:
        expected = one_hot_shift_mask(channels, interleaved).to(loaded.mask)
        if not torch.equal(loaded.mask, expected):
            raise CheckpointError(
                "EMT checkpoint has a shift mask that is not the official one-hot pattern"
            )

    module.register_load_state_dict_post_hook(check_mask)


class MeanShift(nn.Module):
    """Fixed 1×1 conv that adds ``sign × mean`` per channel (official ``MeanShift``).

    Weight (identity) and bias are buffers: they ship in the checkpoint but are not trained.
    """

    def __init__(self, mean: Sequence[float], sign: float) -> None:
        super().__init__()
        channels = len(mean)
        self.register_buffer("weight", torch.eye(channels).view(channels, channels, 1, 1))
        self.register_buffer("bias", sign * torch.tensor(mean, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)


class ShiftConv1x1(nn.Conv2d):
    """Contiguous-fifths one-pixel shift with zero padding, then a dense 1×1 conv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1)
        _register_shift_mask(self, in_channels, interleaved=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path():
            return super().forward(shift_channel_groups_fast(x, self.mask, False, circular=False))
        shifted = shift_channel_groups(x, interleaved=False, pad_mode="constant", mask=self.mask)
        return super().forward(shifted)

    def reference_macs(self, x: torch.Tensor) -> int:
        """Multiply-adds of the official depthwise shift conv that the copies here replace."""
        return shift_conv_macs(x)


class PixelMixer(nn.Module):
    """Parameter-free local mixing: channel ``c`` moves by ``SHIFT_OFFSETS[c % 5]``, wrapping
    around the image borders (the official code pads circularly)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        _register_shift_mask(self, dim, interleaved=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shift_channel_groups(x, interleaved=True, pad_mode="circular", mask=self.mask)

    def reference_macs(self, x: torch.Tensor) -> int:
        """Multiply-adds of the official depthwise shift conv that the copies here replace."""
        return shift_conv_macs(x)


class TokenMixer(nn.Module):
    """Local transformer layer mixer: ``BN(PixelMixer(x) − x)`` (subtract first, then BN)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token_mixer = PixelMixer(dim)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.token_mixer(x) - x)

    def residual_fast(self, x: torch.Tensor) -> torch.Tensor:
        """``x + self(x)`` with gradients off: the difference and the sum in place."""
        shifted = shift_channel_groups_fast(x, self.token_mixer.mask, True, circular=True)
        return self.norm(shifted.sub_(x)).add_(x)


class Mlp(nn.Module):
    """ShiftConv1x1 → Swish (x·sigmoid(x)) → ShiftConv1x1."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = ShiftConv1x1(dim, hidden)
        self.fc2 = ShiftConv1x1(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.fc1(x)
        return self.fc2(F.silu(hidden, inplace=fast_path()))


class StripedWindowAttention(nn.Module):
    """SWSA: self-attention inside striped windows, one window shape per channel slice.

    A 1×1 conv + BN makes "qv" features (there is no key: attention is softmax(q·qᵀ),
    unscaled). Their channels split into one slice per window shape; each slice is
    reflect-padded to its window, optionally rolled (no attention mask, so wrapped content
    mixes, as in the official code), attended per window, rolled back and cropped.

    Args:
        dim: feature channels.
        num_heads: heads per slice.
        windows: (height, width) of each slice's windows.
        shifts: roll of each slice, or ``None`` for an unshifted layer.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        windows: Sequence[tuple[int, int]],
        shifts: Sequence[tuple[int, int]] | None,
    ) -> None:
        super().__init__()
        if dim % (len(windows) * num_heads):
            raise ValueError(f"dim {dim} must split into {len(windows)} slices × {num_heads} heads")
        self.num_heads = num_heads
        self.windows = [tuple(w) for w in windows]
        self.shifts = [tuple(s) for s in shifts] if shifts else [(0, 0)] * len(windows)
        self.attn = nn.Sequential(nn.Conv2d(dim, 2 * dim, 1), nn.BatchNorm2d(2 * dim))
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 1))
        self._folded = FoldedCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qv_slices = self.attn(x).chunk(len(self.windows), dim=1)
        outputs = [
            self._attend_slice(qv, window, shift)
            for qv, window, shift in zip(qv_slices, self.windows, self.shifts, strict=True)
        ]
        return self.proj(torch.cat(outputs, dim=1))

    def residual_fast(self, x: torch.Tensor) -> torch.Tensor:
        """``x + self(x)`` with gradients off: the BatchNorm folded into the qv conv, each
        slice's output written straight into the map ``proj`` reads, rolls done as block
        copies, and the residual added in place."""
        conv, norm = self.attn
        weight, bias = self._folded.get(
            (conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean, norm.running_var),
            lambda: fold_batchnorm_after(conv, norm),
        )
        qv_slices = F.conv2d(x, weight, bias).chunk(len(self.windows), dim=1)
        attended = torch.empty_like(x)
        out_slices = attended.chunk(len(self.windows), dim=1)
        for qv, out, window, shift in zip(
            qv_slices, out_slices, self.windows, self.shifts, strict=True
        ):
            self._attend_slice_fast(qv, out, window, shift)
        return self.proj(attended).add_(x)

    def _attend_slice_fast(
        self,
        qv: torch.Tensor,
        out: torch.Tensor,
        window: tuple[int, int],
        shift: tuple[int, int],
    ) -> None:
        """:meth:`_attend_slice` into ``out``, with at most one copy per layout change."""
        n, channels, h, w = qv.shape
        win_h, win_w = window
        rows, cols = (h + win_h - 1) // win_h, (w + win_w - 1) // win_w
        height, width = rows * win_h, cols * win_w
        if (height, width) != (h, w):
            qv = F.pad(qv, (0, width - w, 0, height - h), mode="reflect")
        if shift != (0, 0):
            rolled = torch.empty_like(qv)
            copy_rolled(rolled, qv, (-shift[0], -shift[1]))
            qv = rolled
        heads, head_dim = self.num_heads, channels // (2 * self.num_heads)
        tokens = (
            qv.view(n, 2, heads, head_dim, rows, win_h, cols, win_w)
            .permute(1, 0, 2, 4, 6, 5, 7, 3)
            .reshape(2, n, heads * rows * cols, win_h * win_w, head_dim)
        )
        qv = None
        q, v = tokens.unbind(0)
        attended = F.scaled_dot_product_attention(q, q, v, scale=1.0)
        tokens = q = v = None
        # (n, head, rows, cols, win_h, win_w, c) → channels_last (n, head·c, height, width)
        attended = (
            attended.view(n, heads, rows, cols, win_h, win_w, head_dim)
            .permute(0, 2, 4, 3, 5, 1, 6)
            .reshape(n, height, width, heads * head_dim)
            .permute(0, 3, 1, 2)
        )
        copy_rolled(out, attended, shift)

    def _attend_slice(
        self, qv: torch.Tensor, window: tuple[int, int], shift: tuple[int, int]
    ) -> torch.Tensor:
        """Window attention on one slice whose channels are laid out (q|v, head, c)."""
        n, channels, h, w = qv.shape
        win_h, win_w = window
        # Window counts from the unpadded size, so the padded size is rows·win_h by
        # construction (keeps the reshapes valid for symbolic shapes in torch.export/ONNX).
        rows, cols = (h + win_h - 1) // win_h, (w + win_w - 1) // win_w
        height, width = rows * win_h, cols * win_w
        qv = F.pad(qv, (0, width - w, 0, height - h), mode="reflect")
        if shift != (0, 0):
            qv = torch.roll(qv, shifts=shift, dims=(2, 3))
        heads, head_dim = self.num_heads, channels // (2 * self.num_heads)
        # (n, qv, head, c, rows, win_h, cols, win_w) → (qv, n, head·rows·cols, win_h·win_w, c)
        tokens = (
            qv.view(n, 2, heads, head_dim, rows, win_h, cols, win_w)
            .permute(1, 0, 2, 4, 6, 5, 7, 3)
            .reshape(2, n, heads * rows * cols, win_h * win_w, head_dim)
        )
        q, v = tokens.unbind(0)
        out = F.scaled_dot_product_attention(q, q, v, scale=1.0)
        out = (
            out.view(n, heads, rows, cols, win_h, win_w, head_dim)
            .permute(0, 1, 6, 2, 4, 3, 5)
            .reshape(n, heads * head_dim, height, width)
        )
        if shift != (0, 0):
            out = torch.roll(out, shifts=(-shift[0], -shift[1]), dims=(2, 3))
        return out[..., :h, :w]


class MixedTransformerBlock(nn.Module):
    """``n_layers`` residual (mixer, MLP) pairs; the first ``n_gtls`` mixers are SWSA (shifted
    on odd layer indices), the rest are :class:`TokenMixer`."""

    def __init__(
        self,
        dim: int,
        n_layers: int,
        n_gtls: int,
        num_heads: int,
        mlp_ratio: int,
        windows: Sequence[tuple[int, int]],
        shifts: Sequence[tuple[int, int]],
    ) -> None:
        super().__init__()
        self.sa_list = nn.ModuleList(
            StripedWindowAttention(dim, num_heads, windows, shifts if layer % 2 else None)
            if layer < n_gtls
            else TokenMixer(dim)
            for layer in range(n_layers)
        )
        self.mlp_list = nn.ModuleList(Mlp(dim, dim * mlp_ratio) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path():
            # Every residual sum lands in a fresh branch output; ``x`` itself is never written.
            for mixer, mlp in zip(self.sa_list, self.mlp_list, strict=True):
                x = mixer.residual_fast(x)
                x = mlp(x).add_(x)
            return x
        for mixer, mlp in zip(self.sa_list, self.mlp_list, strict=True):
            x = x + mixer(x)
            x = x + mlp(x)
        return x


class EMT(nn.Module):
    """Efficient Mixed Transformer (lightweight-SR ``lsr`` configuration).

    Input and output are RGB in [0, 255]; the DF2K mean is handled inside.

    Args:
        scale: upscale factor.
        dim: feature channels (multiple of 5 and of 2·num_heads).
        n_blocks: Mixed Transformer Blocks.
        n_layers: layers per block.
        n_gtls: global (attention) layers at the start of each block.
        num_heads: attention heads per window slice.
        mlp_ratio: MLP hidden width / dim.
        windows: window (height, width) per attention channel slice.
        shifts: roll per slice in the shifted (odd) attention layers.
        in_channels: input colour channels.
        out_channels: output colour channels.
        rgb_range: pixel range; the mean shift is ``rgb_range × DF2K_MEAN``.
    """

    def __init__(
        self,
        scale: int = 4,
        dim: int = 60,
        n_blocks: int = 6,
        n_layers: int = 6,
        n_gtls: int = 2,
        num_heads: int = 3,
        mlp_ratio: int = 2,
        windows: Sequence[tuple[int, int]] = ((32, 8), (8, 32)),
        shifts: Sequence[tuple[int, int]] = ((16, 4), (4, 16)),
        in_channels: int = 3,
        out_channels: int = 3,
        rgb_range: float = 255.0,
    ) -> None:
        super().__init__()
        mean = [rgb_range * m for m in DF2K_MEAN]
        self.sub_mean = MeanShift(mean, sign=-1.0)
        self.add_mean = MeanShift(mean, sign=1.0)
        self.head = nn.Conv2d(in_channels, dim, 3, 1, 1)
        self.body = nn.Sequential(
            *(
                MixedTransformerBlock(dim, n_layers, n_gtls, num_heads, mlp_ratio, windows, shifts)
                for _ in range(n_blocks)
            )
        )
        self.tail = PixelShuffleUpsampler(dim, scale, out_channels)

    # oneDNN's NHWC 1×1 convolutions are faster here (see
    # lightsr.archs.blocks.to_inference_layout).
    prefers_channels_last = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.sub_mean(x))
        if fast_path():
            features = self.body(features).add_(features)
        else:
            features = self.body(features) + features
        return self.add_mean(self.tail(features))


def build_emt(scale: int = 4, **overrides: object) -> EMT:
    """Registry builder: :class:`EMT` at ``scale`` with the official hyper-parameters."""
    return EMT(scale=scale, **overrides)


def read_emt(state_dict: StateDict) -> Reading | None:
    """Read an EMT checkpoint: depths from key counts, widths and scale from shapes."""
    required = ("sub_mean.weight", "head.weight", "body.0.sa_list.0.attn.0.weight", "tail.0.weight")
    if not all(key in state_dict for key in required):
        return None
    colours = state_dict["sub_mean.weight"].shape[0]
    scale = scale_from_shuffle(state_dict["tail.0.weight"].shape[0], colours)
    if scale is None:
        return None
    dim = state_dict["head.weight"].shape[0]
    found = {
        "dim": dim,
        "n_blocks": count_indexed(state_dict, "body.{}.mlp_list.0.fc1.weight"),
        "n_layers": count_indexed(state_dict, "body.0.mlp_list.{}.fc1.weight"),
        "n_gtls": count_indexed(state_dict, "body.0.sa_list.{}.attn.0.weight"),
        "mlp_ratio": state_dict["body.0.mlp_list.0.fc1.weight"].shape[0] // dim,
    }
    return Reading("emt", scale, found, state_dict)


register_arch(
    ArchSpec(
        name="emt",
        family="emt",
        builder=build_emt,
        scales=(2, 3, 4),
        input_range=255.0,
        # Reflect padding to the 32-pixel window needs every side > 16.
        min_size=17,
        description="EMT: Efficient Mixed Transformer (6 MTBs, striped-window attention)",
        defaults=EMT_DEFAULTS,
    )
)
register_reader("emt", read_emt)
