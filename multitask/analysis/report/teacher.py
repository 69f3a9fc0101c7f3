"""The report's Teacher section (a distilled run): the student against its teacher, head by head, on the validation
rows the teacher spoke for (the run dir's teacher.csv beside oof.csv).

Per head: both macro F1s, their agreement (same argmax), and where the student kept, lost or gained against the
teacher: kept = both right, lost = the teacher right and the student wrong, gained = the other way round.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config import load_config
from ...heads import composite_encode
from ...metrics.stats import macro_f1
from ...metrics.table import read_table
from ...runs.run_dir import CONFIG, TEACHER
from ...utils.errors import UserError
from .html import Section
from .predictions import Predictions, composite_pairs


def analyse_teacher(p: Predictions, run_dir: Path) -> tuple[dict, Section] | None:
    """(numbers, section), or None for a run without teacher.csv (not distilled)."""
    path = Path(run_dir) / TEACHER
    if not path.is_file():
        return None
    try:
        table, heads, probs, _ = read_table(path)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a predictions table ({err})") from None
    index = {image: i for i, image in enumerate(table["image_id"].astype(str))}
    rows = np.array([i for i, image in enumerate(p.table["image_id"].astype(str)) if image in index], dtype=np.int64)
    theirs = np.array([index[image] for image in p.table["image_id"].astype(str).iloc[rows]], dtype=np.int64)
    section = Section(id="teacher", title="Student against teacher")
    numbers: dict = {"images": len(rows), "heads": {}}
    lines = []
    teacher_labels = {}
    for head in (h for h in p.heads if h.name in probs and h.name in p.targets):
        truth = p.targets[head.name][rows]
        mine, their = p.decided(head.name)[rows], probs[head.name][theirs].argmax(1)
        teacher_labels[head.name] = their
        known = truth >= 0
        right_s, right_t = (mine == truth) & known, (their == truth) & known
        value = {"student_f1": macro_f1(truth[known], mine[known], head.num_classes),
                 "teacher_f1": macro_f1(truth[known], their[known], head.num_classes),
                 "agreement": float((mine == their).mean()) if len(rows) else float("nan"),
                 "kept": int((right_s & right_t).sum()), "lost": int((right_t & ~right_s).sum()),
                 "gained": int((right_s & ~right_t).sum())}
        numbers["heads"][head.name] = value
        lines.append([head.name, value["student_f1"], value["teacher_f1"], value["student_f1"] - value["teacher_f1"],
                      value["agreement"], value["kept"], value["lost"], value["gained"]])
    composite = composite_rows(p, rows, teacher_labels)
    if composite is not None:
        numbers["composite"] = composite
        lines.append(["composite", composite["student_f1"], composite["teacher_f1"],
                      composite["student_f1"] - composite["teacher_f1"], composite["agreement"], "", "", ""])
    section.text(f"{len(rows):,} validation images the teacher spoke for (teacher.csv: its probabilities, merged "
                 f"over its members and views as predict merges them; {fold_rule(run_dir)}). Kept: both right; lost: "
                 f"the teacher right, the student wrong; gained: the other way round.")
    section.table(["head", "student F1", "teacher F1", "student - teacher", "agreement", "kept", "lost", "gained"],
                  lines, caption="macro F1 on the same images; the teacher's argmax, the student's decided labels")
    return numbers, section


def fold_rule(run_dir: Path) -> str:
    try:
        distill = load_config(Path(run_dir) / CONFIG).train.distill
    except UserError:
        return "the run's config.yaml could not be read"
    teachers = f"{len(distill.checkpoints)} checkpoint(s)"
    if distill.out_of_fold:
        return f"{teachers}, out of fold: on each image only the members that never trained on it"
    return (f"{teachers}, in fold: every member on every image, also where it trained on it, so the teacher's F1 "
            f"here can count images it learned (the run's log says how many): not its score on new photos")


def composite_rows(p: Predictions, rows: np.ndarray, teacher: dict) -> dict | None:
    """The composite F1 of both (the competition's: classes present only) on the teacher's rows (ascending) that
    are labelled for every composite head; the student's codes as the report's Composite section reads them."""
    pairs = composite_pairs(p)
    if pairs is None or not all(h.name in teacher for h in p.composite):
        return None
    labelled, y, mine = pairs
    keep = np.isin(labelled, rows)
    if not keep.any():
        return None
    at = np.searchsorted(rows, labelled[keep])   # positions in the teacher's arrays
    their = composite_encode({h.name: teacher[h.name][at] for h in p.composite}, p.composite)
    y, mine = y[keep], mine[keep]
    size = int(max(y.max(), mine.max(), their.max())) + 1
    return {"student_f1": macro_f1(y, mine, size, present_only=True),
            "teacher_f1": macro_f1(y, their, size, present_only=True), "agreement": float((mine == their).mean())}
