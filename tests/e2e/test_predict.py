"""Ensemble + TTA inference on tiny random models and a tiny synthetic set (CPU, seconds).

Checkpoints are built directly (create_model + save_checkpoint): deterministic and independent of the engine; one
test goes through `engine.fit` end to end.
"""
import json
import re
import runpy
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import FAST, REPO, SINGLE18, image_count, make_ckpt, predict, predicted
from sklearn.metrics import f1_score

from multitask.analysis.report.build import build_report
from multitask.analysis.report.inputs import load_predictions
from multitask.cli import main
from multitask.config import load_config
from multitask.data.ground_truth import read_gt
from multitask.data.images import read_image, resize
from multitask.decisions.apply import average_offsets
from multitask.heads import HeadSpec, composite_encode, expand_derived, member_joint
from multitask.infer.ensemble import Member, combine
from multitask.infer.tta import MERGES, VIEWS, merge_gmean, merge_mean, merge_vote, resolve_merge, resolve_views
from multitask.metrics.table import composite_prediction
from multitask.utils.errors import UserError

ROOT = REPO
@pytest.fixture(scope="module")
def world(two_people, tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    few = base / "few"                # 4 of them as a plain folder: for tests that run many models and views
    few.mkdir()
    for image in sorted((two_people / "eval" / "images").iterdir())[:4]:
        shutil.copy(image, few / image.name)
    return {"base": base, "data": two_people, "few": few,
            "resnet": make_ckpt(base / "resnet.pt", seed=1),
            "effnet": make_ckpt(base / "effnet.pt", backbone="test_efficientnet", size=(40, 40), seed=2),
            "single18": make_ckpt(base / "single18.pt", seed=3, overrides=SINGLE18),
            "age_only": make_ckpt(base / "age.pt", seed=4, overrides=["train.heads=[age]"]),
            "mask_only": make_ckpt(base / "mask.pt", seed=5, overrides=["train.heads=[mask]"]),
            "gender_age": make_ckpt(base / "gender_age.pt", seed=6, overrides=["train.heads=[gender,age]"])}





def direct_softmax(ckpt: Path, paths) -> dict[str, np.ndarray]:
    """What the model says, with no predict code involved."""
    from multitask.runs.checkpoint import load_checkpoint, model_from_checkpoint

    model, cfg = model_from_checkpoint(load_checkpoint(ckpt))
    h, w = cfg.data.image_size
    x = torch.from_numpy(np.stack([resize(read_image(p), h, w).transpose(2, 0, 1) for p in paths]))
    with torch.no_grad():
        return {k: v.softmax(-1).numpy() for k, v in model(x).items()}


# ------------------------------------------------------------------------------------------------ TTA + merges
def test_views_keep_shape_and_do_what_they_say():
    x = torch.arange(2 * 3 * 20 * 10, dtype=torch.float32).reshape(2, 3, 20, 10) % 256
    for name, view in VIEWS.items():
        outs = view(x.clone())
        assert len(outs) == (5 if name == "fivecrop" else 1), name
        assert all(o.shape == x.shape for o in outs), name
    assert torch.equal(VIEWS["identity"](x)[0], x)
    assert torch.equal(VIEWS["hflip"](x)[0][..., 0], x[..., -1])
    shifted = VIEWS["shift"](x)[0]                  # 5% of 20 rows = 1, of 10 columns = 1 (at least one pixel)
    assert torch.equal(shifted[..., 1:, 1:], x[..., :-1, :-1])
    assert torch.equal(shifted[..., 0, 1:], x[..., 0, :-1])  # edge repeated, not zero
    bright = VIEWS["brightness"](torch.tensor([[[[100.0, 250.0]]]]))[0]
    assert torch.allclose(bright, torch.tensor([[[[110.0, 255.0]]]]))
    crops = VIEWS["fivecrop"](x)
    assert len({c.sum().item() for c in crops}) == 5   # five different crops


def test_merges():
    p = torch.tensor([[[0.7, 0.2, 0.1]], [[0.1, 0.5, 0.4]], [[0.2, 0.45, 0.35]]], dtype=torch.float64)
    assert torch.allclose(merge_mean(p), p.mean(0))
    g = merge_gmean(p)
    expected = p.log().mean(0).exp()
    assert torch.allclose(g, expected / expected.sum(-1, keepdim=True))
    v = merge_vote(p)
    assert v.argmax(-1).item() == 1 and abs(v[0, 1].item() - 2 / 3) < 1e-2 and abs(v.sum().item() - 1) < 1e-9
    tie = torch.tensor([[[0.6, 0.4, 0.0]], [[0.3, 0.7, 0.0]]], dtype=torch.float64)   # 1 vote each
    assert merge_vote(tie).argmax(-1).item() == 1                                       # higher mean prob wins
    weighted = merge_mean(p[:2], torch.tensor([0.75, 0.25], dtype=torch.float64))
    assert torch.allclose(weighted, 0.75 * p[0] + 0.25 * p[1])


def test_unknown_view_and_merge_name_the_valid_ones():
    with pytest.raises(UserError, match="hflip.*fivecrop"):
        resolve_views(["identity", "flip"])
    with pytest.raises(UserError, match="mean, gmean, vote"):
        resolve_merge("max")
    assert set(MERGES) == {"mean", "gmean", "vote"}


# ------------------------------------------------------------------------------------------------ predictions
def test_identity_tta_equals_plain_inference(world, tmp_path):
    result = predict(ckpts=[world["resnet"]], data=world["data"], out=tmp_path, tta=["identity"], **FAST)
    table, heads, probs, _ = predicted(tmp_path)
    assert list(heads) == ["mask", "gender", "age"]
    assert result["images"] == len(table) == image_count(world["data"] / "eval" / "images")
    direct = direct_softmax(world["resnet"], table["path"])
    for name in heads:
        np.testing.assert_allclose(probs[name], direct[name], atol=2e-6)
    assert not np.allclose(probs["mask"], 1 / 3, atol=1e-3)


def test_hflip_on_mirror_symmetric_images_equals_identity(world, tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    for i in range(4):
        half = rng.integers(0, 256, (32, 16, 3), dtype=np.uint8)
        for kind, image in (("sym", np.concatenate([half, half[:, ::-1]], 1)),
                            ("asym", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))):
            (folder / kind).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / kind / f"{i}.png"), image)
    predict(ckpts=[world["resnet"]], data=folder, out=tmp_path / "a", tta=["identity"], **FAST)
    predict(ckpts=[world["resnet"]], data=folder, out=tmp_path / "b", tta=["identity", "hflip"], **FAST)
    ta, _, pa, _ = predicted(tmp_path / "a")
    tb, _, pb, _ = predicted(tmp_path / "b")
    assert list(ta["image_id"]) == list(tb["image_id"]) == [f"asym/{i}.png" for i in range(4)] + \
        [f"sym/{i}.png" for i in range(4)]
    sym = ta["image_id"].str.startswith("sym").to_numpy()
    for name in pa:
        np.testing.assert_allclose(pa[name][sym], pb[name][sym], atol=2e-6)
    assert not np.allclose(pa["mask"][~sym], pb["mask"][~sym], atol=1e-4)   # the view does change other images


