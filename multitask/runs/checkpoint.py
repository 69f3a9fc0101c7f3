"""One checkpoint format: written atomically, read safely, enough inside to rebuild the model alone.

    save_checkpoint(run_dir / "last.pt", payload)        # temp file + fsync + os.replace: never a half-written file
    ckpt = load_checkpoint("runs/quickstart/1/best.pt")  # torch.load(weights_only=True): refuses code-running pickles
    model, cfg = model_from_checkpoint(ckpt)             # EMA weights when present, eval mode

Payload (the engine fills it; everything is plain data so weights_only=True can read it):
    format, version, config (config.to_dict), trained_heads, epoch (finished), step, metric {name, value},
    model, ema, optimizer, scheduler, scaler, criterion (state dicts or None), rng (rng_state()),
    tracker {wandb_id, ...}, best.
"""
from __future__ import annotations

import dataclasses
import errno
import os
import pickle
import random
import re
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..config import Config, from_dict
from ..model.net import CHECKPOINT_FORMAT, MultiHeadNet, create_model
from ..utils.errors import UserError
from ..utils.io import atomic_write
from .run_dir import fold_dirs

FORMAT = CHECKPOINT_FORMAT
VERSION = 1


# --------------------------------------------------------------------------------------------- save
def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write `payload` to `path` atomically: a crash or a full disk leaves the previous file as it was."""
    path = Path(path)
    payload = to_plain(payload)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "wb") as f:
            torch.save(payload, f)
    except (OSError, RuntimeError) as err:
        # torch's zip writer reports a failed write (full disk, file-size limit) as a RuntimeError without errno
        # ("[enforce fail at inline_container.cc:...] unexpected pos ..."): name the likely cause instead
        cause = _write_failure(path.parent, err)
        previous = "the previous checkpoint is intact" if path.is_file() else "no checkpoint was written there"
        raise UserError(f"could not write checkpoint {path}: {cause}; {previous}") from None


def _write_failure(folder: Path, err: BaseException) -> str:
    """Why a write failed: the OSError behind it where torch kept one (as the context of its RuntimeError), else
    a file-size limit (ulimit -f) when one is set, else a full disk (what nearly every other failed write is),
    with the writer's own words when the disk is not full."""
    import resource

    cause, limit = err, resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    while cause is not None and not (isinstance(cause, OSError) and cause.strerror):
        cause = cause.__cause__ or cause.__context__
    if limit != resource.RLIM_INFINITY and (cause is None or getattr(cause, "errno", None) == errno.EFBIG):
        return f"{os.strerror(errno.EFBIG)} (the file-size limit, ulimit -f, is {limit} bytes)"
    if cause is not None:
        return cause.strerror
    try:
        stats = os.statvfs(folder)
        free = stats.f_bavail * stats.f_frsize
    except OSError:
        free = 0
    if free < 64 * 2**20:   # less than a small checkpoint's worth left
        return os.strerror(errno.ENOSPC)
    return f"the write failed ({' '.join(str(err).split()) or type(err).__name__})"


def to_plain(obj, where: str = "payload"):
    """Numpy scalars/arrays -> python numbers / tensors, Paths -> str; anything weights_only cannot read -> TypeError
    naming the key, at save time (not months later when the checkpoint will not load)."""
    if isinstance(obj, np.generic):   # before float: np.float64 is a float subclass that pickles as numpy
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device,
                                       torch.Size)):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        plain = {k: to_plain(v, f"{where}[{k!r}]") for k, v in obj.items()}
        return OrderedDict(plain) if isinstance(obj, OrderedDict) else plain  # state dicts stay OrderedDict
    if isinstance(obj, (list, tuple)):
        items = [to_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where}: {type(obj).__name__} cannot go into a checkpoint (weights_only loading accepts "
                    "tensors, numbers, strings, lists, tuples and dicts); convert it first")


# --------------------------------------------------------------------------------------------- load
def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint with torch.load(weights_only=True) and check it is ours."""
    path = Path(path)
    if path.is_dir():
        present = [p.name for p in (path / "best.pt", path / "last.pt") if p.is_file()]
        hint = f" (it holds {', '.join(present)})" if present else ""
        raise UserError(f"{path} is a folder; give a checkpoint file such as {path / 'last.pt'}{hint}")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():   # torch warns about foreign pickle protocols before refusing them
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UserError(refusal(path, str(err))) from None
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, IndexError, AttributeError) as err:
        # zip/pickle readers fail in many ways on foreign or truncated files
        raise UserError(f"{path} is not a multitask checkpoint (unreadable: {type(err).__name__}: {err})") from None
    check_format(ckpt, fmt=FORMAT, version=VERSION, where=str(path), what="checkpoint",
                 writer="was it written by `multitask train`?")
    return ckpt


def check_format(obj, *, fmt: str, version: int, where: str, what: str, writer: str) -> None:
    """A file's `format` entry is ours and its `version` one this code reads, else one line saying which is off."""
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise UserError(f"{where} is not a multitask {what} (no format: {fmt!r} entry); {writer}")
    if int(obj.get("version", 0)) > version:
        raise UserError(f"{where} has {what} version {obj['version']}, newer than this multitask reads "
                        f"({version}); update multitask")


