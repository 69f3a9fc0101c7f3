"""The years head (heads.<name>.target=years): a distribution over whole years, class probabilities summed over the
bins, label-distribution learning, and the expected age in oof.csv / predictions.csv (CPU, seconds)."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import predict

from multitask.analysis.report.build import build_report
from multitask.config import ConfigError, load_config
from multitask.heads import years_key
from multitask.model.losses import HeadLoss, MultiTaskCriterion, year_target
from multitask.model.net import YearsHead, create_model
from multitask.runs.checkpoint import load_checkpoint, model_from_checkpoint
from multitask.train.run import run_training

YEARS = ["heads.age.target=years"]


def _age(*overrides):
    return load_config(None, [*YEARS, *overrides]).heads["age"]


def test_class_probabilities_are_the_year_distribution_summed_over_the_bins():
    spec = _age()
    assert (spec.years_range, spec.years_sigma, spec.num_years) == ([0, 100], 3.0, 101)
    grid = spec.year_grid()
    # bin edges exactly as label_array bins an age: 29 -> <30, 30 -> 30-59, 59 -> 30-59, 60 -> >=60
    assert [spec.year_classes()[grid == a][0] for a in (0, 29, 30, 59, 60, 100)] == [0, 0, 1, 1, 2, 2]
    torch.manual_seed(0)
    head = YearsHead(8, spec)
    class_logp, year_logits = head(torch.randn(5, 8) * 3)
    probs, years = class_logp.exp(), year_logits.softmax(-1)
    assert probs.shape == (5, 3) and years.shape == (5, 101)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    edges = [(0, 30), (30, 60), (60, 101)]
    torch.testing.assert_close(probs, torch.stack([years[:, a:b].sum(1) for a, b in edges], 1))
    torch.testing.assert_close(class_logp.softmax(-1), probs)   # consumers softmax "logits": they get these


def test_ldl_target_is_a_normalised_gaussian_centred_on_the_age():
    spec = _age("heads.age.years_sigma=2.0")
    target = year_target(torch.tensor([40.0, 130.0]), spec)
    torch.testing.assert_close(target.sum(1), torch.ones(2))
    assert target[0].argmax() == 40 and target[0, 39] == target[0, 41]
    assert float(target[0, 42] / target[0, 40]) == pytest.approx(math.exp(-0.5), rel=1e-5)   # one sigma away
    assert target[1].argmax() == 100   # an age beyond the range peaks at its end


def test_class_only_and_unlabelled_samples():
    spec = _age()
    loss = HeadLoss(spec=spec)
    assert spec.loss == {"ldl": 1.0, "ce": 1.0}   # ldl added to the default age mix
    class_logp, year_logits = YearsHead(4, spec)(torch.randn(3, 4))
    year_logits.retain_grad()
    # row 0: years and class, row 1: class only (a manifest's "<30"), row 2: unlabelled
    value = loss(class_logp, torch.tensor([1, 0, -1]), year_logits, torch.tensor([45.0, float("nan"), float("nan")]))
    value.backward()
    assert torch.isfinite(value) and value > 0
    assert year_logits.grad[1].abs().sum() > 0 and year_logits.grad[2].abs().sum() == 0
    # no ages in years anywhere (no "age/years" target): the class losses train alone
    criterion = MultiTaskCriterion(heads=[spec])
    outputs = {"age": class_logp.detach(), years_key("age"): year_logits.detach()}
    total, per_head = criterion(outputs, {"age": torch.tensor([0, 2, -1])})
    assert torch.isfinite(total)
    only_ldl = HeadLoss(spec=_age("heads.age.loss={ldl: 1.0}"))
    with torch.no_grad():
        assert float(only_ldl(class_logp, torch.tensor([0, 1, 2]), year_logits, torch.full((3,), float("nan")))) == 0


@pytest.mark.parametrize("override, message", [
    ("heads.age.target=decades", "heads.age.target: invalid choice 'decades'"),
    ("heads.age.years_sigma=0", "heads.age.years_sigma: 0.0 is out of range; expected > 0"),
    ("heads.age.years_range=[60,20]", "heads.age.years_range: expected [first, last] whole years with 0 <= first"),
    ("heads.age.years_range=[35,100]", "heads.age.years_range: [35, 100] holds no whole year of class(es) <30"),
    ("heads.mask.loss={ldl: 1.0}", "heads.mask.loss: 'ldl' learns from ages in years; it needs heads.mask.target"),
])
def test_bad_years_settings_are_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("configs/quickstart.yaml", [*YEARS, override])
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_train_predict_report_with_a_years_head(tiny_cfg, synth_root, tmp_path):
    run_dir = run_training(tiny_cfg(*YEARS, "train.mixup=0.2", "train.mix_prob=1.0", "train.ema.enabled=true"))
    oof = pd.read_csv(run_dir / "oof.csv")
    assert {"pred/age/years", "age_years", "prob/age/<30"} <= set(oof)
    assert oof["pred/age/years"].between(0, 100).all()
    assert oof[["prob/age/<30", "prob/age/30-59", "prob/age/>=60"]].sum(1).round(4).eq(1).all()
    metrics = pd.read_csv(run_dir / "metrics.csv")
    mae = (oof["pred/age/years"] - oof["age_years"]).abs().mean()
    assert metrics["val/age/mae_years"].iloc[-1] == pytest.approx(mae, abs=0.01)   # oof rounds to 1/1000 year
    # the checkpoint rebuilds the years head alone
    net, cfg = model_from_checkpoint(load_checkpoint(run_dir / "best.pt"))
    assert isinstance(net.heads["age"], YearsHead) and cfg.heads["age"].target == "years"
    result = predict(ckpts=[run_dir], data=synth_root, out=tmp_path / "out", batch_size=16, workers=0,
                         device="cpu", amp="off", tta=("identity", "hflip"))
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert result["images"] == len(table) and table["pred/age/years"].between(0, 100).all()
    numbers = json.loads((build_report(run_dir=run_dir, out=tmp_path / "report") / "report.json").read_text())
    assert numbers["age"]["years_estimate"]["mae_years"] == pytest.approx(mae, abs=0.01)
    assert (tmp_path / "report" / "age_years_scatter.png").is_file()


@pytest.mark.slow
def test_onnx_export_keeps_class_probabilities_and_adds_the_year_distribution(tmp_path):
    pytest.importorskip("onnxruntime")
    from multitask.config import to_dict
    from multitask.export.command import run_export
    from multitask.infer.ensemble import load_ensemble
    from multitask.runs.checkpoint import save_checkpoint

    cfg = load_config(None, ["data.image_size=[32,32]", *YEARS])
    torch.manual_seed(0)
    model = create_model(cfg)
    save_checkpoint(tmp_path / "best.pt", {
        "format": "multitask-checkpoint", "version": 1, "config": to_dict(cfg), "trained_heads": ["mask", "gender",
                                                                                                  "age"],
        "epoch": 1, "step": 1, "metric": {"name": "x", "value": 0.0}, "model": model.state_dict(), "ema": None})
    result = run_export(ckpt=tmp_path / "best.pt", fmt="onnx", out=tmp_path / "m.onnx")
    assert result["outputs"] == ["mask", "gender", "age", "composite", "age/years"]
    member = load_ensemble([tmp_path / "m.onnx"])[0]
    x = torch.randint(0, 256, (4, 3, 32, 32)).float().contiguous(memory_format=torch.channels_last)
    probs = member.model.probs(x)
    with torch.no_grad():
        ref = model.eval()(x)
    torch.testing.assert_close(probs["age"], ref["age"].exp(), atol=1e-4, rtol=0)
    torch.testing.assert_close(probs["age/years"], ref["age/years"].softmax(-1), atol=1e-4, rtol=0)
    np.testing.assert_allclose(probs["age"].sum(1).numpy(), 1, atol=1e-5)
    # with tuned decisions beside the checkpoint, predict through ONNX decides and estimates ages as PyTorch does
    from multitask.data.synthetic import write_synthetic

    (tmp_path / "decisions.json").write_text(json.dumps(
        {"applied": True, "offsets": {"age": {"<30": 0.0, "30-59": -0.4, ">=60": -0.6}}}))
    run_export(ckpt=tmp_path / "best.pt", fmt="onnx", out=tmp_path / "d.onnx")
    write_synthetic(tmp_path / "data", people=1, width=32, height=32, seed=1)
    fast = dict(batch_size=8, workers=0, device="cpu", amp="off")
    tables = {}
    for name, member in (("pt", tmp_path / "best.pt"), ("onnx", tmp_path / "d.onnx")):
        result = predict(ckpts=[member], data=tmp_path / "data", out=tmp_path / name, **fast)
        assert result["decisions"]["offsets"]["age"][">=60"] == -0.6
        tables[name] = pd.read_csv(tmp_path / name / "predictions.csv")
    assert (tmp_path / "pt" / "submission.csv").read_text() == (tmp_path / "onnx" / "submission.csv").read_text()
    np.testing.assert_allclose(tables["pt"]["pred/age/years"], tables["onnx"]["pred/age/years"], atol=1e-2)
    plain = predict(ckpts=[tmp_path / "best.pt"], data=tmp_path / "data", out=tmp_path / "off", decisions="off",
                        **fast)
    assert plain["decisions"]["offsets"] == {}
    off = pd.read_csv(tmp_path / "off" / "predictions.csv")
    assert (off["pred/age"] != tables["pt"]["pred/age"]).any()   # the offsets moved decisions: the check has teeth
