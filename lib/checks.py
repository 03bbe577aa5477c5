"""Argument checks shared by every public function in ``lib``.

Each check raises ``TypeError`` (wrong kind of object) or ``ValueError``
(right kind, wrong value) with a message that names the argument and says
what was expected, so that a learner's mistake points at its cause.
The checks accept NumPy arrays and torch tensors alike.
"""
from __future__ import annotations

import numbers

import numpy as np

try:  # torch is a dependency of lib, but the NumPy reference must not need it to load
    import torch
except ImportError:  # pragma: no cover - exercised only without torch
    torch = None


def _is_tensor(x) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def _all_finite(x) -> bool:
    if _is_tensor(x):
        if torch._C._functorch.is_batchedtensor(x):
            # Inside torch.vmap, x stands for k tensors at once (one per vmapped model), so
            # "all finite" is k answers, not one Python bool, and asking raises. The check is
            # skipped there; lib.train.train_seeds watches each model's loss instead.
            return True
        return bool(torch.isfinite(x).all())
    return bool(np.isfinite(x).all())


def check_array(name: str, x, ndim=None, float_only: bool = True, finite: bool = True):
    """Check that ``x`` is an array (NumPy or torch) of a float dtype, finite, with ``ndim`` in ``ndim``.

    ``ndim`` is an int, a tuple of allowed ints, or None (any).
    """
    if not (isinstance(x, np.ndarray) or _is_tensor(x)):
        raise TypeError(f"{name}: expected a NumPy array or torch tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            expected = " or ".join(str(d) for d in allowed)
            raise ValueError(f"{name}: expected {expected} dimensions, got shape {tuple(x.shape)} ({x.ndim} dimensions)")
    if float_only:
        is_float = x.is_floating_point() if _is_tensor(x) else np.issubdtype(x.dtype, np.floating)
        if not is_float:
            raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype}")
    if finite and not _all_finite(x):
        raise ValueError(f"{name}: contains NaN or infinity")
    return x


def check_shape(name: str, x, shape: tuple) -> None:
    """Check that ``x`` has exactly ``shape``."""
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(x.shape)}")


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    """Check that ``value`` is a finite real number > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {expected}, got {value}")
    return float(value)


def check_probability(name: str, value, closed_right: bool = True) -> float:
    """Check that ``value`` lies in [0, 1] (or [0, 1) with ``closed_right=False``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__}")
    upper_ok = value <= 1 if closed_right else value < 1
    if not (np.isfinite(value) and value >= 0 and upper_ok):
        interval = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"{name}: expected a probability in {interval}, got {value}")
    return float(value)


def check_int(name: str, value, minimum: int | None = None) -> int:
    """Check that ``value`` is an integer (not a bool), at least ``minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def check_choice(name: str, value, choices) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")
    return value
