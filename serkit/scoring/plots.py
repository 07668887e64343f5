"""PNG figures of the scoring stage: confusion matrices, layer weights, learning curves.

Figures are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas rather than
through ``pyplot``: no global figure state, no GUI backend needed on a headless cluster node, and
nothing left open in memory after saving.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 120


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")


def _annotated_matrix(fig: Figure, ax, values: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                      title: str, colour_label: str, vmax: float, ylabel: bool = True) -> None:
    """One heat map with its value written in every cell (white on dark cells, black on light)."""
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=vmax)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=colour_label)
    ticks = range(len(classes))
    ax.set_xticks(ticks, classes)
    ax.set_yticks(ticks, classes)
    ax.set_xlabel("hypothesis (predicted)")
    if ylabel:
        ax.set_ylabel("reference (true)")
    ax.set_title(title)
    for r in range(values.shape[0]):
        for c in range(values.shape[1]):
            dark = vmax > 0 and values[r, c] > 0.6 * vmax
            ax.text(c, r, labels[r, c], ha="center", va="center", color="white" if dark else "black")


def plot_confusion(path: str | Path, cm: np.ndarray, classes: Sequence[str], title: str) -> None:
    """Counts and row-normalised (% of each reference class) confusion matrices side by side."""
    cm = np.asarray(cm)
    support = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = np.where(support > 0, 100.0 * cm / np.maximum(support, 1), 0.0)
    size = 2.0 + 0.9 * len(classes)
    fig = Figure(figsize=(2 * size + 1.5, size), layout="constrained")
    fig.suptitle(title)
    count_labels = np.vectorize(str)(cm)
    percent_labels = np.vectorize(lambda v: f"{v:.1f}")(percent)
    _annotated_matrix(fig, fig.add_subplot(1, 2, 1), cm, count_labels, classes, "counts", "utterances",
                      vmax=max(int(cm.max()), 1))
    _annotated_matrix(fig, fig.add_subplot(1, 2, 2), percent, percent_labels, classes,
                      "row-normalised (% of reference)", "% of reference class", vmax=100.0, ylabel=False)
    _save(fig, path)


def plot_layer_weights(path: str | Path, weights_by_fold: Mapping[str, Sequence[float]], title: str) -> None:
    """One bar chart of the softmax layer weights per fold, plus their mean.

    A dashed line marks the uniform start (1 / number of layers), so shifts are easy to see.
    """
    panels = {**{name: list(w) for name, w in weights_by_fold.items()},
              "mean": np.mean(list(weights_by_fold.values()), axis=0).tolist()}
    n_layers = len(panels["mean"])
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(3.2 * ncols, 2.4 * nrows + 0.6))
    fig.suptitle(f"{title} (layer 0 = CNN features, 1..{n_layers - 1} = Transformer layers)")
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
    top = 100 * max(max(w) for w in panels.values()) * 1.15
    for ax, (name, weights) in zip(axes.flat, panels.items()):
        ax.bar(range(n_layers), [100 * w for w in weights], color="tab:orange" if name == "mean" else "tab:blue")
        ax.axhline(100 / n_layers, color="grey", linestyle="--", linewidth=1)
        ax.set_title(name)
        ax.set_ylim(0, top)
        ax.set_xticks(range(n_layers))
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("layer")
    for ax in axes[:, 0]:
        ax.set_ylabel("weight (%)")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    _save(fig, path)


def plot_learning_curves(path: str | Path, history_by_fold: Mapping[str, Sequence[Mapping]], title: str) -> None:
    """Train/valid loss and valid UA per epoch, one colour per fold."""
    fig = Figure(figsize=(12, 4.5))
    fig.suptitle(title)
    loss_ax, ua_ax = fig.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(history_by_fold))]
    for colour, (name, records) in zip(colours, history_by_fold.items()):
        epochs = [record.get("epoch", i + 1) for i, record in enumerate(records)]
        _plot_series(loss_ax, epochs, records, "train_loss", 1.0, colour, "-", name)
        _plot_series(loss_ax, epochs, records, "valid_loss", 1.0, colour, "--", None)
        _plot_series(ua_ax, epochs, records, "valid_UA", 100.0, colour, "-", name)
    loss_ax.set_title("loss (solid = train, dashed = valid)")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    ua_ax.set_title("validation UA")
    ua_ax.set_xlabel("epoch")
    ua_ax.set_ylabel("UA (%)")
    for ax in (loss_ax, ua_ax):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.lines:
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    _save(fig, path)


def _plot_series(ax, epochs: list, records: Sequence[Mapping], key: str, scale: float,
                 colour: str, style: str, label: str | None) -> None:
    """Plot ``key`` against epoch where the records have it (older runs may lack some keys)."""
    points = [(epoch, scale * record[key]) for epoch, record in zip(epochs, records)
              if isinstance(record.get(key), (int, float))]
    if points:
        xs, ys = zip(*points)
        ax.plot(xs, ys, style, color=colour, label=label, marker="." if len(points) < 30 else None)


def plot_comparison(path: str | Path, points: Sequence[Mapping], chance: float, title: str) -> None:
    """Pooled UA of each row of a comparison table with its 95 % interval and its folds' UA.

    ``points``: one mapping per row, top to bottom: ``label``, ``ua`` (pooled, %), ``interval`` ([low,
    high] % or None), ``folds`` (fold UAs, %), ``reference`` (bool) and ``mark`` (``*`` or "").
    The reference row's pooled UA and chance are drawn as vertical lines, so a row's interval can be
    read against both.
    """
    fig = Figure(figsize=(9.0, 1.8 + 0.7 * len(points)), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ys = list(range(len(points)))[::-1]
    for y, point in zip(ys, points):
        colour = "tab:orange" if point["reference"] else "tab:blue"
        ax.scatter(point["folds"], [y] * len(point["folds"]), s=14, color="0.6", zorder=2,
                   label="fold UA" if y == ys[0] else None)
        if point["interval"]:
            low, high = point["interval"]
            ax.plot([low, high], [y, y], color=colour, linewidth=2.5, zorder=3)
        ax.scatter([point["ua"]], [y], s=50, color=colour, zorder=4)
        ax.annotate(f"{point['ua']:.1f}{point['mark']}", (point["ua"], y), textcoords="offset points",
                    xytext=(0, 7), ha="center", fontsize=8)
        if point["reference"]:
            ax.axvline(point["ua"], color=colour, linestyle="--", linewidth=1, label="reference (pooled UA)")
    ax.axvline(chance, color="0.3", linestyle=":", linewidth=1, label=f"chance ({chance:.1f})")
    ax.set_yticks(ys, [point["label"].replace(" / ", "\n") for point in points], fontsize=8)
    ax.set_ylim(-0.7, len(points) - 0.3)
    ax.set_xlabel("UA (%): pooled with its 95 % speaker-bootstrap interval; grey: each fold")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncol=3, fontsize=7)
    _save(fig, path)
