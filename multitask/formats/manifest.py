"""The export manifest: what a model file must say for anything to use it without this package's training code.

    manifest = build_manifest(net, cfg, source={"checkpoint": "best.pt", ...}, decisions=doc)
    manifest, cfg = read_manifest(read_json(path), where="deploy/x/config.json")

Both formats carry it (ONNX: metadata key "multitask"; safetensors: config.json): heads and class names in output
order, the composite order and class names, the input (uint8 RGB NHWC 0..255 at the trained size: decoded images as
they come; the layout change and the normalisation run inside the model), crop settings, decision settings, the full
training config and its sha256. A consumer needs nothing else:
`onnxruntime.InferenceSession(f).get_modelmeta().custom_metadata_map["multitask"]`.
"""
from __future__ import annotations

import hashlib
import json

import torch

from .. import __version__
from ..config import Config, from_dict, to_dict
from ..data.crops import source_crop
from ..data.faces import detector_id
from ..decisions import file as decisions
from ..heads import HeadSpec, composite_class_names, expand_heads, years_key
from ..model.net import MultiHeadNet
from ..runs.checkpoint import check_format
from ..utils.errors import UserError

METADATA_KEY = "multitask"
MANIFEST_FORMAT, MANIFEST_VERSION = "multitask-export", 1
INPUT_NAME = "images"


def output_heads(net: MultiHeadNet, cfg: Config) -> tuple[list[HeadSpec], list[HeadSpec]]:
    """(trained heads + the components of a derived head, composite heads when all are predicted, else [])."""
    heads = expand_heads(net.head_specs, cfg.heads)
    composite, names = cfg.composite_heads(), {h.name for h in heads}
    return heads, composite if composite and all(h.name in names for h in composite) else []


def crop_settings(cfg: Config) -> dict | None:
    """What predict cuts from each photo before the model's resize (data/faces.py): None for the whole photo; the
    ONNX graph takes the cut image, so a runtime outside this package must apply it itself."""
    crop = source_crop(cfg.data)   # a run of several sources: its first (main) source's crop
    if crop.crop == "none":
        return None
    settings = {"mode": crop.crop, "margin": crop.crop_margin}
    return settings | ({"detector": detector_id()} if crop.crop == "face" else {})


def build_manifest(net: MultiHeadNet, cfg: Config, *, source: dict, decisions: dict | None = None,
                   batch: int | None = None) -> dict:
    config = to_dict(cfg)
    heads, composite = output_heads(net, cfg)
    height, width = cfg.data.image_size
    return {
        "format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
        "backbone": cfg.model.backbone,
        "trained_heads": [h.name for h in net.head_specs],
        "heads": {h.name: {"classes": list(h.classes), "derive": h.derive}
                  | ({"years_range": list(h.years_range), "years_output": years_key(h.name)}
                     if h.target == "years" else {}) for h in heads},
        "composite": {"heads": [h.name for h in composite], "classes": composite_class_names(composite)}
        if composite else None,
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC", "channels": "RGB", "range": [0, 255],
                  "batch": batch or "dynamic", "height": height, "width": width},
        "image_size": [height, width],
        "normalization": {"mean": list(cfg.data.mean), "std": list(cfg.data.std),
                          "applied": "inside the model: (x - 255 * mean) / (255 * std)"},
        "crop": crop_settings(cfg),
        # the run dir's decisions.json (decisions.py: per-head class offsets fitted on OOF), {} when it has none
        "decisions": dict(decisions or {}),
        "config": config,
        "config_sha256": hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(),
        "source": dict(source),
        "quantization": None,
        "exported_with": {"multitask": __version__, "torch": torch.__version__.split("+")[0]},
    }


def read_manifest(raw, *, where: str) -> tuple[dict, Config]:
    """(manifest, Config) from an export manifest, checked (format, version, config, heads, input size, decisions);
    one UserError line naming `where` when it is not one this code reads."""
    check_format(raw, fmt=MANIFEST_FORMAT, version=MANIFEST_VERSION, where=where, what="export manifest",
                 writer="write it with `multitask export`")
    if not isinstance(raw.get("config"), dict):   # a default config would run the model at the wrong size
        raise UserError(f"{where}: its \"config\" should be the training config (a JSON object), found "
                        f"{_shown(raw.get('config'))}; re-export it with `multitask export`")
    cfg = from_dict(raw["config"], where=where)
    trained = raw.get("trained_heads")
    if (not isinstance(trained, list) or not trained or not all(isinstance(n, str) for n in trained)
            or any(n not in cfg.heads for n in trained)):
        raise UserError(f"{where}: trained heads {_shown(trained)} do not match its config heads "
                        f"{list(cfg.heads)}; re-export it")
    size = list(cfg.data.image_size)
    stated = [raw.get("image_size"), [(raw.get("input") or {}).get(k) for k in ("height", "width")]]
    if any(s != size for s in stated):
        raise UserError(f"{where}: image_size {_shown(stated[0])} and input {_shown(stated[1])} disagree with "
                        f"its config's data.image_size {size}; re-export it")
    if raw.get("decisions"):   # checked here, so a bad slot names this file, not the run dir it was fitted in
        decisions.check_doc(raw["decisions"], where=f"{where}: its decisions", heads=list(cfg.heads.values()))
    return raw, cfg


def _shown(value) -> str:
    """A value from a file, cut short for a message (a crafted one can be megabytes)."""
    scalar = (str, int, float, bool, type(None))
    if isinstance(value, dict) or (isinstance(value, list) and not all(isinstance(v, scalar) for v in value)):
        return f"a JSON {'object' if isinstance(value, dict) else 'list'} of {len(value)} entries"
    text = json.dumps(value)   # scalars, lists of scalars: no deep nesting to recurse into
    return text if len(text) <= 60 else text[:57] + "..."
