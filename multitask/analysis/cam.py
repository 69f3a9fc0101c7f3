"""Class activation maps per head, by the `grad-cam` package (pytorch-grad-cam): where a head looks in a photo.

    layer = feature_layer(net, (128, 96))               # the trunk's last 4-d feature map, found by running it
    maps, probs = head_maps(net, "mask", images, layer=layer, method="gradcam")   # (N, H, W) in 0..1, (N, C)
    png = overlay_png(image, maps[0], "mask: wear 0.93")  # the map over the photo, the prediction above it
    share_outside(maps[0], box)                         # the share of the map's mass outside a face box

The map is of one head's logits (a small module selects them: grad-cam wants one output), for the class the caller
names (the decided class) or, by default, the head's argmax. The images are what the model is fed: uint8 pixels as
predict cuts and resizes them (infer/forward.py); the model normalises them itself. The target layer comes from the
trunk, not from a table per backbone: the last module whose output is the feature map `forward_features` ends in.
A trunk that ends in tokens (a ViT) has no such map and is refused in one line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from ..data.faces import Cropper
from ..infer.forward import DecodedImages
from ..model.net import MultiHeadNet
from ..utils.errors import UserError

METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": EigenCAM}
BATCH = 16
# where a face box lands in the frame the mean maps are drawn in (relative x0, y0, x1, y1): the middle half, about
# where data.crop=face with its default margin puts the face
CANONICAL_FACE = (0.25, 0.25, 0.75, 0.75)


@dataclass
class FeatureLayer:
    """The module whose output the maps are made of, its name, its grid (h, w) at the model's input size, and the
    reshape grad-cam needs when the map is channels-last (N, H, W, C: some timm trunks give that)."""
    module: nn.Module
    name: str
    grid: tuple[int, int]
    reshape: Callable | None = None


def _channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def feature_layer(net: MultiHeadNet, size: tuple[int, int]) -> FeatureLayer:
    """The trunk's last module giving its final feature map, found by one forward with hooks on every module;
    UserError (one line) when the trunk has no 4-d map or only a 1x1 one at this input size."""
    trunk = net.trunk
    what = f"model.backbone {net.backbone}"
    if not hasattr(trunk, "forward_features"):
        raise UserError(f"{what}: the trunk has no forward_features, so no feature map to explain")
    names = {id(m): n for n, m in trunk.named_modules() if n}
    seen: list[tuple[nn.Module, tuple]] = []

    def record(module, _inputs, output):
        if isinstance(output, torch.Tensor):
            seen.append((module, tuple(output.shape)))
    hooks = [m.register_forward_hook(record) for n, m in trunk.named_modules() if n]
    device = net.mean.device
    try:
        with torch.no_grad():
            final = trunk.forward_features(net.normalize(torch.zeros(1, 3, *size, device=device)))
    finally:
        for hook in hooks:
            hook.remove()
    shape = tuple(final.shape)
    if len(shape) != 4:
        raise UserError(f"{what}: its trunk ends in a {len(shape)}-d output {shape} (tokens, not a 4-d feature map), "
                        f"so class activation maps cannot be drawn; use a convolutional backbone (resnet, "
                        f"efficientnet, convnext, ...)")
    channels_last = shape[1] != net.trunk.num_features and shape[-1] == net.trunk.num_features
    grid = shape[1:3] if channels_last else shape[2:]
    if grid[0] * grid[1] < 2:
        raise UserError(f"{what}: its feature map is 1x1 at the input size {size[0]}x{size[1]}: nothing to localise; "
                        f"explain a model trained on larger images")
    module = next((m for m, s in reversed(seen) if s == shape), None)
    if module is None:
        raise UserError(f"{what}: no module of the trunk outputs its final feature map {shape}")
    return FeatureLayer(module, names.get(id(module), "?"), tuple(grid), _channels_first if channels_last else None)


class HeadLogits(nn.Module):
    """One head's logits of a MultiHeadNet: the single output grad-cam's targets index."""

    def __init__(self, net: MultiHeadNet, head: str):
        super().__init__()
        self.net, self.head = net, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[self.head].float()


def head_maps(net: MultiHeadNet, head: str, images: torch.Tensor, *, layer: FeatureLayer, method: str = "gradcam",
              classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(maps (N, H, W) float32 in 0..1 at the input size, probabilities (N, C)) of one head on uint8 images
    (N, 3, H, W); each map is of the class `classes` names for its image, by default the head's argmax."""
    if method not in METHODS:
        raise UserError(f"--method {method}: unknown; choose from {', '.join(METHODS)}")
    device = net.mean.device
    maps, probs = [], []
    with METHODS[method](model=HeadLogits(net, head), target_layers=[layer.module],
                         reshape_transform=layer.reshape) as cam:
        for start in range(0, len(images), BATCH):
            x = images[start:start + BATCH].to(device).float()
            wanted = None if classes is None else [ClassifierOutputTarget(int(c))
                                                   for c in classes[start:start + BATCH]]
            maps.append(np.asarray(cam(input_tensor=x, targets=wanted), dtype=np.float32))
            probs.append(cam.outputs.detach().float().softmax(-1).cpu().numpy())
    net.zero_grad(set_to_none=True)   # grad-cam's backward left gradients on the weights
    if not maps:
        return np.zeros((0, *images.shape[2:]), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(maps), np.concatenate(probs)


def model_inputs(paths: list[str], size: tuple[int, int], cropper: Cropper | None) -> tuple[torch.Tensor, list[str]]:
    """(uint8 (N, 3, H, W) as predict feeds the model: its decode, crop and resize, per-photo error messages ("" when
    read); an unreadable photo comes back as zeros with its message."""
    decoded = DecodedImages(paths, [(*size, cropper)])
    pixels, errors = [], []
    for i in range(len(decoded)):
        (x,), error = decoded[i]
        pixels.append(x)
        errors.append(error)
    return (torch.stack(pixels) if pixels else torch.zeros((0, 3, *size), dtype=torch.uint8)), errors


# ----------------------------------------------------------------------------------------------- what a map says
def share_outside(cam: np.ndarray, box) -> float:
    """The share of the map's mass outside `box` (relative x0, y0, x1, y1 in the map's frame); NaN for an empty
    map."""
    total = float(cam.sum())
    if total <= 0:
        return float("nan")
    h, w = cam.shape
    x0, y0, x1, y1 = (int(round(v * s)) for v, s in zip(box, (w, h, w, h)))
    return 1.0 - float(cam[y0:y1, x0:x1].sum()) / total


def area_outside(box) -> float:
    """The share of the frame outside `box` (relative x0, y0, x1, y1): what a map spread evenly would put there, the
    bar a head's share is read against (a face crop with margins leaves most of the frame outside the face box)."""
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in box)
    return 1.0 - max(0.0, x1 - x0) * max(0.0, y1 - y0)