def test_two_identical_checkpoints_equal_one(world, tmp_path):
    twin = tmp_path / "twin.pt"
    shutil.copy(world["resnet"], twin)
    for merge, tta in (("mean", ["hflip", "fivecrop"]), ("vote", ["identity"])):   # gmean: see test_merges
        predict(ckpts=[world["resnet"]], data=world["few"], out=tmp_path / f"one_{merge}", tta=tta, merge=merge,
                    **FAST)
        predict(ckpts=[world["resnet"], twin], data=world["few"], out=tmp_path / f"two_{merge}", tta=tta,
                    merge=merge, weights=[3, 1], **FAST)
        _, _, one, _ = predicted(tmp_path / f"one_{merge}")
        _, _, two, _ = predicted(tmp_path / f"two_{merge}")
        for name in one:
            np.testing.assert_allclose(one[name], two[name], atol=2e-6, err_msg=merge)


def test_submission_follows_info_csv_and_scores_match_sklearn(world, tmp_path):
    gt = world["data"] / "eval" / "gt.csv"
    result = predict(ckpts=[world["resnet"]], data=world["data"] / "eval", out=tmp_path, tta=["identity", "shift"],
                         gt=gt, **FAST)
    info = pd.read_csv(world["data"] / "eval" / "info.csv", dtype=str)
    sub = pd.read_csv(tmp_path / "submission.csv", dtype={"ImageID": str})
    assert list(sub.columns) == ["ImageID", "ans"]
    assert list(sub["ImageID"]) == list(info["ImageID"])
    table, heads, probs, targets = predicted(tmp_path)
    per_head = composite_encode({n: probs[n].argmax(1) for n in ("mask", "gender", "age")},
                                [heads[n] for n in ("mask", "gender", "age")])
    assert list(sub["ans"]) == list(per_head) == list(table["pred/composite"])
    truth = pd.read_csv(gt, dtype={"ImageID": str}).set_index("ImageID").loc[sub["ImageID"]]
    assert result["composite/f1"] == pytest.approx(f1_score(truth["ans"], sub["ans"], average="macro"))
    assert result["composite/acc"] == pytest.approx(np.mean(truth["ans"].to_numpy() == sub["ans"].to_numpy()))
    mask_true = truth["mask"].map({"wear": 0, "incorrect": 1, "not_wear": 2}).to_numpy()
    assert result["mask/acc"] == pytest.approx(np.mean(mask_true == probs["mask"].argmax(1)))
    assert result["mask/f1"] == pytest.approx(f1_score(mask_true, probs["mask"].argmax(1), average="macro",
                                                       labels=[0, 1, 2], zero_division=0))
    assert list(table["true/composite"]) == list(truth["ans"]) and list(targets["mask"]) == list(mask_true)
    assert "age_years" in table.columns                       # gt metadata kept for the report
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["composite/f1"] == pytest.approx(result["composite/f1"]) and saved["tta"] == ["identity", "shift"]
    assert result["images_per_s"] > 0 and result["forward_images_per_s"] == pytest.approx(2 * result["images_per_s"])


