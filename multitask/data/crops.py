"""Which crop a photo gets and the Cropper that cuts it, built here for training, predict, export, the report's
crops and activation maps, and explain alike (the regions themselves: faces.py).

    spec = source_crop(cfg.data, name)      # the crop of source `name`; None: the first source's (the main data)
    plan = face_plan(paths, cache_dir=".cache/images")            # face boxes detected once, then a box per photo
    crop, plan = make_cropper(spec, cfg.data.image_size, plan=plan)   # None for crop: none

The one rule: a photo of one of a run's sources is cut as that source's photos were in training; a new photo
(predict, export, explain) as the source the caller names (predict --source) or, unnamed, as the first source's.
"""
from __future__ import annotations

from ..config import DataConfig, SourceConfig
from .faces import Cropper, Face, FacePlan, detect_faces, plan_faces


def source_crop(data: DataConfig, name: str | None = None) -> SourceConfig:
    """The resolved source whose crop applies: the one named, or the first (the main data). A name the run lacks is
    a KeyError (the caller names the choices)."""
    sources = data.resolved_sources()
    return sources[name] if name is not None else next(iter(sources.values()))


def face_plan(paths: list[str], *, cache_dir, workers: int = 2, progress=None) -> FacePlan:
    """A face box per photo (detected once and stored in `cache_dir`), or the fallback where none was found."""
    return plan_faces(detect_faces(paths, cache_dir=cache_dir, workers=workers, progress=progress))


def make_cropper(spec, image_size, *, plan: FacePlan | None = None, faces: list[Face | None] | None = None,
                 paths: list[str] | None = None, cache_dir=None, workers: int = 2,
                 progress=None) -> tuple[Cropper | None, FacePlan | None]:
    """The Cropper of `spec` (anything with .crop and .crop_margin: a source's resolved config) at the model's
    image_size, and the face plan it used. Face mode takes a plan, else the photos' face boxes (`faces`), else
    detects them in `paths`; crop: none gives (None, None)."""
    if spec.crop == "none":
        return None, None
    if spec.crop == "face" and plan is None:
        plan = plan_faces(faces) if faces is not None else face_plan(paths, cache_dir=cache_dir, workers=workers,
                                                                      progress=progress)
    plan = plan if spec.crop == "face" else None
    height, width = image_size
    anchors = plan.anchors if plan is not None else None
    return Cropper(mode=spec.crop, margin=spec.crop_margin, aspect=height / width, anchors=anchors), plan
