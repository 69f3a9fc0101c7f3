"""Experiments: Optuna sweeps. The study, one trial (a training through `run_training`), the --jobs workers, the
search space and the summary.

    run_sweep(Sweep(config="configs/quickstart.yaml", space_path="configs/sweeps/optimizer.yaml", trials=20))
"""
from .space import Space, load_space
from .study import Sweep, open_study
from .summary import summarise
from .trial import run_trial
from .workers import run_sweep

__all__ = ["Space", "Sweep", "load_space", "open_study", "run_sweep", "run_trial", "summarise"]