def test_two_backbones_and_sizes_ensemble_weighted(world, tmp_path, monkeypatch):
    decoded = []
    real_decode = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode",
                        lambda data, flag: decoded.append(hash(data.tobytes())) or real_decode(data, flag))
    predict(ckpts=[world["resnet"], world["effnet"]], data=world["few"], out=tmp_path / "both", weights=[1, 3],
                tta=["identity", "scale"], **FAST)
    assert len(decoded) == 4 and len(set(decoded)) == 4    # each image decoded once for both sizes
    predict(ckpts=[world["resnet"]], data=world["few"], out=tmp_path / "resnet", tta=["identity", "scale"], **FAST)
    predict(ckpts=[world["effnet"]], data=world["few"], out=tmp_path / "effnet", tta=["identity", "scale"], **FAST)
    _, _, both, _ = predicted(tmp_path / "both")
    _, _, a, _ = predicted(tmp_path / "resnet")
    _, _, b, _ = predicted(tmp_path / "effnet")
    for name in both:
        np.testing.assert_allclose(both[name], 0.25 * a[name] + 0.75 * b[name], atol=3e-6)
    assert not np.allclose(a["age"], b["age"], atol=1e-3)


def test_single18_model_ensembles_with_three_heads_and_joint(world, tmp_path):
    predict(ckpts=[world["single18"]], data=world["few"], out=tmp_path / "s", **FAST)
    predict(ckpts=[world["single18"]], data=world["few"], out=tmp_path / "sj", joint=True, **FAST)
    table, heads, probs, _ = predicted(tmp_path / "s")
    assert list(heads) == ["class18", "mask", "gender", "age"]
    joint_sub = pd.read_csv(tmp_path / "sj" / "submission.csv")
    # the model's own 18-class argmax, not the combination of its marginals' argmaxes
    assert list(joint_sub["ans"]) == list(probs["class18"].argmax(1))
    predict(ckpts=[world["single18"], world["resnet"]], data=world["few"], out=tmp_path / "mix", **FAST)
    _, mixed_heads, mixed, _ = predicted(tmp_path / "mix")
    assert list(mixed_heads) == ["mask", "gender", "age"]      # class18 only where every member has it
    _, _, r18, _ = predicted_single(world, tmp_path)
    np.testing.assert_allclose(mixed["age"], 0.5 * probs["age"] + 0.5 * r18["age"], atol=3e-6)


