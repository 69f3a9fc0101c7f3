"""The config schema: one dataclass per section, every key with its type and default (`config show` prints them).

    Config(heads=..., data=DataConfig(...), model=ModelConfig(...), train=TrainConfig(...), tracking=...)

Types are what loading enforces (config/load.py): `Literal` is a choice, `X | None` allows null, a dataclass is a
section. The default heads are the competition's: mask (3), gender (2), age (3, binned at 30 and 60).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from ..heads import HeadSpec
from .metric_names import scored_sources, val_key


def default_heads() -> dict[str, HeadSpec]:
    return {
        "mask": HeadSpec(classes=["wear", "incorrect", "not_wear"]),
        "gender": HeadSpec(classes=["male", "female"]),
        "age": HeadSpec(classes=["<30", "30-59", ">=60"], bins=[30, 60], eval_bins=[30, 60]),
    }


@dataclass
class SynthConfig:
    people: int = 60
    width: int = 96
    height: int = 128
    seed: int = 0
    eval_people: int | None = None            # people in eval/ (default: a quarter of `people`, at least 2)


@dataclass
class AugmentConfig:
    hflip: float = 0.5
    shift_scale_rotate: float = 0.0
    color_jitter: float = 0.0          # probability; strength fixed to a mild 0.2
    coarse_dropout: float = 0.0
    random_resized_crop: bool = False  # else plain resize (+ center crop when crop < size)
    crop_scale: list[float] = field(default_factory=lambda: [0.8, 1.0])


@dataclass
class SourceConfig:
    """One data source of a run (`data.sources.<name>`): where its images are, how they are cut, what they label,
    how much of each epoch they make, how they are drawn and augmented and whether they are validated on. Unset crop
    keys take data.crop's; augment keys it leaves out take data.augment's."""
    kind: Literal["competition", "manifest", "images"] = "competition"
    root: str | None = None                   # kind competition: the layout root (train/, eval/)
    path: str | None = None                   # kind manifest: the CSV (path + head columns); kind images: a folder
    #                                           or a CSV of unlabelled images, which learn from a teacher alone
    crop: Literal["none", "center", "face"] | None = None   # unset: data.crop
    crop_margin: float | None = None          # unset: data.crop_margin
    heads: list[str] | None = None            # the heads it labels (others stay unlabelled); unset: every head
    share: float | None = None                # fraction of each epoch's samples drawn from it; unset: each image once
    balance: str | None = None                # a head it labels: its images are drawn class-balanced for that head
    #                                           (1 / the class's frequency in its training rows), still `share` of
    #                                           the epoch; unset: uniform (or train.sampler's weights)
    augment: dict[str, Any] | None = None     # data.augment keys for this source alone ({color_jitter: 0.5}); the
    #                                           keys left out take data.augment's
    val: bool = True                          # its own validation fold (by group); false: it only trains
    label_fixes: str | None = None            # kind competition: a label-fixes CSV


@dataclass
class DataConfig:
    source: Literal["competition", "manifest"] = "competition"
    root: str = "data/synthetic"              # competition layout root (train/, eval/)
    manifest: str | None = None               # generic CSV (source: manifest)
    synthesize_if_missing: bool = False       # write the synthetic set at `root` on first use
    synth: SynthConfig = field(default_factory=SynthConfig)
    label_fixes: str | None = None
    image_size: list[int] = field(default_factory=lambda: [128, 96])   # height, width fed to the model
    crop: Literal["none", "center", "face"] = "none"   # what of each photo is resized to image_size (data/faces.py)
    crop_margin: float = 0.4                  # face crop: added on each side, as a fraction of the face box
    # auto: what the pretrained weights expect (a safetensors file's metadata, else timm's pretrained_cfg of the
    # backbone), ImageNet's for a trunk from scratch (model/normalization.py); a run saves the numbers it used
    mean: Union[Literal["auto"], list[float]] = "auto"
    std: Union[Literal["auto"], list[float]] = "auto"
    n_folds: int = 5
    fold: int = 0
    cache: bool = True
    cache_dir: str = ".cache/images"
    on_bad_image: Literal["error", "skip"] = "error"
    on_conflict: Literal["error", "warn"] = "error"   # one person id in folders with different labels
    num_workers: int = 2
    limit: int | None = None                  # take only the first N people (smoke runs)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # several sources in one run, by name (data.sources.<name>.share=0.3); empty: the one source that data.source,
    # data.root / data.manifest, data.crop and data.label_fixes describe (named after its kind)
    sources: dict[str, SourceConfig] = field(default_factory=dict)

    def resolved_sources(self) -> dict[str, SourceConfig]:
        """Every source of the run with its crop filled in, in order: the one place either form becomes the list."""
        if not self.sources:
            legacy = SourceConfig(kind=self.source, root=self.root if self.source == "competition" else None,
                                  path=self.manifest, label_fixes=self.label_fixes)
            return {self.source: self._filled(legacy)}
        return {name: self._filled(source) for name, source in self.sources.items()}

    def add_source(self, name: str, source: SourceConfig) -> None:
        """One more source (--unlabelled); the one source of the legacy keys becomes data.sources.<its kind> first."""
        if not self.sources:
            self.sources = {self.source: SourceConfig(kind=self.source, root=self.root if self.source == "competition"
                                                      else None, path=self.manifest, label_fixes=self.label_fixes)}
            self.source, self.manifest, self.label_fixes = "competition", None, None
        self.sources[name] = source

    def source_augment(self, source: SourceConfig) -> AugmentConfig:
        """The augmentation a source's training images get: data.augment with the source's own keys over it."""
        return dataclasses.replace(self.augment, **(source.augment or {}))

    def _filled(self, source: SourceConfig) -> SourceConfig:
        if source.kind == "images":   # unlabelled: labels no head, never validated on
            source = dataclasses.replace(source, heads=[], val=False)
        return dataclasses.replace(source, crop=source.crop or self.crop,
                                   crop_margin=self.crop_margin if source.crop_margin is None else source.crop_margin)


@dataclass
class ModelConfig:
    backbone: str = "resnet18"
    pretrained: Union[bool, str] = False      # true = timm hub (needs network); a path = local weights
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0


@dataclass
class EMAConfig:
    enabled: bool = False
    decay: float = 0.999


@dataclass
class DistillConfig:
    """`train.distill`: learn from a teacher ensemble's per-head probabilities (computed once, as `predict` would).
    Per head: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * the head's own loss on its labelled rows."""
    teachers: list[str] = field(default_factory=list)   # checkpoints, run dirs or k-fold parents; empty: off
    alpha: float = 0.7                        # the teacher's share of each head's loss
    temperature: float = 2.0                  # both distributions softened by T (T = 1: as they are)
    tta: list[str] = field(default_factory=lambda: ["identity", "hflip"])   # the teacher's views (predict --tta)
    merge: Literal["mean", "gmean", "vote"] = "mean"   # over views and members, as predict --merge
    # false: every member on every image, also where it trained on it (its probabilities there are close to the
    # labels); true: an image gets only the members that never trained on it (a k-fold teacher: its fold's one
    # member, no ensemble). False by default: on the real photos it transferred more (README, "Distillation")
    out_of_fold: bool = False
    checkpoints: dict[str, str] = field(default_factory=dict)   # written by the run: {checkpoint: sha256}


