"""Several data sources in one run: each its own crop, heads and validation; shares of an epoch; per-source metrics;
ages in years from a manifest; the one-source configs and older checkpoints as they were."""
import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import TINY_IMAGES, error_line, make_ckpt, predict, predicted, tiny_overrides
from wandb_record import logged

from multitask.cli import main
from multitask.config import load_config
from multitask.data.faces import Cropper, read_pixels
from multitask.data.prepare import prepare_data
from multitask.data.sampling import EpochSampler, epoch_counts, train_sampler
from multitask.runs.checkpoint import load_checkpoint, save_checkpoint
from multitask.train import fit, run_training

CONFIG = "configs/quickstart.yaml"


@pytest.fixture(scope="module")
def extra(synth_root, tmp_path_factory):
    """A manifest of the synthetic set's eval photos (other people than training's): every head's column, ages in
    years beside the age class, and groups."""
    folder = tmp_path_factory.mktemp("extra")
    gt = pd.read_csv(synth_root / "eval" / "gt.csv", dtype=str)
    table = pd.DataFrame({"path": [str(synth_root / "eval" / "images" / i) for i in gt["ImageID"]],
                          "mask": gt["mask"], "gender": gt["gender"], "age": gt["age"], "age_years": gt["age_years"],
                          "group": gt["group"]})
    table.to_csv(folder / "extra.csv", index=False)
    table.drop(columns=["age"]).to_csv(folder / "years_only.csv", index=False)
    return folder


def sources(synth_root, extra, *more, manifest="extra.csv"):
    return ["data.sources.comp.kind=competition", f"data.sources.comp.root={synth_root}",
            "data.sources.extra.kind=manifest", f"data.sources.extra.path={extra / manifest}", *more]


def two_sources(tiny_cfg, synth_root, extra, *more, manifest="extra.csv"):
    return tiny_cfg(*sources(synth_root, extra, *more, manifest=manifest))


def test_each_source_gets_its_own_crop_and_the_log_names_both(tiny_cfg, synth_root, extra):
    cfg = two_sources(tiny_cfg, synth_root, extra, "data.sources.comp.crop=center")
    lines = []
    data = prepare_data(cfg, log=lines.append)
    shown = "\n".join(lines)
    assert "source comp: " in shown and "crop center" in shown and "source extra: " in shown and "crop none" in shown
    comp, other = data.sources
    assert isinstance(comp.crop, Cropper) and comp.crop.mode == "center" and other.crop is None
    first_extra = len(comp.frame)
    h, w = cfg.data.image_size
    cut = read_pixels(comp.frame["path"][0], h, w, comp.crop, 0)
    whole = read_pixels(other.frame["path"][0], h, w, None, 0)
    assert np.array_equal(data.train_set.dataset.parts[0].cache.read(0), cut)
    assert np.array_equal(data.val_set.dataset.parts[1].cache.read(0), whole)
    assert data.frame["source"].tolist() == ["comp"] * first_extra + ["extra"] * len(other.frame)
    assert data.frame["group"].str.startswith(("comp:", "extra:")).all()   # two sources' people never merge


def test_a_source_labels_only_its_heads_even_when_its_csv_has_more(tiny_cfg, synth_root, extra):
    data = prepare_data(two_sources(tiny_cfg, synth_root, extra, "data.sources.extra.heads=[mask]"), log=lambda _: 0)
    rows = data.frame["source"].to_numpy() == "extra"
    assert (data.train_labels["mask"][rows] >= 0).all()
    assert (data.train_labels["gender"][rows] == -1).all() and (data.train_labels["age"][rows] == -1).all()
    assert (data.train_labels["gender"][~rows] >= 0).all()


def test_a_share_draws_its_fraction_of_every_epoch(tiny_cfg, synth_root, extra):
    cfg = two_sources(tiny_cfg, synth_root, extra, "data.sources.extra.share=0.4", "data.sources.extra.val=false")
    data = prepare_data(cfg, log=lambda _: 0)
    comp_rows = data.source_rows(data.train_idx)["comp"]
    counts = epoch_counts(data)
    assert counts[0] == len(comp_rows)                               # the main source: each image once
    total = len(comp_rows) / 0.6
    assert counts[1] == round(0.4 * total)
    sampler = train_sampler(data, cfg, rank=0, world_size=1)
    orders = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        orders.append(sampler.order())
        share = np.isin(orders[-1], np.flatnonzero(data.frame["source"] == "extra")).mean()
        assert abs(share - 0.4) <= cfg.train.batch_size / len(orders[-1])   # the asked fraction, within one batch
        assert sorted(set(orders[-1]) & set(data.train_idx[comp_rows])) == sorted(data.train_idx[comp_rows])
    assert not np.array_equal(*orders)   # a new draw every epoch


