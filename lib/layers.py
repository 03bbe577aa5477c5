"""NumPy layers with forward and backward passes, and a small MLP built from them.

Each layer is a pair ``*_forward(...) -> (out, cache)`` and ``*_backward(dout, cache) -> grads``
(the cs231n pattern). The MLP's loss includes L2 regularization, ½·reg·Σ‖W‖², on the
weights (not the biases). Dropout is inverted dropout with ``p`` the probability of
*dropping* a unit, as in PyTorch: kept units are scaled by 1/(1 − p) during training.
"""
from __future__ import annotations

import numpy as np

from lib.checks import check_array, check_choice, check_int, check_positive, check_probability


def affine_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    """out = x @ w + b. Shapes: x (N, D), w (D, M), b (M,) → out (N, M)."""
    check_array("x", x, ndim=2)
    check_array("w", w, ndim=2)
    check_array("b", b, ndim=1)
    if x.shape[1] != w.shape[0] or b.shape[0] != w.shape[1]:
        raise ValueError(f"x, w, b: shapes {x.shape}, {w.shape}, {b.shape} do not chain as (N, D) @ (D, M) + (M,)")
    return x @ w + b, (x, w)


def affine_backward(dout: np.ndarray, cache):
    """Gradients (dx, dw, db) of :func:`affine_forward`."""
    x, w = cache
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


def relu_forward(x: np.ndarray):
    return np.maximum(x, 0.0), x


def relu_backward(dout: np.ndarray, x):
    return dout * (x > 0)


def tanh_forward(x: np.ndarray):
    out = np.tanh(x)
    return out, out


def tanh_backward(dout: np.ndarray, out):
    return dout * (1.0 - out**2)


def sigmoid_forward(x: np.ndarray):
    out = 1.0 / (1.0 + np.exp(-x))
    return out, out


def sigmoid_backward(dout: np.ndarray, out):
    return dout * out * (1.0 - out)


def identity_forward(x: np.ndarray):
    return x, None


def identity_backward(dout: np.ndarray, cache):
    return dout


def dropout_forward(x: np.ndarray, p: float, rng: np.random.Generator | None = None, mask: np.ndarray | None = None):
    """Inverted dropout: drop each unit with probability ``p``, scale the kept ones by 1/(1 − p).

    Pass ``mask`` to reuse a fixed mask (as a gradient check must); otherwise a fresh one is
    drawn from ``rng``. With p = 0 the layer is the identity. Returns (out, mask).
    """
    p = check_probability("p", p, closed_right=False)
    if p == 0:
        return x, np.ones_like(x)
    if mask is None:
        if rng is None:
            raise TypeError("rng: dropout with p > 0 and no mask needs a np.random.Generator")
        mask = (rng.random(x.shape) >= p) / (1.0 - p)
    elif mask.shape != x.shape:
        raise ValueError(f"mask: expected shape {x.shape}, got {mask.shape}")
    return x * mask, mask


def dropout_backward(dout: np.ndarray, mask: np.ndarray):
    return dout * mask


def softmax_cross_entropy(scores: np.ndarray, y: np.ndarray):
    """Mean cross-entropy of softmax(scores) against integer labels, and its gradient.

    Shapes: scores (N, C), y (N,) with values in [0, C) → (loss, dscores (N, C)).
    """
    check_array("scores", scores, ndim=2)
    check_array("y", y, ndim=1, float_only=False)
    if len(y) != len(scores) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= scores.shape[1]:
        raise ValueError(f"y: expected {len(scores)} integer labels in [0, {scores.shape[1]}), got {y!r:.80}")
    shifted = scores - scores.max(axis=1, keepdims=True)        # for numerical stability
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    n = len(y)
    loss = -log_probs[np.arange(n), y].mean()
    dscores = np.exp(log_probs)
    dscores[np.arange(n), y] -= 1.0
    return loss, dscores / n


ACTIVATION_LAYERS = {
    "relu": (relu_forward, relu_backward),
    "tanh": (tanh_forward, tanh_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "linear": (identity_forward, identity_backward),
}


def mlp_init(sizes: list, rng: np.random.Generator, weight_scale: float = 1e-2) -> dict:
    """Parameters {'W1', 'b1', ..., 'WL', 'bL'} of an MLP with layer sizes ``sizes``;
    weights N(0, weight_scale²), biases 0. Shapes: W_l (sizes[l-1], sizes[l])."""
    if len(sizes) < 2:
        raise ValueError(f"sizes: expected at least [inputs, outputs], got {sizes}")
    for index, size in enumerate(sizes):
        check_int(f"sizes[{index}]", size, minimum=1)
    check_positive("weight_scale", weight_scale)
    params = {}
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        params[f"W{layer}"] = rng.normal(0.0, weight_scale, size=(fan_in, fan_out))
        params[f"b{layer}"] = np.zeros(fan_out)
    return params


def mlp_loss(params: dict, x: np.ndarray, y: np.ndarray, reg: float = 0.0, nonlinearity: str = "relu",
             dropout_p: float = 0.0, rng: np.random.Generator | None = None, masks: list | None = None):
    """Loss and gradients of an MLP: (affine → nonlinearity → dropout) × (L−1) → affine → softmax CE,
    plus ½·reg·Σ‖W‖².

    Returns (loss, grads, masks): grads has the keys of ``params``; ``masks`` are the dropout masks
    used (pass them back in to evaluate the same function again, as a gradient check must).
    """
    check_choice("nonlinearity", nonlinearity, tuple(ACTIVATION_LAYERS))
    check_positive("reg", reg, allow_zero=True)
    layers = len(params) // 2
    if layers < 1 or set(params) != {f"{k}{i}" for i in range(1, layers + 1) for k in "Wb"}:
        raise ValueError(f"params: expected keys W1, b1, ..., WL, bL, got {sorted(params)}")
    forward, backward = ACTIVATION_LAYERS[nonlinearity]
    caches, used_masks, h = [], [], x
    for layer in range(1, layers):
        h, affine_cache = affine_forward(h, params[f"W{layer}"], params[f"b{layer}"])
        h, activation_cache = forward(h)
        h, mask = dropout_forward(h, dropout_p, rng, None if masks is None else masks[layer - 1])
        caches.append((affine_cache, activation_cache, mask))
        used_masks.append(mask)
    scores, last_cache = affine_forward(h, params[f"W{layers}"], params[f"b{layers}"])
    data_loss, dscores = softmax_cross_entropy(scores, y)
    loss = data_loss + 0.5 * reg * sum(np.sum(params[f"W{i}"] ** 2) for i in range(1, layers + 1))

    grads = {}
    dh, grads[f"W{layers}"], grads[f"b{layers}"] = affine_backward(dscores, last_cache)
    for layer in range(layers - 1, 0, -1):
        affine_cache, activation_cache, mask = caches[layer - 1]
        dh = backward(dropout_backward(dh, mask), activation_cache)
        dh, grads[f"W{layer}"], grads[f"b{layer}"] = affine_backward(dh, affine_cache)
    for i in range(1, layers + 1):
        grads[f"W{i}"] += reg * params[f"W{i}"]
    # same key order as params, so that flattening params and grads lines their entries up
    return loss, {name: grads[name] for name in params}, used_masks