@dataclass
class TrainConfig:
    heads: list[str] | None = None            # which configured heads train; None = all non-derived heads
    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "adamw"                  # any name of timm.optim.list_optimizers() (adamw, sgd, lamb, lion...)
    lr: float = 1e-3                          # the heads' peak learning rate; the trunk's is lr * trunk_lr_scale
    weight_decay: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    scheduler: Literal["cosine", "tanh", "poly", "step", "plateau", "onecycle", "none"] = "cosine"
    warmup_epochs: float = 0.0                # linear warm-up from min_lr (cosine, tanh, poly, step)
    step_size: int = 10
    gamma: float = 0.1
    plateau_patience: int = 1                 # scheduler plateau: validations without improvement before a cut
    min_lr: float = 1e-6
    # fine-tuning a pretrained trunk (train/optim.py): the trunk's LR as a fraction of the heads'; layer-wise decay
    # (each trunk layer's LR is layer_decay times the next deeper one's; the heads keep the full LR); epochs with the
    # trunk frozen (heads only, its batch-norm statistics kept) before the whole net trains
    trunk_lr_scale: float = 1.0
    layer_decay: float | None = None
    freeze_trunk_epochs: int = 0
    freeze_bn: bool = False                   # the trunk's batch-norm statistics stay as loaded (BN-folded weights)
    amp: Literal["auto", "fp16", "bf16", "off"] = "auto"
    channels_last: bool = True
    grad_clip: float | None = None
    accum_steps: int = 1
    ema: EMAConfig = field(default_factory=EMAConfig)
    early_stop: int | None = None             # epochs without improvement of `monitor`
    monitor: str = "auto"                     # val/composite/f1 when mask+gender+age train, else val/mean/f1
    loss_weighting: Literal["static", "uncertainty", "dwa", "pcgrad", "cagrad"] = "static"
    dwa_temperature: float = 2.0
    cagrad_c: float = 0.4                     # CAGrad's radius: 0 = plain descent on the mean loss
    sampler: Literal["none", "weighted"] = "none"
    mixup: float = 0.0                        # alpha; 0 = off
    cutmix: float = 0.0
    mix_prob: float = 0.5
    val_every: int = 1
    save_every_steps: int | None = None       # extra step checkpoints (last.pt) within an epoch
    max_steps: int | None = None              # stop after N optimizer steps (smoke tests, benchmarks)
    device: str = "auto"
    # CPU intra-op threads: auto = this machine's cores shared among the multitask processes running now
    # (utils/cpu_share.py: two trainings at once each take half; with deterministic: true, torch's own count), or N
    cpu_threads: Union[Literal["auto"], int] = "auto"
    decisions: Literal["auto", "off"] = "auto"  # auto: fit tuned decisions (decisions/fit.py) on the OOF at the end
    distill: DistillConfig = field(default_factory=DistillConfig)


