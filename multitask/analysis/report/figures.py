"""Figures of the report: each function takes plain numbers and returns PNG bytes (the confusion matrix, which the
trackers draw too, is in metrics/figures.py).

Readable first: every plot has a title, axis labels and class names as ticks; big matrices shrink their font and rotate
the ticks so 18 class names never overlap. Figures are bare matplotlib Figures rendered by Agg: no pyplot state, no
backend switch.
Thumbnails are read with OpenCV; a missing or unreadable file becomes a grey placeholder so one bad path never stops a
report.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from matplotlib.patches import Rectangle

from ...metrics.figures import BLUE, GREY, RED, figure, to_png


def titled(fig, ax, title: str, *, xlabel: str, ylabel: str, ylim: tuple[float, float] | None = None) -> bytes:
    """The axes' labels, limits and title set; the figure as PNG."""
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return to_png(fig)


def calibration_figure(bins: list[dict], ece: float, title: str) -> bytes:
    """Reliability diagram (accuracy per confidence bin against the diagonal) over a histogram of confidences."""
    lo = np.array([b["lo"] for b in bins])
    hi = np.array([b["hi"] for b in bins])
    centres, width = (lo + hi) / 2, (hi - lo) * 0.9
    count = np.array([b["count"] for b in bins])
    filled = count > 0
    acc = np.array([b["accuracy"] if b["count"] else 0.0 for b in bins])
    conf = np.array([b["confidence"] if b["count"] else 0.0 for b in bins])
    fig, (top, bottom) = figure(2, 1, figsize=(4.8, 4.8), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.bar(centres[filled], acc[filled], width=width[filled], color=BLUE, alpha=0.85, label="accuracy in bin")
    # the gap as an outlined, hatched box from accuracy to mean confidence, visible above or inside a bar
    top.bar(centres[filled], (conf - acc)[filled], bottom=acc[filled], width=width[filled], fill=False,
            edgecolor=RED, hatch="///", lw=0.8, label="gap to mean confidence")
    top.plot([0, 1], [0, 1], ls="--", color="#444", lw=1, label="perfect calibration")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"{title}: reliability (ECE {ece:.3f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centres, count, width=width, color=GREY)
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("confidence (top class probability)")
    bottom.set_ylabel("images")
    return to_png(fig)


def f1_bars(classes: list[str], f1: list[float], support: list[int], title: str) -> bytes:
    n = len(classes)
    fig, ax = figure(figsize=(max(5.0, 0.45 * n + 2), 4.2))
    bars = ax.bar(range(n), f1, color=[BLUE if s else GREY for s in support])
    for bar, s in zip(bars, support):
        x = bar.get_x() + bar.get_width() / 2
        ax.text(x, bar.get_height() + 0.01, f"n={s}" if s else "no images", ha="center", va="bottom", fontsize=7,
                rotation=90 if n > 8 or not s else 0, color="#1d2330" if s else GREY)
    ax.set_xticks(range(n), classes, rotation=90 if n > 6 else 0, fontsize=8 if n > 6 else 10)
    return titled(fig, ax, title, xlabel="class", ylabel="F1", ylim=(0, 1.15))


def blame_figure(heads: list[str], only: list[float], among: list[float], errors: int) -> bytes:
    y = np.arange(len(heads))
    fig, ax = figure(figsize=(6.4, 1.0 + 0.6 * len(heads)))
    ax.barh(y - 0.18, among, height=0.36, color=BLUE, label="head among the wrong ones")
    ax.barh(y + 0.18, only, height=0.36, color=RED, label="only this head wrong")
    for i, (a, o) in enumerate(zip(among, only)):
        ax.text(a + 0.01, i - 0.18, f"{a:.0%}", va="center", fontsize=8)
        ax.text(o + 0.01, i + 0.18, f"{o:.0%}", va="center", fontsize=8)
    ax.set_yticks(y, heads)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.12)
    ax.set_xlabel(f"share of the {errors} wrong composite predictions")
    ax.set_title("Which head causes the composite errors")
    fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return to_png(fig)


