"""The optimizer and schedule on timm's factories: fused Adam(W), any timm name, named groups with layer decay and a
trunk LR scale that every schedule keeps."""
from __future__ import annotations

import copy

import pytest
import torch

from multitask.config import TrainConfig, load_config
from multitask.model.net import create_model
from multitask.train.optim import build_optimizer, build_schedule, group_lrs, param_groups
from multitask.utils.errors import UserError


def _model(backbone: str = "test_resnet"):
    torch.manual_seed(0)
    return create_model(load_config(None, [f"model.backbone={backbone}", "data.image_size=[32,32]"])).to(
        memory_format=torch.channels_last)


class _Net(torch.nn.Module):
    """A trunk and one head, as MultiHeadNet has them. No conv bias before the norm: its gradient is ~0, and Adam
    normalises ~0 into a step of either sign, which float rounding then decides."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8),
                                         torch.nn.Flatten())
        self.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(8 * 6 * 6, 3)})

    def forward(self, x):
        return {"a": self.heads["a"](self.trunk(x.float() / 255))}


@pytest.mark.parametrize("name", ["adamw", "adam"])
def test_adam_family_is_fused_and_steps_like_the_per_parameter_loop(name):
    net = _Net().to(memory_format=torch.channels_last)
    reference, start = copy.deepcopy(net), copy.deepcopy(net)
    train = TrainConfig(optimizer=name, lr=0.01, weight_decay=0.1, scheduler="none")
    fused = build_optimizer(net, None, train)
    assert fused.defaults["fused"] is True
    # the same groups (same order, decay on >1-d tensors only) stepped by torch's per-parameter loop
    groups = [dict(g, params=[dict(reference.named_parameters())[n] for n, p in net.named_parameters()
                              if any(p is q for q in g["params"])]) for g in fused.param_groups]
    loop = getattr(torch.optim, {"adamw": "AdamW", "adam": "Adam"}[name])(
        [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in groups], lr=0.01, foreach=False)
    assert {g["weight_decay"] for g in fused.param_groups} == {0.1, 0.0}
    assert all(p.ndim <= 1 for g in fused.param_groups if g["weight_decay"] == 0 for p in g["params"])
    x = torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8)
    for _ in range(3):
        for model, opt in ((net, fused), (reference, loop)):
            opt.zero_grad()
            sum(v.square().mean() for v in model(x).values()).backward()
            opt.step()
    for a, b, before in zip(net.parameters(), reference.parameters(), start.parameters()):
        assert not torch.equal(a, before)                          # the steps moved every parameter ...
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)     # ... as the per-parameter loop does


@pytest.mark.parametrize("nesterov,momentum", [(True, 0.8), (False, 0.8), (True, 0.0)])
def test_sgd_keeps_its_momentum_settings(nesterov, momentum):
    opt = build_optimizer(_model(), None, TrainConfig(optimizer="sgd", lr=0.1, momentum=momentum, nesterov=nesterov))
    assert opt.defaults["momentum"] == momentum and opt.defaults["nesterov"] is (nesterov and momentum > 0)


@pytest.mark.parametrize("name", ["lamb", "lion", "nadamw"])
def test_any_optimizer_timm_knows_builds_and_steps(name):
    net = _model()
    opt = build_optimizer(net, None, TrainConfig(optimizer=name, lr=1e-3))
    before = copy.deepcopy(net.heads.state_dict())
    sum(v.square().mean() for v in net(torch.zeros(2, 3, 32, 32)).values()).backward()
    opt.step()
    assert type(opt).__name__.lower().startswith(name[:4])
    assert any(not torch.equal(before[k], v) for k, v in net.heads.state_dict().items())


def test_an_unknown_optimizer_is_one_line_with_the_nearest_names():
    with pytest.raises(UserError, match=r"train.optimizer: invalid choice 'adamx' \(did you mean .*adam.*\?\); "
                                        r"any name of timm.optim.list_optimizers\(\) works"):
        build_optimizer(_model(), None, TrainConfig(optimizer="adamx"))


@pytest.mark.parametrize("patience", [0, 3])
def test_plateau_patience_is_the_configured_number_of_validations(patience):
    train = TrainConfig(scheduler="plateau", lr=0.1, gamma=0.5, min_lr=0.0, plateau_patience=patience)
    opt = build_optimizer(_model(), None, train)
    plateau = build_schedule(opt, train, steps_per_epoch=4)
    lrs = []
    for value in [0.5] * (patience + 2):   # the first sets the best; no later one improves on it
        plateau.after_validation(value)
        lrs.append(group_lrs(opt)["lr/heads"])
    assert lrs == pytest.approx([0.1] * (patience + 1) + [0.05])


def test_layer_decay_grows_from_the_stem_to_the_last_stage_and_the_heads_get_the_full_lr():
    model = _model("tf_efficientnet_lite0")
    train = TrainConfig(lr=1e-3, layer_decay=0.8, trunk_lr_scale=0.5, scheduler="cosine", epochs=2)
    opt = build_optimizer(model, None, train)
    build_schedule(opt, train, steps_per_epoch=10)
    lrs = group_lrs(opt)
    trunk = [lrs[f"lr/trunk.{i}"] for i in range(len([k for k in lrs if k.startswith("lr/trunk.")]))]
    assert len(trunk) > 5 and all(a < b for a, b in zip(trunk, trunk[1:]))   # stem lowest, strictly growing
    assert trunk[-1] == pytest.approx(0.5e-3) and trunk[-2] == pytest.approx(0.5e-3 * 0.8)
    assert lrs["lr/heads"] == pytest.approx(1e-3) == lrs["lr"]
    # the stem's group really holds the stem's weights, the last one the last stage's
    named = {id(p): n for n, p in model.named_parameters()}
    stem = next(g for g in opt.param_groups if g["name"] == "trunk.0")
    assert all(named[id(p)].startswith(("trunk.conv_stem", "trunk.bn1")) for p in stem["params"])
    # every parameter is in exactly one group
    assert sorted(id(p) for g in opt.param_groups for p in g["params"]) == sorted(id(p) for p in model.parameters())


@pytest.mark.parametrize("scheduler", ["cosine", "step", "poly", "onecycle", "none"])
def test_every_schedule_keeps_the_trunk_to_heads_ratio(scheduler):
    train = TrainConfig(lr=1e-2, trunk_lr_scale=0.1, scheduler=scheduler, epochs=3, warmup_epochs=0.5,
                        step_size=1, min_lr=0.0)
    opt = build_optimizer(_model(), None, train)
    schedule = build_schedule(opt, train, steps_per_epoch=4)
    seen = []
    for step in range(1, 12):
        lrs = group_lrs(opt)
        assert lrs["lr/trunk"] == pytest.approx(0.1 * lrs["lr/heads"], abs=1e-12)
        seen.append(lrs["lr/heads"])
        opt.step()   # no gradients: nothing moves, but torch's schedulers see the order they expect
        schedule.after_step(step)
    if scheduler == "none":
        assert seen == [1e-2] * len(seen)
    else:
        assert len(set(round(v, 12) for v in seen)) > 2 and max(seen) <= 1e-2 + 1e-12


def test_warmup_starts_at_min_lr_and_reaches_the_lr_after_warmup_epochs():
    train = TrainConfig(lr=1e-2, scheduler="cosine", epochs=4, warmup_epochs=0.5, min_lr=1e-4)
    opt = build_optimizer(_model(), None, train)
    schedule = build_schedule(opt, train, steps_per_epoch=8)
    first = group_lrs(opt)["lr"]
    for step in range(1, 5):
        schedule.after_step(step)
    assert first == pytest.approx(1e-4)
    assert group_lrs(opt)["lr"] == pytest.approx(1e-2, rel=1e-3)   # 4 steps = half an epoch of 8


def test_param_groups_put_learned_loss_weights_in_their_own_undecayed_group():
    from multitask.model.losses import MultiTaskCriterion

    model = _model()
    criterion = MultiTaskCriterion(heads=load_config(None).trained_heads(), weighting="uncertainty")
    groups = param_groups(model, criterion, TrainConfig())
    extra = [g for g in groups if g["name"] == "loss_weights"]
    assert len(extra) == 1 and extra[0]["weight_decay"] == 0.0
    assert {id(p) for p in extra[0]["params"]} == {id(p) for p in criterion.parameters()}


def test_the_schedule_choices_are_the_schemas():
    import typing

    from multitask.train.optim import SCHEDULES

    assert typing.get_args(typing.get_type_hints(TrainConfig)["scheduler"]) == SCHEDULES