def aligned(cam: np.ndarray, box) -> np.ndarray:
    """The map moved and scaled so that `box` (relative) lands on CANONICAL_FACE, as a unit-mass map of the same
    size (what falls outside the frame is dropped): maps of different photos then average face on face."""
    h, w = cam.shape
    x0, y0, x1, y1 = box
    c0, d0, c1, d1 = CANONICAL_FACE
    sx, sy = (c1 - c0) / max(x1 - x0, 1e-6), (d1 - d0) / max(y1 - y0, 1e-6)
    matrix = np.float32([[sx, 0, (c0 - x0 * sx) * w], [0, sy, (d0 - y0 * sy) * h]])
    moved = cv2.warpAffine(cam.astype(np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    return unit(moved)


def unit(cam: np.ndarray) -> np.ndarray:
    total = float(cam.sum())
    return cam / total if total > 0 else cam


def overlay(image: np.ndarray, cam: np.ndarray, box=None) -> np.ndarray:
    """The map (0..1) as a heat map over the image (H, W, 3 uint8 RGB, the model's input), RGB uint8; the face `box`
    (relative, None: none) framed white."""
    shown = show_cam_on_image(image.astype(np.float32) / 255, cam, use_rgb=True, image_weight=0.55)
    return framed(shown, box)


def framed(image: np.ndarray, box) -> np.ndarray:
    if box is not None:
        h, w = image.shape[:2]
        x0, y0, x1, y1 = (int(round(v * s)) for v, s in zip(box, (w, h, w, h)))
        cv2.rectangle(image, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), (255, 255, 255), 1)
    return image


SHOW = 256   # an explained photo is enlarged by a whole factor until its longer side is about this many pixels


def show_scale(size: tuple[int, int]) -> int:
    return max(1, SHOW // max(size))


def overlay_png(image: np.ndarray, cam: np.ndarray, caption: str = "", *, scale: int = 1) -> bytes:
    """PNG of overlay(), enlarged `scale` times, with `caption` in a white band above it (none when empty)."""
    shown = overlay(image, cam)
    if scale > 1:
        shown = cv2.resize(shown, (shown.shape[1] * scale, shown.shape[0] * scale), interpolation=cv2.INTER_CUBIC)
    if caption:
        shown = np.vstack([caption_band(caption, shown.shape[1]), shown])
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
    assert ok, "PNG encoding of an overlay failed"
    return encoded.tobytes()


BAND = 24   # pixels of the caption band above an explained photo


def caption_band(text: str, width: int) -> np.ndarray:
    """A white band `width` wide with the text in black, shrunk until it fits."""
    band = np.full((BAND, width, 3), 255, np.uint8)
    size = 0.5
    while size > 0.25 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, size, 1)[0][0] > width - 6:
        size -= 0.05
    cv2.putText(band, text, (3, BAND - 8), cv2.FONT_HERSHEY_SIMPLEX, size, (0, 0, 0), 1, cv2.LINE_AA)
    return band
