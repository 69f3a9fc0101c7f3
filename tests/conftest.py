"""Shared fixtures: one tiny synthetic data set per session and a fast CPU config for training tests."""
import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_MODE", "offline")   # a logged-in machine would otherwise send test runs online
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@pytest.fixture(scope="session", autouse=True)
def record_wandb_calls():
    """Every wandb run.log call of the session, by run dir (tests/wandb_record.py): what tests check wandb got."""
    from wandb_record import install

    with pytest.MonkeyPatch.context() as patch:
        install(patch)
        yield


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    from helpers import TINY_PEOPLE

    from multitask.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("synth")
    write_synthetic(root, people=TINY_PEOPLE, width=32, height=40, seed=0)
    return root


@pytest.fixture()
def tiny_cfg(synth_root, tmp_path):
    """load_config(quickstart) shrunk to seconds: 32x32 images, 1 epoch, no workers."""
    from helpers import tiny_overrides

    from multitask.config import load_config

    def make(*overrides, config="configs/quickstart.yaml"):
        return load_config(config, tiny_overrides(synth_root, tmp_path, *overrides))
    return make
