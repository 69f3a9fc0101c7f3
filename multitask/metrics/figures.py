"""Figures of metrics, shared by the trackers (every epoch) and the report: a confusion matrix as PNG or RGB.

    png = confusion_figure(counts, classes, "age: confusion")    # the report
    rgb = confusion_rgb(counts, classes, "age")                   # TensorBoard / wandb each epoch: no PNG round trip

Readable first: every plot has a title, axis labels and class names as ticks; big matrices shrink their font and rotate
the ticks so 18 class names never overlap. Figures are bare matplotlib Figures rendered by Agg: no pyplot state, no
backend switch, so training can draw them in any process or thread.
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
BLUE, RED, GREY = "#2f6fdb", "#c0392b", "#9aa3b2"


def figure(nrows: int = 1, ncols: int = 1, *, figsize, **kwargs):
    """(figure, axes) with constrained layout: colour bars, suptitles and outside legends get room in one pass."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(nrows, ncols, **kwargs)


def to_png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # zlib level 1: a quarter of the encode time for files ~15 % larger (a report draws dozens of figures)
    fig.savefig(buffer, format="png", dpi=DPI, pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def to_rgb(fig: Figure) -> np.ndarray:
    """The figure drawn by Agg as an RGB array (height, width, 3): pixel for pixel what `to_png` encodes."""
    fig.set_dpi(DPI)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _matrix(ax, values: np.ndarray, labels: np.ndarray, classes: list[str], title: str, *, fontsize: float,
            vmax: float | None = None, block: int = 0):
    n = len(classes)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax if vmax is not None else max(values.max(), 1e-9))
    ax.set_xticks(range(n), classes, rotation=90 if n > 6 else 30, ha="center" if n > 6 else "right",
                  fontsize=fontsize)
    ax.set_yticks(range(n), classes, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = (vmax if vmax is not None else values.max()) * 0.55
    for i in range(n):
        for j in range(n):
            if labels[i, j]:
                ax.text(j, i, labels[i, j], ha="center", va="center", fontsize=fontsize * 1.1,
                        color="white" if values[i, j] > threshold else "#1d2330")
    for edge in range(block, n, block) if block else ():  # groups of the first head (mask) in a composite matrix
        ax.axhline(edge - 0.5, color="#888", lw=0.8, ls="--")
        ax.axvline(edge - 0.5, color="#888", lw=0.8, ls="--")
    return image


def _row_normalized(counts: np.ndarray) -> np.ndarray:
    totals = counts.sum(1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)


def confusion_figure(counts: np.ndarray, classes: list[str], title: str, *, block: int = 0) -> bytes:
    """The confusion matrix figure, as PNG: for the report."""
    return to_png(draw_confusion(counts, classes, title, block=block))


def confusion_rgb(counts: np.ndarray, classes: list[str], title: str, *, block: int = 0) -> np.ndarray:
    """The same figure as an RGB array: the trackers' confusion/<head> images, logged every epoch."""
    return to_rgb(draw_confusion(counts, classes, title, block=block))


def draw_confusion(counts: np.ndarray, classes: list[str], title: str, *, block: int = 0) -> Figure:
    """Counts and row-normalized side by side; a big matrix gets one panel coloured by row share, labelled by count.

    `block`: dashed lines every `block` classes (the groups of the first head in a composite matrix)."""
    counts = np.asarray(counts)
    n = len(classes)
    assert counts.shape == (n, n), f"confusion matrix {counts.shape} does not fit {n} class names"
    normalized = _row_normalized(counts)
    if n > 8:
        size = max(8.0, 0.5 * n + 2)
        fig, ax = figure(figsize=(size + 1.2, size))
        labels = np.where(counts > 0, counts.astype(str), "")
        image = _matrix(ax, normalized, labels, classes, f"{title} (colour = share of the true row, text = count)",
                        fontsize=7, vmax=1.0, block=block)
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="share of true class")
    else:
        side = max(3.4, 0.75 * n + 2)
        fig, axes = figure(1, 2, figsize=(2 * side + 1.6, side))
        count_labels = counts.astype(str)
        share_labels = np.vectorize(lambda v: f"{v:.2f}")(normalized)
        image = _matrix(axes[0], counts.astype(float), count_labels, classes, "counts", fontsize=9)
        fig.colorbar(image, ax=axes[0], fraction=0.046, pad=0.04, label="images")
        image = _matrix(axes[1], normalized, share_labels, classes, "row-normalized (recall on the diagonal)",
                        fontsize=9, vmax=1.0)
        fig.colorbar(image, ax=axes[1], fraction=0.046, pad=0.04, label="share of true class")
        fig.suptitle(title)
    return fig