def test_a_balanced_source_draws_its_classes_evenly_and_the_others_as_before(tiny_cfg, synth_root, extra):
    plain = two_sources(tiny_cfg, synth_root, extra, "data.sources.extra.share=0.4")
    cfg = two_sources(tiny_cfg, synth_root, extra, "data.sources.extra.share=0.4", "data.sources.extra.balance=mask")
    lines = []
    data = prepare_data(cfg, log=lines.append)
    assert any(line.startswith("source extra: ") and "balanced by mask" in line for line in lines)
    rows = data.train_idx[data.source_rows(data.train_idx)["extra"]]
    before = np.bincount(data.train_labels["mask"][rows], minlength=3)
    assert before.max() >= 3 * before.min() > 0          # the synthetic photos: most wear a mask
    sampler, unbalanced = (train_sampler(d, c, rank=0, world_size=1) for d, c in
                           ((data, cfg), (prepare_data(plain, log=lambda _: 0), plain)))
    drawn = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        unbalanced.set_epoch(epoch)
        order, other = sampler.order(), unbalanced.order()
        mine = order[np.isin(order, rows)]
        assert len(mine) == epoch_counts(data)[1]                  # still its share of the epoch
        comp = ~np.isin(order, rows)
        assert np.array_equal(np.sort(order[comp]), np.sort(other[~np.isin(other, rows)]))   # comp: untouched
        drawn.append(data.train_labels["mask"][mine])
    share = np.bincount(np.concatenate(drawn), minlength=3) / sum(map(len, drawn))
    assert np.abs(share - 1 / 3).max() < 0.08, share            # each class about a third (was up to 0.7)


def test_a_source_augments_with_its_own_keys_over_data_augment(tiny_cfg, synth_root, extra):
    cfg = two_sources(tiny_cfg, synth_root, extra, "data.augment.hflip=1.0", "data.sources.extra.augment.hflip=0.0",
                      "data.sources.extra.augment.color_jitter=1.0")
    assert cfg.data.source_augment(cfg.data.sources["extra"]).color_jitter == 1.0
    lines = []
    data = prepare_data(cfg, log=lines.append)
    assert any(line.startswith("source extra: ") and "augment hflip 0.0 color_jitter 1.0" in line for line in lines)
    train, val = data.train_set, data.val_set
    comp_row = data.train_idx[data.source_rows(data.train_idx)["comp"][0]]
    extra_row = data.train_idx[data.source_rows(data.train_idx)["extra"][0]]
    for row, flipped in ((comp_row, True), (extra_row, False)):
        part = train.dataset.parts[train.dataset._part(row)]
        local = row - int(train.dataset.starts[train.dataset._part(row)])
        plain = torch.from_numpy(part.cache.read(local)).permute(2, 0, 1)
        image = train[(row, 5)][0]
        assert torch.equal(image, train[(row, 5)][0])             # seeded: the same draw every time
        assert torch.equal(image, plain.flip(-1)) is flipped       # comp: data.augment's flip; extra: none
        if not flipped:
            assert not torch.equal(image, plain)                   # ... but its own colour jitter
    held_out = data.val_idx[data.source_rows(data.val_idx)["extra"][0]]
    part = val.dataset._part(held_out)
    plain = val.dataset.parts[part].cache.read(held_out - int(val.dataset.starts[part]))
    assert np.array_equal(val[(held_out, 5)][0].permute(1, 2, 0).numpy(), plain)   # validation: never augmented


def test_ranks_split_the_mixed_epoch_between_them():
    rows_a, rows_b = np.arange(0, 30), np.arange(30, 40)
    parts = [(rows_a, 30, None), (rows_b, 25, None)]   # b has too few: each of its images 2 or 3 times
    whole = EpochSampler(indices=np.arange(40), seed=3, shuffle=True, parts=parts)
    whole.set_epoch(2)
    shards = []
    for rank in range(2):
        sampler = EpochSampler(indices=np.arange(40), seed=3, shuffle=True, parts=parts, rank=rank, world_size=2)
        sampler.set_epoch(2)
        shards.append(sampler.order())
    order = whole.order()
    assert len(order) == 55 and sorted(np.concatenate(shards)) == sorted([*order, order[0]])   # padded to 2 x 28
    counts = np.bincount(whole.order()[whole.order() >= 30] - 30)
    assert counts.sum() == 25 and set(counts) <= {2, 3}


