"""Numeric gradient checking: two-sided differences against an analytic gradient.

The two-sided difference (f(θ+ε) − f(θ−ε)) / 2ε has error O(ε²), against O(ε) for the
one-sided one, so with ε ≈ 1e-6 in float64 a correct backward pass agrees to about 1e-8
or better. Agreement is measured with the relative error ‖a − b‖ / (‖a‖ + ‖b‖), which
does not care how large the gradient is. A norm over a whole block dilutes one bad entry,
so every check also reports the largest element-wise relative error
|a − b| / max(1e-8, |a| + |b|), the measure of the CS231n assignments.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lib.checks import check_array, check_int, check_positive

# How to read a block's relative error (float64, a shallow network, no kinks nearby): below each
# threshold, its verdict. Rules of thumb: deeper networks and kinks raise a correct gradient's reading.
READING = ((1e-7, "fine"), (1e-5, "look closer"), (1e-3, "suspicious"))


def _check_float_array(name: str, x) -> None:
    check_array(name, x, finite=True)
    if x.dtype != np.float64:
        raise TypeError(f"{name}: expected float64 (float32 round-off swamps the differences), got {x.dtype}")


def numeric_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Gradient of a scalar function ``f(x)`` by two-sided differences, entry by entry.

    ``x`` is perturbed in place and restored, so ``f`` must read it afresh on every call.
    Shapes: ``x`` any shape; the result has the shape of ``x``.
    """
    _check_float_array("x", x)
    check_positive("eps", eps)
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        grad[index] = _two_sided_difference(lambda: _as_scalar(f(x)), x, index, eps)
    return grad


