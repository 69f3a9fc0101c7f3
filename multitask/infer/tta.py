"""Test-time augmentation views and merge modes, both small registries keyed by name.

    views = resolve_views(["identity", "hflip", "fivecrop"])   # 7 tensors per batch: fivecrop is one name, 5 views
    for name in views:
        for x_view in VIEWS[name](x):                            # x: float N x 3 x H x W in 0..255, on the device
            probs.append(model(x_view)["age"].softmax(-1))
    merged = resolve_merge("mean")(torch.stack(probs))           # (V, N, C) -> (N, C)

Every view keeps the image size, so each model sees its own input size whatever the views, and none moves a label
(faces stay faces under a mirror, a small shift or zoom). Views run batched on the device: no per-image Python.
The same merge functions combine the members of an ensemble, with one weight per member.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..utils.errors import UserError

SHIFT = 0.05          # fraction of height/width moved by `shift`
ZOOM = 1.1            # `scale` crops the centre 1/ZOOM of the image and resizes it back
CROP = 0.9            # `fivecrop` crops this fraction of each side
BRIGHTNESS = 1.1
VOTE_TIE_BREAK = 1e-3  # share of the mean probability blended into vote fractions: settles ties, survives rounding


# ------------------------------------------------------------------------------------------------------- views
def _resize(x: Tensor, height: int, width: int) -> Tensor:
    return F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)


def _crop_resized(x: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    return _resize(x[..., top:top + height, left:left + width], x.shape[-2], x.shape[-1])


def identity(x: Tensor) -> list[Tensor]:
    return [x]


def hflip(x: Tensor) -> list[Tensor]:
    return [x.flip(-1)]


def shift(x: Tensor) -> list[Tensor]:
    """Content moved right and down by ~5%; the uncovered border repeats the edge pixels (no black bars)."""
    h, w = x.shape[-2:]
    dy, dx = max(1, round(SHIFT * h)), max(1, round(SHIFT * w))
    return [F.pad(x, (dx, 0, dy, 0), mode="replicate")[..., :h, :w]]


def scale(x: Tensor) -> list[Tensor]:
    h, w = x.shape[-2:]
    ch, cw = round(h / ZOOM), round(w / ZOOM)
    return [_crop_resized(x, (h - ch) // 2, (w - cw) // 2, ch, cw)]


def fivecrop(x: Tensor) -> list[Tensor]:
    """Four corners and the centre, each CROP of the side, resized back."""
    h, w = x.shape[-2:]
    ch, cw = round(CROP * h), round(CROP * w)
    corners = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw), ((h - ch) // 2, (w - cw) // 2)]
    return [_crop_resized(x, top, left, ch, cw) for top, left in corners]


def brightness(x: Tensor) -> list[Tensor]:
    return [(x * BRIGHTNESS).clamp_(0, 255)]


VIEWS: dict[str, Callable[[Tensor], list[Tensor]]] = {
    "identity": identity, "hflip": hflip, "shift": shift, "scale": scale, "fivecrop": fivecrop,
    "brightness": brightness,
}
VIEW_COUNT = {"fivecrop": 5}  # tensors a name yields; 1 when not listed


def resolve_views(names) -> list[str]:
    """Validated view names in the given order (duplicates dropped); UserError naming the valid ones."""
    names = [n.strip() for n in names if n and n.strip()]
    unknown = [n for n in names if n not in VIEWS]
    if unknown:
        raise UserError(f"--tta: unknown view {unknown[0]!r}; choose from {', '.join(VIEWS)} (comma-separated)")
    if not names:
        raise UserError(f"--tta: no view given; choose from {', '.join(VIEWS)} (e.g. --tta identity,hflip)")
    return list(dict.fromkeys(names))


def view_count(names) -> int:
    return sum(VIEW_COUNT.get(n, 1) for n in names)


# ------------------------------------------------------------------------------------------------------- merges
# Each takes probabilities (M, N, C) of M members (views or models) and weights (M,) summing to 1; returns (N, C).
def _weights(probs: Tensor, weights: Tensor | None) -> Tensor:
    if weights is None:
        return torch.full((probs.shape[0],), 1.0 / probs.shape[0], dtype=probs.dtype, device=probs.device)
    return weights.to(probs.dtype).to(probs.device)


def merge_mean(probs: Tensor, weights: Tensor | None = None) -> Tensor:
    return torch.einsum("m,mnc->nc", _weights(probs, weights), probs)


def merge_gmean(probs: Tensor, weights: Tensor | None = None) -> Tensor:
    """Weighted geometric mean, renormalised: one confident 'no' outweighs several lukewarm 'yes'."""
    logs = probs.clamp_min(1e-12).log()
    return torch.einsum("m,mnc->nc", _weights(probs, weights), logs).softmax(-1)


def merge_vote(probs: Tensor, weights: Tensor | None = None) -> Tensor:
    """Weighted vote fractions of the members' argmax; a tie goes to the class with the higher mean probability."""
    w = _weights(probs, weights)
    votes = F.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs.dtype)
    fractions = torch.einsum("m,mnc->nc", w, votes)
    return (1 - VOTE_TIE_BREAK) * fractions + VOTE_TIE_BREAK * merge_mean(probs, w)


MERGES: dict[str, Callable[[Tensor, Tensor | None], Tensor]] = {
    "mean": merge_mean, "gmean": merge_gmean, "vote": merge_vote,
}


def resolve_merge(name: str) -> Callable[[Tensor, Tensor | None], Tensor]:
    if name not in MERGES:
        raise UserError(f"--merge: unknown merge mode {name!r}; choose from {', '.join(MERGES)}")
    return MERGES[name]