def test_per_source_metrics_reach_metrics_csv_the_epoch_table_and_wandb(tiny_cfg, synth_root, extra, capsys):
    cfg = two_sources(tiny_cfg, synth_root, extra, "tracking.wandb.mode=offline", "data.sources.extra.heads=[mask]")
    run_dir = run_training(cfg)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    for key in ("val/comp/composite/f1", "val/comp/age/f1", "val/extra/mask/f1", "val/mask/f1"):
        assert key in metrics.columns, key
    assert "val/extra/age/f1" not in metrics.columns and "val/extra/composite/f1" not in metrics.columns
    assert cfg.monitored_metric() == "val/comp/composite/f1"
    sent = set().union(*[values for _, values in logged(run_dir)])
    assert {"val/comp/composite/f1", "val/extra/mask/f1"} <= sent
    out = capsys.readouterr().out
    assert "extra/mask" in out and "comp/composite" in out
    oof = pd.read_csv(run_dir / "oof.csv")
    assert set(oof["source"]) == {"comp", "extra"} and oof["image_id"].is_unique


def test_ages_in_years_train_a_years_head_from_a_manifest(tiny_cfg, synth_root, extra):
    cfg = two_sources(tiny_cfg, synth_root, extra, "heads.age.target=years", "heads.age.years_range=[0,90]",
                      manifest="years_only.csv")
    data = prepare_data(cfg, log=lambda _: 0)
    rows = data.frame["source"].to_numpy() == "extra"
    years = data.train_labels["age/years"][rows]
    assert np.isfinite(years).all() and years.min() >= 18
    binned = np.digitize(years, cfg.heads["age"].bins)
    assert np.array_equal(data.train_labels["age"][rows], binned)   # the class from the years, by bins
    best = fit(cfg, cfg.output_dir + "/years")
    assert "val/extra/age/mae_years" in best and "val/comp/age/mae_years" in best


def test_one_source_configs_and_older_checkpoints_work_as_before(tiny_cfg, synth_root, tmp_path):
    cfg = tiny_cfg()
    assert list(cfg.data.resolved_sources()) == ["competition"] and cfg.monitored_metric() == "val/composite/f1"
    data = prepare_data(cfg, log=lambda _: 0)
    assert len(data.frame) == TINY_IMAGES and set(data.frame["source"]) == {"competition"}
    assert not data.frame["group"].str.contains(":").any()
    old = load_checkpoint(make_ckpt(tmp_path / "new.pt"))
    del old["config"]["data"]["sources"]                 # written before sources existed
    save_checkpoint(tmp_path / "old.pt", old)
    result = predict(ckpts=[tmp_path / "old.pt"], data=synth_root, out=tmp_path / "out", workers=0, device="cpu")
    assert result["images"] > 0 and (tmp_path / "out" / "submission.csv").is_file()


def test_predict_cuts_photos_as_the_named_source_did(synth_root, extra, tmp_path, capsys):
    ckpt = make_ckpt(tmp_path / "two.pt", overrides=[*sources(synth_root, extra), "data.sources.comp.crop=center",
                                                     "data.sources.extra.crop=none"])
    photos = extra / "extra.csv"
    runs = {name: tmp_path / f"out_{name}" for name in ("default", "comp", "extra")}
    for name, out in runs.items():
        predict(ckpts=[ckpt], data=photos, out=out, source=None if name == "default" else name,
                workers=0, device="cpu", amp="off")
    probs = {name: predicted(out)[2]["mask"] for name, out in runs.items()}
    assert np.array_equal(probs["default"], probs["comp"])      # the first source's crop unless told
    assert not np.allclose(probs["comp"], probs["extra"])       # the whole photo, as extra's were fed
    record = json.loads((runs["extra"] / "predict.json").read_text())
    assert record["source"] == "extra"
    code = main(["predict", "--ckpt", str(ckpt), "--data", str(photos), "--out", str(tmp_path / "bad"),
                 "--source", "extr", "--device", "cpu"])
    assert code == 2 and "--source extr: " in (line := error_line(capsys)) and "did you mean extra" in line \
        and "its sources: comp, extra" in line


