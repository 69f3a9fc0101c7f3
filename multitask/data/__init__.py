"""Data: sources (competition folders, manifests, photo folders, synthetic faces), splits by person, the decode-once
cache, face crops, transforms, loaders, predict's inputs and ground truth.

    sources, frame = rows_and_folds(cfg)    # every row with its source and fold, before a pixel is read
    data = prepare_data(cfg)                # the datasets of a training, each source cut by its crop and cached
"""
from .cache import ImageCache
from .competition import read_competition, read_eval
from .crops import face_plan, make_cropper, source_crop
from .dataset import MultiTaskDataset
from .faces import Cropper, Face, FacePlan, detect_faces, plan_faces, read_pixels, read_plan, write_plan
from .ground_truth import GroundTruth, read_gt
from .images import BadImageError, read_image, resize
from .inputs import Inputs, read_inputs
from .manifest import read_manifest
from .prepare import TrainingData, prepare_data
from .sampling import make_loader, train_sampler, val_sampler
from .sources import Source, read_sources, rows_and_folds
from .splits import assign_folds, split_indices
from .synthetic import ensure_synthetic, write_synthetic
from .transforms import build_transforms

__all__ = ["BadImageError", "Cropper", "Face", "FacePlan", "GroundTruth", "ImageCache", "Inputs", "MultiTaskDataset",
           "Source", "TrainingData", "assign_folds", "build_transforms", "detect_faces", "ensure_synthetic",
           "face_plan", "make_cropper", "make_loader", "plan_faces", "prepare_data", "read_competition", "read_eval",
           "read_gt", "read_image", "read_inputs", "read_manifest", "read_pixels", "read_plan", "read_sources",
           "resize", "rows_and_folds", "source_crop", "split_indices", "train_sampler", "val_sampler", "write_plan",
           "write_synthetic"]