def predicted_single(world, tmp_path):
    predict(ckpts=[world["resnet"]], data=world["few"], out=tmp_path / "r18only", **FAST)
    return predicted(tmp_path / "r18only")


def test_joint_argmax_differs_from_per_head_only_where_it_should():
    cfg = load_config(None, SINGLE18)
    composite, class18 = cfg.composite_heads(), cfg.heads["class18"]
    joint = np.full((2, 18), 1e-3)
    # row 0: one combination (wear/male/<30 = 0) is the most likely, but female (3+4+5) wins the gender marginal
    joint[0, [0, 3, 4]] = [0.4, 0.29, 0.29]
    joint[1, 13] = 0.9                               # row 1: one peaked combination; both rules agree
    joint /= joint.sum(1, keepdims=True)
    heads, probs = expand_derived({"class18": joint}, [class18], cfg.heads)
    per_head = composite_prediction(probs, composite)
    by_joint = member_joint(probs, [class18], composite).argmax(1)
    assert list(by_joint) == [0, 13] and list(per_head) == [3, 13]
    # for independent heads the product's argmax is the per-head argmax: joint changes nothing for one model
    three = {h.name: np.random.default_rng(1).dirichlet(np.ones(h.num_classes), 50) for h in composite}
    assert np.array_equal(member_joint(three, composite, composite).argmax(1), composite_prediction(three, composite))
    # ...but a mean over members of products is not the product of the means
    members = [Member(path=Path(f"m{i}"), model=_Heads(composite), cfg=cfg, weight=0.5) for i in range(2)]
    p1 = {"mask": np.array([[1.0, 0, 0]]), "gender": np.array([[0.9, 0.1]]), "age": np.array([[1.0, 0, 0]])}
    p2 = {"mask": np.array([[0, 0.5, 0.5]]), "gender": np.array([[0.0, 1.0]]), "age": np.array([[0, 0.5, 0.5]])}
    merged, joint_merged = combine(members, [p1, p2], heads=composite, composite=composite, merge=MERGES["mean"],
                                   joint=True)
    # mean marginals: mask wear, gender female (0.55), age <30 -> 3; the mean joint puts 0.45 on wear/male/<30
    assert composite_prediction(merged, composite)[0] == 3 and joint_merged.argmax(1)[0] == 0


class _Heads(torch.nn.Module):
    def __init__(self, heads):
        super().__init__()
        self.head_specs = list(heads)