def age_error_figure(labels: list[str], rates: list[float], counts: list[int], classes: list[str],
                     title: str) -> bytes:
    """Bars coloured by the true age class of the bucket, so the class boundaries (30, 60) show."""
    n = len(labels)
    palette = dict(zip(dict.fromkeys(classes), matplotlib.colormaps["tab10"].colors))
    fig, ax = figure(figsize=(min(14.0, max(6.0, 0.3 * n + 2)), 3.8))
    ax.bar(range(n), rates, color=[palette[c] for c in classes])
    if n <= 45:
        for i, c in enumerate(counts):
            ax.text(i, rates[i] + 0.01, str(c), ha="center", va="bottom", fontsize=7)
    for name, colour in palette.items():
        ax.bar([0], [0], color=colour, label=f"true class {name}")
    ax.legend(fontsize=8, loc="upper left", ncol=len(palette))
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_xlim(-0.7, n - 0.3)
    return titled(fig, ax, title, xlabel="true age in years (number above a bar: images)", ylabel="age error rate",
                  ylim=(0, 1.15))


def years_scatter_figure(true: list[float], estimate: list[float], edges: list[float], title: str) -> bytes:
    """A years head's expected age against the true age; the identity line and the class edges drawn in."""
    fig, ax = figure(figsize=(5.2, 5.0))
    ax.scatter(true, estimate, s=8, alpha=0.5, color=BLUE, edgecolors="none")
    low, high = min(min(true), min(estimate)), max(max(true), max(estimate))
    ax.plot([low, high], [low, high], color="#444", lw=1, label="estimate = truth")
    for edge in edges:
        ax.axvline(edge, color=GREY, lw=0.8, ls=":")
        ax.axhline(edge, color=GREY, lw=0.8, ls=":")
    ax.set_xlabel("true age in years")
    ax.set_ylabel("expected age in years")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title)
    return to_png(fig)


