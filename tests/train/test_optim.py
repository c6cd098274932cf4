from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightsr.train.config import ScheduleConfig, TrainConfig
from lightsr.train.optim import Budget, WeightEMA, learning_rate, make_loss


def test_cosine_with_warmup():
    schedule = ScheduleConfig(name="cosine", warmup_iters=4, min_lr=1e-6)
    assert learning_rate(1e-3, schedule, 0, 0.0) == pytest.approx(2.5e-4)
    assert learning_rate(1e-3, schedule, 3, 0.0) == pytest.approx(1e-3)
    assert learning_rate(1e-3, schedule, 50, 0.5) == pytest.approx((1e-3 + 1e-6) / 2)
    assert learning_rate(1e-3, schedule, 99, 1.0) == pytest.approx(1e-6)


def test_multistep():
    schedule = ScheduleConfig(name="multistep", milestones=[10, 20], gamma=0.5)
    rates = [learning_rate(1.0, schedule, i, 0.0) for i in (9, 10, 19, 20, 1000)]
    assert rates == [1.0, 0.5, 0.5, 0.25, 0.25]


def test_budget_follows_the_binding_limit():
    both = Budget(TrainConfig(total_iters=100, max_minutes=1.0))
    assert both.progress(50, 15.0) == pytest.approx(0.5)
    assert both.progress(10, 45.0) == pytest.approx(0.75)
    assert not both.done(99, 59.0)
    assert both.done(100, 1.0) and both.done(3, 60.0)
    assert Budget(TrainConfig(total_iters=0, max_minutes=2.0)).progress(10**6, 60.0) == 0.5


@pytest.mark.parametrize("name", ["l1", "mse", "charbonnier"])
def test_losses(name):
    loss = make_loss(TrainConfig(loss=name, charbonnier_eps=1e-3))
    a, b = torch.zeros(2, 3), torch.full((2, 3), 0.5)
    expected = {"l1": 0.5, "mse": 0.25, "charbonnier": math.sqrt(0.25 + 1e-6)}[name]
    assert loss(a, b).item() == pytest.approx(expected)


def test_ema_tracks_parameters_and_copies_buffers():
    module = nn.BatchNorm2d(2)
    ema = WeightEMA(module, decay=0.5)
    assert not any(p.requires_grad for p in ema.module.parameters())
    with torch.no_grad():
        module.weight.fill_(3.0)
        module.running_mean.fill_(7.0)
    ema.update(module)  # first update: decay min(0.5, 2/11)
    expected = 1.0 + (3.0 - 1.0) * (1 - 2 / 11)
    torch.testing.assert_close(ema.module.weight, torch.full((2,), expected))
    torch.testing.assert_close(ema.module.running_mean, torch.full((2,), 7.0))
