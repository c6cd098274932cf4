"""Training configuration: TOML file → validated dataclasses.

A config file has the sections ``[model]``, ``[data]``, ``[val]``, ``[optim]``,
``[schedule]``, ``[train]`` and ``[gan]`` plus the top-level keys ``name`` and
``output_dir``. Every key has a default except ``model.network``. Unknown keys and wrongly
typed values raise :class:`~lightsr.errors.ConfigError` naming the key, so a typo never
silently trains with a default.

Paths and the run name may contain ``${VAR}`` references to environment variables.
``${LIGHTSR_SHARED}`` defaults to :func:`lightsr.paths.shared_dir` and ``${scale}`` is the
configured scale, so one config can serve several scales (``--set model.scale=2``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightsr.errors import ConfigError
from lightsr.options import TRAIN_PRECISIONS
from lightsr.paths import shared_dir

if TYPE_CHECKING:
    from lightsr.degrade import DegradationConfig

LOSSES = ("l1", "charbonnier", "mse")
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "multistep")
SAMPLINGS = ("area", "uniform")
DISCRIMINATORS = ("unet_sn",)


@dataclass
class ModelConfig:
    """Which network to train.

    Attributes:
        network: registry name of the variant (``"fmen_s"``).
        scale: upscale factor.
        options: keyword arguments for the network builder (``{deploy = false}``).
        init_weights: checkpoint to start from (fine-tuning); its keys must match the
            network built with ``options``. Empty: random initialisation.
        init_from: checkpoint (file or published name such as ``"fmen_s_x4_official"``)
            whose tensors initialise the network where key and shape both match, e.g. the
            body of another scale; the rest keeps its random initialisation. The loaded and
            skipped keys are reported. Exclusive with ``init_weights``.
        balance: after loading, rescale the weights so that every layer's weights are
            about equally large, without changing the function (networks with a
            ``balance_()`` method: deploy-form FMEN, whose merged BatchNorms otherwise make
            Adam steps explode).
        init_prefix: prepended to the ``init_from`` checkpoint's keys before matching
            (``"encoder."``: a fixed-scale network's trunk starts an arbitrary-scale one).
        freeze: parameters whose names start with one of these prefixes are not trained
            (``["encoder."]``: train an arbitrary-scale head on a fixed trunk).
    """

    network: str = ""
    scale: int = 4
    options: dict[str, Any] = field(default_factory=dict)
    init_weights: str = ""
    init_from: str = ""
    init_prefix: str = ""
    balance: bool = False
    freeze: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    """Training data and patch sampling.

    Attributes:
        hr_dirs: folders of high-resolution training images.
        lr_dirs: matching folders of low-resolution images (``<name>.png`` or
            ``<name>x<s>.png``), one per HR folder; empty to make the LR with MATLAB-exact
            bicubic downscaling (:func:`lightsr.imresize.imresize`).
        lr_patch: side of the LR training patch (the HR patch is ``lr_patch * scale``).
        batch_size: global batch size (split across processes under DDP).
        flip: random horizontal and vertical flips.
        rot90: random transposition (with the flips: all 8 rotations/reflections).
        sampling: ``"area"`` draws every HR pixel position equally often; ``"uniform"``
            draws every image equally often.
        lr_cache: folder for the precomputed LR images (empty: the user cache).
        workers: processes used to precompute LR images (0: one per CPU core).
        on_device: keep the training images on the training device (GPU).
        degradation: empty for bicubic LR (above); ``"realesrgan"`` or ``"mild"`` to make
            the LR on the fly from HR crops with that random degradation preset
            (:func:`lightsr.degrade.degradation_preset`; real-world training). Then
            ``lr_dirs``, ``sampling``, ``lr_cache`` and ``on_device`` do not apply.
        degradation_options: fields of the preset to override, e.g. ``{jpeg_range = [50,
            95]}`` (see :class:`lightsr.degrade.DegradationConfig`).
        degradation_crop: side of the HR crop that is degraded, before the training patch
            is cut from it (as Real-ESRGAN, whose crop is 400).
        scale_range: ``[low, high]`` to train an arbitrary-scale network (``arbitrary_scale``
            variants, :mod:`lightsr.archs.lte`): each sample draws its scale s from
            U(low, high), its HR crop is ``round(lr_patch · s)`` pixels and its LR the
            MATLAB-bicubic downscale of that crop to ``lr_patch`` (the official LIIF/LTE
            recipe). Empty: every sample at ``model.scale``.
        query_samples: HR pixels per sample that the loss sees (arbitrary scale only;
            official 2304 = 48²).
    """

    hr_dirs: list[str] = field(default_factory=list)
    lr_dirs: list[str] = field(default_factory=list)
    lr_patch: int = 48
    batch_size: int = 16
    flip: bool = True
    rot90: bool = True
    sampling: str = "area"
    lr_cache: str = ""
    workers: int = 0
    on_device: bool = True
    degradation: str = ""
    degradation_options: dict[str, Any] = field(default_factory=dict)
    degradation_crop: int = 400
    scale_range: list[float] = field(default_factory=list)
    query_samples: int = 2304


@dataclass
class ValConfig:
    """Validation during training.

    Attributes:
        dir: test-set folder with ``HR/`` and optionally ``LR_bicubic/X<s>/`` (empty: none).
        interval: validate every this many iterations (0: only at the end).
        ssim: also compute SSIM-Y (slower on large sets).
        previews: how many images get a ``bicubic | SR | HR`` preview crop.
        preview_size: side of the preview crop in HR pixels.
    """

    dir: str = ""
    interval: int = 1000
    ssim: bool = True
    previews: int = 2
    preview_size: int = 128


@dataclass
class OptimConfig:
    """Optimizer.

    Attributes:
        name: ``"adam"`` or ``"adamw"``.
        lr: peak learning rate.
        betas: Adam betas.
        weight_decay: L2 penalty (Adam) or decoupled weight decay (AdamW).
        grad_clip: clip the global gradient norm to this value (0: no clipping).
    """

    name: str = "adam"
    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    grad_clip: float = 0.0


@dataclass
class ScheduleConfig:
    """Learning-rate schedule.

    Attributes:
        name: ``"constant"``, ``"cosine"`` (to ``min_lr`` over the whole budget) or
            ``"multistep"`` (times ``gamma`` at each milestone iteration).
        warmup_iters: linear warm-up from ~0 to the peak rate over this many iterations.
        min_lr: final learning rate of the cosine schedule.
        milestones: iterations at which the multistep schedule decays.
        gamma: multistep decay factor.
    """

    name: str = "cosine"
    warmup_iters: int = 0
    min_lr: float = 1e-6
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.5


@dataclass
class TrainConfig:
    """Budget, loss and engine settings.

    Attributes:
        total_iters: iteration budget (0: none; then ``max_minutes`` must be set).
        max_minutes: wall-clock budget of the training loop (0: none). With both budgets the
            first one reached stops training, and the schedule follows whichever is further
            along, so the learning rate always reaches its end value when training stops.
        loss: ``"l1"``, ``"charbonnier"`` or ``"mse"`` (the pixel loss).
        gt_usm: the pixel and perceptual losses compare with the unsharp-masked HR instead
            of the HR (Real-ESRGAN's sharper targets); needs ``data.degradation``.
        charbonnier_eps: epsilon of the Charbonnier loss (in [0, 1] pixel units).
        teacher: checkpoint (file or published name such as ``"emt_x2_official"``) of a
            network of the same scale whose outputs the student also learns (distillation);
            empty: none.
        teacher_weight: the loss is ``(1 - w) * loss(SR, HR) + w * loss(SR, teacher)``.
        ema_decay: decay of the exponential moving average of the weights (0: no EMA).
        precision: autocast dtype: ``"none"``, ``"bf16"`` (CPU or CUDA) or ``"fp16"`` (CUDA).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        compile: wrap the network in ``torch.compile``.
        sync_bn: use synchronized BatchNorm across processes under DDP.
        seed: seed of weights initialisation and of the data order.
        log_interval: log the loss every this many iterations.
        checkpoint_interval: save a resumable checkpoint every this many iterations.
        keep_checkpoints: how many of the newest checkpoints to keep.
    """

    total_iters: int = 0
    max_minutes: float = 0.0
    loss: str = "l1"
    charbonnier_eps: float = 1e-3
    gt_usm: bool = False
    teacher: str = ""
    teacher_weight: float = 0.5
    ema_decay: float = 0.999
    precision: str = "bf16"
    device: str = "auto"
    compile: bool = False
    sync_bn: bool = False
    seed: int = 0
    log_interval: int = 100
    checkpoint_interval: int = 1000
    keep_checkpoints: int = 2


def _default_perceptual_layers() -> dict[str, Any]:
    return {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}


@dataclass
class GanConfig:
    """Adversarial training (the second, ESRGAN-like stage of Real-ESRGAN).

    The generator loss is ``pixel_weight * pixel + perceptual_weight * perceptual +
    gan_weight * gan``; the discriminator learns HR (without USM) as real and the output as
    fake, with its own Adam optimiser, whose learning rate follows the schedule of
    ``[optim]`` scaled to ``d_lr``.

    Attributes:
        enabled: train against a discriminator.
        discriminator: ``"unet_sn"`` (U-Net with spectral normalisation).
        num_feat: channels of the discriminator's first level.
        gan_weight: weight of the vanilla (binary cross-entropy) GAN loss of the generator.
        pixel_weight: weight of the pixel loss (``train.loss``).
        perceptual_weight: weight of the VGG19 perceptual loss (0: none).
        perceptual_layers: compared VGG19 layers (features before the ReLU) and weights.
        vgg_weights: torchvision-format VGG19 weights file (``.pth`` or ``.safetensors``);
            needed when ``perceptual_weight`` is not 0.
        d_lr: peak learning rate of the discriminator.
        d_betas: Adam betas of the discriminator.
        d_init_iters: iterations at the start of the run that train the discriminator
            alone (BasicSR's ``net_d_init_iters``), so that a fresh discriminator has
            learnt something before its gradients reach a generator that is already good.
    """

    enabled: bool = False
    discriminator: str = "unet_sn"
    num_feat: int = 64
    gan_weight: float = 0.1
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0
    perceptual_layers: dict[str, Any] = field(default_factory=_default_perceptual_layers)
    vgg_weights: str = ""
    d_lr: float = 1e-4
    d_betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    d_init_iters: int = 0


@dataclass
class Config:
    """A complete training configuration (see the module docstring for the file format)."""

    name: str = "run"
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    val: ValConfig = field(default_factory=ValConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    gan: GanConfig = field(default_factory=GanConfig)

    @property
    def run_dir(self) -> Path:
        """Folder that receives checkpoints, logs and final weights."""
        return Path(self.output_dir) / self.name


# ----------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read a TOML config, apply ``key=value`` overrides, expand paths and validate.

    Args:
        path: the TOML file.
        overrides: dotted assignments such as ``"train.total_iters=2000"``; the value is
            parsed as a TOML value, and taken as a plain string if that fails.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or invalid value.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    for assignment in overrides:
        apply_override(raw, assignment)
    return config_from_dict(raw)


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Build and validate a :class:`Config` from a parsed TOML mapping."""
    config = _build(Config, raw, prefix="")
    _expand_paths(config)
    validate(config)
    return config


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``section.key=value`` override to a parsed config mapping in place."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {assignment!r}")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a section")
        node = child
    node[leaf] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Instantiate dataclass ``cls`` from ``raw``, checking every key and value type."""
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in known:
            raise ConfigError(f"unknown config key '{prefix}{key}'")
    values = {}
    for name in known & set(raw):
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, raw[name], prefix=f"{prefix}{name}.")
        else:
            values[name] = _coerce(raw[name], hint, f"{prefix}{name}")
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against a simple type hint; ints are accepted where floats are."""
    origin = typing.get_origin(hint)
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} must be a list")
        return [_coerce(item, item_hint, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a table")
        return dict(value)
    if hint is Any or isinstance(hint, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"config key {key!r} must be an integer, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"config key {key!r} must be {hint.__name__}, got {value!r}")
    return value


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_path(text: str, scale: int) -> str:
    """Expand ``${VAR}`` (environment, ``LIGHTSR_SHARED``, ``scale``) and ``~`` in a path."""
    if not text:
        return text

    def lookup(match: re.Match) -> str:
        name = match.group(1)
        if name == "scale":
            return str(scale)
        if name in os.environ:
            return os.environ[name]
        if name == "LIGHTSR_SHARED":
            return str(shared_dir())
        raise ConfigError(f"path {text!r} uses ${{{name}}}, which is not set")

    return os.path.expanduser(_VAR.sub(lookup, text))


def _expand_paths(config: Config) -> None:
    scale = config.model.scale
    config.output_dir = expand_path(config.output_dir, scale)
    config.data.hr_dirs = [expand_path(p, scale) for p in config.data.hr_dirs]
    config.data.lr_dirs = [expand_path(p, scale) for p in config.data.lr_dirs]
    config.data.lr_cache = expand_path(config.data.lr_cache, scale)
    config.model.init_weights = expand_path(config.model.init_weights, scale)
    config.model.init_from = expand_path(config.model.init_from, scale)
    config.val.dir = expand_path(config.val.dir, scale)
    config.train.teacher = expand_path(config.train.teacher, scale)
    config.gan.vgg_weights = expand_path(config.gan.vgg_weights, scale)
    config.name = expand_path(config.name, scale)


# ----------------------------------------------------------------------------- validation


def validate(config: Config) -> None:
    """Check value ranges and cross-field rules; raise :class:`ConfigError` on the first."""
    model, data, train = config.model, config.data, config.train
    if not model.network:
        raise ConfigError("config key 'model.network' is required")
    if not config.name or "/" in config.name or config.name in (".", ".."):
        raise ConfigError(f"config key 'name' must be a plain folder name, got {config.name!r}")
    _require(model.scale >= 1, "model.scale", "must be at least 1")
    _require(
        not (model.init_weights and model.init_from),
        "model.init_from",
        "cannot be combined with model.init_weights",
    )
    _require(bool(data.hr_dirs), "data.hr_dirs", "must list at least one folder")
    _require(
        not data.lr_dirs or len(data.lr_dirs) == len(data.hr_dirs),
        "data.lr_dirs",
        "must be empty or list one folder per data.hr_dirs entry",
    )
    _require(data.lr_patch >= 1, "data.lr_patch", "must be positive")
    _require(data.batch_size >= 1, "data.batch_size", "must be positive")
    _require(data.workers >= 0, "data.workers", "must be 0 or more")
    _choice(data.sampling, SAMPLINGS, "data.sampling")
    _require(config.val.interval >= 0, "val.interval", "must be 0 or more")
    _require(config.val.previews >= 0, "val.previews", "must be 0 or more")
    _require(config.val.preview_size >= 1, "val.preview_size", "must be positive")
    _choice(config.optim.name, OPTIMIZERS, "optim.name")
    _require(config.optim.lr > 0, "optim.lr", "must be positive")
    _require(len(config.optim.betas) == 2, "optim.betas", "must hold two numbers")
    _require(all(0 <= b < 1 for b in config.optim.betas), "optim.betas", "must be in [0, 1)")
    _require(config.optim.grad_clip >= 0, "optim.grad_clip", "must be 0 or more")
    _choice(config.schedule.name, SCHEDULES, "schedule.name")
    _require(config.schedule.warmup_iters >= 0, "schedule.warmup_iters", "must be 0 or more")
    _require(config.schedule.min_lr >= 0, "schedule.min_lr", "must be 0 or more")
    _require(
        config.schedule.milestones == sorted(config.schedule.milestones),
        "schedule.milestones",
        "must be increasing",
    )
    _require(train.total_iters >= 0, "train.total_iters", "must be 0 or more")
    _require(train.max_minutes >= 0, "train.max_minutes", "must be 0 or more")
    _require(
        train.total_iters > 0 or train.max_minutes > 0,
        "train.total_iters",
        "or train.max_minutes must be set (the training budget)",
    )
    _choice(train.loss, LOSSES, "train.loss")
    _require(0 < train.teacher_weight <= 1, "train.teacher_weight", "must be in (0, 1]")
    _require(0 <= train.ema_decay < 1, "train.ema_decay", "must be in [0, 1)")
    _choice(train.precision, TRAIN_PRECISIONS, "train.precision")
    _require(train.log_interval >= 1, "train.log_interval", "must be positive")
    _require(train.checkpoint_interval >= 1, "train.checkpoint_interval", "must be positive")
    _require(train.keep_checkpoints >= 1, "train.keep_checkpoints", "must be at least 1")
    _require(not train.gt_usm or bool(data.degradation), "train.gt_usm", "needs data.degradation")
    _validate_degradation(data, model.scale)
    _validate_scale_range(data)
    _validate_gan(config.gan)


def _validate_scale_range(data: DataConfig) -> None:
    if not data.scale_range:
        return
    low_high = data.scale_range
    _require(
        len(low_high) == 2 and 1 <= low_high[0] <= low_high[1],
        "data.scale_range",
        "must be [low, high] with 1 <= low <= high",
    )
    _require(not data.degradation, "data.scale_range", "cannot be combined with data.degradation")
    _require(not data.lr_dirs, "data.lr_dirs", "must be empty with data.scale_range")
    _require(
        1 <= data.query_samples <= data.lr_patch**2,
        "data.query_samples",
        f"must be between 1 and data.lr_patch² ({data.lr_patch**2})",
    )


def _validate_degradation(data: DataConfig, scale: int) -> None:
    if not data.degradation:
        _require(not data.degradation_options, "data.degradation_options", "needs degradation")
        return
    _require(not data.lr_dirs, "data.lr_dirs", "must be empty with data.degradation")
    _require(
        data.flip == data.rot90,
        "data.rot90",
        "must equal data.flip with data.degradation (flips and rotations go together)",
    )
    _require(
        data.degradation_crop >= data.lr_patch * scale,
        "data.degradation_crop",
        "must be at least the HR patch (data.lr_patch * model.scale)",
    )
    degradation_config(data)


def degradation_config(data: DataConfig) -> DegradationConfig:
    """The degradation preset of ``data`` with its ``degradation_options`` applied.

    Raises:
        ConfigError: unknown preset, unknown option or invalid value, naming the key.
    """
    from lightsr.degrade import PRESETS, degradation_preset  # OpenCV: only when needed

    _choice(data.degradation, tuple(PRESETS), "data.degradation")
    # TOML has no tuples; the degradation ranges are tuples.
    options = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in data.degradation_options.items()
    }
    try:
        return degradation_preset(data.degradation, **options)
    except (ConfigError, TypeError, ValueError) as exc:
        raise ConfigError(f"config key 'data.degradation_options': {exc}") from None


def _validate_gan(gan: GanConfig) -> None:
    if not gan.enabled:
        return
    _choice(gan.discriminator, DISCRIMINATORS, "gan.discriminator")
    _require(gan.num_feat >= 1, "gan.num_feat", "must be positive")
    for key in ("gan_weight", "pixel_weight", "perceptual_weight"):
        _require(getattr(gan, key) >= 0, f"gan.{key}", "must be 0 or more")
    _require(gan.d_lr > 0, "gan.d_lr", "must be positive")
    _require(len(gan.d_betas) == 2, "gan.d_betas", "must hold two numbers")
    _require(all(0 <= b < 1 for b in gan.d_betas), "gan.d_betas", "must be in [0, 1)")
    _require(gan.d_init_iters >= 0, "gan.d_init_iters", "must be 0 or more")
    if not gan.perceptual_weight:
        return
    _require(bool(gan.vgg_weights), "gan.vgg_weights", "is needed for the perceptual loss")
    _require(bool(gan.perceptual_layers), "gan.perceptual_layers", "must name a layer")
    from lightsr.train.perceptual import VGG19_CONVS

    for name, weight in gan.perceptual_layers.items():
        _choice(name, tuple(VGG19_CONVS), "gan.perceptual_layers")
        _require(
            isinstance(weight, int | float) and not isinstance(weight, bool),
            f"gan.perceptual_layers.{name}",
            "must be a number",
        )


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config key {key!r} {message}")


def _choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"config key {key!r} must be one of {', '.join(choices)}, got {value!r}")


# ----------------------------------------------------------------------------- writing


def config_to_toml(config: Config) -> str:
    """The resolved config as TOML text (loadable again with :func:`load_config`)."""
    lines = [f"name = {_toml_value(config.name)}", f"output_dir = {_toml_value(config.output_dir)}"]
    for section in dataclasses.fields(config):
        value = getattr(config, section.name)
        if not dataclasses.is_dataclass(value):
            continue
        lines += ["", f"[{section.name}]"]
        lines += [
            f"{f.name} = {_toml_value(getattr(value, f.name))}" for f in dataclasses.fields(value)
        ]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items())
        return "{" + (f" {items} " if items else "") + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
