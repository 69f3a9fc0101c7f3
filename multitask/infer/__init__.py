"""Inference: predict as a pipeline (load, forward, merge, decide, write, score) over an ensemble of checkpoints or
exports, under test-time augmentation views.

    run_predict(PredictOptions(ckpts=["runs/quickstart/1"], data="data/synthetic/eval/images", out="out/"))
"""
from .backends import TorchModel, load_model
from .ensemble import Member, load_ensemble
from .forward import RunSettings, member_croppers, run_members
from .predict import PredictOptions, run_predict
from .tta import MERGES, VIEWS, resolve_merge, resolve_views, view_count

__all__ = ["MERGES", "Member", "PredictOptions", "RunSettings", "TorchModel", "VIEWS", "load_ensemble", "load_model",
           "member_croppers", "resolve_merge", "resolve_views", "run_members", "run_predict", "view_count"]
