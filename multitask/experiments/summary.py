"""What a sweep leaves behind: trials.csv, best.yaml, PNG plots and a table of the best trials.

    runs/<name>/sweep/
      study.db          the Optuna study (SQLite, unless --storage)
      trials.csv        one row per trial: number, state, value, duration_s, epochs, every parameter, run_dir, reason
      best.yaml         the best trial's resolved config: multitask train --config runs/<name>/sweep/best.yaml
      history.png       value per trial and the best so far (pruned and failed trials marked)
      importances.png   parameter importances (Optuna's fANOVA), once two trials have finished
      curves.png        the monitored metric per epoch of every trial: where pruning cut
      <N>/              trial N's run dir
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import optuna
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.trial import TrialState
from rich import box
from rich.table import Table

from ..metrics.figures import to_png
from ..utils.io import write_bytes, write_csv, write_text

TOP = 10


def trial_rows(study) -> pd.DataFrame:
    trials = study.get_trials(deepcopy=False)
    retried_as = {t.user_attrs.get("retry_of"): t.number for t in trials if "retry_of" in t.user_attrs}
    rows = []
    for t in trials:
        duration = t.duration.total_seconds() if t.duration is not None else None
        row = {"number": t.number, "state": t.state.name, "value": t.value,
               "duration_s": None if duration is None else round(duration, 1), "epochs": len(t.intermediate_values)}
        row.update(t.params)
        row["run_dir"] = t.user_attrs.get("run_dir", "")
        row["reason"] = reason(t, retried_as.get(t.number))
        rows.append(row)
    params = list(dict.fromkeys(k for t in trials for k in t.params))
    columns = ["number", "state", "value", "duration_s", "epochs", *params, "run_dir", "reason"]
    return pd.DataFrame(rows, columns=columns)


def reason(trial, retried_as: int | None) -> str:
    if trial.state.name == "PRUNED":
        return f"pruned after epoch {trial.last_step}" if trial.last_step is not None else "pruned"
    if trial.state.name != "FAIL":
        return f"retry of trial {trial.user_attrs['retry_of']}" if "retry_of" in trial.user_attrs else ""
    if "fail_reason" in trial.user_attrs:
        return trial.user_attrs["fail_reason"]
    cut = "interrupted" if trial.user_attrs.get("interrupted") else "its worker died"
    return f"{cut}; run again as trial {retried_as}" if retried_as is not None else cut


def trial_line(trial) -> str:
    """One line per finished trial, printed by the worker that ran it."""
    params = "  ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    if trial.state.name == "COMPLETE":
        head = f"trial {trial.number}: {trial.value:.4f}"
    elif trial.state.name == "PRUNED":
        head = f"trial {trial.number}: pruned after epoch {trial.last_step}"
    else:
        head = f"trial {trial.number}: failed: {reason(trial, None)}"
    took = f" ({trial.duration.total_seconds():.0f} s)" if trial.duration is not None else ""
    return f"{head}{took}  {params}"


def write_trials_csv(rows: pd.DataFrame, path: Path) -> Path:
    """`trial_rows` as CSV, atomic (a temp name of its own per write): several workers may rewrite it at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_csv(rows, path)


