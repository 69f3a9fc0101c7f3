import numpy as np
import pytest
import torch
import torch.nn.functional as F

from multitask.heads import HeadSpec
from multitask.model.losses import (
    LOSSES,
    HeadLoss,
    MultiTaskCriterion,
    class_weights_for,
    cross_entropy,
    focal,
    soft_f1,
)
from multitask.model.weighting import WEIGHTINGS
from multitask.utils.errors import UserError


def spec(name="age", classes=("a", "b", "c"), **kw) -> HeadSpec:
    return HeadSpec(classes=list(classes), name=name, **kw)


def batch(n=16, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g)


def test_registry_names():
    assert set(LOSSES) == {"ce", "focal", "f1"}
    assert set(WEIGHTINGS) == {"static", "uncertainty", "dwa", "pcgrad", "cagrad"}


def test_ce_matches_torch_and_focal_gamma0_equals_ce():
    logits, target = batch()
    weights = torch.tensor([0.5, 2.0, 1.0])
    s = spec(focal_gamma=0.0)
    assert torch.allclose(cross_entropy(logits, target, spec=s, class_weights=None), F.cross_entropy(logits, target))
    assert torch.allclose(cross_entropy(logits, target, spec=s, class_weights=weights),
                          F.cross_entropy(logits, target, weight=weights))
    for w in (None, weights):
        assert torch.allclose(focal(logits, target, spec=s, class_weights=w),
                              cross_entropy(logits, target, spec=s, class_weights=w), atol=1e-7)
    # gamma > 0 down-weights: every factor (1 - p)^gamma < 1
    assert focal(logits, target, spec=spec(focal_gamma=2.0), class_weights=None) < cross_entropy(
        logits, target, spec=s, class_weights=None)


def test_label_smoothing_changes_ce():
    logits, target = batch()
    plain = cross_entropy(logits, target, spec=spec(), class_weights=None)
    smooth = cross_entropy(logits, target, spec=spec(label_smoothing=0.2), class_weights=None)
    assert not torch.isclose(plain, smooth)
    assert torch.allclose(smooth, F.cross_entropy(logits, target, label_smoothing=0.2))


def test_soft_f1_in_unit_interval_and_lower_for_better_predictions():
    _, target = batch(n=32)
    good = F.one_hot(target, 3).float() * 6.0
    bad = F.one_hot((target + 1) % 3, 3).float() * 6.0
    s = spec(loss={"f1": 1.0})
    losses = [soft_f1(x, target, spec=s, class_weights=None) for x in (good, torch.zeros(32, 3), bad)]
    assert all(0.0 <= float(v) <= 1.0 for v in losses)
    assert losses[0] < losses[1] < losses[2]
    assert float(losses[0]) < 0.05 and float(losses[2]) > 0.95


@pytest.mark.parametrize("name", ["ce", "focal", "f1"])
def test_unlabelled_rows_change_nothing(name):
    logits, target = batch(n=10)
    extra_logits = torch.randn(5, 3) * 3
    s = spec(label_smoothing=0.1)
    w = torch.tensor([1.0, 2.0, 0.5])
    a = logits.clone().requires_grad_(True)
    loss_a = LOSSES[name](a, target, spec=s, class_weights=w)
    loss_a.backward()
    b = torch.cat([logits[:4], extra_logits, logits[4:]]).requires_grad_(True)
    target_b = torch.cat([target[:4], torch.full((5,), -1), target[4:]])
    loss_b = LOSSES[name](b, target_b, spec=s, class_weights=w)
    loss_b.backward()
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert torch.allclose(torch.cat([b.grad[:4], b.grad[9:]]), a.grad, atol=1e-6)
    assert torch.count_nonzero(b.grad[4:9]) == 0


@pytest.mark.parametrize("name", ["ce", "focal", "f1"])
def test_no_labelled_rows_gives_zero_with_graph(name):
    logits = torch.randn(4, 3, requires_grad=True)
    loss = LOSSES[name](logits, torch.full((4,), -1), spec=spec(), class_weights=None)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_bf16_logits_computed_in_float32():
    logits, target = batch()
    loss = cross_entropy(logits.bfloat16(), target, spec=spec(), class_weights=None)
    assert loss.dtype == torch.float32


def test_head_loss_mixes_shares():
    logits, target = batch()
    s = spec(loss={"ce": 0.3, "f1": 0.7})
    expected = 0.3 * cross_entropy(logits, target, spec=s) + 0.7 * soft_f1(logits, target, spec=s)
    assert torch.allclose(HeadLoss(spec=s)(logits, target), expected)


def test_unknown_loss_name_message():
    with pytest.raises(UserError) as err:
        HeadLoss(spec=spec(name="mask", loss={"focall": 1.0}))
    message = str(err.value)
    assert "heads.mask.loss" in message and "focall" in message and "did you mean focal" in message
    assert "ce" in message and "f1" in message and "\n" not in message


