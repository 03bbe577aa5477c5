"""Data for the book's experiments: MNIST-1D generated locally, splits, standardization, batches.

MNIST-1D (Greydanus 2020) is a 1-D, 10-class stand-in for MNIST that is small enough to
train on a CPU in seconds and hard enough that architectures and tricks still matter.
It is *generated* here from the package's templates, so nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lib.checks import check_array, check_int, check_probability

MNIST1D_CLASSES = 10


def _cache_dir() -> Path:
    return Path(os.environ.get("DLBOOK_CACHE", Path.home() / ".cache" / "dlbook"))


def load_mnist1d(cache: bool = True) -> dict:
    """Generate MNIST-1D with the package's default arguments (4000 train / 1000 test, 40 features).

    Returns ``{"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,)}``
    with float64 features and int64 labels. Generation is seeded by the package's own
    arguments and takes a few seconds; with ``cache=True`` the arrays are kept in
    ``$DLBOOK_CACHE`` (default ``~/.cache/dlbook``), keyed by those arguments.
    """
    from mnist1d.data import get_dataset_args, make_dataset  # make_dataset never downloads

    args = get_dataset_args()
    key = hashlib.sha256(json.dumps(vars(args), sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = _cache_dir() / f"mnist1d-{key}.npz"
    if cache and path.exists():
        with np.load(path) as stored:
            return {name: stored[name] for name in ("x", "y", "x_test", "y_test")}
    generated = make_dataset(args)
    data = {
        "x": generated["x"].astype(np.float64),
        "y": generated["y"].astype(np.int64),
        "x_test": generated["x_test"].astype(np.float64),
        "y_test": generated["y_test"].astype(np.int64),
    }
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **data)
        tmp.replace(path)  # atomic, so two notebooks running at once never read half a file
    return data


@dataclass(frozen=True)
class Standardizer:
    """Per-feature standardization with statistics of the *training* set.

    ``fit`` computes the mean and standard deviation of each feature on training data;
    ``transform`` applies that same shift and scale to any data (train, validation, test,
    or a single example), so every split sees one and the same function.
    Shapes: ``mean`` and ``std`` are ``(D,)``; inputs are ``(N, D)``.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x_train: np.ndarray, eps: float = 1e-12) -> "Standardizer":
        check_array("x_train", x_train, ndim=2)
        if x_train.shape[0] < 2:
            raise ValueError(f"x_train: need at least 2 examples to estimate a spread, got shape {x_train.shape}")
        std = x_train.std(axis=0)
        # A constant feature has std 0; dividing by eps instead leaves it at 0 after centering.
        return cls(mean=x_train.mean(axis=0), std=np.maximum(std, eps))

    def transform(self, x: np.ndarray) -> np.ndarray:
        self._check_features("x", x)
        return (x - self.mean) / self.std

    def inverse_transform(self, x_standardized: np.ndarray) -> np.ndarray:
        self._check_features("x_standardized", x_standardized)
        return x_standardized * self.std + self.mean

    def _check_features(self, name: str, x: np.ndarray) -> None:
        check_array(name, x, ndim=2)
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"{name}: expected shape (N, {self.mean.shape[0]}), got {x.shape}")


@dataclass(frozen=True)
class Splits:
    """Train / validation / test arrays. ``x_*`` are ``(N, D)`` float, ``y_*`` are ``(N,)`` int."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def train_val_split(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int = 0):
    """Shuffle ``(x, y)`` with ``seed`` and split off the last ``val_fraction`` as validation data."""
    check_array("x", x)
    check_array("y", y, ndim=1, float_only=False)
    if len(x) != len(y):
        raise ValueError(f"x, y: expected the same number of examples, got {len(x)} and {len(y)}")
    check_probability("val_fraction", val_fraction, closed_right=False)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(val_fraction * len(x)))
    train, val = order[: len(x) - n_val], order[len(x) - n_val :]
    return x[train], y[train], x[val], y[val]


def mnist1d_splits(val_fraction: float = 0.1, standardize: bool = True, seed: int = 0,
                   train_size: int | None = None) -> Splits:
    """MNIST-1D as train / validation / test splits, standardized with training statistics.

    The package's 4000 training examples are split into train and validation
    (``val_fraction``); its 1000 test examples are kept aside untouched. ``train_size``
    keeps only the first that many training examples (of the shuffled split), a small
    training set that a network can memorize; validation and test stay the same size.
    """
    data = load_mnist1d()
    x_train, y_train, x_val, y_val = train_val_split(data["x"], data["y"], val_fraction, seed)
    if train_size is not None:
        check_int("train_size", train_size, minimum=2)
        if train_size > len(y_train):
            raise ValueError(f"train_size: expected at most {len(y_train)} training examples, got {train_size}")
        x_train, y_train = x_train[:train_size], y_train[:train_size]
    x_test = data["x_test"]
    if standardize:
        scaler = Standardizer.fit(x_train)
        x_train, x_val, x_test = scaler.transform(x_train), scaler.transform(x_val), scaler.transform(x_test)
    return Splits(x_train, y_train, x_val, y_val, x_test, data["y_test"])


def numpy_batches(x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator | None = None):
    """Yield ``(x_batch, y_batch)`` mini-batches covering the data once.

    With ``rng`` the order is shuffled (a new permutation every call); without, it is kept.
    The last batch may be smaller.
    """
    check_int("batch_size", batch_size, minimum=1)
    if len(x) != len(y):
        raise ValueError(f"x, y: expected the same number of examples, got {len(x)} and {len(y)}")
    order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
    for start in range(0, len(x), batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index]


class TensorBatches:
    """Endless shuffled mini-batches of in-memory tensors, for step-based training.

    A ``DataLoader`` collates example by example; for data that already sits in one
    tensor (as MNIST-1D does) slicing a shuffled index is many times faster.
    Each pass over the data uses a fresh permutation drawn from ``generator``;
    ``drop_last`` keeps every batch the same size (batch norm likes that).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0, drop_last: bool = True):
        check_int("batch_size", batch_size, minimum=1)
        if len(x) != len(y):
            raise ValueError(f"x, y: expected the same number of examples, got {len(x)} and {len(y)}")
        if drop_last and batch_size > len(x):
            raise ValueError(f"batch_size: expected at most {len(x)} (the number of examples), got {batch_size}")
        self.x, self.y, self.batch_size, self.drop_last = x, y, batch_size, drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        while True:
            order = torch.randperm(len(self.x), generator=self.generator).to(self.x.device)
            stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
            for start in range(0, stop, self.batch_size):
                index = order[start : start + self.batch_size]
                yield self.x[index], self.y[index]


def to_tensors(x: np.ndarray, y: np.ndarray, device="cpu", dtype=torch.float32):
    """NumPy ``(x, y)`` to torch: features as ``dtype``, labels as int64, both on ``device``."""
    return torch.as_tensor(x, dtype=dtype, device=device), torch.as_tensor(y, dtype=torch.int64, device=device)
