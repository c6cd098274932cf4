"""FMEN and FMEN-S: Fast and Memory-Efficient Network (Du et al., CVPRW 2022).

Two forms of the same network share one topology and one set of module names:

* the **training form** (``deploy=False``): every 3×3 conv of an ERB is a residual-in-residual
  re-parameterisable block (RRRB: expand 1×1 → valid 3×3 → reduce 1×1, plus two identities)
  and every high-frequency attention block (HFAB) carries three BatchNorms;
* the **deploy form** (``deploy=True``): each RRRB is one ``rep_conv`` 3×3 and the BatchNorms
  are merged into the HFAB convs.

:func:`reparameterize` folds a training-form module into the deploy form exactly, including
image borders: the training form pads its valid 3×3 convs with the value that a zero input
would take there (the expand-conv bias, the BatchNorm shift), which is what the zero-padded
folded conv sees.

The module works in the official [0, 255] pixel range (EDSR framework, no mean shift).

Variants:

* ``fmen_s``: the NTIRE 2022 ESR submission, the only configuration in the official code
  (``n_feats=50, mid_feats=16, down_blocks=4, up_blocks=[2,1,1,1,1]``, expand ratio 2).
* ``fmen``: the paper's larger model, whose configuration is neither in the official code nor
  in any text reachable here. See :data:`FMEN_CONFIG` for the numbers we assume.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightsr.archs.blocks import (
    PixelShuffleUpsampler,
    band_rows_for,
    bn_scale_shift,
    chain,
    fast_path,
    map_in_bands,
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

NEGATIVE_SLOPE = 0.1
# Pixels per band of the fast path's trunk convs: a band's inner maps stay small, and the
# rows recomputed at band edges (two for an ERB) cost about 3% at 256 pixels a row.
BAND_PIXELS = 64 * 256

FMEN_S_CONFIG = {
    "n_feats": 50,
    "mid_feats": 16,
    "down_blocks": 4,
    "up_blocks": (2, 1, 1, 1, 1),
    "backbone_ratio": 2,
    "attention_ratio": 2,
    "n_colors": 3,
}
"""FMEN-S, exactly as the official ``Args`` of ``train_fmen.py``/``test_fmen.py``."""

FMEN_CONFIG = {**FMEN_S_CONFIG, "n_feats": 64}
"""FMEN (the paper's larger model): **assumed** configuration.

The paper describes FMEN as FMEN-S's larger sibling built from the same blocks, but its
hyper-parameters are not in the official code and the paper's implementation details could
not be read here. We keep FMEN-S's topology (4 ERB–HFAB pairs, HFAB branches of 16 and 12
channels, expand ratio 2) and assume a 64-channel trunk, the usual width of the EDSR-baseline
framework FMEN was built in. Everything in this dict except the topology is an assumption.
"""


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, NEGATIVE_SLOPE)


def _lrelu_(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu_(x, NEGATIVE_SLOPE)


def pad_with_values(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Pad ``x`` (N,C,H,W) by one pixel on every side, with channel c's border set to ``values[c]``.

    Written as zero padding plus ``values`` on a border mask, so the interior is copied
    exactly and gradients reach ``values``.
    """
    border = F.pad(x.new_zeros(1, 1, *x.shape[-2:]), (1, 1, 1, 1), value=1.0)
    return F.pad(x, (1, 1, 1, 1)) + border * values.view(1, -1, 1, 1)


