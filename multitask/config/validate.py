"""Cross-field checks of a built config, the ones a single key's type cannot express: `finalize(cfg, where)`.

    cfg = finalize(build_section(Config, raw, "", where), where)   # one ConfigError line naming key, value and fix

Everything here needs only the config (no data read, no model built), so a bad value fails before a run dir exists.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path, PurePath

from ..heads import resolve_heads
from .build import ConfigError, build_section, suggest
from .choices import check_optimizer, loss_choices, sink_choices
from .schema import AugmentConfig, Config


def finalize(cfg: Config, where: str = "<config>") -> Config:
    """Cross-field checks that a single key's type cannot express."""
    try:
        cfg.heads = resolve_heads(cfg.heads)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    check_class_weights(cfg, where)
    if cfg.train.heads is not None and not cfg.train.heads:
        raise ConfigError(f"{where}: train.heads: empty list; name at least one head ({', '.join(cfg.heads)}), "
                          f"or null for every head")
    for key, names in (("train.heads", cfg.train.heads or []), ("composite", cfg.composite)):
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: {key}: {names} names a head twice; name each head once")
    for key, names in (("train.heads", cfg.train.heads or []), ("composite", cfg.composite)):
        for n in names:
            if n not in cfg.heads:
                raise ConfigError(f"{where}: {key}: unknown head '{n}'{suggest(n, cfg.heads)}; "
                                  f"configured heads: {', '.join(cfg.heads)}")
    if not cfg.trained_heads():
        raise ConfigError(f"{where}: no head to train; configure `heads:` or pass --heads")
    size = cfg.data.image_size
    if len(size) != 2 or min(size) < 8 or max(size) > MAX_SIDE:
        raise ConfigError(f"{where}: data.image_size: expected [height, width], each in 8..{MAX_SIDE}, got {size}")
    if not 0 <= cfg.data.fold < cfg.data.n_folds:
        raise ConfigError(f"{where}: data.fold: {cfg.data.fold} not in 0..{cfg.data.n_folds - 1} (data.n_folds)")
    if cfg.data.source == "manifest" and not cfg.data.manifest and not cfg.data.sources:
        raise ConfigError(f"{where}: data.manifest: required when data.source is 'manifest'")
    for key, value, low in _lower_bounds(cfg):
        if value is not None and value < low:
            off = " or null (off)" if key in _OFF_WHEN_NULL else ""
            raise ConfigError(f"{where}: {key}: {value} is too small; expected >= {low}{off}")
    for key, value, rule in _float_ranges(cfg):
        if value is not None and not _RULES[rule](value):
            off = " or null (off)" if key in _OFF_WHEN_NULL else ""
            raise ConfigError(f"{where}: {key}: {value} is out of range; expected {rule}{off}")
    if cfg.data.on_bad_image == "skip" and not cfg.data.cache:
        raise ConfigError(f"{where}: data.on_bad_image=skip needs data.cache=true (bad images are found and left out "
                          f"while the cache is built); set data.cache=true or data.on_bad_image=error")
    check_optimizer(cfg.train.optimizer, where)
    check_sources(cfg, where)
    check_distill(cfg, where)
    check_run_paths(cfg, where)
    return cfg


def check_class_weights(cfg: Config, where: str) -> None:
    """Each head's class_weights: 'auto', or one weight per class (each >= 0: `_float_ranges`)."""
    for name, h in cfg.heads.items():
        if isinstance(h.class_weights, str) and h.class_weights != "auto":
            raise ConfigError(f"{where}: heads.{name}.class_weights: expected 'auto' or a list, "
                              f"got {h.class_weights!r}")
        if isinstance(h.class_weights, list) and len(h.class_weights) != h.num_classes:
            raise ConfigError(f"{where}: heads.{name}.class_weights: need {h.num_classes} values, "
                              f"got {len(h.class_weights)}")


