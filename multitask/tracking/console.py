"""The console side of a run: its lines, warnings, the epoch table (best so far marked) and the progress bar.

    out = ConsoleOut(console, enabled=rank == 0, progress=cfg.tracking.progress)
    out.print("resumed from epoch 3")
    with out.progress(total=len(loader), description="epoch 1/5") as bar:
        bar.update(images=len(batch), loss=loss)
    out.epoch_table(1, metrics, heads=["mask", "gender", "age"])
"""
from __future__ import annotations

import math

from rich import box
from rich.console import Console
from rich.table import Table

from ..config.metric_names import val_key
from ..utils.progress import Progress


class ConsoleOut:
    def __init__(self, console: Console | None = None, *, enabled: bool = True, progress: bool = True):
        self.console = console or Console()
        self.enabled, self.show_progress = enabled, progress
        self.best: dict[str, tuple[float, int]] = {}   # head -> (best F1 so far, its epoch)

    def print(self, *args, **kwargs) -> None:
        if self.enabled:
            # soft wrap: a log file keeps each message (and its paths) on one line
            kwargs.setdefault("soft_wrap", True)
            self.console.print(*args, **kwargs)

    def warn(self, message: str) -> None:
        if self.enabled:
            self.console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    def progress(self, total: int, description: str) -> Progress:
        """`.update(images=n, loss=None)` per batch; a silent no-op when progress is off or on another rank."""
        return Progress(description, total=total, console=self.console, fields=("loss",),
                        enabled=self.enabled and self.show_progress)

    def epoch_table(self, epoch: int, metrics: dict[str, float], heads: list[str],
                    sources: list[str] = ()) -> Table | None:
        """Per-head losses, accuracy, macro F1 (best so far marked) and per-class F1, printed on rank 0; with
        `sources`, then each source's heads (`<source>/<head>`: its own validation images)."""
        if not self.enabled:
            return None
        # compact enough for an 80-column terminal: losses in one cell, 3 decimals, a light box
        table = Table(title=f"epoch {epoch}", title_justify="left", header_style="bold", box=box.SIMPLE_HEAD,
                      pad_edge=False)
        for column in ("head", "loss tr/val", "acc", "F1", "best", "per-class F1"):
            table.add_column(column, justify="left" if column in ("head", "per-class F1") else "right",
                             no_wrap=column != "per-class F1")
        rows = list(heads) + (["composite"] if any(k.startswith(val_key("composite/")) for k in metrics) else [])
        rows += [f"{source}/{head}" for source in sources for head in [*heads, "composite"]
                 if val_key(f"{head}/f1", source) in metrics]
        for head in rows:   # a source's row reads its keys as val/<source>/<head>/... = val/<row>/...
            f1_cell, best_cell = self._f1_cells(head, metrics.get(val_key(f"{head}/f1")), epoch)
            losses = "/".join(_num(metrics.get(f"{split}/{head}/loss")) or "-" for split in ("train", "val"))
            losses = "" if head == "composite" or "/" in head else losses   # no loss of its own: composite, sources
            table.add_row(head, losses, _num(metrics.get(val_key(f"{head}/acc"))), f1_cell, best_cell,
                          _per_class(metrics, head))
        extra = [f"{k} {metrics[k]:.4g}" for k in ("train/loss", "val/loss", "val/mean/f1", "lr") if k in metrics]
        agree = [f"{h} {metrics[val_key(f'{h}/agreement')]:.2f}" for h in heads if val_key(f"{h}/agreement") in metrics]
        extra += [f"teacher agreement {' '.join(agree)}"] if agree else []   # a distilled run
        table.caption = "  ".join(extra) + ("  (* best so far)" if extra else "* best so far")
        table.caption_justify = "left"
        self.console.print(table)
        return table

    def _f1_cells(self, head: str, f1: float | None, epoch: int) -> tuple[str, str]:
        """(this epoch's F1, marked when it is the best so far; the best so far with its epoch)."""
        if f1 is None or not math.isfinite(f1):
            return _num(f1), ""
        cell = _num(f1)
        best, _ = self.best.get(head, (-math.inf, epoch))
        if f1 >= best:
            self.best[head] = (f1, epoch)
            cell = f"[bold green]{f1:.3f}*[/]"
        return cell, "{:.3f} e{}".format(*self.best[head])


def _num(value) -> str:
    return "" if value is None else f"{value:.3f}"


def _per_class(metrics: dict[str, float], head: str) -> str:
    prefix = val_key(f"{head}/f1_")
    scores = [(k[len(prefix):], v) for k, v in metrics.items() if k.startswith(prefix)]
    if len(scores) > 6:  # e.g. the 18 composite classes: the worst one says more than a wall of numbers
        name, value = min(scores, key=lambda s: s[1])
        return f"{len(scores)} classes, worst {name} {value:.2f}"
    return " ".join(f"{name[:9]} {value:.2f}" for name, value in scores)
