"""safetensors export: model.safetensors (the weights, no code) + config.json (the manifest), and reading it back.

    write_safetensors(net, manifest, Path("deploy/quickstart"))
    net, cfg, extras = load_safetensors(Path("deploy/quickstart"))    # never unpickles
"""
from __future__ import annotations

from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..config import Config
from ..model.net import MultiHeadNet, rebuild
from ..runs.run_dir import EXPORT_CONFIG, EXPORT_WEIGHTS
from ..utils.errors import UserError
from ..utils.io import read_json, write_bytes, write_json
from .manifest import MANIFEST_FORMAT, read_manifest


def write_safetensors(net: MultiHeadNet, manifest: dict, folder: Path) -> None:
    """FOLDER/model.safetensors, then FOLDER/config.json (last: a folder with config.json is a complete export)."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    write_bytes(folder / EXPORT_WEIGHTS, save(state, metadata={"format": MANIFEST_FORMAT}), what="export")
    write_json(folder / EXPORT_CONFIG, {**manifest, "weights": EXPORT_WEIGHTS}, what="export")


def load_safetensors(folder: Path) -> tuple[MultiHeadNet, Config, dict]:
    """Rebuild the net from FOLDER/config.json (the export manifest) + FOLDER/model.safetensors; never unpickles."""
    config, weights = folder / EXPORT_CONFIG, folder / EXPORT_WEIGHTS
    for need in (config, weights):
        if not need.is_file():
            raise UserError(f"{folder}: {need.name} is missing (a safetensors export holds {EXPORT_WEIGHTS} "
                            f"and {EXPORT_CONFIG}, written by `multitask export --format safetensors`)")
    raw = read_json(config, hint="re-export it with `multitask export`")
    manifest, cfg = read_manifest(raw, where=str(config))
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{weights}: not a readable safetensors file ({err}); re-export it") from None
    net = rebuild(cfg, manifest["trained_heads"], state, where=str(weights), described_by=config.name)
    return net, cfg, {"decisions": dict(manifest.get("decisions") or {}),
                      "source": dict(manifest.get("source") or {})}
