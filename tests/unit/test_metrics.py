import numpy as np
import pytest
import torch
from helpers import mask_heads, random_batches
from sklearn.metrics import confusion_matrix, f1_score

from multitask.heads import HeadSpec, composite_decode, composite_encode
from multitask.metrics.accumulator import MetricAccumulator
from multitask.metrics.stats import head_scores


def derived_head():
    return HeadSpec(classes=[f"c{i}" for i in range(18)], name="all18", derive=["mask", "gender", "age"])


def concat(batches, key, name):
    index = 0 if key == "logits" else 1
    return torch.cat([b[index][name] for b in batches]).numpy()


def test_scores_match_sklearn():
    rng = np.random.default_rng(1)
    y_true, y_pred = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    y_true[:5] = -1
    result = head_scores(y_true, y_pred, 4)
    assert result["n"] == 45
    assert result["acc"] == pytest.approx(np.mean(y_true[5:] == y_pred[5:]))
    assert result["f1"] == pytest.approx(f1_score(y_true[5:], y_pred[5:], labels=range(4), average="macro"))
    assert result["f1_per_class"] == pytest.approx(list(f1_score(y_true[5:], y_pred[5:], labels=range(4),
                                                                 average=None)))
    assert sum(result["support"]) == 45
    # a class never true nor predicted still counts (as 0) in the head's macro F1
    absent = head_scores([0, 1, 0, 1], [0, 1, 0, 0], 3)
    assert absent["f1"] == pytest.approx(f1_score([0, 1, 0, 1], [0, 1, 0, 0], labels=range(3), average="macro",
                                                  zero_division=0))
    assert absent["support"] == [2, 2, 0]


