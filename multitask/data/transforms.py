"""Albumentations pipelines from `data.augment`; they take and return uint8 HxWx3 and stop there.

    train_tf = build_transforms(cfg.data, train=True)
    image = train_tf(image=image)["image"]       # uint8, (height, width, 3) = data.image_size

No Normalize and no ToTensor here, on purpose: normalisation happens on the device inside the model (mean/std
buffers, `data.mean` / `data.std`). Shipping uint8 from the loader to the model moves 4x fewer bytes than float32
(pinned-memory copies, worker -> main process queues), and normalising a whole batch on the device is one fused op
instead of one numpy pass per image on the loader's CPU cores. It also makes a checkpoint self-contained: the model
carries its own normalisation, so inference code cannot feed it differently scaled pixels.

Written for albumentations 2.x (RandomResizedCrop(size=...), CoarseDropout(num_holes_range=...), Affine instead of
the deprecated ShiftScaleRotate).
"""
from __future__ import annotations

import os

# albumentations asks PyPI for a newer version on import; training machines are often offline (and should not wait)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402

from ..config import AugmentConfig, DataConfig

COLOR_STRENGTH = 0.2  # mild on purpose: skin tone and mask colour carry label information


def build_transforms(data_cfg: DataConfig, *, train: bool, augment: AugmentConfig | None = None) -> A.Compose:
    """Resize to data.image_size (a no-op when the cache already did) plus, for training, the configured augments
    (`augment`, a source's own: DataConfig.source_augment; unset: data.augment)."""
    height, width = data_cfg.image_size
    aug = augment or data_cfg.augment
    steps: list = []
    if train and aug.random_resized_crop:
        # the photos are portrait (3:4): keep the crop's aspect close to the target's so faces are not squashed
        ratio = width / height
        steps.append(A.RandomResizedCrop(size=(height, width), scale=tuple(aug.crop_scale),
                                         ratio=(ratio * 0.9, ratio / 0.9), area_for_downscale="image", p=1.0))
    else:
        # albumentations returns the input untouched when it already has the target size
        steps.append(A.Resize(height, width, interpolation=cv2.INTER_LINEAR, area_for_downscale="image"))
    if train:
        if aug.hflip > 0:
            steps.append(A.HorizontalFlip(p=aug.hflip))
        if aug.shift_scale_rotate > 0:
            steps.append(A.Affine(scale=(0.9, 1.1), translate_percent=(-0.0625, 0.0625), rotate=(-10, 10),
                                  border_mode=cv2.BORDER_REFLECT_101, p=aug.shift_scale_rotate))
        if aug.color_jitter > 0:
            s = COLOR_STRENGTH
            steps.append(A.ColorJitter(brightness=s, contrast=s, saturation=s, hue=0.02, p=aug.color_jitter))
        if aug.coarse_dropout > 0:
            steps.append(A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(0.05, 0.15),
                                         hole_width_range=(0.05, 0.15), fill=0, p=aug.coarse_dropout))
    return A.Compose(steps)