def test_unknown_weighting_message():
    with pytest.raises(UserError, match=r"train.loss_weighting.*'uncertanty'.*did you mean uncertainty"):
        MultiTaskCriterion(heads=[spec()], weighting="uncertanty")


def test_class_weights_for():
    assert class_weights_for(spec(), np.array([1, 2, 3])) is None
    listed = class_weights_for(spec(class_weights=[1.0, 2.0, 3.0]), None)
    assert listed.tolist() == [1.0, 2.0, 3.0]
    auto = class_weights_for(spec(class_weights="auto"), np.array([10, 30, 20]))
    assert torch.allclose(auto.mean(), torch.tensor(1.0))
    assert auto[0] > auto[2] > auto[1]
    product = auto * torch.tensor([10.0, 30.0, 20.0])   # inverse frequency: weight x count is constant
    assert torch.allclose(product, product[0].expand(3))
    missing = class_weights_for(spec(class_weights="auto"), np.array([10, 0, 30]))
    assert missing[1] == 0 and torch.allclose(missing[[0, 2]].mean(), torch.tensor(1.0))


def heads3():
    return [spec("mask", weight=1.0), spec("gender", ("m", "f"), weight=2.0), spec("age")]


def outputs_targets(seed=0):
    g = torch.Generator().manual_seed(seed)
    outs = {h.name: torch.randn(8, h.num_classes, generator=g, requires_grad=True) for h in heads3()}
    tgts = {h.name: torch.randint(0, h.num_classes, (8,), generator=g) for h in heads3()}
    return outs, tgts


def test_static_total_is_weighted_sum():
    crit = MultiTaskCriterion(heads=heads3())
    outs, tgts = outputs_targets()
    total, per_head = crit(outs, tgts)
    assert set(per_head) == {"mask", "gender", "age"}
    assert all(not v.requires_grad for v in per_head.values())
    assert torch.allclose(total, per_head["mask"] + 2 * per_head["gender"] + per_head["age"])
    assert crit.effective_weights() == {"mask": 1.0, "gender": 2.0, "age": 1.0}


def test_uncertainty_weights_are_trainable():
    crit = MultiTaskCriterion(heads=heads3(), weighting="uncertainty")
    params = list(crit.parameters())
    assert len(params) == 1 and params[0].shape == (3,)
    outs, tgts = outputs_targets()
    total, per_head = crit(outs, tgts)
    assert torch.allclose(total, per_head["mask"] + 2 * per_head["gender"] + per_head["age"])  # s = 0 at start
    total.backward()
    assert params[0].grad is not None and torch.count_nonzero(params[0].grad) == 3
    opt = torch.optim.SGD(params, lr=0.5)
    opt.step()
    weights = crit.effective_weights()
    assert weights != {"mask": 1.0, "gender": 2.0, "age": 1.0}
    assert "weighting.log_vars" in crit.state_dict()


def test_dwa_changes_weights_after_two_epochs_and_resumes():
    heads = [spec("mask"), spec("age")]
    crit = MultiTaskCriterion(heads=heads, weighting="dwa", dwa_temperature=2.0)
    crit.epoch_end({"mask": 1.0, "age": 1.0})
    assert crit.effective_weights() == {"mask": 1.0, "age": 1.0}
    crit.epoch_end({"mask": 0.5, "age": 0.9})   # mask falls fast, age slowly -> age gets more weight
    weights = crit.effective_weights()
    assert weights["age"] > 1.0 > weights["mask"]
    assert abs(sum(weights.values()) - 2.0) < 1e-5
    expected = 2 * torch.softmax(torch.tensor([0.5, 0.9]) / 2.0, 0)
    assert np.allclose([weights["mask"], weights["age"]], expected.numpy(), atol=1e-6)
    outs = {h.name: torch.randn(4, 3) for h in heads}
    tgts = {h.name: torch.randint(0, 3, (4,)) for h in heads}
    total, per_head = crit(outs, tgts)
    assert torch.allclose(total, weights["mask"] * per_head["mask"] + weights["age"] * per_head["age"], atol=1e-6)
    fresh = MultiTaskCriterion(heads=heads, weighting="dwa")
    fresh.load_state_dict(crit.state_dict())
    assert fresh.effective_weights() == weights


def test_criterion_with_auto_class_weights_and_partial_labels():
    heads = [spec("mask", class_weights="auto"), spec("age")]
    crit = MultiTaskCriterion(heads=heads, class_counts={"mask": np.array([5, 10, 20])})
    assert torch.allclose(crit.losses["mask"].class_weights.mean(), torch.tensor(1.0))
    outs = {h.name: torch.randn(4, 3, requires_grad=True) for h in heads}
    total, per_head = crit(outs, {"mask": torch.tensor([0, 1, -1, 2]), "age": torch.full((4,), -1)})
    assert float(per_head["age"]) == 0.0 and torch.isfinite(total)
    total.backward()
    assert torch.count_nonzero(outs["mask"].grad[2]) == 0
