"""Regularization: weight decay, dropout and its relatives.

NumPy reference first, torch path after; both follow the chapter's equations in order.

Weight decay comes in two forms (Loshchilov & Hutter 2019):

    L2 penalty:        L̃(W) = L(W) + ½λ‖W‖²,  so the gradient gains λW: g ← g + λW      (1)
    decoupled decay:   W ← W − η·λ·W, applied outside the gradient, then the optimizer's step  (2)

For plain SGD (no momentum) both give W ← W − η(g + λW): the same update. Adam divides the
gradient by √v̂, so under (1) the decay λW is rescaled unit by unit while under (2) it is not:
torch's ``Adam(weight_decay=λ)`` is (1), ``AdamW(weight_decay=λ)`` is (2).

The rest of the module shares one pattern: randomness in training, averaged out at test.

    layer                   what is random in training          what test time uses
    dropout (lib.layers)    which units are kept                the expected output (a scale)
    Monte-Carlo dropout     (as dropout)                        an average over k sampled masks
    DropConnect             which weights are kept              the expected weights
    stochastic depth        which residual blocks are kept      each branch times its survival p_l
    fractional max pooling  where the pooling regions start     one draw (or an average of several)

Probabilities: ``p`` is always the probability of DROPPING (a unit, a weight), as in PyTorch's
``nn.Dropout(p)``: kept with probability 1 − p, kept where a uniform draw u satisfies u ≥ p
(``lib.layers.keep_mask_from_draws``). Stochastic depth keeps the paper's convention instead
(Huang et al. 2016): ``survival_p`` is the probability of KEEPING a block, kept where u < p_l.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lib.checks import check_array, check_choice, check_int, check_positive, check_probability, check_shape
from lib.layers import (
    affine_backward, affine_forward, check_keep_mask, keep_mask, relu_backward, relu_forward, softmax,
)

__all__ = [
    "l2_penalty", "sgd_step", "adam_step",
    "mc_dropout_predict",
    "dropconnect_forward", "dropconnect_backward",
    "survival_probabilities", "expected_depth", "expected_depth_linear", "residual_block_forward",
    "residual_block_backward",
    "pooling_intervals", "fractional_output_size", "fractional_max_pool2d", "fractional_max_pool2d_backward",
    "l2_penalty_torch", "mc_dropout_predict_torch", "DropConnectLinear", "StochasticDepthBlock",
    "StochasticDepthMLP",
]

STOCHASTIC_DEPTH_MODES = ("original", "inverted")


# ---------------------------------------------------------------------------------------
# Weight decay (NumPy reference): the penalty, and SGD and Adam with either form of decay
# ---------------------------------------------------------------------------------------

def _named_arrays(name: str, arrays) -> dict:
    """{key: array} for a dict of arrays, {index: array} for a list or tuple of them."""
    if isinstance(arrays, dict):
        named = dict(arrays)
    elif isinstance(arrays, (list, tuple)):
        named = dict(enumerate(arrays))
    else:
        raise TypeError(f"{name}: expected a dict or list of arrays, got {type(arrays).__name__}")
    if not named:
        raise ValueError(f"{name}: expected at least one array, got none")
    for key, value in named.items():
        check_array(f"{name}[{key!r}]", value)
    return named


def _like(template, named: dict):
    """``named`` in the container type of ``template``: a dict stays a dict, a list becomes a list."""
    return dict(named) if isinstance(template, dict) else [named[i] for i in range(len(named))]


def _matching_grads(params: dict, grads) -> dict:
    """``grads`` as {key: array}, checked to have the keys (in order) and shapes of ``params``."""
    named = _named_arrays("grads", grads)
    if list(named) != list(params):
        raise ValueError(f"grads: expected the keys of params {list(params)}, got {list(named)}")
    for key, value in named.items():
        check_shape(f"grads[{key!r}]", value, params[key].shape)
    return named


def l2_penalty(weights, lam: float):
    """The L2 penalty ½λΣ‖W‖² of equation (1) and its gradient λW for each weight.

    ``weights``: a dict {name: array} or a list of arrays: pass the weights only, since biases are
    usually left unpenalized (as ``lib.layers.mlp_loss`` does). ``lam`` ≥ 0.
    Returns ``(penalty, grads)``: a float, and the arrays λW shaped like the weights, in a
    container of the same kind (same keys or order).
    """
    lam = check_positive("lam", lam, allow_zero=True)
    named = _named_arrays("weights", weights)
    penalty = 0.5 * lam * sum(np.sum(w**2) for w in named.values())
    return float(penalty), _like(weights, {key: lam * w for key, w in named.items()})


def sgd_step(params, grads, lr: float, weight_decay: float = 0.0, decoupled: bool = False,
             momentum: float = 0.0, state: dict | None = None) -> dict:
    """One step of SGD on NumPy arrays, in place, as ``torch.optim.SGD`` takes it (no dampening,
    no Nesterov), with weight decay λ = ``weight_decay`` in either form:

      decoupled=False (L2, torch's SGD(weight_decay=λ)):  g ← g + λW                (1)
      decoupled=True  (SGDW, Loshchilov & Hutter 2019):   W ← W − lr·λ·W            (2)
      momentum μ:  v ← μ·v + g (v = g on the first step), and the step uses v in place of g
      step:        W ← W − lr·g

    With momentum 0 the two forms are the same update W − lr(g + λW). With momentum they differ:
    under (1) λW enters the velocity and accumulates with the gradient, under (2) it does not.
    ``params`` and ``grads``: dicts {name: array} with the same keys and shapes, or lists.
    ``state`` holds the velocities ({key: v}); pass the returned state to the next call.
    """
    named = _named_arrays("params", params)
    named_grads = _matching_grads(named, grads)
    lr = check_positive("lr", lr)
    weight_decay = check_positive("weight_decay", weight_decay, allow_zero=True)
    momentum = check_probability("momentum", momentum, closed_right=False)
    state = {} if state is None else state
    if not isinstance(state, dict):
        raise TypeError(f"state: expected a dict (or None for the first step), got {type(state).__name__}")
    for key, w in named.items():
        g = named_grads[key]
        if decoupled:
            w *= 1.0 - lr * weight_decay                     # (2): shrink W itself, outside the gradient
        else:
            g = g + weight_decay * w                         # (1): the penalty's gradient λW joins g
        if momentum > 0:
            velocity = state.get(key)
            state[key] = g.copy() if velocity is None else momentum * velocity + g
            g = state[key]
        w -= lr * g
    return state


def adam_step(params, grads, state: dict | None, lr: float, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
              weight_decay: float = 0.0, decoupled: bool = False) -> dict:
    """One Adam step on NumPy arrays, in place, as ``torch.optim.Adam`` and ``torch.optim.AdamW`` take it:

      decoupled=False (torch's Adam(weight_decay=λ)):  g ← g + λW                  (1)
      decoupled=True  (AdamW):                         W ← W − lr·λ·W              (2)
      t ← t + 1
      m ← β₁m + (1 − β₁)g,   v ← β₂v + (1 − β₂)g²       (moments, zero at the start)
      m̂ = m / (1 − β₁ᵗ),     v̂ = v / (1 − β₂ᵗ)          (bias corrections)
      W ← W − lr · m̂ / (√v̂ + ε)

    Under (1) the decay passes through the division by √v̂, so weights with large gradients are
    decayed less; under (2) every weight shrinks by the same factor 1 − lr·λ.
    ``params``, ``grads``: dicts or lists of arrays with the same keys and shapes. ``state``: the
    dict a previous call returned ({'step': t, 'm': {...}, 'v': {...}}), or None (or {}) at the start.
    """
    named = _named_arrays("params", params)
    named_grads = _matching_grads(named, grads)
    lr = check_positive("lr", lr)
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise TypeError(f"betas: expected a pair (β₁, β₂), got {betas!r}")
    beta1 = check_probability("betas[0]", betas[0], closed_right=False)
    beta2 = check_probability("betas[1]", betas[1], closed_right=False)
    eps = check_positive("eps", eps)
    weight_decay = check_positive("weight_decay", weight_decay, allow_zero=True)
    state = {} if state is None else state
    if not isinstance(state, dict):
        raise TypeError(f"state: expected a dict (or None for the first step), got {type(state).__name__}")
    state.setdefault("step", 0)
    state.setdefault("m", {})
    state.setdefault("v", {})
    state["step"] += 1
    t = state["step"]
    for key, w in named.items():
        g = named_grads[key]
        if decoupled:
            w *= 1.0 - lr * weight_decay                     # (2)
        else:
            g = g + weight_decay * w                         # (1)
        m = beta1 * state["m"].get(key, 0.0) + (1 - beta1) * g
        v = beta2 * state["v"].get(key, 0.0) + (1 - beta2) * g**2
        state["m"][key], state["v"][key] = m, v
        # the bias corrections arranged as torch arranges them, so the two agree to round-off:
        # lr·m̂/(√v̂ + ε) = (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
        step_size = lr / (1 - beta1**t)
        denominator = np.sqrt(v) / math.sqrt(1 - beta2**t) + eps
        w -= step_size * m / denominator
    return state


# ---------------------------------------------------------------------------------------
# Monte-Carlo dropout (NumPy reference)
# ---------------------------------------------------------------------------------------

def mc_dropout_predict(forward, x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Monte-Carlo dropout inference: the average of softmax(scores) over k stochastic forward passes.

    ``forward(x, rng)`` returns class scores (N, C) with dropout in training mode, a fresh mask on
    every call; the weight-scaling rule instead makes one deterministic pass with dropout in test mode.
    Shapes: x (N, ...) → probabilities (N, C), rows sum to 1.
    """
    if not callable(forward):
        raise TypeError(f"forward: expected a callable forward(x, rng) -> scores, got {type(forward).__name__}")
    k = check_int("k", k, minimum=1)
    check_array("x", x)
    total = 0.0
    for _ in range(k):
        total = total + softmax(forward(x, rng))
    return total / k


# ---------------------------------------------------------------------------------------
# DropConnect (NumPy reference): drop weights instead of units
# ---------------------------------------------------------------------------------------

def dropconnect_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, p: float,
                        rng: np.random.Generator | None = None, mask: np.ndarray | None = None, train: bool = True):
    """DropConnect (Wan et al. 2013): an affine layer whose WEIGHTS are dropped, each with probability ``p``.

    Training: keep = (u ≥ p) for each weight (or the given 0/1 ``mask``, shaped like ``w``), then
    out = x @ (w · keep / (1 − p)) + b. The inverted scaling makes E[w · keep / (1 − p)] = w, so test
    time uses out = x @ w + b. That is the mean approximation; the paper's inference instead
    moment-matches a Gaussian to each unit's input and averages the activation over samples of it,
    which matters before a nonlinearity. One mask serves the whole mini-batch here (the paper draws
    one per example); the expected output is the same.

    Shapes: x (N, D), w (D, M), b (M,) → out (N, M). Returns ``(out, cache)``.
    """
    check_array("w", w, ndim=2)
    p = check_probability("p", p, closed_right=False)
    if not train:
        if mask is not None:
            raise ValueError("mask: test time (train=False) is deterministic and takes no mask")
        out, affine_cache = affine_forward(x, w, b)
        return out, (affine_cache, np.ones(w.shape))
    keep = keep_mask(w.shape, p, rng, mask)
    weight_scale = keep / (1.0 - p)                          # inverted: E[weight_scale] = 1
    out, affine_cache = affine_forward(x, w * weight_scale, b)
    return out, (affine_cache, weight_scale)


def dropconnect_backward(dout: np.ndarray, cache):
    """Gradients (dx, dw, db) of :func:`dropconnect_forward`.

    The layer is affine in the used weights w̃ = w · keep / (1 − p), so dx and db are the affine
    layer's, and dw = dw̃ · keep / (1 − p): a dropped weight gets no gradient.
    Shapes: dout (N, M) → dx (N, D), dw (D, M), db (M,).
    """
    affine_cache, weight_scale = cache
    dx, dw_used, db = affine_backward(dout, affine_cache)
    return dx, dw_used * weight_scale, db


# ---------------------------------------------------------------------------------------
# Stochastic depth (NumPy reference): residual blocks dropped whole
# ---------------------------------------------------------------------------------------

def survival_probabilities(num_blocks: int, p_last: float) -> np.ndarray:
    """Huang et al. 2016's linear decay rule: p_l = 1 − (l / L)(1 − p_L) for blocks l = 1, ..., L.

    The block nearest the input survives almost always, the last one with probability p_L
    (the paper uses p_L = 0.5). Shapes: → (num_blocks,).
    """
    num_blocks = check_int("num_blocks", num_blocks, minimum=1)
    p_last = _check_survival("p_last", p_last)
    blocks = np.arange(1, num_blocks + 1)
    return 1.0 - blocks / num_blocks * (1.0 - p_last)


def expected_depth(probabilities) -> float:
    """The expected number of residual blocks a training pass runs: E[Σ b_l] = Σ p_l.

    For the linear rule the sum is exactly L − (1 − p_L)(L + 1)/2 = L(1 + p_L)/2 − (1 − p_L)/2
    (:func:`expected_depth_linear`): Huang et al.'s (3L − 1)/4 for p_L = 0.5, about 40 of L = 54
    blocks. The often quoted L(1 + p_L)/2 drops the constant (1 − p_L)/2: a large-L approximation.
    Shapes: probabilities (L,) → a float.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    check_array("probabilities", probabilities, ndim=1)
    for index, value in enumerate(probabilities):
        _check_survival(f"probabilities[{index}]", float(value))
    return float(probabilities.sum())


def expected_depth_linear(num_blocks: int, p_last: float) -> float:
    """Closed form of Σ p_l for the linear rule: L − (1 − p_L)(L + 1)/2.

    From Σ_{l=1}^{L} (l / L) = (L + 1)/2. Equal to (3L − 1)/4 for p_L = 0.5.
    """
    num_blocks = check_int("num_blocks", num_blocks, minimum=1)
    p_last = _check_survival("p_last", p_last)
    return num_blocks - (1.0 - p_last) * (num_blocks + 1) / 2


def _check_survival(name: str, value) -> float:
    """A survival probability must lie in (0, 1]: a block that never survives would never train."""
    value = check_probability(name, value)
    if value == 0:
        raise ValueError(f"{name}: expected a survival probability in (0, 1], got {value}")
    return value


def _branch_forward(x: np.ndarray, params: dict):
    """The residual branch f(x) = relu(x W1 + b1) W2 + b2."""
    h, first_cache = affine_forward(x, params["W1"], params["b1"])
    a, relu_cache = relu_forward(h)
    f, second_cache = affine_forward(a, params["W2"], params["b2"])
    return f, (first_cache, relu_cache, second_cache)


def _branch_backward(df: np.ndarray, cache):
    first_cache, relu_cache, second_cache = cache
    da, dW2, db2 = affine_backward(df, second_cache)
    dx, dW1, db1 = affine_backward(relu_backward(da, relu_cache), first_cache)
    return dx, {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}


def _check_block_params(params: dict, width: int) -> None:
    if not isinstance(params, dict) or set(params) != {"W1", "b1", "W2", "b2"}:
        keys = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected keys W1, b1, W2, b2, got {keys}")
    check_array("params['W2']", params["W2"], ndim=2)
    if params["W2"].shape[1] != width:
        raise ValueError(f"params['W2']: the branch must return x's width {width} to be added to x, "
                         f"got shape {params['W2'].shape}")


def residual_block_forward(x: np.ndarray, params: dict, survive: bool | None, survival_p: float,
                           train: bool = True, rng: np.random.Generator | None = None, mode: str = "original"):
    """A residual block whose branch is dropped whole (stochastic depth, Huang et al. 2016).

    out = x + s · f(x), with the branch f(x) = relu(x W1 + b1) W2 + b2 and the factor s:

      training: the block survives (b = 1) with probability p_l = ``survival_p``, drawn as u < p_l
                from ``rng`` unless ``survive`` fixes it; s = b (``mode="original"``, the paper's)
                or b / p_l (``mode="inverted"``, torchvision's ``stochastic_depth``);
      test:     s = p_l (original: the branch's expected contribution) or 1 (inverted).

    A dropped block skips f altogether: that is the training time stochastic depth saves. The
    paper's block also applies a ReLU after the sum; this one leaves it out (the pre-activation
    form), which changes nothing about dropping the branch.
    Shapes: x (N, D), W1 (D, H), b1 (H,), W2 (H, D), b2 (D,) → out (N, D). Returns ``(out, cache)``.
    """
    check_array("x", x, ndim=2)
    _check_block_params(params, x.shape[1])
    survival_p = _check_survival("survival_p", survival_p)
    check_choice("mode", mode, STOCHASTIC_DEPTH_MODES)
    if not train:
        if survive is not None:
            raise ValueError("survive: test time (train=False) is deterministic and takes no survive")
        scale = survival_p if mode == "original" else 1.0
    else:
        if survive is None:
            if rng is None:
                raise TypeError("rng: a training pass with survive=None needs a np.random.Generator")
            survive = bool(rng.random() < survival_p)        # survival_p is a KEEP probability: u < p_l
        elif not isinstance(survive, (bool, np.bool_)):
            raise TypeError(f"survive: expected True, False or None, got {type(survive).__name__}")
        if not survive:
            return x.copy(), {"scale": 0.0, "branch": None, "params": params}   # the branch is not run
        scale = 1.0 if mode == "original" else 1.0 / survival_p
    f, branch_cache = _branch_forward(x, params)
    return x + scale * f, {"scale": scale, "branch": branch_cache, "params": params}


def residual_block_backward(dout: np.ndarray, cache: dict):
    """Gradients of :func:`residual_block_forward`: (dx, {'W1', 'b1', 'W2', 'b2'}).

    dx = dout + s · (∂f/∂x)ᵀ dout: the identity path always carries the gradient, the branch only
    when it ran; a dropped block's parameters get zero gradients. Shapes: dout (N, D) → dx (N, D).
    """
    if cache["branch"] is None:
        return dout.copy(), {key: np.zeros_like(value) for key, value in cache["params"].items()}
    dx_branch, grads = _branch_backward(cache["scale"] * dout, cache["branch"])
    return dout + dx_branch, grads


# ---------------------------------------------------------------------------------------
# Fractional max pooling (NumPy reference), index for index as torch's ATen kernel
# ---------------------------------------------------------------------------------------

def _pair(name: str, value, kind) -> tuple:
    """(value, value) for one number, or a checked pair."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, kind) and not isinstance(v, bool) for v in pair):
        raise TypeError(f"{name}: expected a number or a pair of numbers, got {value!r}")
    return pair


def pooling_intervals(input_size: int, output_size: int, pool_size: int, sample) -> np.ndarray:
    """Start index of every pooling region along one axis, as torch's ATen ``generate_intervals``:

      α' = (input_size − pool_size) / (output_size − 1)
      start_i = ⌊(i + u) α'⌋ − ⌊u α'⌋   for i = 0, ..., output_size − 2
      start_last = input_size − pool_size

    u = ``sample`` ∈ [0, 1) is the random part. The steps between starts are ⌊α'⌋ or ⌈α'⌉ in a
    pseudo-random order (Graham 2014's pseudo-random sequence; his α = input/output is close to α').
    The arithmetic runs in the sample's float type, as ATen's runs in the input's.
    Shapes: sample a scalar or an array (...) → int64 starts (..., output_size).
    """
    input_size = check_int("input_size", input_size, minimum=1)
    output_size = check_int("output_size", output_size, minimum=1)
    pool_size = check_int("pool_size", pool_size, minimum=1)
    if output_size + pool_size - 1 > input_size:
        raise ValueError(f"output_size: {output_size} regions of size {pool_size} do not fit in {input_size} "
                         f"inputs (need output_size + pool_size − 1 ≤ input_size)")
    sample = np.asarray(sample)
    if not np.issubdtype(sample.dtype, np.floating):
        sample = sample.astype(np.float64)
    if not np.all((sample >= 0) & (sample < 1)):
        raise ValueError("sample: expected values in [0, 1)")
    dtype = sample.dtype.type
    starts = np.empty(sample.shape + (output_size,), dtype=np.int64)
    if output_size > 1:
        alpha = dtype(input_size - pool_size) / dtype(output_size - 1)
        i = np.arange(output_size - 1).astype(dtype)
        u = sample[..., None]
        # int() in C++ truncates toward zero, which for these non-negative values is the floor
        starts[..., :-1] = np.trunc((i + u) * alpha).astype(np.int64) - np.trunc(u * alpha).astype(np.int64)
    starts[..., -1] = input_size - pool_size
    return starts


def fractional_output_size(input_size: int, alpha: float) -> int:
    """Output size for a reduction ratio α ∈ (1, 2): int(input_size · (1/α)), as torch computes it
    from ``output_ratio = 1/α``. For α = √2 two layers halve the size: 32 → 22 → 15."""
    input_size = check_int("input_size", input_size, minimum=1)
    alpha = _check_alpha("alpha", alpha)
    return int(input_size * (1.0 / alpha))


def _check_alpha(name: str, alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(alpha).__name__}")
    if not 1 < alpha < 2:
        raise ValueError(f"{name}: expected a reduction ratio α in (1, 2), got {alpha}")
    return float(alpha)


def _fractional_output_shape(x_shape, kernel, output_size, output_ratio, alpha) -> tuple:
    """(oH, oW) from exactly one of output_size, output_ratio (torch's, 1/α) or alpha."""
    given = [name for name, value in (("output_size", output_size), ("output_ratio", output_ratio),
                                      ("alpha", alpha)) if value is not None]
    if len(given) != 1:
        raise ValueError(f"output_size, output_ratio, alpha: give exactly one of them, got {given or 'none'}")
    if output_size is not None:
        shape = _pair("output_size", output_size, numbers.Integral)
    else:
        if output_ratio is not None:
            ratios = _pair("output_ratio", output_ratio, numbers.Real)
            for ratio in ratios:
                if not 0.5 < ratio < 1:
                    raise ValueError(f"output_ratio: expected torch's output/input ratio 1/α in (1/2, 1), "
                                     f"that is α in (1, 2), got {output_ratio}")
        else:
            ratios = tuple(1.0 / _check_alpha("alpha", a) for a in _pair("alpha", alpha, numbers.Real))
        shape = tuple(int(size * ratio) for size, ratio in zip(x_shape[2:], ratios))   # torch's rounding
    for size, k, in_size, axis in zip(shape, kernel, x_shape[2:], ("height", "width")):
        if size < 1 or size + k - 1 > in_size:
            raise ValueError(f"output_size: {axis} {size} with kernel {k} does not fit the input's {in_size} "
                             f"(need 1 ≤ output ≤ input − kernel + 1)")
    return tuple(int(s) for s in shape)


def fractional_max_pool2d(x: np.ndarray, kernel_size, output_size=None, output_ratio=None, samples=None,
                          rng: np.random.Generator | None = None, alpha=None):
    """Fractional max pooling (Graham 2014): max over kernel_size regions whose starts step by 1 or 2
    in a pseudo-random order, so the size shrinks by a fraction α ∈ (1, 2) instead of 2.

    The output size comes from exactly one of: ``output_size`` (oH, oW) (or one int); ``alpha``, the
    paper's reduction ratio α ∈ (1, 2); or ``output_ratio``, torch's name for 1/α ∈ (1/2, 1). Either
    gives int(H · (1/α)) as ``torch.nn.functional.fractional_max_pool2d`` does.
    ``samples`` (N, C, 2), values in [0, 1), are the random part, one pair per (example, channel):
    ``samples[n, c, 0]`` places the columns (width) and ``samples[n, c, 1]`` the rows (height), as in
    ATen. Drawn from ``rng`` when not given. Given the same samples, the output equals torch's value
    for value and the argmax indices equal ``return_indices=True``'s.

    Shapes: x (N, C, H, W) → out (N, C, oH, oW). Returns ``(out, cache)``; ``cache['indices']``
    (N, C, oH, oW) holds each maximum's flat position h·W + w in its plane.
    """
    check_array("x", x, ndim=4)
    n, c, height, width = x.shape
    kernel = tuple(check_int("kernel_size", k, minimum=1) for k in _pair("kernel_size", kernel_size, numbers.Integral))
    out_h, out_w = _fractional_output_shape(x.shape, kernel, output_size, output_ratio, alpha)
    if samples is None:
        if rng is None:
            raise TypeError("rng: fractional max pooling without samples needs a np.random.Generator")
        samples = rng.random((n, c, 2))
    check_array("samples", samples, ndim=3)
    check_shape("samples", samples, (n, c, 2))
    samples = np.asarray(samples, dtype=x.dtype)            # ATen computes the starts in the input's type
    if not np.all((samples >= 0) & (samples < 1)):
        raise ValueError(f"samples: expected values in [0, 1) (in x's dtype {x.dtype})")
    row_starts = pooling_intervals(height, out_h, kernel[0], samples[:, :, 1])     # (N, C, oH)
    col_starts = pooling_intervals(width, out_w, kernel[1], samples[:, :, 0])      # (N, C, oW)
    rows = row_starts[..., :, None] + np.arange(kernel[0])                          # (N, C, oH, kH)
    cols = col_starts[..., :, None] + np.arange(kernel[1])                          # (N, C, oW, kW)
    # flat position h·W + w of every element of every region: (N, C, oH, oW, kH·kW), row by row,
    # the order ATen scans a region in (so ties go to the first maximum, as there)
    positions = (rows[:, :, :, None, :, None] * width + cols[:, :, None, :, None, :]).reshape(n, c, out_h, out_w, -1)
    values = np.take_along_axis(x.reshape(n, c, 1, 1, height * width), positions, axis=-1)
    best = values.argmax(axis=-1)[..., None]
    out = np.take_along_axis(values, best, axis=-1)[..., 0]
    indices = np.take_along_axis(positions, best, axis=-1)[..., 0]
    return out, {"indices": indices, "input_shape": x.shape, "samples": samples}


def fractional_max_pool2d_backward(dout: np.ndarray, cache: dict) -> np.ndarray:
    """Gradient of :func:`fractional_max_pool2d`: each output's gradient goes to its argmax.

    Regions can overlap (kernel 2 with a step of 1), so one input can be the maximum of several
    regions; its gradient is then the sum. Shapes: dout (N, C, oH, oW) → dx (N, C, H, W).
    """
    n, c, height, width = cache["input_shape"]
    check_array("dout", dout, ndim=4)
    check_shape("dout", dout, cache["indices"].shape)
    dx = np.zeros((n, c, height * width), dtype=dout.dtype)
    planes = np.arange(n * c).reshape(n, c, 1, 1)
    # np.add.at adds every term, also repeated indices (a plain dx[...] += would keep only one)
    np.add.at(dx.reshape(-1), (planes * height * width + cache["indices"]).ravel(), dout.ravel())
    return dx.reshape(n, c, height, width)


# ---------------------------------------------------------------------------------------
# Torch path: the same equations as modules; autograd supplies the backward
# ---------------------------------------------------------------------------------------

def l2_penalty_torch(weights, lam: float) -> torch.Tensor:
    """½λΣ‖W‖² over an iterable of tensors (pass the weights, not the biases), to add to a loss."""
    lam = check_positive("lam", lam, allow_zero=True)
    weights = list(weights)
    if not weights:
        raise ValueError("weights: expected at least one tensor, got none")
    return 0.5 * lam * sum(w.pow(2).sum() for w in weights)


class DropConnectLinear(nn.Linear):
    """``nn.Linear`` with DropConnect: in training, each weight is dropped with probability ``p`` and
    the kept ones are scaled by 1/(1 − p); in eval mode the layer is the plain linear layer.

    The same as :func:`dropconnect_forward` with torch's weight layout (out, in): a fixed ``mask``
    passed to ``forward`` has the weight's shape (out_features, in_features), the transpose of the
    NumPy reference's (D, M). One mask per forward call, shared by the mini-batch; masks are drawn
    from torch's global generator (seed it with ``lib.device.set_seed``).
    """

    def __init__(self, in_features: int, out_features: int, p: float = 0.5, bias: bool = True):
        super().__init__(check_int("in_features", in_features, minimum=1),
                         check_int("out_features", out_features, minimum=1), bias=bias)
        self.p = check_probability("p", p, closed_right=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training:
            if mask is not None:
                raise ValueError("mask: eval mode is deterministic and takes no mask")
            return F.linear(x, self.weight, self.bias)
        if mask is None:
            keep = torch.rand_like(self.weight) >= self.p          # u ≥ p: kept, as in the NumPy reference
        else:
            keep = check_keep_mask("mask", mask, tuple(self.weight.shape))
        weight_scale = keep.to(self.weight.dtype) / (1.0 - self.p)     # in the weight's dtype, not float32
        return F.linear(x, self.weight * weight_scale, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"


class StochasticDepthBlock(nn.Module):
    """A residual block x + s · branch(x) whose branch is dropped whole in training (Huang et al. 2016).

    ``survival_p`` is the probability p_l of KEEPING the branch. Like :func:`residual_block_forward`:
    ``mode="original"`` (the paper) uses s = b ∈ {0, 1} in training and s = p_l in eval mode;
    ``mode="inverted"`` uses s = b / p_l in training and s = 1 in eval mode, which is
    ``x + torchvision.ops.stochastic_depth(branch(x), 1 − p_l, mode)`` (same draws, same output).
    ``per_example=False`` draws one b for the mini-batch (the paper; torchvision's "batch") and
    skips a dropped branch, saving its time; ``per_example=True`` draws one per example
    (torchvision's "row"), which must still run the branch. ``forward(x, survive=...)`` fixes b
    (one mini-batch draw) for checking. After each training call, ``last_survival`` holds the
    fraction of the mini-batch whose branch ran (None in eval mode).
    """

    def __init__(self, branch: nn.Module, survival_p: float, mode: str = "original", per_example: bool = False):
        super().__init__()
        if not isinstance(branch, nn.Module):
            raise TypeError(f"branch: expected an nn.Module, got {type(branch).__name__}")
        self.branch = branch
        self.survival_p = _check_survival("survival_p", survival_p)
        self.mode = check_choice("mode", mode, STOCHASTIC_DEPTH_MODES)
        self.per_example = bool(per_example)
        self.last_survival = None

    def forward(self, x: torch.Tensor, survive: bool | None = None) -> torch.Tensor:
        if not self.training:
            if survive is not None:
                raise ValueError("survive: eval mode is deterministic and takes no survive")
            self.last_survival = None
            return x + (self.survival_p if self.mode == "original" else 1.0) * self.branch(x)
        if survive is not None and self.per_example:
            raise ValueError("survive: fixes one draw for the mini-batch; per_example=True draws one per example")
        # b ~ Bernoulli(p_l), drawn with the same call as torchvision's stochastic_depth so that
        # the same generator state gives the same draws
        draw_shape = [x.shape[0] if self.per_example else 1] + [1] * (x.ndim - 1)
        if survive is None:
            keep = torch.empty(draw_shape, dtype=x.dtype, device=x.device).bernoulli_(self.survival_p)
        else:
            keep = torch.full(draw_shape, float(bool(survive)), dtype=x.dtype, device=x.device)
        self.last_survival = float(keep.mean())
        if not self.per_example and self.last_survival == 0:
            return x                                    # dropped: the branch is not run at all
        scale = keep if self.mode == "original" else keep / self.survival_p
        return x + self.branch(x) * scale

    def extra_repr(self) -> str:
        return f"survival_p={self.survival_p:.4g}, mode={self.mode!r}, per_example={self.per_example}"


class StochasticDepthMLP(nn.Module):
    """A residual MLP for stochastic depth: Linear(in, width) → L blocks → ReLU → Linear(width, classes).

    Block l is x + branch_l(x) with branch_l = Linear → ReLU → Linear (width → width), wrapped in a
    :class:`StochasticDepthBlock` with survival probability p_l from :func:`survival_probabilities`
    (``p_last=1`` keeps every block: a plain residual MLP). Shapes: x (N, in_features) → scores (N, classes).
    """

    def __init__(self, in_features: int, width: int, num_blocks: int, num_classes: int, p_last: float = 0.5,
                 mode: str = "original"):
        super().__init__()
        in_features = check_int("in_features", in_features, minimum=1)
        width = check_int("width", width, minimum=1)
        num_classes = check_int("num_classes", num_classes, minimum=1)
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(
            StochasticDepthBlock(nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width)),
                                 float(p), mode=mode)
            for p in survival_probabilities(num_blocks, p_last))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.head(torch.relu(h))

    def blocks_run(self) -> float | None:
        """How many blocks the last training pass ran (None after an eval pass)."""
        survivals = [block.last_survival for block in self.blocks]
        return None if None in survivals else float(sum(survivals))


# modules that stay random under Monte-Carlo inference: torch's dropout layers and this module's relatives
STOCHASTIC_MODULES = (nn.modules.dropout._DropoutNd, DropConnectLinear, StochasticDepthBlock)


def mc_dropout_predict_torch(model: nn.Module, x: torch.Tensor, k: int, average: str = "arithmetic") -> torch.Tensor:
    """Monte-Carlo dropout with a torch model: the mean of softmax(model(x)) over k passes.

    ``average="geometric"`` gives the normalized geometric mean instead, softmax of the mean
    log-softmax: the average that weight scaling reproduces exactly for one hidden layer and a
    softmax output (Hinton et al. 2012), and approximately in deeper networks.

    Dropout layers (every ``nn.Dropout*``, and :class:`DropConnectLinear` and
    :class:`StochasticDepthBlock`) run in training mode, so each pass draws new masks; every other
    module (batch norm above all) stays in eval mode, since only the dropout randomness is to be
    averaged. Only those modules' own flags are switched, not their children's, and every module's
    mode is restored afterwards. Draws come from torch's global generator.
    Shapes: x (N, ...) → probabilities (N, C).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    k = check_int("k", k, minimum=1)
    check_choice("average", average, ("arithmetic", "geometric"))
    check_array("x", x)
    saved_modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        for module in model.modules():
            if isinstance(module, STOCHASTIC_MODULES):
                module.training = True                 # this module only: .train() would reach its children
        with torch.no_grad():
            if average == "geometric":
                log_probabilities = torch.stack([torch.log_softmax(model(x), dim=1) for _ in range(k)])
                return torch.softmax(log_probabilities.mean(dim=0), dim=1)
            return torch.stack([torch.softmax(model(x), dim=1) for _ in range(k)]).mean(dim=0)
    finally:
        for module, training in saved_modes:
            module.training = training