def numeric_gradient_array(f, x: np.ndarray, dout: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Gradient of ``sum(f(x) * dout)`` with respect to ``x``: a layer's backward, checked.

    ``f`` maps an array to an array (a layer's forward); ``dout`` is the upstream gradient,
    shaped like ``f(x)``. The result is what the layer's backward should return for ``x``.
    """
    _check_float_array("x", x)
    _check_float_array("dout", dout)
    check_positive("eps", eps)
    out_shape = np.shape(f(x))
    if out_shape != dout.shape:
        raise ValueError(f"dout: expected the shape of f(x), {out_shape}, got {dout.shape}")
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        grad[index] = _two_sided_difference(lambda: float(np.sum(f(x) * dout)), x, index, eps)
    return grad


def _two_sided_difference(evaluate, x: np.ndarray, index, eps: float) -> float:
    saved = x[index]
    x[index] = saved + eps
    f_plus = evaluate()
    x[index] = saved - eps
    f_minus = evaluate()
    x[index] = saved  # restore, so the caller's array is unchanged
    return (f_plus - f_minus) / (2 * eps)


def _as_scalar(value) -> float:
    array = np.asarray(value)
    if array.size != 1:
        raise ValueError(f"f: expected a scalar loss, got an output of shape {array.shape}")
    return float(array.reshape(()))


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖₂ / (‖a‖₂ + ‖b‖₂), and 0 when both are exactly zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a, b: expected the same shape, got {a.shape} and {b.shape}")
    denominator = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denominator == 0 else float(np.linalg.norm(a - b) / denominator)


def elementwise_relative_error(a: np.ndarray, b: np.ndarray, floor: float = 1e-8) -> np.ndarray:
    """|a − b| / max(floor, |a| + |b|), entry by entry; its maximum is the CS231n assignments' measure.

    Unlike :func:`relative_error`, one bad entry reads high however many good ones surround it.
    ``floor`` keeps entries where both gradients are (nearly) zero from dividing by zero.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a, b: expected the same shape, got {a.shape} and {b.shape}")
    check_positive("floor", floor)
    return np.abs(a - b) / np.maximum(floor, np.abs(a) + np.abs(b))


@dataclass(eq=False)   # it holds arrays, which == cannot compare as a whole
class GradCheckResult:
    """The outcome of one check: the block's relative error, the largest element-wise one, the
    entries that disagree most, and the two gradients compared (the whole block, or for a sparse
    check the sampled entries in the order they were drawn)."""

    name: str
    relative_error: float
    elementwise_error: float  # the largest element-wise relative error
    worst: list  # (index, analytic, numeric, |difference|), largest difference first
    analytic: np.ndarray
    numeric: np.ndarray

    def passed(self, tolerance: float = 1e-7) -> bool:
        return self.relative_error < tolerance

    def report(self) -> str:
        lines = [f"{self.name}: relative error {self.relative_error:.1e}, "
                 f"largest element-wise {self.elementwise_error:.1e}"]
        for index, analytic, numeric, difference in self.worst:
            lines.append(f"  at {index}: analytic {analytic:+.6e}  numeric {numeric:+.6e}  |diff| {difference:.1e}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.report()


def compare_gradients(analytic: np.ndarray, numeric: np.ndarray, name: str = "grad", show: int = 3) -> GradCheckResult:
    """Compare an analytic gradient with a numeric one: the relative error of the whole array, the
    largest element-wise relative error, and the ``show`` entries with the largest differences."""
    check_array("analytic", analytic)
    check_array("numeric", numeric)
    if analytic.shape != numeric.shape:
        raise ValueError(f"analytic, numeric: expected the same shape, got {analytic.shape} and {numeric.shape}")
    check_int("show", show, minimum=0)
    difference = np.abs(analytic - numeric)
    order = np.argsort(difference, axis=None)[::-1][:show]
    worst = [
        (tuple(int(i) for i in np.unravel_index(flat, analytic.shape)), float(analytic.flat[flat]),
         float(numeric.flat[flat]), float(difference.flat[flat]))
        for flat in order
    ]
    return GradCheckResult(name, relative_error(analytic, numeric),
                           float(elementwise_relative_error(analytic, numeric).max(initial=0.0)), worst,
                           analytic, numeric)


def check_layer_gradients(forward, inputs: dict, grads: dict, dout: np.ndarray, eps: float = 1e-6) -> dict:
    """Check a layer's backward for several inputs at once.

    ``forward(**inputs)`` returns the layer output; ``grads[name]`` is the analytic gradient
    for ``inputs[name]`` given upstream gradient ``dout``. Returns ``{name: GradCheckResult}``.
    """
    results = {}
    for name, analytic in grads.items():
        if name not in inputs:
            raise ValueError(f"grads: {name!r} is not one of the inputs {sorted(inputs)}")
        numeric = numeric_gradient_array(lambda value: forward(**{**inputs, name: value}), inputs[name], dout, eps)
        results[name] = compare_gradients(analytic, numeric, name=name)
    return results


def params_to_vector(params: dict):
    """Flatten a dict of arrays {name: array} into one vector θ; return (θ, layout).

    ``layout`` lists (name, shape) in order, so that :func:`vector_to_params` can undo it.
    """
    if not isinstance(params, dict) or not params:
        raise TypeError("params: expected a non-empty dict of arrays, like {'W1': ..., 'b1': ...}")
    for name, value in params.items():
        check_array(f"params[{name!r}]", value)
    layout = [(name, value.shape) for name, value in params.items()]
    return np.concatenate([value.ravel() for value in params.values()]), layout


def vector_to_params(theta: np.ndarray, layout: list) -> dict:
    """The inverse of :func:`params_to_vector`: split θ back into named arrays."""
    sizes = [int(np.prod(shape)) for _, shape in layout]
    if theta.ndim != 1 or theta.size != sum(sizes):
        raise ValueError(f"theta: expected a vector of {sum(sizes)} entries, got shape {theta.shape}")
    params, start = {}, 0
    for (name, shape), size in zip(layout, sizes):
        params[name] = theta[start : start + size].reshape(shape)
        start += size
    return params


def check_model_gradients(loss, params: dict, grads: dict, eps: float = 1e-6, num_checks: int | None = None,
                          rng: np.random.Generator | None = None, show: int = 3) -> dict:
    """Check a model's analytic gradients against two-sided differences, block by block.

    ``loss()`` returns the scalar loss and must read ``params`` afresh (entries are perturbed
    in place and restored). ``grads[name]`` is the analytic gradient of ``params[name]``.
    With ``num_checks``, only that many random entries of each block are checked (a sparse
    check for large parameters; ``rng`` chooses them): it catches a bug that spoils many
    entries, and misses one confined to entries it did not draw. Returns {name: GradCheckResult}.
    """
    if set(grads) != set(params):
        raise ValueError(f"grads: expected the keys of params {sorted(params)}, got {sorted(grads)}")
    check_positive("eps", eps)
    if num_checks is not None:
        check_int("num_checks", num_checks, minimum=1)
        rng = rng if rng is not None else np.random.default_rng(0)
    results = {}
    for name, value in params.items():
        _check_float_array(f"params[{name!r}]", value)
        analytic = grads[name]
        check_array(f"grads[{name!r}]", analytic)
        if analytic.shape != value.shape:
            raise ValueError(f"grads[{name!r}]: expected shape {value.shape}, got {analytic.shape}")
        if num_checks is None:
            indices = list(np.ndindex(value.shape))
        else:
            flat = rng.choice(value.size, size=min(num_checks, value.size), replace=False)
            indices = [tuple(int(i) for i in np.unravel_index(f, value.shape)) for f in flat]
        numeric = np.array([_two_sided_difference(lambda: _as_scalar(loss()), value, index, eps) for index in indices])
        if num_checks is None:   # every entry: compare the whole block, shaped like the parameter
            results[name] = compare_gradients(analytic.copy(), numeric.reshape(value.shape), name=name, show=show)
        else:                    # the sampled entries, in the order drawn
            chosen = np.array([analytic[index] for index in indices])
            result = compare_gradients(chosen, numeric, name=name, show=show)
            result.worst = [(indices[i[0]], a, n, d) for i, a, n, d in result.worst]  # the entries' own indices
            results[name] = result
    return results


def reading(relative: float) -> str:
    """How to read a block's relative error: 'fine' below 1e-7, 'look closer' below 1e-5, 'suspicious'
    below 1e-3, and 'a bug' above. Rules of thumb for float64, a shallow network and no kinks
    nearby: depth and kinks raise a correct gradient's reading, and a block's norm can dilute
    one bad entry (see :func:`elementwise_relative_error`)."""
    for threshold, verdict in READING:
        if relative < threshold:
            return verdict
    return "a bug"
