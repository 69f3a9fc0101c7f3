"""One checkpoint format: written atomically, read safely, enough inside to rebuild the model alone.

    save_checkpoint(run_dir / "last.pt", payload)        # temp file + fsync + os.replace: never a half-written file
    ckpt = load_checkpoint("runs/quickstart/1/best.pt")  # torch.load(weights_only=True): refuses code-running pickles
    model, cfg = model_from_checkpoint(ckpt)             # EMA weights when present, eval mode

Payload (the engine fills it; everything is plain data so weights_only=True can read it):
    format, version, config (config.to_dict), trained_heads, epoch (finished), step, metric {name, value},
    model, ema, optimizer, scheduler, scaler, criterion (state dicts or None), rng (rng_state()),
    tracker {wandb_id, ...}, best, data (the data fingerprint a resume checks: data/fingerprint.py).
"""
from __future__ import annotations

import pickle
import random
import re
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from ..config import Config, from_dict
from ..model.net import MultiHeadNet, rebuild
from ..model.weights import CHECKPOINT_FORMAT, strip_prefixes
from ..utils.errors import UserError
from ..utils.io import check_depth, write_with
from .run_dir import BEST, LAST

FORMAT = CHECKPOINT_FORMAT
VERSION = 1


# --------------------------------------------------------------------------------------------- save
def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write `payload` to `path` atomically: a crash or a full disk leaves the previous file as it was."""
    payload = to_plain(payload)
    # torch's zip writer reports a failed write (full disk, file-size limit) as a RuntimeError without errno
    # ("[enforce fail at inline_container.cc:...] unexpected pos ..."): write_with names the likely cause instead
    write_with(path, lambda f: torch.save(payload, f), "wb", what="checkpoint", errors=(OSError, RuntimeError))



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
        present = [p.name for p in (path / BEST, path / LAST) if p.is_file()]
        hint = f" (it holds {', '.join(present)})" if present else ""
        raise UserError(f"{path} is a folder; give a checkpoint file such as {path / LAST}{hint}")
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


# what a model is rebuilt from (best.pt and last.pt), and what a resume needs on top: each entry's type
MODEL_ENTRIES = {"config": dict, "model": dict}
RESUME_ENTRIES = {**MODEL_ENTRIES, "optimizer": dict, "scheduler": dict, "scaler": dict, "criterion": dict,
                  "state": dict, "mixer": dict, "rng": dict, "trained_heads": list}


def checkpoint_config(ckpt: dict, *, where: str) -> dict:
    """The checkpoint's config (a dict, nested no deeper than our files), else one line naming `where`."""
    check_entries(ckpt, {"config": dict}, where=where, what="checkpoint")
    check_depth(ckpt["config"], where=f"{where}: its config")
    return ckpt["config"]


def check_entries(ckpt: dict, entries: dict[str, type], *, where: str, what: str) -> None:
    """Each named entry present with its type, else one line naming the entry (a KeyError later is no message)."""
    for key, kind in entries.items():
        if not isinstance(ckpt.get(key), kind):
            found = f"a {type(ckpt[key]).__name__}" if key in ckpt else "nothing"
            raise UserError(f"{where}: the {what}'s {key!r} entry should be a {kind.__name__}, found {found}; was "
                            f"it written by `multitask train`?")


def check_format(obj, *, fmt: str, version: int, where: str, what: str, writer: str) -> None:
    """A file's `format` entry is ours and its `version` one this code reads, else one line saying which is off."""
    if not isinstance(obj, dict) or obj.get("format") != fmt:
        raise UserError(f"{where} is not a multitask {what} (no format: {fmt!r} entry); {writer}")
    found = obj.get("version")
    if isinstance(found, bool) or not isinstance(found, int) or found < 1:
        raise UserError(f"{where}: {what} version {found!r} is not a version number (a whole number from 1); "
                        f"{writer}")
    if found > version:
        raise UserError(f"{where} has {what} version {found}, newer than this multitask reads "
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


def model_from_checkpoint(ckpt: dict, *, use_ema: bool = True, where: str = "checkpoint"
                          ) -> tuple[MultiHeadNet, Config]:
    """The model alone from a loaded checkpoint: its config, its trained heads in order, no hub download."""
    check_entries(ckpt, MODEL_ENTRIES, where=where, what="checkpoint")
    cfg = from_dict(checkpoint_config(ckpt, where=where), where)
    names = ckpt.get("trained_heads") or [h.name for h in cfg.trained_heads()]
    unknown = [n for n in names if n not in cfg.heads]
    if unknown:
        raise UserError(f"checkpoint: trained heads {unknown} are missing from its config heads {list(cfg.heads)}")
    state = ckpt.get("ema") if use_ema and ckpt.get("ema") else ckpt["model"]
    return rebuild(cfg, names, clean_state_dict(state), where="checkpoint", described_by="its config"), cfg


def clean_state_dict(state: dict) -> dict:
    """Without wrapper prefixes (DDP 'module.', torch.compile '_orig_mod.') and AveragedModel's counter."""
    return strip_prefixes({k: v for k, v in state.items() if k != "n_averaged"})


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
