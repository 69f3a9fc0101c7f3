"""The face-mask competition layout -> one row per image, with the person's labels and known label fixes applied.

    ROOT/train/train.csv                     id, gender, race, age, path   (cross-checked only)
    ROOT/train/images/<id>_<gender>_<race>_<age>/{mask1..mask5,incorrect_mask,normal}.{jpg,jpeg,png}
    ROOT/eval/info.csv                       ImageID, ans
    ROOT/eval/images/<ImageID>

    data = read_competition("data/mask", label_fixes="configs/label_fixes/mask_competition.csv")
    print(data.summary())
    frame = data.frame        # path, id, group, gender, race, age, mask, stem, folder
    evals = read_eval("data/mask")

The folder names are the source of truth: they are what the competition's own labels were made from, and train.csv is
a copy that can drift (hand edits). Where the two disagree we keep the folder and report the difference.

Label fixes (`id,field,value[,image]`) correct people whose photos contradict their folder name. `field` is gender,
age, race or mask; for mask the value `swap_incorrect_normal` swaps that person's incorrect_mask and normal photos. An
empty `image` column means every photo of the person; otherwise a stem like `mask3`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..utils.errors import UserError
from ..utils.io import read_csv_text
from ..utils.parsing import whole_number

MASK_BY_STEM = {**{f"mask{i}": "wear" for i in range(1, 6)}, "incorrect_mask": "incorrect", "normal": "not_wear"}
MASK_CLASSES = ("wear", "incorrect", "not_wear")
GENDERS = ("male", "female")
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png"}
MAX_AGE = 150   # years; beyond it a folder's age is a typo (and 20 digits overflow the int64 age column)
FOLDER_PATTERN = "<id>_<gender>_<race>_<age>, e.g. 000001_female_Asian_45"
TRAIN_COLUMNS = ("id", "gender", "race", "age", "path")
FIX_FIELDS = ("gender", "age", "race", "mask")
FIX_COLUMNS = ("id", "field", "value", "image")   # a label-fixes CSV; image is optional
SWAP = "swap_incorrect_normal"
COLUMNS = ["path", "id", "group", "gender", "race", "age", "mask", "stem", "folder"]


@dataclass
class LabelFix:
    id: str
    field: str
    value: str | int
    image: str | None = None   # a stem (mask3); None = every photo of the person
    line: int = 0              # line in the fixes file, for messages


@dataclass
class CompetitionData:
    frame: pd.DataFrame
    skipped_hidden: int = 0
    skipped_other: int = 0
    disagreements: list[str] = field(default_factory=list)
    fixes_applied: int = 0
    unused_fixes: list[str] = field(default_factory=list)
    conflicts: dict[str, list[str]] = field(default_factory=dict)   # id -> its folders that disagree (first kept)
    odd_folders: dict[str, int] = field(default_factory=dict)       # folder -> images, where not the expected 7

    def summary(self) -> str:
        counts = self.frame["mask"].value_counts()
        masks = " / ".join(f"{counts.get(m, 0)} {m}" for m in MASK_CLASSES)
        text = (f"{len(self.frame)} images of {self.frame['id'].nunique()} people ({masks}); "
                f"skipped {self.skipped_hidden} hidden and {self.skipped_other} other files; "
                f"{len(self.disagreements)} train.csv disagreements; {self.fixes_applied} label fixes applied"
                + (f", {len(self.unused_fixes)} unused" if self.unused_fixes else ""))
        if self.odd_folders:
            text += (f"; {len(self.odd_folders)} person folder(s) without exactly {len(MASK_BY_STEM)} images: "
                     + _first_few(f"{name} ({n})" for name, n in self.odd_folders.items()))
        if self.conflicts:
            text += (f"; {len(self.conflicts)} person id(s) in folders with different labels, kept the first "
                     f"(data.on_conflict=warn): "
                     + _first_few(f"{folders[0]} (left out {', '.join(folders[1:])})"
                                  for folders in self.conflicts.values()))
        return text


def _first_few(items, n: int = 5) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f", ... ({len(items) - n} more)" if len(items) > n else "")


# ----------------------------------------------------------------------------------------------------- train
def read_competition(root: str | os.PathLike, *, label_fixes: str | os.PathLike | None = None,
                     on_conflict: str = "error") -> CompetitionData:
    """Every training image under `root` (the competition root, or its train/ folder) as one row per image.

    One person id in several folders whose names disagree on gender, race or age stops with `on_conflict="error"`;
    with "warn" the first folder (in name order) is kept and the others are left out and reported."""
    train_dir = _train_dir(Path(root))
    images_dir = train_dir / "images"
    data = CompetitionData(frame=pd.DataFrame(columns=COLUMNS))
    rows: list[dict] = []
    people: dict[str, dict] = {}
    for entry in sorted(os.scandir(images_dir), key=lambda e: e.name):
        if entry.name.startswith("."):
            data.skipped_hidden += 1
            continue
        if not entry.is_dir():
            data.skipped_other += 1
            continue
        person = _parse_folder(entry.name, images_dir)
        people[entry.name] = person
        rows.extend(_person_images(entry.path, person, data))
    if not rows:
        raise UserError(f"{images_dir}: no training images found; expected folders {FOLDER_PATTERN} holding "
                        f"mask1..mask5, incorrect_mask and normal .jpg/.jpeg/.png files")
    data.disagreements = _cross_check(train_dir / "train.csv", people)
    data.conflicts = _conflicts(people)
    if data.conflicts and on_conflict == "error":
        pid, folders = next(iter(data.conflicts.items()))
        more = f" (and {len(data.conflicts) - 1} more id(s))" if len(data.conflicts) > 1 else ""
        raise UserError(f"{images_dir}: person id {pid} is in {len(folders)} folders with different labels: "
                        f"{', '.join(folders)}{more}; fix or remove all but one, or set data.on_conflict=warn to "
                        f"keep the first")
    left_out = {name for folders in data.conflicts.values() for name in folders[1:]}
    rows = [r for r in rows if r["folder"] not in left_out]
    per_folder = pd.Series([r["folder"] for r in rows]).value_counts()
    data.odd_folders = {name: int(per_folder.get(name, 0)) for name in people
                        if name not in left_out and per_folder.get(name, 0) != len(MASK_BY_STEM)}
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if label_fixes is not None:
        fixes = read_label_fixes(label_fixes)
        data.fixes_applied, data.unused_fixes = apply_label_fixes(frame, fixes)
    data.frame = frame.sort_values(["id", "stem", "path"], kind="stable").reset_index(drop=True)
    data.frame["age"] = data.frame["age"].astype(int)
    return data


def _train_dir(root: Path) -> Path:
    if not root.exists():
        raise UserError(f"data root not found: {root}; expected a folder holding train/ (and eval/)")
    for candidate in (root / "train", root):  # accept ROOT or ROOT/train
        if (candidate / "images").is_dir():
            return candidate
    raise UserError(f"{root}: no train/images folder; expected ROOT/train/images/{FOLDER_PATTERN}/ "
                    f"(give the competition root or its train/ folder)")


def _parse_folder(name: str, images_dir: Path) -> dict:
    parts = name.rsplit("_", 3)
    if len(parts) != 4 or not all(parts):
        raise UserError(f"{images_dir / name}: folder name does not parse; expected {FOLDER_PATTERN}")
    person_id, gender, race, age = parts
    gender = gender.lower()
    if gender not in GENDERS:
        raise UserError(f"{images_dir / name}: unknown gender {parts[1]!r}; expected male or female "
                        f"({FOLDER_PATTERN})")
    years = whole_number(age)
    if years is None or years > MAX_AGE:
        raise UserError(f"{images_dir / name}: age {age!r} is not a non-negative whole number of years "
                        f"up to {MAX_AGE} ({FOLDER_PATTERN})")
    return {"id": person_id, "gender": gender, "race": race, "age": years, "folder": name}


def _person_images(folder: str, person: dict, data: CompetitionData) -> list[dict]:
    rows = []
    for entry in os.scandir(folder):
        if entry.name.startswith("."):  # macOS ._mask1.jpg resource forks, .DS_Store, hidden folders
            data.skipped_hidden += 1
            continue
        stem, ext = os.path.splitext(entry.name)
        stem = stem.lower()
        if not entry.is_file() or ext.lower() not in IMAGE_EXTENSIONS or stem not in MASK_BY_STEM:
            data.skipped_other += 1
            continue
        rows.append({"path": os.path.abspath(entry.path), "group": person["id"], "mask": MASK_BY_STEM[stem],
                     "stem": stem, **person})
    return rows


def _conflicts(people: dict[str, dict]) -> dict[str, list[str]]:
    """Person ids whose folders disagree on gender, race or age: {id: folders in name order}."""
    by_id: dict[str, list[dict]] = {}
    for person in people.values():   # in folder-name order
        by_id.setdefault(person["id"], []).append(person)
    return {pid: [p["folder"] for p in found] for pid, found in by_id.items()
            if len({(p["gender"], p["race"], p["age"]) for p in found}) > 1}


def _cross_check(csv_path: Path, people: dict[str, dict]) -> list[str]:
    """Differences between train.csv and the folder names (the folders win)."""
    if not csv_path.is_file():
        raise UserError(f"{csv_path}: train.csv not found; expected columns {', '.join(TRAIN_COLUMNS)}")
    table = read_csv_text(csv_path)
    missing = [c for c in TRAIN_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"{csv_path}: missing column(s) {', '.join(missing)}; expected {', '.join(TRAIN_COLUMNS)}, "
                        f"found {', '.join(table.columns)}")
    notes = []
    listed = set()
    for line, row in enumerate(table.itertuples(index=False), start=2):
        folder = row.path.strip()
        listed.add(folder)
        person = people.get(folder)
        if person is None:
            notes.append(f"train.csv line {line}: folder {folder!r} is listed but not in images/")
            continue
        for key in ("id", "gender", "race", "age"):
            csv_value = getattr(row, key).strip()
            folder_value = str(person[key])
            same = csv_value.lower() == folder_value.lower() if key == "gender" else csv_value == folder_value
            if not same:
                notes.append(f"train.csv line {line}: {key} {csv_value!r} but folder {folder} says "
                             f"{folder_value!r} (folder kept)")
    notes.extend(f"folder {name} is not listed in train.csv" for name in people if name not in listed)
    return notes


# ----------------------------------------------------------------------------------------------------- fixes
def read_label_fixes(path: str | os.PathLike) -> list[LabelFix]:
    """Parse and validate a label-fixes CSV (`id,field,value[,image]`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"label fixes file not found: {path} (data.label_fixes); expected a CSV id,field,value[,image]")
    table = read_csv_text(path)
    missing = [c for c in ("id", "field", "value") if c not in table.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; expected id,field,value[,image]")
    return [parse_label_fix(row, where=f"{path} line {line}", line=line)
            for line, row in enumerate(table.to_dict("records"), start=2)]


def parse_label_fix(row: dict, *, where: str, line: int = 0) -> LabelFix:
    """One row of a label-fixes CSV (strings id, field, value[, image]) checked and normalised; `where` starts the
    message of the UserError a bad row raises. The report's suggested fixes go through this too, so every row it
    writes is one that data.label_fixes accepts."""
    person_id, key, value = row["id"].strip(), row["field"].strip().lower(), row["value"].strip()
    image = (row.get("image") or "").strip().lower() or None
    if not person_id:
        raise UserError(f"{where}: empty id")
    if key not in FIX_FIELDS:
        raise UserError(f"{where}: unknown field {row['field']!r}; expected one of {', '.join(FIX_FIELDS)}")
    if key == "gender" and value.lower() not in GENDERS:
        raise UserError(f"{where}: gender value {value!r}; expected male or female")
    if key == "gender":
        value = value.lower()
    if key == "age":
        if whole_number(value) is None or whole_number(value) > MAX_AGE:
            raise UserError(f"{where}: age value {value!r}; expected a non-negative whole number of years "
                            f"up to {MAX_AGE}")
        value = int(value)
    if key == "mask" and value not in (*MASK_CLASSES, SWAP):
        raise UserError(f"{where}: mask value {value!r}; expected one of {', '.join(MASK_CLASSES)} or {SWAP}")
    if key == "race" and not value:
        raise UserError(f"{where}: empty race value")
    if image is not None:
        image = os.path.splitext(image)[0]
        if image not in MASK_BY_STEM:
            raise UserError(f"{where}: image {row['image']!r}; expected empty or one of {', '.join(MASK_BY_STEM)}")
        if value == SWAP:
            raise UserError(f"{where}: {SWAP} applies to a person; leave the image column empty")
    return LabelFix(id=person_id, field=key, value=value, image=image, line=line)


def apply_label_fixes(frame: pd.DataFrame, fixes: list[LabelFix]) -> tuple[int, list[str]]:
    """Edit `frame` in place; returns (fixes that matched at least one image, notes about fixes that matched none)."""
    applied, unused = 0, []
    for fix in fixes:
        rows = frame["id"] == fix.id
        if fix.image is not None:
            rows &= frame["stem"] == fix.image
        if not rows.any():
            target = f"image {fix.image} of id {fix.id}" if fix.image else f"id {fix.id}"
            unused.append(f"label fix line {fix.line}: {target} not in the data")
            continue
        if fix.value == SWAP:
            # by stem, not by current value, so applying the same fixes file twice gives the same labels
            frame.loc[rows & (frame["stem"] == "incorrect_mask"), "mask"] = "not_wear"
            frame.loc[rows & (frame["stem"] == "normal"), "mask"] = "incorrect"
        else:
            frame.loc[rows, fix.field] = fix.value
        applied += 1
    return applied, unused


# ----------------------------------------------------------------------------------------------------- eval
def read_eval(root: str | os.PathLike) -> pd.DataFrame:
    """The evaluation images (ImageID, absolute path) in the exact order of info.csv."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"data root not found: {root}; expected the competition root or its eval/ folder")
    eval_dir = root / "eval" if (root / "eval" / "info.csv").is_file() else root
    info = eval_dir / "info.csv"
    if not info.is_file():
        raise UserError(f"{root}: eval/info.csv not found; expected ROOT/eval/info.csv (ImageID, ans) "
                        f"and ROOT/eval/images/")
    table = read_csv_text(info)
    if "ImageID" not in table.columns:
        raise UserError(f"{info}: missing column ImageID; found {', '.join(table.columns) or 'none'}")
    if table.empty:
        raise UserError(f"{info}: no rows; expected one ImageID per evaluation image")
    ids = table["ImageID"].str.strip()
    paths = [os.path.abspath(eval_dir / "images" / image_id) for image_id in ids]
    missing = [image_id for image_id, p in zip(ids, paths) if not os.path.isfile(p)]
    if missing:
        raise UserError(f"{info}: image {missing[0]!r} not found in {eval_dir / 'images'} "
                        f"({len(missing)} of {len(ids)} missing)")
    return pd.DataFrame({"ImageID": ids.to_numpy(), "path": paths})
