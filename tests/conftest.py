"""Every shared fixture, for tests/unit and tests/e2e alike: the tiny synthetic data sets of the session, a fast CPU
config for training tests, and wandb calls recorded instead of sent (helpers.py holds the shared functions)."""
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


@pytest.fixture(scope="session")
def two_people(tmp_path_factory):
    """A second, smaller synthetic set: 2 people, 14 eval photos (32x40), for predict tests; read, never written."""
    from multitask.data.synthetic import write_synthetic

    root = tmp_path_factory.mktemp("two_people")
    write_synthetic(root, people=2, width=32, height=40, seed=3)
    return root


@pytest.fixture()
def tiny_cfg(synth_root, tmp_path):
    """load_config(quickstart) shrunk to seconds: 32x32 images, 1 epoch, no workers."""
    from helpers import tiny_overrides

    from multitask.config import load_config

    def make(*overrides, config="configs/quickstart.yaml"):
        return load_config(config, tiny_overrides(synth_root, tmp_path, *overrides))
    return make