@dataclass
class WandbConfig:
    # unset: wandb's environment (WANDB_MODE, WANDB_PROJECT, WANDB_ENTITY), else online with an API key, offline without
    mode: Literal["offline", "online", "disabled"] | None = None
    project: str | None = None                # unset: WANDB_PROJECT, else "multitask"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    name: str | None = None
    artifacts: bool = True                    # best.pt and oof.csv as wandb artifacts at the end of a run


@dataclass
class TrackingConfig:
    tensorboard: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)
    csv: bool = True
    progress: bool = True
    confusion_every: int = 1                  # epochs between confusion-matrix figures
    sinks: list[str] = field(default_factory=list)   # more sinks by registered name (multitask.tracking.register_sink)


@dataclass
class Config:
    name: str = "run"
    seed: int = 42
    deterministic: bool = False
    output_dir: str = "runs"
    heads: dict[str, HeadSpec] = field(default_factory=default_heads)
    composite: list[str] = field(default_factory=lambda: ["mask", "gender", "age"])
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    config_path: str | None = None            # where it was loaded from (informational)

    # ------------------------------------------------------------------ derived views
    def trained_heads(self) -> list[HeadSpec]:
        names = self.train.heads or [n for n, h in self.heads.items() if not h.derive]
        return [self.heads[n] for n in names]

    def composite_heads(self) -> list[HeadSpec]:
        return [self.heads[n] for n in self.composite]

    def monitored_metric(self) -> str:
        """`train.monitor`, with auto = the composite F1 when the composite's heads train (or one derives it), of
        the first source when there are several (val/<source>/composite/f1); else the mean of the heads' F1."""
        if self.train.monitor != "auto":
            return self.train.monitor
        trained = {h.name for h in self.trained_heads()}
        direct = set(self.composite) <= trained
        derived = any(h.derive == self.composite for h in self.trained_heads())
        sources = self.data.resolved_sources()
        name, first = next(iter(sources.items()))
        labelled = first.heads is None or set(self.composite) <= set(first.heads) or (
            derived and any(h.derive == self.composite and h.name in first.heads for h in self.trained_heads()))
        key = "composite/f1" if self.composite and (direct or derived) and labelled else "mean/f1"
        return val_key(key, name if scored_sources(sources) else None)