def test_trained_heads_match_sklearn_and_composite():
    heads = mask_heads()
    acc = MetricAccumulator(heads=heads, composite=heads)
    batches = random_batches(heads)
    for logits, targets in batches:
        acc.update(logits, targets)
    metrics = acc.compute()
    preds, trues = {}, {}
    for h in heads:
        trues[h.name] = concat(batches, "targets", h.name)
        preds[h.name] = concat(batches, "logits", h.name).argmax(1)
        assert metrics[f"{h.name}/acc"] == pytest.approx(np.mean(trues[h.name] == preds[h.name]))
        assert metrics[f"{h.name}/f1"] == pytest.approx(
            f1_score(trues[h.name], preds[h.name], labels=range(h.num_classes), average="macro", zero_division=0))
        per_class = f1_score(trues[h.name], preds[h.name], labels=range(h.num_classes), average=None,
                             zero_division=0)
        for cls, value in zip(h.classes, per_class):
            assert metrics[f"{h.name}/f1_{cls}"] == pytest.approx(value)
    y_true = trues["mask"] * 6 + trues["gender"] * 3 + trues["age"]
    y_pred = preds["mask"] * 6 + preds["gender"] * 3 + preds["age"]
    assert metrics["composite/acc"] == pytest.approx(np.mean(y_true == y_pred))
    assert metrics["composite/f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics["mean/f1"] == pytest.approx(np.mean([metrics[f"{h.name}/f1"] for h in heads]))
    np.testing.assert_array_equal(acc.confusion("age"), confusion_matrix(trues["age"], preds["age"],
                                                                         labels=range(3)))
    assert acc.confusion("composite").shape == (18, 18)
    assert acc.confusion("composite").sum() == len(y_true)


def test_probabilities_and_targets_in_update_order():
    heads = mask_heads()[:2]
    acc = MetricAccumulator(heads=heads)
    batches = random_batches(heads, n=5, batches=2)
    for logits, targets in batches:
        acc.update({k: v.bfloat16() for k, v in logits.items()}, targets)
    probs, targets = acc.probabilities(), acc.targets()
    assert probs["mask"].shape == (10, 3) and probs["mask"].dtype == np.float32
    np.testing.assert_allclose(probs["mask"].sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs["mask"].argmax(1), concat(batches, "logits", "mask").argmax(1))
    np.testing.assert_array_equal(targets["gender"], concat(batches, "targets", "gender"))
    assert "composite/f1" not in acc.compute()   # no composite configured
    acc.reset()
    assert acc.probabilities()["mask"].shape == (0, 3)


def test_composite_via_derived_head():
    parts = mask_heads()
    derived = derived_head()
    acc = MetricAccumulator(heads=[derived], composite=parts)
    batches = random_batches([derived], n=80)
    for logits, targets in batches:
        acc.update(logits, targets)
    metrics = acc.compute()
    y_true = concat(batches, "targets", "all18")
    y_pred = concat(batches, "logits", "all18").argmax(1)
    assert metrics["composite/f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics["composite/acc"] == pytest.approx(np.mean(y_true == y_pred))
    assert metrics["all18/f1"] == pytest.approx(f1_score(y_true, y_pred, labels=range(18), average="macro",
                                                         zero_division=0))
    # components decoded from the 18-class argmax: age = code % 3, gender = code // 3 % 2, mask = code // 6
    assert metrics["age/acc"] == pytest.approx(np.mean(y_true % 3 == y_pred % 3))
    assert metrics["mask/f1"] == pytest.approx(f1_score(y_true // 6, y_pred // 6, average="macro"))
    assert metrics["gender/f1_female"] == pytest.approx(f1_score(y_true // 3 % 2, y_pred // 3 % 2))
    assert metrics["mean/f1"] == pytest.approx(metrics["all18/f1"])   # only trained heads count
    np.testing.assert_array_equal(acc.confusion("mask"), confusion_matrix(y_true // 6, y_pred // 6))


def test_composite_needs_every_component():
    parts = mask_heads()
    acc = MetricAccumulator(heads=parts[:2], composite=parts)
    for logits, targets in random_batches(parts[:2]):
        acc.update(logits, targets)
    metrics = acc.compute()
    assert "mask/f1" in metrics and "composite/f1" not in metrics and "composite/acc" not in metrics


def test_unlabelled_rows_skipped():
    heads = mask_heads()
    acc = MetricAccumulator(heads=heads, composite=heads)
    batches = random_batches(heads, n=50, unlabelled={"age": 0.4, "gender": 0.2})
    for logits, targets in batches:
        acc.update(logits, targets)
    metrics = acc.compute()
    trues = {h.name: concat(batches, "targets", h.name) for h in heads}
    preds = {h.name: concat(batches, "logits", h.name).argmax(1) for h in heads}
    keep = trues["age"] >= 0
    assert 0 < keep.sum() < len(keep)
    assert metrics["age/acc"] == pytest.approx(np.mean(trues["age"][keep] == preds["age"][keep]))
    assert metrics["age/f1"] == pytest.approx(f1_score(trues["age"][keep], preds["age"][keep], average="macro"))
    assert metrics["mask/acc"] == pytest.approx(np.mean(trues["mask"] == preds["mask"]))
    both = (trues["age"] >= 0) & (trues["gender"] >= 0)
    y_true = composite_encode(trues, heads)[both]
    y_pred = composite_encode(preds, heads)[both]
    assert y_true.min() >= 0
    assert metrics["composite/f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert acc.confusion("age").sum() == keep.sum()
    assert acc.confusion("composite").sum() == both.sum()


def test_unlabelled_rows_skipped_in_derived_head():
    parts = mask_heads()
    derived = derived_head()
    acc = MetricAccumulator(heads=[derived], composite=parts)
    batches = random_batches([derived], n=60, unlabelled={"all18": 0.3})
    for logits, targets in batches:
        acc.update(logits, targets)
    y_true = concat(batches, "targets", "all18")
    y_pred = concat(batches, "logits", "all18").argmax(1)
    keep = y_true >= 0
    metrics = acc.compute()
    assert metrics["composite/f1"] == pytest.approx(f1_score(y_true[keep], y_pred[keep], average="macro"))
    decoded = composite_decode(y_pred[keep], parts)
    assert metrics["gender/acc"] == pytest.approx(np.mean(decoded["gender"] == y_true[keep] // 3 % 2))


def test_head_without_labels_reports_nothing_for_it():
    heads = mask_heads()[:2]
    acc = MetricAccumulator(heads=heads)
    logits, targets = random_batches(heads, n=6, batches=1)[0]
    acc.update(logits, {"mask": targets["mask"]})      # gender unlabelled
    metrics = acc.compute()
    assert "mask/f1" in metrics and not any(k.startswith("gender/") for k in metrics)
    assert metrics["mean/f1"] == metrics["mask/f1"]
    assert (acc.targets()["gender"] == -1).all()




