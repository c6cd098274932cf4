"""The training loop: data, model, optimisation, validation, checkpoints and final weights.

Run folder layout (``<output_dir>/<name>/``)::

    config.toml               resolved configuration (overrides applied, paths expanded)
    metrics.jsonl             loss / learning rate / validation records, one JSON per line
    curves.png                loss and validation PSNR curves
    previews/<image>.png      bicubic | SR | HR crops of the latest validation
    checkpoints/iter_N/       resumable checkpoints (see lightsr.train.checkpoints); with
                              [gan] enabled they also hold the discriminator
    final.safetensors         trained weights (training form)
    final_ema.safetensors     EMA weights (training form), when EMA is on: what the next
                              stage starts from (model.init_weights)
    deploy_fp16.safetensors   inference form (re-parameterised when the network has a
                              training form), float16, loadable with lightsr.load_model
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lightsr import __version__
from lightsr.archs.blocks import to_inference_layout
from lightsr.archs.registry import build_model, get_arch
from lightsr.checkpoint import check_tensors, read_state_dict, save_safetensors
from lightsr.deploy import deploy_module
from lightsr.errors import CheckpointError, ConfigError, UsageError
from lightsr.hub import origin_metadata
from lightsr.models import SRModel
from lightsr.options import check_scale
from lightsr.provenance import Provenance
from lightsr.train.batches import Batch, describe_data, load_training_data, make_batches
from lightsr.train.checkpoints import (
    TrainingState,
    list_checkpoints,
    load_checkpoint,
    newest_valid_checkpoint,
    save_checkpoint,
)
from lightsr.train.config import Config, GanConfig, config_to_toml
from lightsr.train.distributed import (
    DistInfo,
    destroy_process_group,
    init_process_group,
    launched_by_torchrun,
    max_across_ranks,
    resolve_device,
)
from lightsr.train.gan import Adversary
from lightsr.train.optim import Budget, WeightEMA, learning_rate, make_loss, make_optimizer
from lightsr.train.perceptual import PerceptualLoss, deepest_layer, load_vgg19_features
from lightsr.train.report import MetricsLog, Progress
from lightsr.train.transfer import load_matching, load_reference
from lightsr.train.validation import (
    ValidationResult,
    load_validation_set,
    sync_device,
    validate,
    write_previews,
)

# Under DDP the wall-clock budget is agreed on (one all-reduce) every this many iterations.
DIST_TIME_CHECK_EVERY = 10


@contextmanager
def _checkpoint_mismatch(path: Path) -> Iterator[None]:
    """Report a checkpoint whose states do not fit this config's as one CheckpointError."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path} does not match this config ({first})") from None


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    iterations: int
    weights: dict[str, Path] = field(default_factory=dict)
    val_psnr: float | None = None
    val_ssim: float | None = None
    deploy_psnr: float | None = None


def train(config: Config, resume: str | None = None, progress: bool = True) -> TrainResult:
    """Train the network described by ``config``; the API behind ``lightsr train``.

    Under ``torchrun`` every process calls this; rank 0 alone writes files.

    Args:
        config: a validated configuration (see :func:`lightsr.train.config.load_config`).
        resume: ``None`` (fresh run), ``"auto"`` (newest checkpoint of the run folder, if
            any) or the path of a checkpoint folder.
        progress: show the progress bar (or log lines when stderr is not a terminal).

    Raises:
        ConfigError, UsageError, CheckpointError: invalid settings, data or checkpoint.
    """
    info = launched_by_torchrun()
    check_model(config)
    perceptual = make_perceptual_loss(config.gan)  # a bad VGG file fails before data loading
    start = time.monotonic()
    data = load_training_data(config, config.data.workers)
    load_seconds = time.monotonic() - start
    device = resolve_device(config.train.device, info)
    init_process_group(info, device)
    try:
        trainer = Trainer(config, info, device, resume, progress, perceptual)
        trainer.prepare_data(data, load_seconds)
        del data  # the batch source holds what it needs
        try:
            return trainer.run()
        finally:
            trainer.batches.close()
    finally:
        destroy_process_group(info)