def test_sweeps_and_folds_reach_each_source(tiny_cfg, synth_root, extra, tmp_path):
    from multitask.experiments.space import check_space, load_space
    from multitask.experiments.study import Sweep

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"params": {"data.sources.extra.share": {"low": 0.1, "high": 0.5}}}))
    overrides = [*tiny_overrides(synth_root, tmp_path), *sources(synth_root, extra, "data.sources.extra.val=false")]
    sweep = Sweep(config=CONFIG, space_path=str(space), trials=1, overrides=overrides)
    base = check_space(load_space(space), sweep.build)
    built = sweep.build(sweep.space.overrides({"data.sources.extra.share": 0.3}))
    assert base.data.sources["extra"].share is None and built.data.sources["extra"].share == 0.3
    parent = run_training(load_config(CONFIG, [*overrides, "data.n_folds=2", "train.max_steps=1"]), all_folds=True)
    oof = pd.read_csv(parent / "oof.csv")
    assert sorted(oof["fold"].unique()) == [0, 1] and set(oof["source"]) == {"comp"}   # extra only trains


@pytest.mark.parametrize("extra_args, message", [
    (["data.sources.extra.kind=parquet"], "data.sources.extra.kind: invalid choice 'parquet'"),
    (["data.sources.extra.share=1.5"], "data.sources.extra.share: 1.5 is out of range; expected in (0, 1]"),
    (["data.sources.extra.share=0"], "data.sources.extra.share: 0.0 is out of range; expected in (0, 1]"),
    (["data.sources.extra.heads=[mask,hair]"], "data.sources.extra.heads: unknown head 'hair'"),
    (["data.sources.EXTRA.kind=manifest", "data.sources.EXTRA.path=x.csv"], "named like data.sources.extra"),
    (["data.sources.age.kind=manifest", "data.sources.age.path=x.csv"], "data.sources.age: a source name is"),
    (["data.sources.comp.share=0.5", "data.sources.extra.share=0.6"], "they add up to 1.1; they must add up to 1"),
    (["data.sources.extra.heads=[mask]", "data.sources.extra.balance=age"],
     "data.sources.extra.balance: 'age' is not a head this source labels; it labels: mask"),
    (["data.sources.extra.augment.colour_jitter=0.3"], "unknown key 'data.sources.extra.augment.colour_jitter'"),
    (["data.sources.extra.augment.hflip=often"], "data.sources.extra.augment.hflip: expected a number, got 'often'"),
])
def test_bad_sources_are_one_line(synth_root, extra, tmp_path, capsys, extra_args, message):
    code = main(["train", "--config", CONFIG, *tiny_overrides(synth_root, tmp_path),
                 *sources(synth_root, extra), *extra_args])
    assert code == 2 and message in error_line(capsys)


def test_two_sources_named_alike_in_a_file_and_years_that_disagree_are_one_line(synth_root, extra, tmp_path, capsys):
    path = tmp_path / "twice.yaml"
    path.write_text(f"data:\n  sources:\n    extra: {{kind: manifest, path: {extra / 'extra.csv'}}}\n"
                    f"    extra: {{kind: competition, root: {synth_root}}}\n")
    assert main(["train", "--config", str(path)]) == 2
    assert "line 4: not valid YAML (key 'extra' appears twice in one mapping)" in error_line(capsys)
    table = pd.read_csv(extra / "extra.csv", dtype=str)
    table.loc[3, ["age", "age_years"]] = ["<30", "75"]   # the class and the years disagree
    table.to_csv(tmp_path / "clash.csv", index=False)
    assert main(["train", "--config", CONFIG, *tiny_overrides(synth_root, tmp_path),
                 *sources(synth_root, tmp_path, manifest="clash.csv")]) == 2
    line = error_line(capsys)
    assert line.startswith(f"{tmp_path / 'clash.csv'} line 5: age_years 75 is class >=60 of head age") and \
        "but column age says" in line