def test_manifest_and_folder_inputs(world, tmp_path):
    eval_images = sorted(world["few"].iterdir())[:3]
    (tmp_path / "images").mkdir()
    for image in eval_images:
        shutil.copy(image, tmp_path / "images" / image.name)
    rows = pd.DataFrame({"path": [f"images/{p.name}" for p in eval_images], "mask": ["wear", "", "2"]})
    rows.to_csv(tmp_path / "m.csv", index=False)
    predict(ckpts=[world["resnet"]], data=tmp_path / "m.csv", out=tmp_path / "m", **FAST)
    sub = pd.read_csv(tmp_path / "m" / "submission.csv")
    assert list(sub.columns) == ["image_id", "ans"] and list(sub["image_id"]) == list(rows["path"])
    folder = tmp_path / "photos"
    (folder / "a" / ".hidden").mkdir(parents=True)
    for name in ("a/x.JPG", "b.jpeg", "c.png", ".d.jpg", "a/.hidden/e.jpg"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(eval_images[0], folder / name)
    (folder / "notes.txt").write_text("not an image")
    predict(ckpts=[world["resnet"]], data=folder, out=tmp_path / "f", **FAST)
    sub = pd.read_csv(tmp_path / "f" / "submission.csv")
    assert list(sub["image_id"]) == ["a/x.JPG", "b.jpeg", "c.png"]
    assert sub["ans"].nunique() == 1   # the same picture three times


# ------------------------------------------------------------------------------------------------ errors
def test_specialists_ensemble_head_by_head(world, tmp_path, capsys):
    """Each head is merged over the checkpoints that predict it: a mask-only run with a gender/age run makes the
    whole composite, and an age specialist beside a full model moves only the age head (weights renormalised)."""
    paths = sorted(world["few"].iterdir())
    direct = {name: direct_softmax(world[name], paths) for name in ("resnet", "age_only", "mask_only", "gender_age")}
    from rich.console import Console

    predict(ckpts=[world["mask_only"], world["gender_age"]], data=world["few"], out=tmp_path / "split",
            console=Console(width=200), **FAST)
    assert "heads merged over the models that predict them: mask 1 of 2, gender 1 of 2, age 1 of 2" in \
        capsys.readouterr().out
    _, heads, probs, _ = predicted(tmp_path / "split")
    assert list(heads) == ["mask", "gender", "age"]
    np.testing.assert_allclose(probs["mask"], direct["mask_only"]["mask"], atol=1e-5)
    np.testing.assert_allclose(probs["age"], direct["gender_age"]["age"], atol=1e-5)
    labels = {name: direct[source][name].argmax(1) for name, source in
              (("mask", "mask_only"), ("gender", "gender_age"), ("age", "gender_age"))}
    sub = pd.read_csv(tmp_path / "split" / "submission.csv")
    assert list(sub["ans"]) == list(labels["mask"] * 6 + labels["gender"] * 3 + labels["age"])

    predict(ckpts=[world["age_only"], world["resnet"]], data=world["few"], out=tmp_path / "mixed", weights=[1, 3],
            **FAST)
    _, heads, probs, _ = predicted(tmp_path / "mixed")
    assert list(heads) == ["age", "mask", "gender"]          # in the order the members first name them
    np.testing.assert_allclose(probs["mask"], direct["resnet"]["mask"], atol=1e-5)   # the full model alone
    np.testing.assert_allclose(probs["age"], 0.25 * direct["age_only"]["age"] + 0.75 * direct["resnet"]["age"],
                               atol=1e-5)
    assert (tmp_path / "mixed" / "submission.csv").exists()   # the age specialist's own config names the composite


def test_offsets_average_over_the_members_that_predict_the_head():
    heads = [HeadSpec(["wear", "incorrect", "not_wear"], name="mask"), HeadSpec(["<30", "30-59", ">=60"], name="age")]
    specialist = ({"mask": np.array([0.0, 0.4, 0.0])}, 0.5, {"mask"})
    full = ({"age": np.array([0.0, 0.0, 0.2])}, 0.5, {"mask", "age"})
    offsets = average_offsets([specialist, full], heads)
    np.testing.assert_allclose(offsets["mask"], [0.0, 0.2, 0.0])   # the full model's plain argmax counts
    np.testing.assert_allclose(offsets["age"], [0.0, 0.0, 0.2])    # the specialist has no say on age


def test_errors_are_one_clear_line(world, tmp_path):
    renamed = make_ckpt(tmp_path / "renamed.pt", seed=7, overrides=["heads.age.classes=[young,mid,old]"])
    with pytest.raises(UserError, match=r"disagree on head 'age': .*resnet\.pt has classes .* but .*renamed\.pt has "
                                        r"\['young', 'mid', 'old'\]"):
        predict(ckpts=[world["resnet"], renamed], data=world["data"], out=tmp_path / "x", **FAST)
    with pytest.raises(UserError, match=r"head 'mask' is predicted only by checkpoints of weight 0"):
        predict(ckpts=[world["mask_only"], world["gender_age"]], data=world["data"], out=tmp_path / "x",
                weights=[0, 1], **FAST)
    with pytest.raises(UserError, match=r"--joint: .*mask\.pt does not predict every composite head"):
        predict(ckpts=[world["resnet"], world["mask_only"]], data=world["data"], out=tmp_path / "x", joint=True,
                **FAST)
    with pytest.raises(UserError, match="--weights: got 3 values for 2 checkpoints"):
        predict(ckpts=[world["resnet"], world["effnet"]], data=world["data"], out=tmp_path / "x", weights=[1, 2, 3],
                    **FAST)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images")
    with pytest.raises(UserError, match="no images found"):
        predict(ckpts=[world["resnet"]], data=empty, out=tmp_path / "x", **FAST)
    with pytest.raises(UserError, match="unknown view 'flip'"):
        predict(ckpts=[world["resnet"]], data=world["data"], out=tmp_path / "x", tta=["flip"], **FAST)
    with pytest.raises(UserError, match="--joint"):
        predict(ckpts=[world["age_only"]], data=world["data"], out=tmp_path / "x", joint=True, **FAST)
    broken = tmp_path / "broken"
    shutil.copytree(world["data"] / "eval", broken / "eval")
    gone = pd.read_csv(broken / "eval" / "info.csv", dtype=str)["ImageID"].iloc[5]
    (broken / "eval" / "images" / gone).unlink()
    with pytest.raises(UserError, match=f"image '{gone}' not found"):
        predict(ckpts=[world["resnet"]], data=broken, out=tmp_path / "x", **FAST)
    cut = tmp_path / "cut"
    cut.mkdir()
    good = sorted(world["few"].iterdir())[0]
    shutil.copy(good, cut / "a.jpg")
    (cut / "b.jpg").write_bytes(good.read_bytes()[:200])       # half-copied file, read in a loader worker
    with pytest.raises(UserError, match=r"b\.jpg: truncated JPEG") as caught:
        predict(ckpts=[world["resnet"]], data=cut, out=tmp_path / "x", **{**FAST, "workers": 1})
    assert "\n" not in str(caught.value)


def test_gt_with_only_head_columns(world):
    cfg = load_config(None, [])
    heads, composite = cfg.composite_heads(), cfg.composite_heads()
    gt = pd.read_csv(world["data"] / "eval" / "gt.csv", dtype=str)
    path = world["base"] / "heads_only.csv"
    gt.drop(columns=["ans"]).assign(mask=gt["mask"].map({"wear": "0", "incorrect": "1", "not_wear": "2"})).to_csv(
        path, index=False)
    truth = read_gt(path, list(gt["ImageID"]), heads, composite)
    assert list(truth.composite) == list(gt["ans"].astype(int))


def test_predict_and_report_read_a_gt_file_by_the_same_rules(world, tmp_path, capsys):
    """One reader (multitask.data.ground_truth): an id listed twice with identical rows counts once, an image without a
    row is unlabelled and counted, an id whose rows differ is the same one-line error in predict and report."""
    gt = pd.read_csv(world["data"] / "eval" / "gt.csv", dtype=str)
    lenient = tmp_path / "repeats.csv"
    pd.concat([gt.iloc[1:], gt.iloc[[3]]]).to_csv(lenient, index=False)   # row 0 missing, row 3 twice alike
    result = predict(ckpts=[world["resnet"]], data=world["data"], out=tmp_path / "p", gt=lenient, **FAST)
    assert result["composite/n"] == 13 and result["mask/n"] == 13
    assert json.loads((tmp_path / "p" / "scores.json").read_text())["unlabelled"] == 1
    assert "1 of 14 predicted images have no row in repeats.csv" in " ".join(capsys.readouterr().out.split())
    table, *_, targets = predicted(tmp_path / "p")
    assert targets["mask"][0] == -1 and table["true/composite"].iloc[0] == -1
    p, _ = load_predictions(pred=tmp_path / "p" / "predictions.csv", gt=lenient)
    for name in ("mask", "gender", "age"):
        np.testing.assert_array_equal(p.targets[name], targets[name])
    assert any("1 of 14 predicted images have no row in repeats.csv" in note for note in p.notes)

    conflict = tmp_path / "conflict.csv"
    changed = gt.iloc[[3]].assign(ans=str((int(gt["ans"].iloc[3]) + 1) % 18))
    pd.concat([gt, changed]).to_csv(conflict, index=False)
    message = f"ImageID {gt['ImageID'].iloc[3]!r} is listed 2 times with different values (lines 5, 16)"
    with pytest.raises(UserError, match=re.escape(message)):
        predict(ckpts=[world["resnet"]], data=world["data"], out=tmp_path / "q", gt=conflict, **FAST)
    with pytest.raises(UserError, match=re.escape(message)):
        build_report(pred=tmp_path / "p" / "predictions.csv", gt=conflict)


@pytest.mark.slow
def test_predictions_record_the_composite_order_and_the_report_reads_it(world, tmp_path):
    gt = world["data"] / "eval" / "gt.csv"
    scores = predict(ckpts=[world["resnet"]], data=world["data"], out=tmp_path, gt=gt, **FAST)
    table = pd.read_csv(tmp_path / "predictions.csv", dtype=str)
    assert table["composite/heads"].eq("mask,gender,age").all() and table["bins/age"].eq("30,60").all()
    numbers = json.loads((build_report(pred=tmp_path / "predictions.csv") / "report.json").read_text())
    assert numbers["composite"]["heads"] == ["mask", "gender", "age"] and numbers["age"]["head"] == "age"
    assert numbers["composite"]["f1"] == pytest.approx(scores["composite/f1"])


def test_cli_and_script(world, tmp_path, capsys, monkeypatch):
    args = ["--ckpt", str(world["resnet"]), "--data", str(world["few"]), "--batch-size", "8", "--device", "cpu",
            "--tta", "identity,hflip"]                            # default --amp auto: bf16 where the CPU is fast at it
    assert main(["predict", *args, "--workers", "0", "--out", str(tmp_path / "cli")]) == 0
    monkeypatch.setattr(sys, "argv", ["infer_ensemble.py", *args, "--workers", "1", "--out", str(tmp_path / "script")])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "scripts" / "infer_ensemble.py"), run_name="__main__")
    assert stop.value.code == 0
    assert (tmp_path / "cli" / "submission.csv").read_text() == (tmp_path / "script" / "submission.csv").read_text()
    capsys.readouterr()
    assert main(["predict", *args, "--out", str(tmp_path / "x"), "--tta", "zoom"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tta: unknown view 'zoom'") and err.count("\n") == 1


@pytest.mark.slow
def test_end_to_end_through_the_engine(tmp_path):
    from multitask.train.run import fit

    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [
        f"data.root={tmp_path / 'data'}", "data.synth.people=8", "data.synth.eval_people=2", "data.synth.width=32",
        "data.synth.height=32",
        "data.image_size=[32,32]", "train.epochs=1", "train.batch_size=16", "data.num_workers=0", "data.n_folds=2",
        "tracking.wandb.mode=disabled", "tracking.tensorboard=false", f"data.cache_dir={tmp_path / 'cache'}",
        f"output_dir={tmp_path / 'runs'}", "tracking.progress=false"])
    fit(cfg, tmp_path / "run")
    result = predict(ckpts=[tmp_path / "run"], data=tmp_path / "data", out=tmp_path / "out", tta=["identity"],
                         gt=tmp_path / "data" / "eval" / "gt.csv", **FAST)
    assert 0 <= result["composite/f1"] <= 1 and result["images"] == image_count(tmp_path / "data" / "eval" / "images")


def test_model_without_composite_heads_writes_predictions_only(world, tmp_path):
    (tmp_path / "submission.csv").write_text("ImageID,ans\nold,0\n")   # left by an earlier run
    predict(ckpts=[world["age_only"]], data=world["few"], out=tmp_path, **FAST)
    _, heads, probs, _ = predicted(tmp_path)
    assert list(heads) == ["age"] and probs["age"].shape == (4, 3)
    assert not (tmp_path / "submission.csv").exists()


def test_scores_carry_bootstrap_intervals_over_people(world, tmp_path, capsys):
    """--gt: every macro F1 gets a 95% interval that resamples the gt's people (its group column), printed and in
    scores.json; the interval brackets the score."""
    from rich.console import Console

    result = predict(ckpts=[world["resnet"]], data=world["data"] / "eval", out=tmp_path,
                         gt=world["data"] / "eval" / "gt.csv", console=Console(width=160), **FAST)
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["intervals"] == {"level": 0.95, "draws": 1000, "resampled": "people", "groups": 2}
    for name in ("composite", "mask", "gender", "age"):
        lo, hi = saved[f"{name}/f1_ci95"]
        assert lo <= saved[f"{name}/f1"] <= hi and result[f"{name}/f1_ci95"] == [lo, hi]
    printed = capsys.readouterr().out
    assert "95% interval" in printed and f"{saved['composite/f1_ci95'][0]:.4f}–" in printed


def test_the_pipeline_steps_run_one_by_one_and_score_the_table_in_memory(world, tmp_path, monkeypatch):
    """load -> forward -> merge -> decide -> write -> score, called alone, make what run_predict makes; the scores
    come from the table in memory: predict never reads back the predictions.csv it wrote."""
    import io

    from rich.console import Console

    from multitask.infer import predict as pipeline

    options = pipeline.PredictOptions(ckpts=[world["resnet"]], data=world["data"], out=tmp_path / "steps",
                                      gt=world["data"] / "eval" / "gt.csv", tta=["identity", "hflip"], **FAST)
    quiet = Console(file=io.StringIO())
    plan = pipeline.load(options)
    assert not (tmp_path / "steps").exists()   # everything that can fail is checked before the output folder
    per_member = pipeline.forward(plan, quiet)
    assert [set(p) for p in per_member] == [{"mask", "gender", "age"}]
    merged = pipeline.decide_merged(plan, pipeline.merge(plan, per_member))
    out = pipeline.make_out_dir(options.out)
    table = pipeline.write_outputs(out, plan, merged)
    real_read = pd.read_csv
    monkeypatch.setattr(pd, "read_csv", lambda path, *a, **k: pytest.fail(f"read back {path}")
                        if str(path).endswith("predictions.csv") else real_read(path, *a, **k))
    scores = pipeline.score_outputs(out, plan, merged, table, quiet)
    monkeypatch.undo()
    whole = predict(**{**vars(options), "out": tmp_path / "whole"})
    assert (out / "submission.csv").read_bytes() == (tmp_path / "whole" / "submission.csv").read_bytes()
    for key in ("composite/f1", "mask/f1", "age/f1", "composite/f1_ci95", "intervals"):
        assert scores[key] == whole[key], key
