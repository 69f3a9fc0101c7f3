"""The report's Crops section: what the model saw (data.crop: center | face), and which photos used the fallback.

Shown for a run dir whose config.yaml has data.crop other than none. The crops are cut again from the photos by the
same code as training (data/faces.py) from the boxes the run recorded (crops.csv, face mode) or the centre rule, so
the grid shows the model's input at its own size, before augmentation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config import load_config
from ...data.crops import make_cropper, source_crop
from ...data.faces import read_pixels, read_plan
from ...runs.run_dir import CONFIG, CROPS
from ...utils.errors import UserError
from . import figures as figs
from .html import Section

TILES = 24
FALLBACKS = ("fallback", "whole")   # FacePlan sources of photos cropped without a face found
FALLBACK_TILES = 8   # at most a third of the grid: enough to judge the fallback, the rest shows normal crops


def analyse_crops(run_dir: Path, paths: list[str], thumbs: figs.Thumbnails) -> tuple[dict, Section] | None:
    """(numbers, section) for a cropped run: its first source with a crop (several sources: that one's photos);
    None when no source is cropped, or for a run dir without a config."""
    if not (run_dir / CONFIG).is_file():
        return None
    try:
        data = load_config(run_dir / CONFIG).data
    except UserError:
        return None
    name = next((name for name, s in data.resolved_sources().items() if s.crop != "none"), None)
    if name is None:
        return None
    spec = source_crop(data, name)   # the photos shown are that source's, cut as its own
    section = Section(id="crops", title="Crops")
    plan = None
    if spec.crop == "face":
        if not (run_dir / CROPS).is_file():
            section.note(f"no {CROPS} in {run_dir}: the run did not record its face boxes")
            return {"mode": spec.crop}, section
        paths, plan = read_plan(run_dir / CROPS)
    crop, _ = make_cropper(spec, data.image_size, plan=plan)
    source = plan.source if plan is not None else ["center"] * len(paths)
    fallback = [i for i, s in enumerate(source) if s in FALLBACKS]
    numbers = {"mode": spec.crop, "margin": spec.crop_margin, "photos": len(paths), "source": name,
               "found": source.count("face") if plan is not None else None,
               "fallback": len(fallback), "fallback_paths": [paths[i] for i in fallback]}
    rule = (f"face box + {spec.crop_margin:g} of its size on each side" if spec.crop == "face"
            else "central box")
    whose = f" (source {name})" if len(data.resolved_sources()) > 1 else ""
    section.text(f"data.crop={spec.crop}{whose} ({rule}, made {data.image_size[0]}:{data.image_size[1]} and resized "
                 f"to {data.image_size[0]}x{data.image_size[1]})." + (f" {plan.summary()}." if plan else ""))
    picks = _pick(len(paths), fallback)
    images, titles, marked = [], [], []
    height, width = data.image_size
    for i in picks:
        found = thumbs.resolve(paths[i])
        try:
            image = read_pixels(str(found), height, width, crop, i) if found else None
        except UserError:
            image = None
        images.append(image if image is not None else np.full((height, width, 3), 200, np.uint8))
        titles.append(f"{source[i]}: {Path(paths[i]).parent.name[:10]}/{Path(paths[i]).stem[:10]}")
        marked.append(source[i] in FALLBACKS)
    if images:
        section.figure("crops", figs.crop_grid(images, titles, marked, f"{len(images)} of {len(paths):,} crops as "
                                                                        f"the model saw them (red: fallback)"),
                       caption="Fallbacks first (framed red), then photos spread over the data set.")
    if fallback:
        section.table(["photo", "fallback"], [[paths[i], source[i]] for i in fallback],
                      caption=f"{len(fallback)} photo(s) without a detected face", collapsed=len(fallback) > 10)
    return numbers, section


def _pick(n: int, fallback: list[int]) -> list[int]:
    first = fallback[:FALLBACK_TILES]
    shown = set(first)
    rest = [i for i in range(n) if i not in shown]
    take = min(len(rest), TILES - len(first))
    spread = [rest[k] for k in np.linspace(0, len(rest) - 1, take).round().astype(int)] if take else []
    return first + list(dict.fromkeys(spread))