def check_run_paths(cfg: Config, where: str) -> None:
    """`name` and `output_dir`: the run dirs (output_dir/<name>/<n>) stay inside output_dir, and output_dir outside
    every folder a source lists its images from, where the run's own folders would be read as data."""
    name = cfg.name
    parts = PurePath(name).parts
    if (not name.strip() or "\0" in name or PurePath(name).is_absolute() or ".." in parts
            or all(p == "." for p in parts)):
        raise ConfigError(f"{where}: name: {name!r} is not a run name; give a relative path without '..' (runs go in "
                          f"output_dir/<name>/<n>), e.g. quickstart or lr/3e-4")
    out = Path(cfg.output_dir).expanduser().resolve()
    for source_name, source in cfg.data.resolved_sources().items():
        for folder in _listed_folders(source):
            if folder.expanduser().resolve() in (out, *out.parents):
                raise ConfigError(f"{where}: output_dir: {cfg.output_dir} is inside {folder}, where source "
                                  f"{source_name} finds its images (its run folders would be read as data); choose "
                                  f"an output_dir outside it")


def _listed_folders(source) -> list[Path]:
    """Folders whose every entry a source reads as data: a competition root's person folders (ROOT/train/images, or
    ROOT/images when ROOT is the train/ folder), an images source's folder (all photos below it). A manifest lists
    its images by name."""
    if source.kind == "competition":
        return [Path(source.root) / "train" / "images", Path(source.root) / "images"]
    if source.kind == "images" and not str(source.path).lower().endswith(".csv"):
        return [Path(source.path)]
    return []


def check_registered(cfg: Config, where: str) -> None:
    """Names whose choices are a registry's: every head's losses, tracking.sinks. For configs people write (files,
    overrides), not for a checkpoint's: predict reads a run trained with a plugin loss without that plugin."""
    losses = loss_choices()
    for head in cfg.heads.values():
        for name in head.loss:
            if name not in losses:
                raise ConfigError(f"{where}: heads.{head.name}.loss: unknown loss '{name}'{suggest(name, losses)}; "
                                  f"choose from {', '.join(losses)}")
    sinks = sink_choices()
    for name in cfg.tracking.sinks:
        if name not in sinks:
            raise ConfigError(f"{where}: tracking.sinks: unknown sink '{name}'{suggest(name, sinks)}; "
                              f"registered: {', '.join(sinks) or 'none'} (multitask.tracking.register_sink)")


def check_distill(cfg: Config, where: str) -> None:
    """train.distill: views to run, and no teacher-only source (kind images) without a teacher."""
    d = cfg.train.distill
    if d.teachers and not d.tta:
        raise ConfigError(f"{where}: train.distill.tta: empty list; give the teacher's views (e.g. [identity, hflip])")
    images = [name for name, s in cfg.data.sources.items() if s.kind == "images"]
    if images and not d.teachers:
        raise ConfigError(f"{where}: data.sources.{images[0]}: a source of kind images labels no head and learns from "
                          f"a teacher alone; set train.distill.teachers (multitask distill --teacher ...)")