def _add_identity(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` (C,C,3,3) plus the identity as a centre tap."""
    eye = torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)
    return weight + F.pad(eye[:, :, None, None], (1, 1, 1, 1))


class RRRB(nn.Module):
    """Residual-in-residual re-parameterisable block (training form of one 3×3 conv).

    ``reduce(fea(pad_b0(expand(x))) + expand(x)) + x``; :meth:`fold` gives the equivalent
    3×3 conv.

    Args:
        channels: input and output channels.
        ratio: expansion ratio of the hidden 1×1/3×3 convs.
    """

    def __init__(self, channels: int, ratio: int = 2) -> None:
        super().__init__()
        hidden = channels * ratio
        self.expand_conv = nn.Conv2d(channels, hidden, 1)
        self.fea_conv = nn.Conv2d(hidden, hidden, 3, padding=0)
        self.reduce_conv = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expanded = self.expand_conv(x)
        # The border takes expand_conv(0) = bias, matching the folded conv's zero padding.
        padded = pad_with_values(expanded, self.expand_conv.bias)
        return self.reduce_conv(self.fea_conv(padded) + expanded) + x

    @torch.no_grad()
    def fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Weight (C,C,3,3) and bias (C) of the single 3×3 conv equal to this block."""
        w0 = self.expand_conv.weight[:, :, 0, 0]  # (hidden, C)
        w1 = _add_identity(self.fea_conv.weight)  # inner residual
        w2 = self.reduce_conv.weight[:, :, 0, 0]  # (C, hidden)
        w01 = torch.einsum("omhw,mi->oihw", w1, w0)
        b01 = self.fea_conv.bias + torch.einsum("omhw,m->o", w1, self.expand_conv.bias)
        weight = torch.einsum("pm,mihw->pihw", w2, w01)
        bias = w2 @ b01 + self.reduce_conv.bias
        return _add_identity(weight), bias  # outer residual


class RepConv(nn.Module):
    """Deploy form of an :class:`RRRB`: one 3×3 conv, stored as ``rep_conv``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.rep_conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rep_conv(x)


class ERB(nn.Module):
    """Enhanced residual block: conv1 → LeakyReLU(0.1) → conv2 (each an RRRB or a RepConv).

    There is no outer skip: the residuals live inside the RRRBs.
    """

    def __init__(self, channels: int, ratio: int = 2, deploy: bool = False) -> None:
        super().__init__()
        self.conv1 = RepConv(channels) if deploy else RRRB(channels, ratio)
        self.conv2 = RepConv(channels) if deploy else RRRB(channels, ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.conv1(x)
        return self.conv2(_lrelu_(hidden) if fast_path() else _lrelu(hidden))


class HFAB(nn.Module):
    """High-frequency attention block: ``x * sigmoid(excitate(ERBs(squeeze(x))))``.

    In the training form, BatchNorms surround the convs (``bn1`` before ``squeeze``,
    ``bn2`` before ``excitate``, ``bn3`` after it) and the 3×3 convs are valid convs on
    inputs padded with the BatchNorm shift β − μγ/σ (BN of a zero input), so that merging
    the BNs is exact at the borders. Following the official code, the pad value uses the
    running statistics even in train mode. In the deploy form the BNs are merged away.

    Args:
        channels: trunk channels.
        mid_channels: channels inside the attention branch.
        n_erbs: number of ERBs in the branch.
        ratio: RRRB expansion ratio of the branch ERBs.
        deploy: build the deploy form.
    """

    def __init__(
        self, channels: int, mid_channels: int, n_erbs: int, ratio: int = 2, deploy: bool = False
    ) -> None:
        super().__init__()
        self.deploy = deploy
        padding = 1 if deploy else 0
        if not deploy:
            self.bn1 = nn.BatchNorm2d(channels)
            self.bn2 = nn.BatchNorm2d(mid_channels)
            self.bn3 = nn.BatchNorm2d(channels)
        self.squeeze = nn.Conv2d(channels, mid_channels, 3, padding=padding)
        self.convs = nn.Sequential(*(ERB(mid_channels, ratio, deploy) for _ in range(n_erbs)))
        self.excitate = nn.Conv2d(mid_channels, channels, 3, padding=padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy and fast_path():
            return self._forward_fast(x)
        if self.deploy:
            branch = _lrelu(self.convs(_lrelu(self.squeeze(x))))
            return torch.sigmoid(self.excitate(branch)) * x
        branch = pad_with_values(self.bn1(x), bn_scale_shift(self.bn1)[1])
        branch = _lrelu(self.convs(_lrelu(self.squeeze(branch))))
        branch = pad_with_values(self.bn2(branch), bn_scale_shift(self.bn2)[1])
        return torch.sigmoid(self.bn3(self.excitate(branch))) * x

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """Deploy-form forward with in-place activations and product (gradients off)."""
        attention = self.excitate(self._branch_fast(x))
        return attention.sigmoid_().mul_(x)

    def _branch_fast(self, x: torch.Tensor) -> torch.Tensor:
        branch = _lrelu_(self.squeeze(x))
        for erb in self.convs:
            branch = erb(branch)
        return _lrelu_(branch)

    def gate_(self, x: torch.Tensor, band_rows: int = 32) -> torch.Tensor:
        """``x *= attention`` in place (deploy form, gradients off, ``x`` the caller's own).

        The full-size attention map is never built: ``excitate`` runs on bands of rows of
        the narrow branch, each with one row of context on either side.
        """
        attention = chain(self.excitate, torch.sigmoid_)
        return update_in_bands_(x, attention, self._branch_fast(x), band_rows, 1, torch.Tensor.mul_)

    def branch_convs(self) -> list[nn.Conv2d]:
        """The deploy-form branch convs in order, squeeze to excitate."""
        erb_convs = [conv.rep_conv for erb in self.convs for conv in (erb.conv1, erb.conv2)]
        return [self.squeeze, *erb_convs, self.excitate]

    @torch.no_grad()
    def balance_(self) -> None:
        """Give every deploy-form branch conv weights of the same RMS, in place.

        Merging the BatchNorms can leave weights of 1e-6 in ``excitate`` behind activations
        of 1e7 (the official FMEN-S weights): one Adam step, which moves every weight by
        about the learning rate, then destroys the network. Only LeakyReLUs, which commute
        with positive scaling, and zero padding lie between the branch convs, so scaling
        conv ``i``'s outputs by ``s_i`` and its successor's inputs by ``1 / s_i`` leaves the
        function unchanged; the scales are chosen so all weights end up equally large.
        """
        if not self.deploy:
            raise ValueError("balance_ applies to the deploy form")
        convs = self.branch_convs()
        rms = [conv.weight.pow(2).mean().sqrt() for conv in convs]
        target = torch.stack(rms).log().mean().exp()  # geometric mean: the product is kept
        carried = torch.ones(())  # the scale of the previous conv's output
        for conv, size in zip(convs, rms, strict=True):
            scale = carried * target / size
            conv.weight.mul_(scale / carried)
            conv.bias.mul_(scale)
            carried = scale

    @torch.no_grad()
    def folded_convs(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Weights and biases of ``squeeze`` and ``excitate`` with the BatchNorms merged."""
        scale1, shift1 = bn_scale_shift(self.bn1)
        scale2, shift2 = bn_scale_shift(self.bn2)
        scale3, shift3 = bn_scale_shift(self.bn3)
        squeeze = _merge_bn_before(self.squeeze, scale1, shift1)
        w, b = _merge_bn_before(self.excitate, scale2, shift2)
        excitate = (w * scale3.view(-1, 1, 1, 1), b * scale3 + shift3)
        return {"squeeze": squeeze, "excitate": excitate}


def _merge_bn_before(
    conv: nn.Conv2d, scale: torch.Tensor, shift: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``conv(x * scale + shift)`` as one conv (per input channel)."""
    weight = conv.weight * scale.view(1, -1, 1, 1)
    bias = conv.bias + torch.einsum("oihw,i->o", conv.weight, shift)
    return weight, bias


class FMEN(nn.Module):
    """FMEN / FMEN-S in the training or deploy form; input and output in [0, 255].

    head → warmup (conv3x3, HFAB) → [ERB → HFAB] × down_blocks → lr_conv, plus the long skip
    from the head → tail (conv3x3 + PixelShuffle).

    Args:
        scale: upscale factor.
        n_feats: trunk channels.
        mid_feats: HFAB branch channels (the warm-up HFAB uses ``mid_feats - 4``).
        down_blocks: number of ERB–HFAB pairs.
        up_blocks: ERBs inside each HFAB: the warm-up one first, then one per pair.
        backbone_ratio: RRRB expansion ratio of the trunk ERBs.
        attention_ratio: RRRB expansion ratio of the HFAB ERBs.
        n_colors: image channels.
        deploy: build the deploy form (plain 3×3 convs, no BatchNorm).
        upsampler: False builds the trunk alone (no ``tail``), the encoder of an
            arbitrary-scale model: only :meth:`features` is then defined.
    """

    def __init__(
        self,
        scale: int = 4,
        n_feats: int = 50,
        mid_feats: int = 16,
        down_blocks: int = 4,
        up_blocks: Sequence[int] = (2, 1, 1, 1, 1),
        backbone_ratio: int = 2,
        attention_ratio: int = 2,
        n_colors: int = 3,
        deploy: bool = False,
        upsampler: bool = True,
    ) -> None:
        super().__init__()
        if len(up_blocks) != down_blocks + 1:
            raise ValueError("up_blocks needs one entry per HFAB (down_blocks + 1)")
        self.config = {
            "scale": scale,
            "n_feats": n_feats,
            "mid_feats": mid_feats,
            "down_blocks": down_blocks,
            "up_blocks": tuple(up_blocks),
            "backbone_ratio": backbone_ratio,
            "attention_ratio": attention_ratio,
            "n_colors": n_colors,
        }
        self.deploy = deploy
        self.head = nn.Conv2d(n_colors, n_feats, 3, padding=1)
        self.warmup = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            HFAB(n_feats, mid_feats - 4, up_blocks[0], attention_ratio, deploy),
        )
        self.ERBs = nn.ModuleList(ERB(n_feats, backbone_ratio, deploy) for _ in range(down_blocks))
        self.HFABs = nn.ModuleList(
            HFAB(n_feats, mid_feats, n, attention_ratio, deploy) for n in up_blocks[1:]
        )
        self.lr_conv = nn.Conv2d(n_feats, n_feats, 3, padding=1)
        self.out_dim = n_feats
        if upsampler:
            self.tail = PixelShuffleUpsampler(n_feats, scale, n_colors)

    # oneDNN's NHWC convolutions are faster here (see lightsr.archs.blocks.to_inference_layout).
    prefers_channels_last = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_path():
            return self._forward_fast(x)
        return self.tail(self.features(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk before the upsampler: head, warm-up, ERB–HFAB pairs, lr_conv, long skip."""
        shallow = self.head(x)
        h = self.warmup(shallow)
        for erb, hfab in zip(self.ERBs, self.HFABs, strict=True):
            h = hfab(erb(h))
        return self.lr_conv(h) + shallow

    def _forward_fast(self, x: torch.Tensor) -> torch.Tensor:
        """The forward with gradients off, holding one full-size trunk map at a time.

        The head and the warm-up conv run band by band, the ERBs and ``lr_conv`` update the
        map in place band by band
        (:func:`~lightsr.archs.blocks.update_in_bands_`), the deploy form's attention gates
        multiply in place (:meth:`HFAB.gate_`), and the long skip ``head(x)`` is computed
        again at the end, band by band, instead of being kept through the trunk (the same
        conv on the same input, so the same values, for about 1% more compute).
        """
        band = band_rows_for(x.shape[-1], BAND_PIXELS, minimum=2)  # an ERB's halo
        conv, hfab = self.warmup
        h = map_in_bands(chain(self.head, conv), x, band, halo=2)
        h = hfab.gate_(h) if self.deploy else hfab(h)
        for erb, hfab in zip(self.ERBs, self.HFABs, strict=True):
            h = update_in_bands_(h, erb, h, band, halo=2)  # two 3×3 convs
            h = hfab.gate_(h) if self.deploy else hfab(h)
        h = update_in_bands_(h, self.lr_conv, h, band)
        return self.tail(update_in_bands_(h, self.head, x, band, combine=torch.Tensor.add_))

    def reparameterize(self) -> FMEN:
        """The deploy form of this network (see :func:`reparameterize`)."""
        return reparameterize(self)

    def balance_(self) -> None:
        """Rescale the deploy-form attention branches for fine-tuning (:meth:`HFAB.balance_`).

        The function is unchanged; only how it is split among the weights changes.
        """
        self.warmup[1].balance_()
        for hfab in self.HFABs:
            hfab.balance_()


@torch.no_grad()
def reparameterize(model: FMEN) -> FMEN:
    """Fold a training-form FMEN into an equivalent deploy-form FMEN.

    RRRBs become single 3×3 convs and the HFAB BatchNorms (with their running statistics)
    are merged into ``squeeze``/``excitate``. The result equals the training form in eval
    mode, borders included, up to float rounding. A deploy-form input is returned as a copy.
    The new module is in eval mode, on the same device and dtype.
    """
    if model.deploy:
        return copy.deepcopy(model).eval()
    deployed = FMEN(**model.config, deploy=True)
    params = next(model.parameters())
    deployed.to(device=params.device, dtype=params.dtype)
    state = {k: v for k, v in model.state_dict().items() if k in deployed.state_dict()}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, RRRB):
            weight, bias = module.fold()
            state[f"{prefix}rep_conv.weight"], state[f"{prefix}rep_conv.bias"] = weight, bias
        elif isinstance(module, HFAB):
            for conv_name, (weight, bias) in module.folded_convs().items():
                state[f"{prefix}{conv_name}.weight"] = weight
                state[f"{prefix}{conv_name}.bias"] = bias
    deployed.load_state_dict(state, strict=True)
    return deployed.eval()


register_arch(
    ArchSpec(
        name="fmen_s",
        family="fmen",
        builder=FMEN,
        input_range=255.0,
        description="FMEN-S (NTIRE 2022 ESR), 0.34M params deployed; RRRB/BN train form",
        defaults=FMEN_S_CONFIG,
        deploy_arg="deploy",
    )
)
register_arch(
    ArchSpec(
        name="fmen",
        family="fmen",
        builder=FMEN,
        input_range=255.0,
        description="FMEN (paper-derived): FMEN-S topology with an assumed 64-channel trunk",
        paper_derived=True,
        defaults=FMEN_CONFIG,
        deploy_arg="deploy",
    )
)

# NTIRE 2022 ESR challenge copy (team03) names the trunk blocks differently.
_KEY_ALIASES = (("basic_blocks.", "ERBs."), ("hfabs.", "HFABs."))


def _canonical_key(key: str) -> str:
    for old, new in _KEY_ALIASES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def read_fmen(state_dict: StateDict) -> Reading | None:
    """Read an FMEN-family checkpoint (either form): sizes from shapes, depths from keys."""
    sd = {_canonical_key(k): v for k, v in state_dict.items()}
    needed = ("head.weight", "warmup.0.weight", "warmup.1.squeeze.weight", "lr_conv.weight")
    if not all(k in sd for k in (*needed, "tail.0.weight")):
        return None
    if "ERBs.0.conv1.rep_conv.weight" in sd:
        form = "deploy"
    elif "ERBs.0.conv1.expand_conv.weight" in sd:
        form = "train"
    else:
        return None
    n_colors, n_feats = sd["head.weight"].shape[1], sd["head.weight"].shape[0]
    scale = scale_from_shuffle(sd["tail.0.weight"].shape[0], n_colors)
    if scale is None:
        return None
    down_blocks = count_indexed(sd, "ERBs.{}.")
    config = {
        "n_feats": n_feats,
        # The warm-up HFAB's branch has mid_feats - 4 channels (see FMEN).
        "mid_feats": sd["warmup.1.squeeze.weight"].shape[0] + 4,
        "down_blocks": down_blocks,
        "up_blocks": (
            count_indexed(sd, "warmup.1.convs.{}."),
            *(count_indexed(sd, f"HFABs.{i}.convs.{{}}.") for i in range(down_blocks)),
        ),
        "n_colors": n_colors,
    }
    if form == "train":  # the deploy form folds the expansions away
        config["backbone_ratio"] = sd["ERBs.0.conv1.expand_conv.weight"].shape[0] // n_feats
        mid = config["mid_feats"] - 4
        config["attention_ratio"] = sd["warmup.1.convs.0.conv1.expand_conv.weight"].shape[0] // mid
    return Reading("fmen", scale, config, sd, form)


register_reader("fmen", read_fmen)
