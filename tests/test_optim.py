"""Optimizer construction: no decay on 1-d parameters, fused Adam(W) on CPU with the same update as the loop."""
from __future__ import annotations

import copy

import pytest
import torch

from multitask.config import TrainConfig
from multitask.train.optim import build_optimizer


def _net() -> torch.nn.Module:
    # no conv bias before the norm: its gradient is ~0, and Adam normalises ~0 into a step of either sign
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 6 * 6, 3)).to(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", ["adamw", "adam"])
def test_adam_family_is_fused_and_steps_like_the_per_parameter_loop(name):
    net = _net()
    reference, start = copy.deepcopy(net), copy.deepcopy(net)
    train = TrainConfig(optimizer=name, lr=0.01, weight_decay=0.1)
    fused = build_optimizer([net], train)
    assert fused.defaults["fused"] is True
    groups = [{"params": [p for p in reference.parameters() if p.ndim > 1], "weight_decay": 0.1},
              {"params": [p for p in reference.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    loop = getattr(torch.optim, {"adamw": "AdamW", "adam": "Adam"}[name])(groups, lr=0.01, foreach=False)
    assert [g["weight_decay"] for g in fused.param_groups] == [0.1, 0.0]
    x = torch.randn(4, 3, 8, 8)
    for _ in range(3):
        for model, opt in ((net, fused), (reference, loop)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for a, b, before in zip(net.parameters(), reference.parameters(), start.parameters()):
        assert not torch.equal(a, before)                          # the steps moved every parameter ...
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)     # ... as the per-parameter loop does


def test_sgd_keeps_its_momentum_settings():
    opt = build_optimizer([_net()], TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True))
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["nesterov"] is True


@pytest.mark.parametrize("patience", [0, 3])
def test_plateau_patience_is_the_configured_number_of_validations(patience):
    from multitask.train.optim import build_scheduler

    opt = build_optimizer([_net()], TrainConfig(lr=0.1, gamma=0.5, min_lr=0.0))
    plateau = build_scheduler(opt, TrainConfig(scheduler="plateau", lr=0.1, gamma=0.5, min_lr=0.0,
                                               plateau_patience=patience), steps_per_epoch=4)
    lrs = []
    for value in [0.5] * (patience + 2):   # the first sets the best; no later one improves on it
        plateau.step(value)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == [0.1] * (patience + 1) + [0.05]
