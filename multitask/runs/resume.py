"""What a resume may change, and the checks a checkpoint passes before training continues from it.

    ckpt = load_for_resume(resolve_resume("runs/quickstart/3"), cfg)   # heads, backbone and config changes checked
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

from ..config import Config, from_dict, to_dict
from ..data.fingerprint import data_fingerprint, fingerprint_change
from ..utils.errors import UserError
from .checkpoint import RESUME_ENTRIES, check_entries, checkpoint_config, load_checkpoint


def load_for_resume(path: Path, cfg: Config, *, other_data: bool = False) -> dict:
    """The checkpoint to continue from, once its heads, the config's changes and (unless `other_data`: the CLI's
    --resume-anyway) the data it trained on pass the resume rules."""
    ckpt = load_checkpoint(path)
    check_resume_heads(ckpt, cfg, path)
    check_resume_overrides(ckpt["config"], cfg, path)
    if not other_data:
        check_resume_data(ckpt, cfg, path)
    return ckpt


def check_resume_data(ckpt: dict, cfg: Config, path: Path) -> None:
    """Refuse to go on with data other than the run trained on (files, people, folds, labels: data/fingerprint.py);
    a checkpoint from before fingerprints has nothing to compare."""
    if not ckpt.get("data"):
        return
    changed = fingerprint_change(ckpt["data"], data_fingerprint(cfg))
    if changed:
        raise UserError(f"--resume {path}: the data changed since this run was saved ({changed}); resume on the "
                        f"same data, start a new run, or pass --resume-anyway to go on with the data as it is now")


def check_resume_heads(ckpt: dict, cfg: Config, path: Path) -> None:
    if "optimizer" not in ckpt:
        raise UserError(f"--resume {path}: this checkpoint holds weights only (best.pt); resume from last.pt or the "
                        f"run dir")
    # all of it checked here, before the run dir gets a log or tb/ file: a KeyError half-way is no message
    check_entries(ckpt, RESUME_ENTRIES, where=f"--resume {path}", what="checkpoint")
    checkpoint_config(ckpt, where=f"--resume {path}")
    missing = [n for n in ckpt["trained_heads"] if n not in (ckpt["config"].get("heads") or {})]
    if missing or not isinstance((ckpt["config"].get("model") or {}).get("backbone"), str):
        raise UserError(f"--resume {path}: its config lacks the model.backbone or the heads {missing} it trained; "
                        f"was it written by `multitask train`?")
    saved = {name: ckpt["config"]["heads"][name]["classes"] for name in ckpt["trained_heads"]}
    wanted = {h.name: list(h.classes) for h in cfg.trained_heads()}
    if saved != wanted:
        raise UserError(f"--resume {path}: the checkpoint's heads {saved} differ from the config's {wanted}; "
                        f"resume with the same heads (or start a new run)")
    if ckpt["config"]["model"]["backbone"] != cfg.model.backbone:
        raise UserError(f"--resume {path}: checkpoint backbone {ckpt['config']['model']['backbone']} != config "
                        f"model.backbone {cfg.model.backbone}")


# Keys that say where a run reads, writes and logs, not what it trains (shell-style patterns): two machines holding
# the same data at other paths train the same thing. A sweep's study digest leaves them out.
WHERE_NOT_WHAT = ("train.save_every_steps", "train.device", "train.cpu_threads", "train.decisions", "data.num_workers",
                  "data.root", "data.sources.*.root", "data.sources.*.path", "data.cache", "data.cache_dir", "tracking.*",
                  "name", "output_dir")
# What may differ from the checkpoint's config on --resume: how long to go on, and WHERE_NOT_WHAT. Anything else (lr,
# schedule, loss, weighting, augmentation, split, seed, model, ...) would change the optimisation half-way while the
# restored optimizer and scheduler keep the old values, so it is refused.
RESUME_MAY_CHANGE = ("train.epochs", "train.early_stop", "train.max_steps", *WHERE_NOT_WHAT)


def what_trains(cfg: Config) -> dict:
    """The config as flat `a.b.c: value` pairs without WHERE_NOT_WHAT (and config_path): what decides a training."""
    return {k: v for k, v in _flat(to_dict(cfg)).items()
            if k != "config_path" and not any(fnmatch.fnmatchcase(k, key) for key in WHERE_NOT_WHAT)}


def check_resume_overrides(saved: dict, cfg: Config, path: Path) -> None:
    """Refuse a resumed config that differs from the checkpoint's in a key outside RESUME_MAY_CHANGE, so the config
    a run saves is always the one it trains with."""
    before = _flat(to_dict(from_dict(saved, f"--resume {path}")))   # keys added since: defaults
    after = _flat(to_dict(cfg))
    changed = [k for k in sorted(set(before) | set(after)) if k != "config_path" and before.get(k) != after.get(k)
               and not any(fnmatch.fnmatchcase(k, key) for key in RESUME_MAY_CHANGE)]
    if changed:
        key = changed[0]
        more = f" (and {', '.join(changed[1:])})" if len(changed) > 1 else ""
        raise UserError(f"--resume {path}: {key} {before.get(key)!r} -> {after.get(key)!r}{more} would change the "
                        f"optimisation half-way; on resume only {', '.join(RESUME_MAY_CHANGE)} may change; start a "
                        f"new run for this")
    if cfg.train.scheduler == "onecycle" and before["train.epochs"] != cfg.train.epochs:
        raise UserError(f"--resume {path}: train.epochs {before['train.epochs']} -> {cfg.train.epochs}: the onecycle "
                        f"schedule is fixed to the first run's length; start a new run for a longer one")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


