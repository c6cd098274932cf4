"""Arbitrary-scale SR: an encoder followed by a local texture estimator (LTE).

LTE (Lee & Jin, CVPR 2022) predicts each output pixel from the four LR feature vectors
nearest to it: a 3×3 conv gives per-pixel amplitudes (``coef``) and frequencies (``freq``),
a linear layer a phase from the output cell size, and an MLP maps the resulting
Fourier features ``coef · [cos π(f·δ + φ), sin π(f·δ + φ)]`` (δ: the query's offset from
the neighbour) to RGB. The four predictions are blended with area weights, as in bilinear
interpolation, and added to a bilinear upsample of the input. One model serves every
scale, including ones it was not trained at.

Variants:

* ``esc_lte``: the encoder of the official ESC arbitrary-scale code (dslisleedh/ESC,
  ``esc_arb``): ESC's body without its upsampler (5 blocks, 64 channels, long skip). Key
  names are the official ones (``encoder.*``, ``coef``, ``freq``, ``phase``,
  ``imnet.layers.*``), so an official checkpoint's ``model.sd`` loads unchanged.
* ``fmen_s_lte``: the same head on the FMEN-S trunk (deploy form), lightsr's built-in
  arbitrary-scale model.

Everything is computed in LR pixel units rather than the official [−1, 1] coordinates, so
that a crop of the LR image with an integer offset gives exactly the queries of the whole
image: that is what makes tiling exact. The official network normalises its input and
output to [−1, 1] (``data_norm`` sub 0.5, div 0.5); :class:`LTE` takes and returns [0, 1].
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lightsr.archs.esc import ESC, ESC_DEFAULTS
from lightsr.archs.fmen import FMEN, FMEN_S_CONFIG
from lightsr.archs.registry import ArchSpec, Reading, StateDict, register_arch, register_reader

# The official scale range of training; beyond it the cell is clamped to that of ×4.
TRAIN_SCALE_MAX = 4.0
# The official nearest-neighbour lookups shift every coordinate by this much (in [−1, 1]
# units) so that queries exactly between two LR pixels pick the same one every time.
EPS_SHIFT = 1e-6
# Queries per MLP call: bounds the head's memory (about 16 KiB per query in fp32).
DEFAULT_CHUNK = 16384


def _full_precision(like: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off, where it is on: the Fourier phases (frequency × offset, then cos/sin)
    need fp32, since a bf16 frequency of 20 is only known to ±0.06, a phase error of
    0.1 rad per pixel of offset; so do the features they come from. Under autocast only the
    MLP, most of the work, runs in bf16."""
    device = like.device.type
    if torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()