def check_model(config: Config) -> None:
    """Fail early when the network or scale of ``config`` does not exist."""
    spec = get_arch(config.model.network)
    check_scale(spec.name, spec.scales, config.model.scale)


def make_perceptual_loss(config: GanConfig) -> PerceptualLoss | None:
    """The VGG19 perceptual loss of ``[gan]``, or ``None`` when it is not used.

    Raises:
        ConfigError: the VGG19 weights file is missing or does not hold VGG19 weights.
    """
    if not config.enabled or not config.perceptual_weight:
        return None
    layers = config.perceptual_layers
    features = load_vgg19_features(config.vgg_weights, deepest_layer(layers))
    return PerceptualLoss(features, layers)


class Trainer:
    """One training run; see :func:`train`."""

    def __init__(
        self,
        config: Config,
        info: DistInfo,
        device: torch.device,
        resume: str | None,
        progress: bool,
        perceptual: PerceptualLoss | None = None,
    ) -> None:
        self.config, self.info, self.device = config, info, device
        self.spec = get_arch(config.model.network)
        self.scale = config.model.scale
        self.run_dir = config.run_dir
        self._check_settings()
        checkpoint = self._find_resume_checkpoint(resume)
        self.progress = Progress(progress and info.is_main)
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.toml").write_text(config_to_toml(config), encoding="utf-8")
        self.val_pairs = self._load_validation() if info.is_main else []
        torch.manual_seed(config.train.seed)
        self.model = build_model(self.spec.name, self.scale, **config.model.options)
        self.origin: dict[str, str] = {}
        if config.model.init_weights:
            self._load_init_weights(config.model.init_weights)
        if config.model.init_from:
            self._init_from(config.model.init_from)
        if config.model.balance:
            self._balance()
        self._freeze(config.model.freeze)
        self.model.to(device)
        if device.type == "cpu":
            # oneDNN trains NHWC convolutions about 1.5x faster (FMEN-S, one thread).
            to_inference_layout(self.model)
        if device.type == "cuda":
            # Fixed patch sizes: let cuDNN pick the fastest kernels once.
            torch.backends.cudnn.benchmark = True
        if info.enabled and config.train.sync_bn:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.model.train()
        decay = config.train.ema_decay
        self.ema = WeightEMA(self.model, decay) if decay > 0 else None
        self.optimizer = make_optimizer(self.model, config.optim)
        fp16 = config.train.precision == "fp16"
        self.scaler = torch.amp.GradScaler(device.type) if fp16 else None
        self.loss_fn = make_loss(config.train)
        self.teacher = self._load_teacher(config.train.teacher) if config.train.teacher else None
        self.budget = Budget(config.train)
        self.iteration, self.elapsed = 0, 0.0
        self.checkpoint = checkpoint
        self.net = self._wrap(self.model)
        self.adversary = self._make_adversary(perceptual) if config.gan.enabled else None
        self.log: MetricsLog | None = None

    # ------------------------------------------------------------------ set-up

    def _make_adversary(self, perceptual: PerceptualLoss | None) -> Adversary:
        adversary = Adversary(self.config.gan, perceptual, self.device)
        # Under DDP only the discriminator's own step goes through the wrapper: in the
        # generator step it is frozen and must not wait for gradients of its own.
        adversary.net = self._wrap(adversary.discriminator)
        return adversary

    def _load_init_weights(self, path: str) -> None:
        state_dict, _ = read_state_dict(path)
        check_tensors(state_dict, self.model.state_dict(), f"model.init_weights {path}")
        try:
            self.model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise CheckpointError(f"model.init_weights {path} does not fit: {first}") from None

    def _init_from(self, checkpoint: str) -> None:
        source = load_reference(checkpoint, torch.device("cpu")).module.state_dict()
        prefix = self.config.model.init_prefix
        source = {prefix + key: value for key, value in source.items()}
        report = load_matching(self.model, source)
        self._message(report.summary(checkpoint))
        # The weights derive from the checkpoint: its hash, name and licence go with them.
        self.origin = {"init_from": checkpoint, **origin_metadata(checkpoint)}

    def _freeze(self, prefixes: list[str]) -> None:
        """Stop training the parameters under ``prefixes`` (``model.freeze``)."""
        if not prefixes:
            return
        frozen = [
            param
            for name, param in self.model.named_parameters()
            if name.startswith(tuple(prefixes))
        ]
        if not frozen:
            raise ConfigError(f"model.freeze: no parameter starts with {', '.join(prefixes)}")
        for param in frozen:
            param.requires_grad_(False)
        count = sum(param.numel() for param in frozen)
        self._message(f"frozen: {count} parameters under {', '.join(prefixes)}")

    def _balance(self) -> None:
        balance = getattr(self.model, "balance_", None)
        if balance is None:
            raise ConfigError(f"model.balance: {self.spec.name} has no balance_()")
        try:
            balance()
        except ValueError as exc:
            raise ConfigError(f"model.balance: {exc}") from None

    def _load_teacher(self, checkpoint: str) -> SRModel:
        teacher = load_reference(checkpoint, self.device)
        if teacher.scale != self.scale:
            raise ConfigError(f"train.teacher {checkpoint} is x{teacher.scale}, not x{self.scale}")
        self._message(f"teacher: {teacher.variant} x{teacher.scale} from {checkpoint}")
        return teacher

    def _check_settings(self) -> None:
        config, info = self.config, self.info
        if config.data.batch_size % info.world_size:
            raise ConfigError(
                f"data.batch_size {config.data.batch_size} is not divisible by the "
                f"{info.world_size} processes"
            )
        if config.train.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision fp16 needs CUDA; use bf16 or none on CPU")
        if bool(config.data.scale_range) != self.spec.arbitrary_scale:
            raise ConfigError(
                f"data.scale_range is for arbitrary-scale networks; {self.spec.name} "
                + ("is one: set it" if self.spec.arbitrary_scale else "is not: remove it")
            )

    def _find_resume_checkpoint(self, resume: str | None) -> Path | None:
        existing = list_checkpoints(self.run_dir)
        if resume is None:
            if existing:
                raise UsageError(
                    f"{self.run_dir} already has checkpoints; pass --resume auto to continue "
                    "it or choose another name (--set name=...)"
                )
            return None
        if resume == "auto":
            found = newest_valid_checkpoint(self.run_dir, self._early_message)
            if existing and found is None:
                raise CheckpointError(f"{self.run_dir}: no checkpoint of this run can be loaded")
            return found
        path = Path(resume)
        if not path.is_dir():
            raise CheckpointError(f"{path}: no such checkpoint folder")
        return path

    def prepare_data(self, data: list, load_seconds: float) -> None:
        """Restore any checkpoint, then start the batch source (see
        :func:`~lightsr.train.batches.make_batches`) on the loaded training data."""
        state = self._restore(self.checkpoint) if self.checkpoint is not None else None
        self.batches = make_batches(self.config, data, self.info, self.device, self.iteration)
        if state is not None:
            self._restore_data_order(state)
        skipped = self.batches.skipped
        self._message(
            f"training data: {describe_data(self.config, data)} ({load_seconds:.1f} s to load)"
            + (f", {skipped} smaller than the patch skipped" if skipped else "")
        )
        if self.info.is_main:
            resumed = self.iteration if self.checkpoint is not None else None
            self.log = MetricsLog(self.run_dir / "metrics.jsonl", resumed)

    def _load_validation(self) -> list:
        if not self.config.val.dir:
            return []
        return load_validation_set(self.config.val.dir, self.scale)

    def _restore(self, path: Path) -> TrainingState:
        """Load the networks, optimisers and counters of a checkpoint."""
        state = load_checkpoint(path)
        with _checkpoint_mismatch(path):
            self.model.load_state_dict(state.model)
            if self.ema is not None:
                self.ema.module.load_state_dict(state.ema if state.ema is not None else state.model)
                self.ema.updates = int(state.extra.get("ema_updates", state.iteration))
            self.optimizer.load_state_dict(state.extra["optimizer"])
            if (self.adversary is None) != (state.discriminator is None):
                raise ValueError("gan.enabled differs from the checkpoint's run")
            if self.adversary is not None:
                self.adversary.load_state_dict(state.discriminator, state.extra["d_optimizer"])
        if self.scaler is not None and "scaler" in state.extra:
            self.scaler.load_state_dict(state.extra["scaler"])
        self.iteration, self.elapsed = state.iteration, state.elapsed
        self._message(f"resumed from {path} at iteration {self.iteration}")
        return state

    def _restore_data_order(self, state: TrainingState) -> None:
        """Continue the checkpointed data order (bicubic pairs: exactly)."""
        with _checkpoint_mismatch(self.checkpoint):
            self.batches.load_state_dict(state.extra)

    def _wrap(self, model: nn.Module) -> nn.Module:
        net: nn.Module = model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(model, device_ids=ids)
        if self.config.train.compile:
            net = torch.compile(net)
        return net

    # ------------------------------------------------------------------ loop

    def run(self) -> TrainResult:
        config, info = self.config, self.info
        self._message(self._summary())
        self.progress.start(self.iteration, config.train.total_iters or None)
        check_every = DIST_TIME_CHECK_EVERY if info.enabled else 1
        loss_sums: dict[str, torch.Tensor] = {}  # summed on the device: no sync per step
        loss_count, last_log_iter, last_log_time = 0, self.iteration, time.monotonic()
        loop_start, elapsed_before = time.monotonic(), self.elapsed
        saved_at = self.iteration if list_checkpoints(self.run_dir) else -1
        while not self.budget.done(self.iteration, self.elapsed):
            progress = self.budget.progress(self.iteration, self.elapsed)
            lr = learning_rate(config.optim.lr, config.schedule, self.iteration, progress)
            self._set_learning_rates(lr)
            for key, value in self._step().items():
                loss_sums[key] = loss_sums[key] + value if key in loss_sums else value
            loss_count += 1
            self.iteration += 1
            self.progress.step()
            if self.iteration % check_every == 0:
                local = elapsed_before + time.monotonic() - loop_start
                self.elapsed = max_across_ranks(local, info, self.device)
            if self.iteration % config.train.log_interval == 0:
                now = time.monotonic()
                speed = (self.iteration - last_log_iter) / max(now - last_log_time, 1e-9)
                self._log_loss({k: float(v) / loss_count for k, v in loss_sums.items()}, lr, speed)
                loss_sums.clear()
                loss_count, last_log_iter, last_log_time = 0, self.iteration, now
            if config.val.interval and self.iteration % config.val.interval == 0:
                self._validate_and_record()
            if self.iteration % config.train.checkpoint_interval == 0:
                self._save_checkpoint()
                saved_at = self.iteration
        sync_device(self.device)
        self.progress.close()
        if saved_at != self.iteration:
            self._save_checkpoint()
        return self._finish()

    def _set_learning_rates(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.adversary is not None:  # the discriminator follows the same schedule
            self.adversary.set_learning_rate(lr / self.config.optim.lr)

    def _step(self) -> dict[str, torch.Tensor]:
        """One optimizer step (generator, then discriminator when adversarial) on a fresh
        batch; returns the detached losses by name, ``"loss"`` being the generator's.

        During the first ``gan.d_init_iters`` iterations only the discriminator steps."""
        batch = self.batches.next_batch()
        train_generator = self.adversary is None or self.iteration >= self.config.gan.d_init_iters
        with torch.set_grad_enabled(train_generator):
            output, losses = self._generator_losses(batch)
        if train_generator:
            self._apply(losses["loss"], self.optimizer, self.model, self.config.optim.grad_clip)
        if self.adversary is not None:
            with self._autocast():
                d_losses = self.adversary.discriminator_losses(output.detach(), batch.gt)
            self._apply(sum(d_losses.values()), self.adversary.optimizer, self.adversary.net)
            losses.update(d_losses)
        if self.scaler is not None:
            self.scaler.update()
        if self.ema is not None and train_generator:
            self.ema.update(self.model)
        return {key: value.detach() for key, value in losses.items()}

    def _generator_losses(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The generator's output for ``batch`` (in [0, 1] units) and its losses by name."""
        input_range = self.spec.input_range
        with self._autocast():
            queries = batch.queries or ()  # arbitrary-scale networks: where to predict
            output = self.net(batch.lr * input_range, *queries)
        output = output.float() / input_range
        # Real-ESRGAN's pixel and perceptual targets are sharpened, its GAN target is not.
        target = batch.gt_usm if self.config.train.gt_usm else batch.gt
        pixel = self._pixel_loss(output, target, batch)
        if self.adversary is None:
            return output, {"loss": pixel}
        with self._autocast():
            parts = {"g_pixel": pixel, **self.adversary.generator_losses(output, target)}
        return output, {"loss": sum(parts.values()), **parts}

    def _pixel_loss(self, output: torch.Tensor, target: torch.Tensor, batch: Batch) -> torch.Tensor:
        loss = self.loss_fn(output, target)
        if self.teacher is not None:
            weight = self.config.train.teacher_weight
            loss = (1 - weight) * loss + weight * self.loss_fn(output, self._teach(batch.lr))
        if self.adversary is not None:
            loss = loss * self.config.gan.pixel_weight
        return loss

    def _apply(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        module: nn.Module,
        clip: float = 0.0,
    ) -> None:
        """Back-propagate ``loss`` and step ``optimizer`` over ``module``'s parameters,
        clipping their gradient norm to ``clip`` (0: no clipping)."""
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if clip:
                self.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(module.parameters(), clip)
            self.scaler.step(optimizer)
        else:
            loss.backward()
            norm = nn.utils.clip_grad_norm_(module.parameters(), clip or math.inf)
            if not torch.isfinite(norm):
                # A rare non-finite gradient (seen with bf16 oneDNN kernels on CPU, not
                # reproducible run to run) would turn the weights and Adam's moments into
                # NaN for good; skip the step, as GradScaler does for fp16.
                optimizer.zero_grad(set_to_none=True)
                which = "generator" if module is self.model else "discriminator"
                self._message(
                    f"iteration {self.iteration + 1}: non-finite {which} gradient, step skipped"
                )
                return
            optimizer.step()

    @torch.no_grad()
    def _teach(self, lr: torch.Tensor) -> torch.Tensor:
        """The teacher's output for the LR batch, in [0, 1] units like the target."""
        teacher = self.teacher
        with self._autocast():
            output = teacher.forward(lr.to(teacher.dtype))
        return output.float()

    def _autocast(self) -> Any:
        precision = self.config.train.precision
        if precision == "none":
            return nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # ------------------------------------------------------------------ records

    def _summary(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        budget = []
        if self.config.train.total_iters:
            budget.append(f"{self.config.train.total_iters} iterations")
        if self.config.train.max_minutes:
            budget.append(f"{self.config.train.max_minutes:g} minutes")
        processes = f" x {self.info.world_size} processes" if self.info.enabled else ""
        return (
            f"training {self.spec.name} x{self.scale} ({params / 1e6:.3f} M parameters) on "
            f"{self.device}{processes}, budget {' or '.join(budget)}, run folder {self.run_dir}"
        )

    def _early_message(self, text: str) -> None:
        """A message before the progress display exists."""
        if self.info.is_main:
            print(f"lightsr train: {text}", file=sys.stderr)

    def _message(self, text: str) -> None:
        if self.info.is_main:
            self.progress.message(text)

    def _log_loss(self, losses: dict[str, float], lr: float, speed: float) -> None:
        """Record the mean losses since the last record (``"loss"`` and, when adversarial,
        ``g_pixel``, ``g_percep``, ``g_gan``, ``d_real``, ``d_fake``)."""
        if not self.info.is_main:
            return
        progress = self.budget.progress(self.iteration, self.elapsed)
        eta = self.elapsed * (1 - progress) / progress if progress > 0 else None
        if not self.config.train.total_iters and progress > 0:
            self.progress.set_total(round(self.iteration / progress))
        self.progress.log(self.iteration, losses["loss"], lr, speed, eta)
        self.log.append(
            {"iter": self.iteration, **losses, "lr": lr, "time": round(self.elapsed, 2)}
        )

    def _eval_module(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _validate_and_record(self, plot: bool = True) -> ValidationResult | None:
        if not self.info.is_main or not self.val_pairs:
            return None
        val = self.config.val
        result = validate(self._eval_module(), self.spec, self.scale, self.val_pairs, val.ssim)
        record = {"iter": self.iteration, "val_psnr": result.psnr}
        if result.ssim is not None:
            record["val_ssim"] = result.ssim
        self.log.append(record)
        if plot:
            self.log.plot(self.run_dir / "curves.png")
        count = val.previews
        write_previews(
            self.run_dir / "previews",
            self.val_pairs[:count],
            result.outputs[:count],
            self.scale,
            val.preview_size,
        )
        self.progress.last_psnr = result.psnr
        return result

    def _metadata(self, module: nn.Module) -> dict[str, str]:
        """The provenance of ``module`` (the network trained here, or its deploy form) as
        file metadata, so that :func:`lightsr.load_model` rebuilds it exactly."""
        options = self.config.model.options
        config = {key: value for key, value in options.items() if key != self.spec.deploy_arg}
        form = self.spec.form_of(module)
        provenance = Provenance(self.spec.family, self.spec.name, self.scale, form, config)
        return provenance.to_metadata(lightsr_version=__version__, **self.origin)

    def _save_checkpoint(self) -> None:
        if not self.info.is_main:
            return
        extra: dict[str, Any] = {
            "optimizer": self.optimizer.state_dict(),
            **self.batches.state_dict(),
        }
        if self.scaler is not None:
            extra["scaler"] = self.scaler.state_dict()
        if self.ema is not None:
            extra["ema_updates"] = self.ema.updates
        if self.adversary is not None:
            extra["d_optimizer"] = self.adversary.optimizer.state_dict()
        state = TrainingState(
            iteration=self.iteration,
            elapsed=self.elapsed,
            model=self.model.state_dict(),
            ema=self.ema.module.state_dict() if self.ema is not None else None,
            extra=extra,
            discriminator=(
                self.adversary.discriminator.state_dict() if self.adversary is not None else None
            ),
        )
        save_checkpoint(
            self.run_dir, state, self._metadata(self.model), self.config.train.keep_checkpoints
        )

    # ------------------------------------------------------------------ end of training

    def _finish(self) -> TrainResult:
        result = TrainResult(self.run_dir, self.iteration)
        if not self.info.is_main:
            return result
        weights = result.weights
        weights["final"] = save_safetensors(
            self.model.state_dict(), self.run_dir / "final.safetensors", self._metadata(self.model)
        )
        if self.ema is not None:
            weights["final_ema"] = save_safetensors(
                self.ema.module.state_dict(),
                self.run_dir / "final_ema.safetensors",
                self._metadata(self.model),
            )
        deploy = self._deploy_module()
        weights["deploy"] = save_safetensors(
            deploy.state_dict(),
            self.run_dir / "deploy_fp16.safetensors",
            self._metadata(deploy),
            half=True,
        )
        final_val = self._validate_and_record(plot=False)
        if final_val is not None:
            result.val_psnr, result.val_ssim = final_val.psnr, final_val.ssim
            result.deploy_psnr = self._score_deploy_file(deploy, weights["deploy"])
            self.log.append({"iter": self.iteration, "deploy_psnr": result.deploy_psnr})
            self._message(
                f"{Path(self.config.val.dir).name} x{self.scale}: PSNR-Y {result.val_psnr:.3f} dB "
                f"(training form), {result.deploy_psnr:.3f} dB (deploy fp16 file)"
            )
        self.log.plot(self.run_dir / "curves.png")
        self._message(f"finished at iteration {self.iteration}; weights in {self.run_dir}")
        return result

    def _deploy_module(self) -> nn.Module:
        """A fresh copy of the evaluated weights in inference form (deploy form, if any)."""
        module = build_model(self.spec.name, self.scale, **self.config.model.options)
        module.load_state_dict(self._eval_module().state_dict())
        return deploy_module(module.to(self.device))

    def _score_deploy_file(self, deploy: nn.Module, path: Path) -> float:
        """PSNR-Y of the weights exactly as stored in the float16 deploy file."""
        state_dict, _ = read_state_dict(path)
        deploy.load_state_dict(state_dict)
        result = validate(deploy, self.spec, self.scale, self.val_pairs, with_ssim=False)
        return result.psnr
