"""Plotting helpers shared by the chapters. Every figure gets a title and labelled axes."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from lib.checks import check_array, check_choice

METRIC_LABELS = {
    "val_acc": "validation accuracy",
    "train_acc": "training accuracy (running)",
    "val_loss": "validation loss",
    "train_loss": "training loss (running)",
}


def plot_learning_curves(histories: dict, metric: str = "val_acc", ax=None, title: str | None = None):
    """One curve per run: ``histories`` maps a label to a ``lib.train.History``."""
    check_choice("metric", metric, tuple(METRIC_LABELS))
    if not histories:
        raise ValueError("histories: expected at least one run")
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for label, history in histories.items():
        ax.plot(history.steps, getattr(history, metric), label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel(METRIC_LABELS[metric])
    ax.set_title(title or f"{METRIC_LABELS[metric].capitalize()} during training")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def percentiles_over_time(values: list, q=(15, 50, 85)) -> np.ndarray:
    """Percentiles ``q`` of each recorded array: a list of T arrays → (T, len(q))."""
    if len(values) == 0:
        raise ValueError("values: expected at least one recorded array")
    return np.array([np.percentile(np.asarray(v), q) for v in values])


def plot_percentile_bands(steps, percentiles: np.ndarray, ax=None, title: str = "Percentiles over training",
                          ylabel: str = "value", labels=("15th", "50th", "85th"), color="C0"):
    """Plot percentile curves over time (the batch-norm paper's Fig. 1b/c). ``percentiles``: (T, k)."""
    percentiles = np.asarray(percentiles, dtype=float)
    check_array("percentiles", percentiles, ndim=2)
    if len(steps) != len(percentiles):
        raise ValueError(f"steps, percentiles: expected the same length, got {len(steps)} and {len(percentiles)}")
    if percentiles.shape[1] != len(labels):
        raise ValueError(f"labels: expected {percentiles.shape[1]} labels, got {len(labels)}")
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    styles = ["--", "-", ":"] if len(labels) == 3 else ["-"] * len(labels)
    for column, (label, style) in enumerate(zip(labels, styles)):
        ax.plot(steps, percentiles[:, column], style, color=color, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_layer_histograms(values: dict, bins: int = 60, title: str = "Per-layer distributions",
                          xlabel: str = "value", value_range=None):
    """One histogram per layer, side by side: ``values`` maps a layer name to an array of samples."""
    if not values:
        raise ValueError("values: expected at least one layer")
    fig, axes = plt.subplots(1, len(values), figsize=(3 * len(values), 2.8), sharey=True, squeeze=False)
    for ax, (name, samples) in zip(axes[0], values.items()):
        samples = np.asarray(samples, dtype=float).ravel()
        ax.hist(samples, bins=bins, range=value_range, color="C0", alpha=0.8)
        ax.set_title(f"{name}\nmean {samples.mean():+.2f}, std {samples.std():.2f}", fontsize=9)
        ax.set_xlabel(xlabel)
    axes[0, 0].set_ylabel("count")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