class MLP(nn.Module):
    """Linear → ReLU stack (official ``models.mlp.MLP``; its layers are ``layers.<i>``)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@dataclass
class Features:
    """The head's inputs for an LR crop.

    Attributes:
        coef: amplitudes, (N, h·w, C) channels last, rows of the crop in order.
        freq: frequencies, (N, h·w, C).
        image: the crop itself in [−1, 1] units, (N, 3, h, w), for the bilinear residual.
        origin: (row, col) of the crop's first pixel in the whole LR image.
        full_size: (height, width) of the whole LR image.
    """

    coef: torch.Tensor
    freq: torch.Tensor
    image: torch.Tensor
    origin: tuple[int, int]
    full_size: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[-2], self.image.shape[-1]


def cell_for(lr_size: int, out_size: int, scale: float | None = None) -> float:
    """The cell the head sees along one axis, in LR pixel units (official ``cell · h``).

    It is 2 / scale, clamped at the training range: beyond ×4 the official test feeds the
    cell of ×4 (``cell · max(scale / 4, 1)``). ``scale`` is the nominal factor; it defaults
    to ``out_size / lr_size``.
    """
    scale = out_size / lr_size if scale is None else scale
    return 2.0 * lr_size / out_size * max(scale / TRAIN_SCALE_MAX, 1.0)


def output_centres(lr_size: int, out_size: int, start: int, stop: int) -> torch.Tensor:
    """LR coordinates (pixel edges at integers) of the centres of output pixels
    ``start … stop−1`` along an axis of ``out_size`` pixels, in float64."""
    index = torch.arange(start, stop, dtype=torch.float64)
    return (index + 0.5) * (lr_size / out_size)


class LTE(nn.Module):
    """Encoder + local texture estimator; input and output RGB in [0, 1].

    Args:
        encoder: a network with ``features(x)`` returning ``out_dim`` channels at the input
            size.
        encoder_range: the value range the encoder expects: 2.0 for [−1, 1] (ESC, as in the
            official code), 255.0 for [0, 255] (FMEN); the encoder's features are scaled by
            2 / encoder_range before the head.
        hidden_dim: channels of ``coef`` and ``freq`` (and the MLP input).
        mlp_hidden: widths of the MLP's hidden layers.
        scale: the scale :meth:`forward` upscales by (any float ≥ 1); an attribute that
            :meth:`upscale_to` does not use.
    """

    def __init__(
        self,
        encoder: nn.Module,
        encoder_range: float = 2.0,
        hidden_dim: int = 256,
        mlp_hidden: Sequence[int] = (256, 256, 256),
        scale: float = 4.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.encoder_range = encoder_range
        self.scale = scale
        dim = encoder.out_dim
        self.coef = nn.Conv2d(dim, hidden_dim, 3, padding=1)
        self.freq = nn.Conv2d(dim, hidden_dim, 3, padding=1)
        self.phase = nn.Linear(2, hidden_dim // 2, bias=False)
        self.imnet = MLP(hidden_dim, 3, mlp_hidden)

    def balance_(self) -> None:
        """Rescale the encoder for fine-tuning where it has that method (FMEN's deploy form,
        see :meth:`lightsr.archs.fmen.FMEN.balance_`); the function is unchanged."""
        balance = getattr(self.encoder, "balance_", None)
        if balance is None:
            raise ValueError(f"{type(self.encoder).__name__} encoder has no balance_()")
        balance()

    # ------------------------------------------------------------------ encoder side

    def encode(
        self,
        x: torch.Tensor,
        origin: tuple[int, int] = (0, 0),
        full_size: tuple[int, int] | None = None,
    ) -> Features:
        """Features of ``x``, (N, 3, h, w) in [0, 1]: the whole LR image or a crop of it
        at ``origin`` in an image of ``full_size``."""
        image = (x - 0.5) / 0.5
        encoder_input = image if self.encoder_range == 2.0 else x * self.encoder_range
        with _full_precision(x):
            features = self.encoder.features(encoder_input)
            if self.encoder_range != 2.0:
                # Features in the units of a [−1, 1] input, as the head was designed for: an
                # FMEN trunk's, in [0, 255] units, would start every frequency ~20x too high.
                features = features * (2.0 / self.encoder_range)
            coef = self.coef(features).flatten(2).transpose(1, 2).contiguous()
            freq = self.freq(features).flatten(2).transpose(1, 2).contiguous()
        full = tuple(full_size) if full_size is not None else (x.shape[-2], x.shape[-1])
        return Features(coef, freq, image, origin, full)

    # ------------------------------------------------------------------ query side

    def query(
        self,
        features: Features,
        rows: torch.Tensor,
        cols: torch.Tensor,
        cell: torch.Tensor,
        chunk: int = DEFAULT_CHUNK,
    ) -> torch.Tensor:
        """RGB in [−1, 1] units at ``Q`` query points, (N, Q, 3).

        Args:
            features: from :meth:`encode`.
            rows, cols: (N, Q) or (Q,) query coordinates in the whole LR image's pixel
                units (pixel ``i`` spans [i, i+1)); float64 keeps tiles exact.
            cell: (…, 2) output cell size in LR pixel units (:func:`cell_for`), broadcast
                against (N, Q, 2).
            chunk: queries per MLP call.
        """
        n = features.image.shape[0]
        rows, cols = rows.expand(n, -1), cols.expand(n, -1)
        cell = cell.to(features.coef.dtype).expand(n, rows.shape[1], 2)
        parts = [
            self._query_chunk(features, r, c, k)
            for r, c, k in zip(
                rows.split(chunk, 1), cols.split(chunk, 1), cell.split(chunk, 1), strict=True
            )
        ]
        return torch.cat(parts, 1) if len(parts) > 1 else parts[0]

    def _neighbours(
        self, coords: torch.Tensor, full: int, origin: int, local: int
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """For each side (−, +): the local index of the nearest LR pixel half a pixel away,
        and the query's offset from that pixel's centre in half-pixels (official
        ``rel_coord``)."""
        shift = EPS_SHIFT * full / 2
        indices, offsets = [], []
        for side in (-0.5, 0.5):
            index = torch.floor(coords + (side + shift)).clamp_(0, full - 1)
            offsets.append(2.0 * (coords - index - 0.5))
            local_index = index.long() - origin
            if local_index.numel() and (local_index.min() < 0 or local_index.max() >= local):
                raise ValueError("query outside the encoded crop; encode a larger crop")
            indices.append(local_index)
        return indices, offsets

    def _query_chunk(
        self, features: Features, rows: torch.Tensor, cols: torch.Tensor, cell: torch.Tensor
    ) -> torch.Tensor:
        dtype = features.coef.dtype
        local_h, local_w = features.size
        row_index, row_offset = self._neighbours(
            rows, features.full_size[0], features.origin[0], local_h
        )
        col_index, col_offset = self._neighbours(
            cols, features.full_size[1], features.origin[1], local_w
        )
        # Official order: (row−, col−), (row−, col+), (row+, col−), (row+, col+).
        pairs = [(i, j) for i in range(2) for j in range(2)]
        flat = torch.cat([row_index[i] * local_w + col_index[j] for i, j in pairs], 1)
        offset = torch.cat(
            [torch.stack((row_offset[i], col_offset[j]), -1) for i, j in pairs], 1
        ).to(dtype)
        n, positions, channels = features.coef.shape
        # One row lookup in the (N·h·w, C) tables: much cheaper than a per-channel gather.
        rows_of = (flat + torch.arange(n, device=flat.device).unsqueeze(1) * positions).flatten()
        coef = features.coef.reshape(-1, channels).index_select(0, rows_of)
        freq = (
            features.freq.reshape(-1, channels).index_select(0, rows_of).view(-1, channels // 2, 2)
        )
        row_off, col_off = offset.reshape(-1, 2).unbind(-1)
        with _full_precision(coef):
            # freq channels come in (row, col) pairs, each dotted with the offset.
            phase = freq[..., 0] * row_off.unsqueeze(-1) + freq[..., 1] * col_off.unsqueeze(-1)
            phase = phase.view(n, 4, -1, channels // 2) + self.phase(cell).unsqueeze(1)
            fourier = self._fourier(phase.view(-1, channels // 2), coef)
        preds = self._mlp(fourier).view(n, 4, -1, 3)
        areas = (offset[..., 0] * offset[..., 1]).abs().add_(1e-9).unflatten(1, (4, -1))
        # Each prediction is weighted by the area of the diagonally opposite neighbour.
        weights = areas.flip(1) / areas.sum(1, keepdim=True)
        blended = (preds * weights.unsqueeze(-1)).sum(1)
        return blended + self._bilinear(features, rows, cols).to(blended.dtype)

    @staticmethod
    def _fourier(phase: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
        """``coef · [cos πφ, sin πφ]``, written in place when no gradient is needed."""
        phase = math.pi * phase
        if torch.is_grad_enabled():
            return coef * torch.cat((torch.cos(phase), torch.sin(phase)), -1)
        half = phase.shape[-1]
        basis = torch.empty_like(coef)
        torch.cos(phase, out=basis[:, :half])
        torch.sin(phase, out=basis[:, half:])
        return basis.mul_(coef)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        """:attr:`imnet` with its ReLUs in place (the largest tensors of the head)."""
        layers = [layer for layer in self.imnet.layers if isinstance(layer, nn.Linear)]
        for layer in layers[:-1]:
            x = F.linear(x, layer.weight, layer.bias).relu_()
        return F.linear(x, layers[-1].weight, layers[-1].bias)

    @staticmethod
    def _bilinear(features: Features, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """Bilinear sample of the crop (official: ``grid_sample``, border padding, no
        corner alignment), clamped at the whole image's borders: (N, Q, 3)."""
        image = features.image
        channels, local_w = image.shape[1], image.shape[3]
        samples = []
        for coords, full, origin in (
            (rows, features.full_size[0], features.origin[0]),
            (cols, features.full_size[1], features.origin[1]),
        ):
            position = (coords - 0.5).clamp(0, full - 1)
            low = position.floor()
            weight = (position - low).to(image.dtype)
            low = low.long()
            high = (low + 1).clamp(max=full - 1)
            samples.append((low - origin, high - origin, weight))
        (r0, r1, wr), (c0, c1, wc) = samples
        flat = image.flatten(2)

        def take(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            index = (r * local_w + c).unsqueeze(1).expand(-1, channels, -1)
            return flat.gather(2, index)

        wr, wc = wr.unsqueeze(1), wc.unsqueeze(1)
        top = take(r0, c0) * (1 - wc) + take(r0, c1) * wc
        bottom = take(r1, c0) * (1 - wc) + take(r1, c1) * wc
        return (top * (1 - wr) + bottom * wr).transpose(1, 2)

    # ------------------------------------------------------------------ images

    def render(
        self,
        features: Features,
        out_size: tuple[int, int],
        out_rows: tuple[int, int],
        out_cols: tuple[int, int],
        scale: tuple[float, float] | None = None,
        chunk: int = DEFAULT_CHUNK,
    ) -> torch.Tensor:
        """Output pixels ``out_rows`` × ``out_cols`` (half-open ranges) of an image of
        ``out_size`` upscaled from the one ``features`` was encoded from: (N, 3, r, c) in
        [0, 1]. ``scale`` (nominal, per axis) sets the cell beyond ×4 (:func:`cell_for`)."""
        (lr_h, lr_w), (out_h, out_w) = features.full_size, out_size
        rows = output_centres(lr_h, out_h, *out_rows)
        cols = output_centres(lr_w, out_w, *out_cols)
        grid_rows, grid_cols = torch.meshgrid(rows, cols, indexing="ij")
        device = features.coef.device
        scale_h, scale_w = scale if scale is not None else (None, None)
        cell = torch.tensor(
            [cell_for(lr_h, out_h, scale_h), cell_for(lr_w, out_w, scale_w)], device=device
        )
        rgb = self.query(
            features,
            grid_rows.reshape(1, -1).to(device),
            grid_cols.reshape(1, -1).to(device),
            cell,
            chunk,
        )
        image = rgb.transpose(1, 2).unflatten(2, (rows.numel(), cols.numel()))
        return image * 0.5 + 0.5

    def upscale_to(
        self,
        x: torch.Tensor,
        out_size: tuple[int, int],
        scale: tuple[float, float] | None = None,
        chunk: int = DEFAULT_CHUNK,
    ) -> torch.Tensor:
        """Upscale ``x``, (N, 3, h, w) in [0, 1], to ``out_size`` = (H, W) in one piece."""
        features = self.encode(x)
        return self.render(features, out_size, (0, out_size[0]), (0, out_size[1]), scale, chunk)

    def forward(
        self,
        x: torch.Tensor,
        rows: torch.Tensor | None = None,
        cols: torch.Tensor | None = None,
        cell: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Upscale by :attr:`scale`: output size ``round(h · scale) × round(w · scale)``.

        With ``rows``, ``cols`` and ``cell`` (see :meth:`query`; training), the RGB in
        [0, 1] at those points instead, (N, Q, 3).
        """
        if rows is not None:
            return self.query(self.encode(x), rows, cols, cell) * 0.5 + 0.5
        h, w = x.shape[-2:]
        out = (round(h * self.scale), round(w * self.scale))
        return self.upscale_to(x, out, (float(self.scale), float(self.scale)))


# --------------------------------------------------------------------------------------------
# Variants

ESC_LTE_DEFAULTS: Mapping[str, object] = {"hidden_dim": 256, "mlp_hidden": (256, 256, 256)}
FMEN_S_LTE_DEFAULTS: Mapping[str, object] = dict(ESC_LTE_DEFAULTS)


def build_esc_lte(
    scale: float = 4.0, hidden_dim: int = 256, mlp_hidden: Sequence[int] = (256, 256, 256)
) -> LTE:
    """ESC + LTE as in the official arbitrary-scale code (encoder with ESC's defaults)."""
    encoder = ESC(**{**ESC_DEFAULTS, "upsampler": False})
    return LTE(encoder, 2.0, hidden_dim, mlp_hidden, scale)


def build_fmen_s_lte(
    scale: float = 4.0, hidden_dim: int = 256, mlp_hidden: Sequence[int] = (256, 256, 256)
) -> LTE:
    """LTE on the FMEN-S trunk (deploy form), whose encoder works in [0, 255]."""
    encoder = FMEN(**{**FMEN_S_CONFIG, "deploy": True, "upsampler": False})
    return LTE(encoder, 255.0, hidden_dim, mlp_hidden, scale)


def read_lte(state_dict: StateDict) -> Reading | None:
    """Read an LTE checkpoint: the head's sizes, the encoder from its own keys."""
    needed = ("coef.weight", "freq.weight", "phase.weight", "imnet.layers.0.weight")
    if not all(key in state_dict for key in needed):
        return None
    linear = sorted(
        int(key.split(".")[2])
        for key in state_dict
        if key.startswith("imnet.layers.") and key.endswith(".weight")
    )
    config = {
        "hidden_dim": state_dict["coef.weight"].shape[0],
        "mlp_hidden": tuple(state_dict[f"imnet.layers.{i}.weight"].shape[0] for i in linear[:-1]),
    }
    if "encoder.plk_filter" in state_dict:
        variant = "esc_lte"
    elif "encoder.ERBs.0.conv1.rep_conv.weight" in state_dict:
        variant = "fmen_s_lte"
    else:
        return None
    return Reading("lte", 4, config, state_dict, variants=(variant,))


def _register(
    name: str,
    builder: Callable[..., LTE],
    defaults: Mapping[str, object],
    what: str,
    input_multiple: int,
) -> None:
    register_arch(
        ArchSpec(
            name=name,
            family="lte",
            builder=builder,
            input_range=1.0,
            pad_multiple=1,
            min_size=input_multiple,
            description=what,
            defaults=defaults,
            arbitrary_scale=True,
        )
    )


_register(
    "esc_lte",
    build_esc_lte,
    ESC_LTE_DEFAULTS,
    "ESC + LTE: any scale (official esc_arb)",
    int(ESC_DEFAULTS["window_size"]) // 2 + 1,
)
_register(
    "fmen_s_lte",
    build_fmen_s_lte,
    FMEN_S_LTE_DEFAULTS,
    "FMEN-S trunk + LTE head: any scale (lightsr built-in)",
    1,
)
register_reader("lte", read_lte)
