"""Parity of an ONNX model with PyTorch fp32 on real images: what gates an export, and what int8 is judged by.

    images, where = sample_images("data/synthetic", cfg, PARITY_IMAGES)   # decoded and resized as predict does
    check = parity(ProbabilityNet(net, cfg).eval(), onnx_model, images)    # max |delta prob|, argmax agreement
"""
from __future__ import annotations

import numpy as np
import torch

from ..config import Config
from ..data.images import read_image, resize
from ..data.inputs import read_inputs
from ..data.synthetic_faces import STEM_MASK, STEMS, person_identity, render
from .onnx import OnnxModel, ProbabilityNet

PARITY_MAX_DELTA = 1e-3        # max |delta prob| allowed between onnxruntime fp32 and PyTorch fp32
PARITY_MIN_AGREEMENT = 0.995   # share of images whose argmax must agree, per output
PARITY_IMAGES = 64
PLAIN = dict(markup=False, highlight=False, soft_wrap=True)   # console lines as written: paths and figures unwrapped


def parity(wrapper: ProbabilityNet, model: OnnxModel, images: np.ndarray) -> dict:
    """onnxruntime vs PyTorch fp32 on the same uint8 images: max |delta prob| and argmax agreement per output."""
    with torch.inference_mode():
        reference = [r.numpy() for r in wrapper(torch.from_numpy(images))]
    got = model.run(images, wrapper.output_names)
    delta = {n: float(np.abs(a - b).max()) for n, a, b in zip(wrapper.output_names, got, reference)}
    # argmax agreement on the class outputs only: the top two neighbouring years of a smooth year distribution may
    # differ by less than fp32 noise; the year outputs are held to the same max |delta prob|
    agree = {n: float(np.mean(a.argmax(1) == b.argmax(1))) for n, a, b in zip(wrapper.output_names, got, reference)
             if n not in wrapper.years_outputs}
    return {"images": len(images), "max_abs_delta": max(delta.values()), "min_agreement": min(agree.values()),
            "delta": delta, "agreement": agree}


# --------------------------------------------------------------------------------------------------- images
def sample_images(data, cfg: Config, count: int) -> tuple[np.ndarray, str]:
    """(count uint8 NHWC images at the model's size, where they came from): spread over --data, decoded and resized
    as predict does; synthetic faces drawn at the model's size when no --data is given."""
    height, width = cfg.data.image_size
    if data is None:
        return synthetic_faces(count, height, width), "synthetic faces"
    paths = read_inputs(data, cfg.heads).frame["path"].tolist()
    picked = [paths[i] for i in sorted(set(np.linspace(0, len(paths) - 1, min(count, len(paths))).round().astype(int)))]
    images = [resize(read_image(p, at_least=(height, width)), height, width) for p in picked]   # as predict does
    return np.stack(images), f"{len(images)} images of {data}"


def synthetic_faces(count: int, height: int, width: int) -> np.ndarray:
    images, index = [], 0
    while len(images) < count:
        person, rng = person_identity(0, 1, index)
        images += [render(person, STEM_MASK[s], rng, width=width, height=height) for s in STEMS]
        index += 1
    return np.ascontiguousarray(np.stack(images[:count]))


def parity_line(check: dict) -> str:
    worst = min(check["agreement"], key=check["agreement"].get)
    return (f"max |delta prob| {check['max_abs_delta']:.1e}, argmax agreement {100 * check['min_agreement']:.2f}% "
            f"(lowest: {worst}) on {check['images']} images")