@pytest.mark.parametrize("value", ["nan", "\u0664\u0665", "-5", "1e300"])
def test_bad_years_in_a_source_are_one_line_naming_the_row_before_any_run_dir(value, synth_root, extra, tmp_path,
                                                                              capsys):
    table = pd.read_csv(extra / "years_only.csv", dtype=str)
    table.loc[3, "age_years"] = value
    table.to_csv(tmp_path / "bad.csv", index=False)
    assert main(["train", "--config", CONFIG, *tiny_overrides(synth_root, tmp_path),
                 *sources(synth_root, tmp_path, manifest="bad.csv")]) == 2
    line = error_line(capsys)
    assert line.startswith(f"{tmp_path / 'bad.csv'} line 5, column age_years: ") and value in line, line
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------------------------------- leaks
def test_exact_repeats_are_dropped_once_and_counted_in_the_data_summary(tiny_cfg, synth_root, extra, tmp_path):
    """Every row of a manifest again, half through symlinks: the same photo, labels and group, kept once."""
    table = pd.read_csv(extra / "extra.csv", dtype=str)
    again = table.copy()
    for i in range(0, len(again), 2):
        link = tmp_path / "links" / f"{i}.jpg"
        link.parent.mkdir(exist_ok=True)
        link.symlink_to(again.loc[i, "path"])
        again.loc[i, "path"] = str(link)
    pd.concat([table, again]).to_csv(tmp_path / "twice.csv", index=False)
    lines = []
    data = prepare_data(tiny_cfg(*sources(synth_root, tmp_path, manifest="twice.csv")), log=lines.append)
    assert (data.frame["source"] == "extra").sum() == len(table)
    assert len(data.sources[1].frame) == len(table) and data.frame["path"].is_unique
    assert f"data: dropped {len(table)} repeated image row(s): {len(table)} exact repeat(s)" in "\n".join(lines)


def test_a_photo_under_two_groups_is_refused_with_an_example_and_the_count(synth_root, extra, tmp_path, capsys):
    table = pd.read_csv(extra / "extra.csv", dtype=str)
    again = table.assign(group="again" + table["group"])   # the same photos as other people: other folds
    pd.concat([table, again]).to_csv(tmp_path / "groups.csv", index=False)
    assert main(["train", "--config", CONFIG, *tiny_overrides(synth_root, tmp_path),
                 *sources(synth_root, tmp_path, manifest="groups.csv")]) == 2
    line = error_line(capsys)
    found = __import__("re").match(r"data: (\d+) image\(s\) are listed in more than one fold", line)
    assert found and 0 < int(found.group(1)) <= len(table), line
    assert str(synth_root / "eval" / "images") in line and "source extra (group extra:again" in line
    assert not (tmp_path / "runs").exists()


def test_a_second_source_over_the_training_images_is_refused(synth_root, tmp_path, capsys):
    photos = sorted((synth_root / "train" / "images").rglob("*.jpg"))
    pd.DataFrame({"path": photos, "gender": "female"}).to_csv(tmp_path / "same.csv", index=False)
    assert main(["train", "--config", CONFIG, *tiny_overrides(synth_root, tmp_path),
                 *sources(synth_root, tmp_path, "data.sources.extra.val=false", manifest="same.csv")]) == 2
    line = error_line(capsys)
    assert line.startswith(f"data: {TINY_IMAGES} image(s) are listed in more than one fold") and \
        "source extra (group " in line and "training only)" in line, line
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_ddp_ranks_train_one_mixed_epoch(synth_root, extra, tmp_path):
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "multitask",
           "train", "--config", CONFIG, *tiny_overrides(synth_root, tmp_path, "train.batch_size=8", "train.device=cpu"),
           *sources(synth_root, extra, "data.sources.extra.share=0.3", "data.sources.extra.heads=[mask]")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1",
                                                                                   **__import__("os").environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = next((tmp_path / "runs" / "quickstart").iterdir())
    assert "val/extra/mask/f1" in pd.read_csv(run_dir / "metrics.csv").columns
    assert proc.stdout.count("source extra:") == 1   # rank 0 speaks


def test_config_show_prints_every_source_and_loads_back(tmp_path):
    from multitask.config import to_dict
    from multitask.config.show import show_config

    cfg = load_config("configs/realfaces_multisource_cpu.yaml")
    text = show_config(cfg)
    assert "    realmask:\n      kind: manifest" in text and "share: 0.4" in text and "balance: mask" in text
    (tmp_path / "shown.yaml").write_text(text)
    again = load_config(tmp_path / "shown.yaml")
    assert {**to_dict(again), "config_path": None} == {**to_dict(cfg), "config_path": None}
    assert list(again.data.resolved_sources()) == ["competition", "realmask", "utk_painted"]
    assert again.data.resolved_sources()["realmask"].crop == "none" and again.monitored_metric() == \
        "val/competition/composite/f1"
