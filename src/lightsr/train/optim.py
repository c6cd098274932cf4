"""Optimizer, learning-rate schedule, training budget, losses and weight EMA."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from lightsr.train.config import OptimConfig, ScheduleConfig, TrainConfig


def make_optimizer(module: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over every trainable parameter of ``module``."""
    params = [p for p in module.parameters() if p.requires_grad]
    kind = torch.optim.AdamW if config.name == "adamw" else torch.optim.Adam
    fused = all(p.is_cuda for p in params)  # one kernel for the whole update on GPUs
    return kind(
        params,
        lr=config.lr,
        betas=tuple(config.betas),
        weight_decay=config.weight_decay,
        fused=fused or None,
    )


def learning_rate(
    base_lr: float, schedule: ScheduleConfig, iteration: int, progress: float
) -> float:
    """Learning rate for ``iteration`` (0-based) at ``progress`` ∈ [0, 1] of the budget.

    The cosine schedule is a function of ``progress`` (not of the iteration), so that it is
    equally well defined for an iteration budget and for a wall-clock budget. Warm-up
    scales any schedule linearly over the first ``warmup_iters`` iterations.
    """
    if schedule.name == "cosine":
        fraction = min(max(progress, 0.0), 1.0)
        lr = schedule.min_lr + (base_lr - schedule.min_lr) * 0.5 * (
            1 + math.cos(math.pi * fraction)
        )
    elif schedule.name == "multistep":
        passed = sum(1 for milestone in schedule.milestones if iteration >= milestone)
        lr = base_lr * schedule.gamma**passed
    else:
        lr = base_lr
    if iteration < schedule.warmup_iters:
        lr *= (iteration + 1) / schedule.warmup_iters
    return lr


class Budget:
    """When to stop: an iteration budget, a wall-clock budget, or both (first one wins)."""

    def __init__(self, config: TrainConfig) -> None:
        self.total_iters = config.total_iters
        self.max_seconds = config.max_minutes * 60.0

    def progress(self, iteration: int, elapsed: float) -> float:
        """Fraction of the budget used; the further-along of the two budgets."""
        fractions = [0.0]
        if self.total_iters:
            fractions.append(iteration / self.total_iters)
        if self.max_seconds:
            fractions.append(elapsed / self.max_seconds)
        return min(max(fractions), 1.0)

    def done(self, iteration: int, elapsed: float) -> bool:
        return self.progress(iteration, elapsed) >= 1.0


def make_loss(config: TrainConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The pixel loss on [0, 1]-scaled images."""
    if config.loss == "mse":
        return nn.functional.mse_loss
    if config.loss == "charbonnier":
        eps2 = config.charbonnier_eps**2

        def charbonnier(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return torch.sqrt((output - target).square() + eps2).mean()

        return charbonnier
    return nn.functional.l1_loss


class WeightEMA:
    """Exponential moving average of a module's parameters; buffers are copied as they are.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the
    average is not dominated by the random initial weights in short runs.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = _clone_frozen(module)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema_params = list(self.module.parameters())
        params = [p.detach() for p in module.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for ema_buffer, buffer in zip(self.module.buffers(), module.buffers(), strict=True):
            ema_buffer.copy_(buffer)


def _clone_frozen(module: nn.Module) -> nn.Module:
    clone = copy.deepcopy(module)
    clone.requires_grad_(False)
    clone.eval()
    return clone
