"""NumPy layers with forward and backward passes, and a small MLP built from them.

Each layer is a pair ``*_forward(...) -> (out, cache)`` and ``*_backward(dout, cache) -> grads``
(the cs231n pattern). The MLP's loss includes L2 regularization, ½·reg·Σ‖W‖², on the
weights (not the biases).

Dropout: ``p`` is the probability of *dropping* a unit everywhere, as in PyTorch
(``nn.Dropout(p)``); a unit is kept with probability 1 − p. Two forms: inverted dropout
(PyTorch's, the default: kept units scaled by 1/(1 − p) in training, nothing at test) and the
original form of Srivastava et al. 2014 (no scaling in training, outputs times 1 − p at test).
``lib.regularization`` builds the chapter's relatives of dropout on these functions.
"""
from __future__ import annotations

import numpy as np

from lib.checks import check_array, check_choice, check_int, check_positive, check_probability, check_shape


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


DROPOUT_MODES = ("inverted", "original")


def keep_mask_from_draws(draws: np.ndarray, p: float) -> np.ndarray:
    """The keep mask for uniform draws u ∈ [0, 1) and drop probability ``p``: kept where u ≥ p.

    Each unit is dropped when its draw falls below p, which happens with probability p. Written
    with the keep probability q = 1 − p instead, the usual comparison is the other way round:
    kept where u < q (the cs231n assignments' ``rand < p`` with their p the keep probability).
    Both keep a unit with probability 1 − p, but from the same draws they give different masks:
    draws [0.3, 0.6, 0.7] give [0, 1, 1] here (p = 0.5) and [1, 0, 0] with u < q (q = 0.5).
    Shapes: draws any → bool mask of the same shape (True = kept).
    """
    check_array("draws", draws)
    p = check_probability("p", p, closed_right=False)
    return draws >= p


def check_keep_mask(name: str, mask, shape: tuple):
    """Check that ``mask`` (NumPy or torch) has ``shape`` and only entries 0 (dropped) and 1 (kept)."""
    check_array(name, mask, float_only=False)
    check_shape(name, mask, shape)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name}: expected a keep mask of 0 (dropped) and 1 (kept) entries only")
    return mask


def keep_mask(shape: tuple, p: float, rng: np.random.Generator | None = None, mask: np.ndarray | None = None):
    """The 0/1 keep mask of a dropout-like layer, as a bool array of ``shape`` (True = kept).

    A given ``mask`` is checked and used as it is (a gradient check needs the same mask on every
    call); otherwise one is drawn from ``rng`` by :func:`keep_mask_from_draws`. With p = 0 and no
    mask, every unit is kept and nothing is drawn (``rng`` may be None and is not advanced).
    """
    p = check_probability("p", p, closed_right=False)
    if mask is not None:
        return check_keep_mask("mask", mask, shape).astype(bool)
    if p == 0:
        return np.ones(shape, dtype=bool)
    if rng is None:
        raise TypeError("rng: dropout with p > 0 and no mask needs a np.random.Generator")
    return keep_mask_from_draws(rng.random(shape), p)


def _keep_part(mask, p: float):
    """Read a scaled mask from an inverted-dropout training call (entries 0 and 1/(1 − p)) as the
    0/1 keep mask it encodes, so that what ``dropout_forward`` returns can be passed back in as
    ``mask`` (``mlp_loss`` does this). Any other mask is returned unchanged, for checking."""
    if isinstance(mask, np.ndarray) and 0 < p < 1:
        nonzero = mask[mask != 0]
        if nonzero.size and np.all(nonzero == 1.0 / (1.0 - p)):
            return mask != 0
    return mask


def dropout_forward(x: np.ndarray, p: float, rng: np.random.Generator | None = None,
                    mask: np.ndarray | None = None, mode: str = "inverted", train: bool = True):
    """Dropout with ``p`` the probability of *dropping* each unit (as in PyTorch).

    Training (``train=True``): keep = (u ≥ p) for uniform draws u from ``rng`` (see
    :func:`keep_mask_from_draws`), or the given 0/1 ``mask`` (1 = kept, shape of ``x``); then

      - ``mode="inverted"`` (PyTorch's): out = x · keep / (1 − p), so E[out] = x;
      - ``mode="original"`` (Srivastava et al. 2014): out = x · keep, so E[out] = (1 − p) · x.

    Test (``train=False``, no mask, nothing drawn): out = x (inverted) or (1 − p) · x (original),
    the expected training output in each mode.

    Returns ``(out, scaled_mask)`` where out = x · scaled_mask: keep / (1 − p) or keep in training,
    the constant test factor at test. It is the cache :func:`dropout_backward` needs, and it can be
    passed back as ``mask`` to repeat the same draw (entries 0 and 1/(1 − p) are read as keep = 1).
    With p = 0 the layer is the identity and nothing is drawn. Shapes: x any; out and mask like x.
    """
    check_array("x", x)
    p = check_probability("p", p, closed_right=False)
    check_choice("mode", mode, DROPOUT_MODES)
    if not train:
        if mask is not None:
            raise ValueError("mask: test time (train=False) is deterministic and takes no mask")
        test_factor = 1.0 if mode == "inverted" else 1.0 - p
        scaled_mask = np.full(x.shape, test_factor)
        return x * scaled_mask, scaled_mask
    keep = keep_mask(x.shape, p, rng, None if mask is None else _keep_part(mask, p))
    # one factor per unit, keep / (1 − p), then one multiplication: the rounding of x · keep / (1 − p)
    # computed in this order is what the gradient-checking chapter's stored outputs were made with
    scaled_mask = keep / (1.0 - p) if mode == "inverted" else keep.astype(np.float64)
    return x * scaled_mask, scaled_mask


def dropout_backward(dout: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """Gradient of :func:`dropout_forward`: out = x · scaled_mask, so dx = dout · scaled_mask.

    ``cache`` is the scaled mask the forward returned. Shapes: dout like x → dx like x.
    """
    return dout * cache


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax probabilities of each row. Shapes: scores (N, C) → probabilities (N, C), rows sum to 1."""
    check_array("scores", scores, ndim=2)
    shifted = scores - scores.max(axis=1, keepdims=True)    # exp of a large score would overflow
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


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