def threshold_figure(biases: list[float], composite_f1: list[float] | None, head_f1: list[float],
                     best: float, head: str, label: str) -> bytes:
    fig, ax = figure(figsize=(6.4, 4.0))
    if composite_f1 is not None:
        ax.plot(biases, composite_f1, marker="o", ms=3, color=BLUE, label="composite macro F1")
    ax.plot(biases, head_f1, marker="s", ms=3, color=GREY, label=f"{head} macro F1")
    ax.axvline(0, color="#444", lw=1, ls=":", label="no shift")
    ax.axvline(best, color=RED, lw=1.2, ls="--", label=f"best shift {best:+.1f}")
    ax.set_xlabel(f"bias b added to log p({head} = {label})")
    ax.set_ylabel("macro F1")
    ax.set_title(f"Moving the {label} decision")
    fig.legend(loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    ax.grid(alpha=0.3)
    return to_png(fig)


def breakdown_figure(panels: list[tuple[str, list[str], list[float], list[int]]], metric: str) -> bytes:
    """One small bar panel per metadata column: `metric` per value, images per value above the bars."""
    cols = min(3, len(panels))  # at most ~11 inches wide: the page shows it at full size
    rows = -(-len(panels) // cols)
    # long value names (incorrect_mask) are rotated; the panel grows with the number of values
    rotate = [sum(len(v) for v in p[1]) > 7 * len(p[1]) or len(p[1]) > 6 for p in panels]
    widths = [float(np.clip(0.35 * max(len(p[1]) for p in panels) + 1.6, 3.0, 3.8))] * cols
    fig, axes = figure(rows, cols, figsize=(sum(widths), 2.9 * rows), squeeze=False)
    for ax, (column, values, scores, counts), many in zip(axes.flat, panels, rotate):
        heights = [0.0 if s is None or np.isnan(s) else s for s in scores]
        ax.bar(range(len(values)), heights, color=BLUE)
        for i, c in enumerate(counts):
            ax.text(i, heights[i] + 0.01, f"n={c}", ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(values)), values, rotation=45 if many else 0, ha="right" if many else "center",
                      fontsize=8)
        ax.set_ylim(0, 1.15)
        ax.set_xlabel(column)
        ax.set_ylabel(metric)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{metric} by metadata value")
    return to_png(fig)


# ----------------------------------------------------------------------------------------------------- thumbnails
class Thumbnails:
    """Small PNG thumbnails by path, read once; `roots` are tried for paths that do not exist as written."""

    def __init__(self, *, height: int = 72, roots: tuple = ()):
        self.height = height
        self.roots = [Path(r) for r in roots]
        self.missing = 0
        self._cache: dict[str, bytes] = {}

    def resolve(self, path: str) -> Path | None:
        if not path:
            return None
        candidate = Path(path)
        if candidate.is_file():
            return candidate
        for root in self.roots:
            for option in (root / path, root / "eval" / "images" / candidate.name, root / "images" / candidate.name):
                if option.is_file():
                    return option
        return None

    def __call__(self, path) -> bytes:
        key = "" if path is None or (isinstance(path, float) and np.isnan(path)) else str(path)
        if key not in self._cache:
            self._cache[key] = self._make(key)
        return self._cache[key]

    def _make(self, path: str) -> bytes:
        found = self.resolve(path)
        image = cv2.imread(os.fspath(found), cv2.IMREAD_COLOR) if found else None
        if image is None:
            self.missing += 1
            image = np.full((self.height, int(self.height * 0.75), 3), 200, np.uint8)
            cv2.putText(image, "missing", (3, self.height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (90, 90, 90), 1,
                        cv2.LINE_AA)
        else:
            h, w = image.shape[:2]
            width = max(1, round(w * self.height / h))
            image = cv2.resize(image, (width, self.height), interpolation=cv2.INTER_AREA)
        ok, encoded = cv2.imencode(".png", image)  # BGR in, so colours stay right
        assert ok, "PNG encoding of a thumbnail failed"
        return encoded.tobytes()


def crop_grid(images: list[np.ndarray], titles: list[str], marked: list[bool], title: str, *,
              columns: int = 8) -> bytes:
    """The crops the model was fed (RGB, all one size) in a grid; `marked` tiles (fallbacks) framed red."""
    rows = max(1, -(-len(images) // columns))
    h, w = images[0].shape[:2] if images else (1, 1)
    tile = 1.25
    fig, axes = figure(rows, columns, figsize=(columns * tile, rows * tile * h / w + 0.5), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= len(images):
            ax.set_axis_off()
            continue
        ax.imshow(images[k])
        ax.set_title(titles[k], fontsize=6, color=RED if marked[k] else "#1d2330")
        for spine in ax.spines.values():
            spine.set_color(RED if marked[k] else GREY)
            spine.set_linewidth(3 if marked[k] else 0.5)
    fig.suptitle(title, fontsize=9)
    return to_png(fig)


def cam_means_figure(grid: list[list[tuple[str, np.ndarray | None, bool]]], rows: list[str], face: tuple,
                     title: str) -> bytes:
    """Mean class activation maps: a row per source, a column per class; (panel title, map or None, aligned by
    face boxes) each; an aligned panel shows where the faces were moved to (`face`, relative) as a dashed box."""
    n_rows, n_cols = len(grid), max(len(r) for r in grid)
    shape = next((m.shape for r in grid for _, m, _ in r if m is not None), (1, 1))
    fig, axes = figure(n_rows, n_cols, figsize=(1.9 * n_cols + 0.6, 1.9 * n_rows * shape[0] / shape[1] + 0.7),
                       squeeze=False)
    for i, row in enumerate(grid):
        for j, ax in enumerate(axes[i]):
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row) or row[j][1] is None:
                ax.set_title(row[j][0] if j < len(row) else "", fontsize=8)
                ax.set_frame_on(False)
                continue
            label, mean, aligned = row[j]
            h, w = mean.shape
            ax.imshow(mean, cmap="jet", interpolation="bilinear")
            if aligned:
                x0, y0, x1, y1 = face
                ax.add_patch(Rectangle((x0 * w - 0.5, y0 * h - 0.5), (x1 - x0) * w, (y1 - y0) * h, fill=False,
                                       edgecolor="white", lw=1.2, ls="--"))
            ax.set_title(label, fontsize=8)
        axes[i][0].set_ylabel(rows[i], fontsize=8)
    fig.suptitle(title, fontsize=9)
    return to_png(fig)