def write_best(study, sweep, path: Path) -> Path | None:
    """The best finished trial's config, renamed `<name>_best` so training it makes a run dir of its own."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not complete:
        path.unlink(missing_ok=True)
        return None
    best = max(complete, key=lambda t: t.value)
    config = dict(best.user_attrs["config"])
    config["name"], config["config_path"] = f"{sweep.name}_best", None
    monitor = best.user_attrs.get("monitor", "the monitored metric")
    header = (f"# best of sweep {sweep.name}: trial {best.number}, {monitor} = {best.value:.4f}\n"
              f"# {'  '.join(f'{k}={_short(v)}' for k, v in best.params.items())}\n"
              f"#   multitask train --config {path}\n")
    write_text(path, header + yaml.safe_dump(config, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------------- figures
def plot_history(rows: pd.DataFrame, path: Path, monitor: str) -> Path:

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    done = rows[rows["state"] == "COMPLETE"].sort_values("number")
    pruned = rows[rows["state"] == "PRUNED"]
    failed = rows[rows["state"] == "FAIL"]
    ax.scatter(done["number"], done["value"], color="tab:blue", label="finished", zorder=3)
    if len(pruned):
        ax.scatter(pruned["number"], pruned["value"], color="tab:gray", marker="x", label="pruned (last epoch)")
    if len(done):
        ax.step(done["number"], done["value"].cummax(), where="post", color="tab:orange", label="best so far")
    if len(failed):
        low = rows["value"].min() if rows["value"].notna().any() else 0.0
        ax.scatter(failed["number"], [low] * len(failed), color="tab:red", marker="v", label="failed")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(monitor)
    ax.set_title("optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    write_bytes(path, to_png(fig))
    return path


def plot_importances(study, path: Path) -> Path | None:
    """fANOVA importances (Optuna's own, no plotly); None while fewer than two trials finished or nothing varied."""

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError):
        importances = {}
    if not importances:
        path.unlink(missing_ok=True)
        return None
    names, values = list(importances)[::-1], list(importances.values())[::-1]
    fig = Figure(figsize=(7, 1.2 + 0.4 * len(names)), dpi=100)
    ax = fig.add_subplot()
    ax.barh(names, values, color="tab:blue")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlabel("importance (share of the objective's variance)")
    ax.set_xlim(0, max(values) * 1.15 or 1)
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    ax.set_title(f"parameter importances ({finished} finished trials)")
    fig.tight_layout()
    write_bytes(path, to_png(fig))
    return path


def plot_curves(study, path: Path, monitor: str) -> Path:

    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    for t in study.get_trials(deepcopy=False):
        if not t.intermediate_values:
            continue
        steps = sorted(t.intermediate_values)
        style = {"COMPLETE": dict(color="tab:blue", alpha=0.8), "PRUNED": dict(color="tab:gray", ls="--", alpha=0.7)}
        ax.plot(steps, [t.intermediate_values[s] for s in steps], marker=".",
                **style.get(t.state.name, dict(color="tab:red", alpha=0.5)))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(monitor)
    ax.set_title("validation per epoch (blue finished, grey dashed pruned, red failed)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    write_bytes(path, to_png(fig))
    return path


# --------------------------------------------------------------------------------------------------- summary
def summarise(study, sweep, *, console) -> Path:
    out = sweep.dir
    out.mkdir(parents=True, exist_ok=True)
    rows = trial_rows(study)
    write_trials_csv(rows, out / "trials.csv")
    monitor = next((t.user_attrs["monitor"] for t in study.get_trials(deepcopy=False) if "monitor" in t.user_attrs),
                   "objective")
    plot_history(rows, out / "history.png", monitor)
    plot_curves(study, out / "curves.png", monitor)
    importances = plot_importances(study, out / "importances.png")
    best = write_best(study, sweep, out / "best.yaml")
    console.print(top_table(rows, sweep.space.params))
    counts = rows["state"].value_counts().to_dict()
    console.print(", ".join(f"{n} {s.lower()}" for s, n in counts.items()) + f" -> {out}/trials.csv, history.png, "
                  f"curves.png{', importances.png' if importances else ''}", highlight=False, soft_wrap=True)
    if best is not None:
        console.print(f"best config: {best}  (multitask train --config {best})", highlight=False, soft_wrap=True)
    else:
        console.print("no trial finished: no best.yaml", highlight=False)
    return out


def top_table(rows: pd.DataFrame, params) -> Table:
    """The best finished trials; the parameters in one wrapping column, so the table fits a narrow terminal."""
    done = rows[rows["state"] == "COMPLETE"].sort_values("value", ascending=False).head(TOP)
    table = Table(title=f"best {len(done)} of {len(rows)} trials", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("trial", "value", "epochs", "time"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("parameters", overflow="fold")
    keys = [p.key for p in params if p.key in rows.columns]
    for _, r in done.iterrows():
        values = "  ".join(f"{k.rsplit('.', 1)[-1]}={_short(r[k])}" for k in keys if _short(r[k]) != "-")
        table.add_row(str(r["number"]), f"{r['value']:.4f}", str(r["epochs"]), f"{r['duration_s']:.0f}s", values)
    return table


def _short(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