# a side beyond this is a typo or a crafted file: [30000, 30000] would take 2.5 GiB per decoded image
MAX_SIDE = 4096
RESERVED = {"composite", "mean", "loss", "lr"}   # metric keys: val/<source>/... must not read as another metric
SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def check_sources(cfg: Config, where: str) -> None:
    """data.sources: names usable in metric keys, each source complete for its kind, known heads, shares that add up."""
    data, sources = cfg.data, cfg.data.sources
    if not sources:
        return
    if data.manifest or data.source != "competition":
        raise ConfigError(f"{where}: data.sources replaces data.source / data.manifest; give the manifest as a source "
                          f"(data.sources.<name>: {{kind: manifest, path: ...}})")
    lowered: dict[str, str] = {}
    for name, source in sources.items():
        key = f"data.sources.{name}"
        if not SOURCE_NAME.fullmatch(name) or name in RESERVED or name in cfg.heads:
            raise ConfigError(f"{where}: {key}: a source name is letters, digits, _ and - and no head's or metric's "
                              f"name ({', '.join(sorted(RESERVED | set(cfg.heads)))}); rename it")
        if name.lower() in lowered:
            raise ConfigError(f"{where}: {key}: named like data.sources.{lowered[name.lower()]}; give sources names "
                              f"that differ in more than case")
        lowered[name.lower()] = name
        if source.kind == "images" and (source.heads or source.label_fixes):
            raise ConfigError(f"{where}: {key}: a source of kind images is unlabelled: it takes no heads or "
                              f"label_fixes (and is never validated on)")
        need, other = ("root", "path") if source.kind == "competition" else ("path", "root")
        if not getattr(source, need):
            raise ConfigError(f"{where}: {key}.{need}: required for a {source.kind} source")
        if getattr(source, other) or (source.kind != "competition" and source.label_fixes):
            extra = other if getattr(source, other) else "label_fixes"
            raise ConfigError(f"{where}: {key}.{extra}: not a key of a {source.kind} source; a {source.kind} "
                              f"source reads {need}")
        for head in source.heads or []:
            if head not in cfg.heads:
                raise ConfigError(f"{where}: {key}.heads: unknown head '{head}'{suggest(head, cfg.heads)}; "
                                  f"configured heads: {', '.join(cfg.heads)}")
        if source.heads is not None and not source.heads:
            raise ConfigError(f"{where}: {key}.heads: empty list; name the heads it labels, or leave heads out")
        check_source_drawing(cfg, name, source, where)
    shares = [s.share for s in sources.values() if s.share is not None]
    total = sum(shares)
    if len(shares) == len(sources) and abs(total - 1) > 1e-6:
        raise ConfigError(f"{where}: data.sources: every source has a share and they add up to {total:g}; they "
                          f"must add up to 1 (or leave the main source's share out: it then gives each image once)")
    if len(shares) < len(sources) and total >= 1:
        raise ConfigError(f"{where}: data.sources: the shares add up to {total:g}, leaving nothing for the sources "
                          f"without one; keep their sum below 1")
    if not any(s.val and s.kind != "images" for s in sources.values()):
        raise ConfigError(f"{where}: data.sources: every source has val: false; at least one must be validated on")


def check_source_drawing(cfg: Config, name: str, source, where: str) -> None:
    """A source's `balance` (a head it labels, of classes) and `augment` (data.augment's keys and types)."""
    key = f"data.sources.{name}"
    labelled = [] if source.kind == "images" else list(cfg.heads) if source.heads is None else source.heads
    if source.balance is not None and source.balance not in labelled:
        raise ConfigError(f"{where}: {key}.balance: '{source.balance}' is not a head this source labels"
                          f"{suggest(source.balance, labelled)}; it labels: {', '.join(labelled) or 'none'}")
    if source.augment:   # unknown keys and wrong types, named in full
        merged = {**dataclasses.asdict(cfg.data.augment), **source.augment}
        build_section(AugmentConfig, merged, f"{key}.augment.", where)


_OFF_WHEN_NULL = {"train.save_every_steps", "train.max_steps", "train.early_stop", "data.limit", "train.grad_clip"}


def _lower_bounds(cfg: Config) -> list[tuple[str, float | None, float]]:
    """(key, value, smallest allowed) for values of the right type that would only fail later, mid-run."""
    t, d = cfg.train, cfg.data
    return [("train.epochs", t.epochs, 1), ("train.batch_size", t.batch_size, 1),
            ("train.accum_steps", t.accum_steps, 1), ("train.val_every", t.val_every, 1),
            ("train.save_every_steps", t.save_every_steps, 1), ("train.max_steps", t.max_steps, 1),
            ("train.early_stop", t.early_stop, 1), ("data.n_folds", d.n_folds, 2),
            ("train.plateau_patience", t.plateau_patience, 0), ("train.freeze_trunk_epochs", t.freeze_trunk_epochs, 0),
            ("data.num_workers", d.num_workers, 0), ("data.limit", d.limit, 1),
            ("train.cpu_threads", None if t.cpu_threads == "auto" else t.cpu_threads, 1)]


