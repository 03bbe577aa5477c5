"""Plotting helpers shared by the chapters. Every figure gets a title and labelled axes."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from lib.checks import check_array, check_choice
from lib.train import mean_spread, metric_over_seeds

METRIC_LABELS = {
    "val_acc": "validation accuracy",
    "train_acc": "training accuracy (running)",
    "val_loss": "validation loss",
    "train_loss": "training loss (running)",
}


def plot_learning_curves(histories: dict, metric: str = "val_acc", ax=None, title: str | None = None):
    """One curve per run: ``histories`` maps a label to a ``lib.train.History``.

    A label may also map to a list of histories, one per seed (as ``train_seeds`` returns):
    that run is drawn as its mean curve with a band of ± one spread (``plot_mean_band``).
    """
    check_choice("metric", metric, tuple(METRIC_LABELS))
    if not histories:
        raise ValueError("histories: expected at least one run")
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for label, history in histories.items():
        if isinstance(history, (list, tuple)):
            plot_mean_band(history, metric, ax=ax, label=label)
        else:
            ax.plot(history.steps, getattr(history, metric), label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel(METRIC_LABELS[metric])
    ax.set_title(title or f"{METRIC_LABELS[metric].capitalize()} during training")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_mean_band(histories: list, metric: str = "val_acc", ax=None, label: str | None = None, color=None):
    """Mean curve of ``metric`` over k seeds, shaded ± one spread around it, on ``ax``.

    The spread is the sample standard deviation across the seeds (ddof=1), as in
    ``lib.train.mean_spread``; k ≥ 2. The label says how many seeds, and how many of them
    diverged: a diverged run has no values after it stopped, so the curve ends there.
    Returns ``ax``, axes labelled; title and legend are left to the caller (``plot_learning_curves``).
    """
    check_choice("metric", metric, tuple(METRIC_LABELS))
    steps, values = metric_over_seeds(histories, metric)
    mean, std = mean_spread(values)
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    diverged = sum(history.diverged for history in histories)
    seeds = f"mean ± std over {len(histories)} seeds" + (f", {diverged} diverged" if diverged else "")
    (line,) = ax.plot(steps, mean, color=color, label=f"{label} ({seeds})" if label else seeds)
    ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.25, linewidth=0)
    ax.set_xlabel("training step")
    ax.set_ylabel(METRIC_LABELS[metric])
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
