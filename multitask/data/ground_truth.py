"""The one reader of ground-truth CSVs, for `predict --gt` and `report --gt` alike.

    truth = read_gt("data/synthetic/eval/gt.csv", ids, heads, composite)
    truth.targets["age"]     # (N,) class indices in the order of `ids`; -1 = unknown
    truth.composite          # (N,) composite labels, or None
    truth.meta               # the file's other columns (age_years, ...) in the order of `ids`
    truth.missing            # how many of `ids` have no row in the file

The rules:
- Key column `ImageID` (the competition's) or `image_id`; spaces around column names and ids are ignored.
- Truth columns: `ans`, the composite label over the composite heads (an index), and/or one column per head holding
  a class name (any case) or index. Blank or -1 means unknown. Where a row has both, they must agree.
- A binned head (age) may come as raw numbers instead: an `age_years` column (when there is no `age` column), or
  an `age` column whose numbers go beyond the class indices. They are binned by the head's eval_bins, as the
  competition judges (heads.label_array, eval=True).
- A labelled manifest given to `predict --data` is truth by the same rules (truth_from_rows), no --gt needed.
- An id listed twice counts once when its rows are identical; rows that differ are an error naming the id. A file
  glued together from overlapping parts holds no conflict, so refusing it would help nobody; rows that disagree
  cannot be settled without guessing which label is right, and any guess would change the scores unseen.
  (`predict` used to refuse every repeat and `report` kept the first row; this replaces both.)
- A predicted image without a row is unknown for every head: it is left out of the scores, and the callers say how
  many there were. When none of the predicted images has a row, the file is for another set: an error.
- Rows for images that were not predicted are ignored; any other column comes back as metadata.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..heads import UNLABELLED, HeadSpec, class_index, composite_decode, composite_encode, composite_size, label_array
from ..utils.errors import UserError
from ..utils.io import read_csv_text
from ..utils.parsing import whole_number

KEYS = ("ImageID", "image_id")
ANS = "ans"


@dataclass
class GroundTruth:
    targets: dict[str, np.ndarray]   # head -> (N,) class indices, -1 unknown; derived heads from their components
    composite: np.ndarray | None     # (N,) composite labels over the composite heads, -1 unknown
    meta: pd.DataFrame               # other columns, in prediction order ("" where an image has no row)
    missing: int                     # predicted images without a row
    path: Path

    def note(self) -> str | None:
        """One line for people when some images are unlabelled for lack of a row, else None."""
        if not self.missing:
            return None
        total = len(self.meta)
        return (f"{self.missing} of {total} predicted images have no row in {self.path.name}: unlabelled, left out "
                f"of the scores")


def read_gt(path, ids, heads: list[HeadSpec], composite: list[HeadSpec]) -> GroundTruth:
    """Truth for every id in `ids` (see the module docstring for the rules); UserError naming the file otherwise."""
    path = Path(path)
    where = f"--gt {path}"
    table = gt_table(path, where)
    ids = [str(i).strip() for i in ids]
    found = pd.Index(ids).isin(table.index)
    if len(ids) and not found.any():
        raise UserError(f"{where}: none of the {len(ids)} predicted images has a row (first predicted: {ids[0]!r}, "
                        f"first in the file: {table.index[0] if len(table) else None!r}); were the predictions made "
                        f"for this evaluation set?")
    rows = table.reindex(ids).fillna("").reset_index(drop=True)
    return truth_from_rows(rows, ids, heads, composite, where=where, path=path, missing=int((~found).sum()))


def truth_from_rows(rows: pd.DataFrame, ids: list[str], heads: list[HeadSpec], composite: list[HeadSpec], *,
                    where: str, path: Path, missing: int = 0) -> GroundTruth:
    """Truth from rows already in the order of `ids`, as text ("" = unknown): a gt file's, or a labelled manifest's
    (`predict --data labelled.csv` scores without --gt)."""
    targets = {h.name: _head_column(rows[h.name], h, where) for h in heads
               if not h.derive and h.name in rows and years_column(rows, h) is None}
    for head in heads:
        column = years_column(rows, head)
        if column is not None:
            targets[head.name] = _binned(rows[column], head, where, column)
    truth = None
    if ANS in rows.columns and composite:
        truth = _ans_column(rows[ANS], composite_size(composite), where)
        for name, values in composite_decode(truth, composite).items():
            if name in targets:
                _check_agree(targets[name], values, name, truth, ids, where)
            targets.setdefault(name, values)
    elif composite and all(h.name in targets for h in composite):
        truth = composite_encode(targets, composite)
    if not targets:
        names = ", ".join(h.name for h in heads)
        need = f"ans (with the composite heads {', '.join(h.name for h in composite)}) or " if composite else ""
        raise UserError(f"{where}: no truth columns; expected {need}a column per head ({names})")
    by_name = {h.name: h for h in heads}
    for head in heads:   # derived heads (the 18-class baseline) from their components
        if head.derive and all(n in targets for n in head.derive):
            targets[head.name] = composite_encode(targets, [by_name[n] for n in head.derive])
    used = {ANS, *(h.name for h in heads)}
    meta = rows[[c for c in rows.columns if c not in used]]
    return GroundTruth(targets=targets, composite=truth, meta=meta, missing=missing, path=path)


def years_column(rows: pd.DataFrame, head: HeadSpec) -> str | None:
    """The column that holds a binned head's raw values (years for age), or None: `<head>_years` when there is no
    `<head>` column, or a `<head>` column of numbers one of which is beyond the class indices (45 is no age class)."""
    if head.derive or not (head.eval_bins or head.bins):
        return None
    if head.name not in rows.columns:
        return f"{head.name}_years" if f"{head.name}_years" in rows.columns else None
    text = rows[head.name].astype(str).str.strip()
    numbers = pd.to_numeric(text[text != ""], errors="coerce")
    if len(numbers) and numbers.notna().all() and (numbers >= head.num_classes).any():
        return head.name
    return None


def _binned(values: pd.Series, head: HeadSpec, where: str, column: str) -> np.ndarray:
    """Raw values (years) -> class indices by the head's eval_bins (what the competition judges), the one binning
    rule of heads.label_array; blank or negative = unknown."""
    text = values.astype(str).str.strip()
    numbers = pd.to_numeric(text.where(text != ""), errors="coerce")
    bad = numbers.isna() & (text != "")
    if bad.any():
        raise UserError(f"{where}: column {column}: {text[bad].iloc[0]!r} is not a number of years (head "
                        f"{head.name} bins them by {', '.join(f'{e:g}' for e in head.eval_bins or head.bins)})")
    numbers = numbers.where(numbers >= 0)
    return label_array(head, pd.DataFrame({head.source: numbers.astype(float)}), {head.name: head}, eval=True)


def gt_table(path: Path, where: str) -> pd.DataFrame:
    """The file as text, indexed by image id, read by the rules of the module docstring (ImageID or image_id,
    identical repeats once, conflicting ones refused); UserError lines name `where`."""
    if not Path(path).is_file():
        raise UserError(f"{where}: file not found; expected a CSV with ImageID and ans and/or per-head columns")
    table = read_csv_text(path, where)
    key = next((c for c in KEYS if c in table.columns), None)
    if key is None:
        raise UserError(f"{where}: no ImageID column; found {', '.join(table.columns) or 'none'}")
    table[key] = table[key].str.strip()
    return _one_row_per_id(table, key, where)


def _one_row_per_id(table: pd.DataFrame, key: str, where: str) -> pd.DataFrame:
    """Identical repeats collapse; an id whose rows differ is an error."""
    table = table.drop_duplicates()
    repeated = table[key].duplicated(keep=False)
    if repeated.any():
        first = table.loc[repeated, key].iloc[0]
        lines = [i + 2 for i in table.index[table[key] == first]]   # +2: the header line, and lines count from 1
        raise UserError(f"{where}: ImageID {first!r} is listed {len(lines)} times with different values (lines "
                        f"{', '.join(map(str, lines))}); keep the right row")
    return table.set_index(key)


def _head_column(values: pd.Series, head: HeadSpec, where: str) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        try:
            out[i] = class_index(head, value)
        except ValueError:
            raise UserError(f"{where}: column {head.name}: unknown class {value!r}; expected one of "
                            f"{', '.join(head.classes)} or an index 0..{head.num_classes - 1}") from None
    return out


def _ans_column(values: pd.Series, size: int, where: str) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        text = str(value).strip()
        if text in ("", "-1"):
            out[i] = UNLABELLED
        elif whole_number(text) is not None and int(text) < size:   # ASCII digits only: '²5' is no index
            out[i] = int(text)
        else:
            raise UserError(f"{where}: column ans: {value!r} is not a class index 0..{size - 1}")
    return out


def _check_agree(column: np.ndarray, decoded: np.ndarray, name: str, truth: np.ndarray, ids: list[str],
                 where: str) -> None:
    clash = (column >= 0) & (decoded >= 0) & (column != decoded)
    if clash.any():
        row = int(np.argmax(clash))
        raise UserError(f"{where}: ans {truth[row]} disagrees with column {name} (class {column[row]}) for "
                        f"ImageID {ids[row]!r}")