# every float is finite (checked when read); these must also lie in a range, or they fail mid-run (lr 0 divides by
# zero in the schedule) or train something nobody meant (a negative weight decay, a dropout of 1)
_RULES = {"> 0": lambda v: v > 0, ">= 0": lambda v: v >= 0, "in [0, 1]": lambda v: 0 <= v <= 1,
          "in [0, 1)": lambda v: 0 <= v < 1, "in (0, 1]": lambda v: 0 < v <= 1,
          # a distillation temperature: distillation uses 1 to 20; far outside, the softened distributions are one-hot
          # or flat and T^2 * KL overflows (1e30) or divides log-probabilities into infinities (1e-300)
          "in [0.1, 100]": lambda v: 0.1 <= v <= 100}


def _float_ranges(cfg: Config) -> list[tuple[str, float | None, str]]:
    """(key, value, rule) for floats with a valid range narrower than every finite number."""
    t, d, m = cfg.train, cfg.data, cfg.model
    checks = [("train.lr", t.lr, "> 0"), ("train.weight_decay", t.weight_decay, ">= 0"),
              ("train.momentum", t.momentum, "in [0, 1]"), ("train.min_lr", t.min_lr, ">= 0"),
              ("train.warmup_epochs", t.warmup_epochs, ">= 0"), ("train.gamma", t.gamma, "> 0"),
              ("train.grad_clip", t.grad_clip, "> 0"), ("train.dwa_temperature", t.dwa_temperature, "> 0"),
              ("train.cagrad_c", t.cagrad_c, ">= 0"), ("data.crop_margin", d.crop_margin, ">= 0"),
              ("train.mixup", t.mixup, ">= 0"), ("train.cutmix", t.cutmix, ">= 0"),
              ("train.mix_prob", t.mix_prob, "in [0, 1]"), ("train.ema.decay", t.ema.decay, "in [0, 1]"),
              ("model.drop_rate", m.drop_rate, "in [0, 1)"), ("model.drop_path_rate", m.drop_path_rate, "in [0, 1)"),
              ("train.distill.alpha", t.distill.alpha, "in [0, 1]"),
              ("train.distill.temperature", t.distill.temperature, "in [0.1, 100]")]
    for name in ("hflip", "shift_scale_rotate", "color_jitter", "coarse_dropout"):
        checks.append((f"data.augment.{name}", getattr(d.augment, name), "in [0, 1]"))
    checks += [(f"data.augment.crop_scale[{i}]", v, "in (0, 1]") for i, v in enumerate(d.augment.crop_scale)]
    checks += [(f"data.std[{i}]", v, "> 0") for i, v in enumerate(d.std if isinstance(d.std, list) else [])]
    checks += [("train.trunk_lr_scale", t.trunk_lr_scale, "in (0, 1]"),
               ("train.layer_decay", t.layer_decay, "in (0, 1]")]
    for name, source in d.sources.items():
        checks += [(f"data.sources.{name}.share", source.share, "in (0, 1]"),
                   (f"data.sources.{name}.crop_margin", source.crop_margin, ">= 0")]
    for name, h in cfg.heads.items():
        key = f"heads.{name}"
        checks += [(f"{key}.weight", h.weight, ">= 0"), (f"{key}.label_smoothing", h.label_smoothing, "in [0, 1)"),
                   (f"{key}.focal_gamma", h.focal_gamma, ">= 0"), (f"{key}.dropout", h.dropout, "in [0, 1)"),
                   (f"{key}.years_sigma", h.years_sigma, "> 0")]
        if isinstance(h.class_weights, list):
            checks += [(f"{key}.class_weights[{i}]", v, ">= 0") for i, v in enumerate(h.class_weights)]
    return checks