def refusal(path: Path, text: str) -> str:
    """The safe unpickler's refusal as one line. Its text suggests retrying with weights_only=False; that is how a
    crafted file runs code, so the line never repeats it."""
    # "GLOBAL x.y was not an allowed global" (torch < 2.14) or "unsupported GLOBAL x.y whose module x is blocked"
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:   # a class or function to call while unpickling: the way a crafted file runs code
        return (f"{path} holds objects that are not plain tensors/data (found {found.group(1)}); refusing to load it "
                "(it could run code)")
    # any other refusal of the safe unpickler: bytes that are not a pickle it reads (a text file, a raw pickle, ...)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not re.search(r"weights.only|Weights only|trusted source|documentation", line)]
    detail = re.sub(r"^WeightsUnpickler error:\s*", "", lines[0]) if lines else "unreadable"
    return f"{path} is not a multitask checkpoint (the safe loader refused it: {detail}); not loading it"


def model_from_checkpoint(ckpt: dict, *, use_ema: bool = True) -> tuple[MultiHeadNet, Config]:
    """The model alone from a loaded checkpoint: its config, its trained heads in order, no hub download."""
    cfg = from_dict(ckpt["config"])
    names = ckpt.get("trained_heads") or [h.name for h in cfg.trained_heads()]
    unknown = [n for n in names if n not in cfg.heads]
    if unknown:
        raise UserError(f"checkpoint: trained heads {unknown} are missing from its config heads {list(cfg.heads)}")
    offline = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, pretrained=False))
    model = create_model(offline, [cfg.heads[n] for n in names])
    state = ckpt.get("ema") if use_ema and ckpt.get("ema") else ckpt["model"]
    try:
        model.load_state_dict(clean_state_dict(state))
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise UserError(f"checkpoint weights do not match the model its config describes "
                        f"({cfg.model.backbone}, heads {names}): {first[1].strip() if len(first) > 1 else first[0]}"
                        ) from None
    return model.eval(), cfg


def clean_state_dict(state: dict) -> dict:
    """Strip wrapper prefixes (DDP 'module.', torch.compile '_orig_mod.') and AveragedModel's counter."""
    state = {k: v for k, v in state.items() if k != "n_averaged"}
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def checkpoint_info(ckpt: dict) -> dict:
    """What a person wants to see about a checkpoint (plain data, printable)."""
    config = ckpt.get("config") or {}
    heads = config.get("heads") or {}
    names = ckpt.get("trained_heads") or list(heads)
    data = config.get("data") or {}
    return {
        "backbone": (config.get("model") or {}).get("backbone"),
        "heads": {n: list((heads.get(n) or {}).get("classes", [])) for n in names},
        "composite": list(config.get("composite") or []),
        "image_size": data.get("image_size"),
        "mean": data.get("mean"),
        "std": data.get("std"),
        "epoch": ckpt.get("epoch"),
        "step": ckpt.get("step"),
        "metric": ckpt.get("metric"),
        "best": ckpt.get("best"),
        "ema": ckpt.get("ema") is not None,
        "name": config.get("name"),
        "version": ckpt.get("version"),
    }


# --------------------------------------------------------------------------------------------- find
def resolve_checkpoints(items: list[str]) -> list[Path]:
    """Files stay; a run dir gives best.pt (else last.pt); a k-fold parent gives every fold's checkpoint; a
    safetensors export folder (model.safetensors / config.json) stays."""
    found: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(_from_dir(path))
        else:
            raise UserError(f"checkpoint not found: {item} (expected a .pt or .onnx file, a run dir, a k-fold run dir "
                            "or a safetensors export folder)")
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def _best_or_last(folder: Path) -> Path | None:
    return next((p for p in (folder / "best.pt", folder / "last.pt") if p.is_file()), None)


def _from_dir(path: Path) -> list[Path]:
    from ..infer.backends import is_export_folder  # a safetensors export folder is one model

    if is_export_folder(path):
        return [path]
    own = _best_or_last(path)
    if own is not None:
        return [own]
    folds = fold_dirs(path)
    if not folds:
        raise UserError(f"{path}: no checkpoint found (expected best.pt or last.pt, or fold0/, fold1/, ... "
                        "sub-folders each with best.pt)")
    picked = [(d, _best_or_last(d)) for d in folds]
    empty = [d.name for d, p in picked if p is None]
    if empty:
        raise UserError(f"{path}: k-fold folders without best.pt/last.pt: {', '.join(empty)}; "
                        "finish their training or pass the other folds' checkpoints one by one")
    return [p for _, p in picked]


# --------------------------------------------------------------------------------------------- rng
def rng_state() -> dict:
    """Python, numpy, torch CPU (+ CUDA) generator states as plain data (weights_only-safe)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [str(name), keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }
    return state


def set_rng_state(state: dict) -> None:
    if state.get("python") is not None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if state.get("numpy") is not None:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if state.get("torch") is not None:
        torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        # a run resumed on fewer GPUs restores the ones it has
        for index, s in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s, index)
