"""Normalization: input standardization, batch norm, layer norm, instance norm, group norm.

NumPy reference first, torch path after; both follow the chapter's equations in order.

Every normalization here is the same operation over different axes
(Ioffe & Szegedy 2015, Algorithm 1; Ba et al. 2016; Ulyanov et al. 2016; Wu & He 2018):

    μ  = mean of x over the normalized axes               (1)
    σ² = mean of (x − μ)² over the same axes (biased)     (2)
    x̂  = (x − μ) / √(σ² + ε)                               (3)
    y  = γ · x̂ + β                                         (4)

Batch norm normalizes each channel over (N, H, W); layer norm each example over (C, H, W);
instance norm each (example, channel) over (H, W); group norm each (example, group of
channels) over (C/G, H, W). Only batch norm mixes examples, so only batch norm needs
running statistics for test time.

Running statistics follow PyTorch's convention, which this book uses everywhere:
``momentum`` is the weight of the *new* batch (default 0.1),

    running_mean ← (1 − momentum) · running_mean + momentum · μ_B
    running_var  ← (1 − momentum) · running_var  + momentum · σ²_B · m / (m − 1)

so the running variance is the *unbiased* estimate (the paper's inference step uses the
same m / (m − 1) correction), while training mode normalizes with the *biased* σ²_B of
equation (2). Here m is the number of values per channel in the batch (N, or N·H·W).
(cs231n's assignments use the opposite convention, momentum = weight of the old value.)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lib.checks import check_array, check_choice, check_int, check_positive, check_probability, check_shape
from lib.data import Standardizer  # input standardization lives in the data core; taught here

__all__ = [
    "Standardizer", "standardize_forward", "standardize_backward",
    "batchnorm_forward", "batchnorm_backward", "batchnorm_backward_alt",
    "layernorm_forward", "layernorm_backward", "instancenorm_forward", "instancenorm_backward",
    "groupnorm_forward", "groupnorm_backward", "normalization_forward", "normalization_backward",
    "normalization_groups",
    "BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm",
]

BN_PARAM_KEYS = ("mode", "eps", "momentum", "running_mean", "running_var")


# ---------------------------------------------------------------------------------------
# The shared step: equations (1)-(3) over any set of axes
# ---------------------------------------------------------------------------------------

def standardize_forward(x: np.ndarray, axes: tuple, eps: float):
    """Equations (1)-(3): x̂ = (x − μ) / √(σ² + ε), with μ and σ² taken over ``axes``.

    Shapes: ``x`` any; ``x_hat`` like ``x``. The cache keeps every intermediate so that
    both the staged and the closed-form backward can use it.
    """
    check_positive("eps", eps)
    mu = x.mean(axis=axes, keepdims=True)            # (1)
    xc = x - mu
    var = (xc**2).mean(axis=axes, keepdims=True)     # (2), biased: divide by m
    std = np.sqrt(var + eps)
    x_hat = xc / std                                 # (3)
    m = x.size // mu.size                            # values per normalized group
    cache = {"axes": axes, "m": m, "mu": mu, "xc": xc, "var": var, "std": std, "x_hat": x_hat}
    return x_hat, cache


def standardize_backward(dx_hat: np.ndarray, cache: dict) -> np.ndarray:
    """Closed-form backward of :func:`standardize_forward`.

    dx = (1/σ̃) · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂)),  σ̃ = √(σ² + ε), means over the axes.

    The two subtracted means are the gradient flowing through μ and through σ²:
    the normalized output cannot change its mean or its spread, so those components
    of the upstream gradient are projected out.
    """
    axes, x_hat = cache["axes"], cache["x_hat"]
    mean_dx_hat = dx_hat.mean(axis=axes, keepdims=True)
    mean_dx_hat_x_hat = (dx_hat * x_hat).mean(axis=axes, keepdims=True)
    return (dx_hat - mean_dx_hat - x_hat * mean_dx_hat_x_hat) / cache["std"]


# ---------------------------------------------------------------------------------------
# Batch norm
# ---------------------------------------------------------------------------------------

def _channel_view(ndim: int) -> tuple:
    """Shape that broadcasts a (C,) parameter along axis 1 of an ``ndim``-dimensional input."""
    return (1, -1) + (1,) * (ndim - 2)


def _all_axes_but(axis: int, ndim: int) -> tuple:
    return tuple(a for a in range(ndim) if a != axis)


def _check_params(gamma, beta, shape: tuple) -> None:
    check_array("gamma", gamma)
    check_array("beta", beta)
    check_shape("gamma", gamma, shape)
    check_shape("beta", beta, shape)


def _check_bn_param(bn_param: dict, num_channels: int) -> None:
    if not isinstance(bn_param, dict):
        raise TypeError(f"bn_param: expected a dict with keys {BN_PARAM_KEYS}, got {type(bn_param).__name__}")
    unknown = sorted(set(bn_param) - set(BN_PARAM_KEYS))
    if unknown:
        raise ValueError(f"bn_param: unknown keys {unknown}; expected some of {BN_PARAM_KEYS}")
    check_choice("bn_param['mode']", bn_param.get("mode", "train"), ("train", "eval"))
    check_positive("bn_param['eps']", bn_param.get("eps", 1e-5))
    check_probability("bn_param['momentum']", bn_param.get("momentum", 0.1))
    for key in ("running_mean", "running_var"):
        if key in bn_param:
            check_array(f"bn_param[{key!r}]", bn_param[key])
            check_shape(f"bn_param[{key!r}]", bn_param[key], (num_channels,))
    if "running_var" in bn_param and (bn_param["running_var"] < 0).any():
        raise ValueError("bn_param['running_var']: expected non-negative variances")


def batchnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, bn_param: dict):
    """Batch norm forward, for fully connected (N, D) or convolutional (N, C, H, W) inputs.

    Each feature / channel c is normalized with statistics over every axis but axis 1:
    over N for (N, D), over N, H, W for (N, C, H, W) (and over N, L for (N, C, L)).

    bn_param (updated in place, like cs231n's):
      - ``mode``: ``'train'`` (batch statistics; running statistics updated) or ``'eval'``
        (running statistics, nothing updated). Default ``'train'``.
      - ``eps`` (default 1e-5), ``momentum`` (weight of the new batch, default 0.1).
      - ``running_mean`` (C,), default zeros; ``running_var`` (C,), default ones (unbiased).

    Shapes: x (N, C, ...), gamma (C,), beta (C,) → out like x. Returns ``(out, cache)``.
    """
    check_array("x", x, ndim=(2, 3, 4))
    channels = x.shape[1]
    _check_params(gamma, beta, (channels,))
    _check_bn_param(bn_param, channels)
    mode, eps = bn_param.setdefault("mode", "train"), bn_param.setdefault("eps", 1e-5)
    momentum = bn_param.setdefault("momentum", 0.1)
    running_mean = bn_param.setdefault("running_mean", np.zeros(channels, dtype=x.dtype))
    running_var = bn_param.setdefault("running_var", np.ones(channels, dtype=x.dtype))
    axes, view = _all_axes_but(1, x.ndim), _channel_view(x.ndim)

    if mode == "train":
        m = x.size // channels
        if m < 2:
            raise ValueError(f"x: batch norm in training mode needs more than 1 value per channel, "
                             f"got shape {x.shape}; use a larger batch or mode='eval'")
        x_hat, standardize_cache = standardize_forward(x, axes, eps)
        batch_mean, batch_var = standardize_cache["mu"].reshape(-1), standardize_cache["var"].reshape(-1)
        bn_param["running_mean"] = (1 - momentum) * running_mean + momentum * batch_mean
        bn_param["running_var"] = (1 - momentum) * running_var + momentum * batch_var * m / (m - 1)
    else:  # μ and σ² are the running estimates: constants, not functions of this batch
        standardize_cache = {"std": np.sqrt(running_var + eps).reshape(view)}
        x_hat = (x - running_mean.reshape(view)) / standardize_cache["std"]
    out = gamma.reshape(view) * x_hat + beta.reshape(view)    # (4)
    cache = {"standardize": standardize_cache, "x_hat": x_hat, "gamma": gamma, "view": view,
             "param_sum_axes": axes, "mode": mode}
    return out, cache


def _affine_backward(dout, cache, param_shape):
    """Gradients of y = γ·x̂ + β for γ and β, and the gradient that flows on to x̂."""
    sum_axes = cache["param_sum_axes"]
    dbeta = dout.sum(axis=sum_axes).reshape(param_shape)
    dgamma = (dout * cache["x_hat"]).sum(axis=sum_axes).reshape(param_shape)
    dx_hat = dout * cache["gamma"].reshape(cache["view"])
    return dx_hat, dgamma, dbeta


def batchnorm_backward(dout: np.ndarray, cache: dict):
    """Batch norm backward, staged: one step back through each node of the forward graph.

    Forward graph (training mode): μ → xc = x − μ → σ² = mean(xc²) → std = √(σ² + ε)
    → x̂ = xc / std → y = γ x̂ + β. Each line below is the chain rule for one node, in
    reverse order. In eval mode μ and σ are constants, so only the last two nodes remain.

    Shapes: dout like x → (dx like x, dgamma (C,), dbeta (C,)).
    """
    dx_hat, dgamma, dbeta = _affine_backward(dout, cache, cache["gamma"].shape)
    s = cache["standardize"]
    if cache["mode"] == "eval":
        return dx_hat / s["std"], dgamma, dbeta
    axes, m, xc, std = s["axes"], s["m"], s["xc"], s["std"]
    dxc = dx_hat / std                                           # x̂ = xc · (1/std), through xc
    dstd = -(dx_hat * xc).sum(axis=axes, keepdims=True) / std**2  # ... and through 1/std
    dvar = dstd * 0.5 / std                                      # std = √(σ² + ε)
    dxc += dvar * 2.0 * xc / m                                   # σ² = mean(xc²)
    dmu = -dxc.sum(axis=axes, keepdims=True)                     # xc = x − μ, through μ
    dx = dxc + dmu / m                                           # μ = mean(x)
    return dx, dgamma, dbeta


def batchnorm_backward_alt(dout: np.ndarray, cache: dict):
    """Batch norm backward in closed form: dx = (γ/σ̃)(dy − mean(dy) − x̂·mean(dy·x̂)).

    Same result as :func:`batchnorm_backward`, with the graph's steps simplified on paper
    (see :func:`standardize_backward`). Shapes as in :func:`batchnorm_backward`.
    """
    dx_hat, dgamma, dbeta = _affine_backward(dout, cache, cache["gamma"].shape)
    if cache["mode"] == "eval":
        return dx_hat / cache["standardize"]["std"], dgamma, dbeta
    return standardize_backward(dx_hat, cache["standardize"]), dgamma, dbeta


# ---------------------------------------------------------------------------------------
# Layer norm, instance norm, group norm: the same step over other axes, no running stats
# ---------------------------------------------------------------------------------------

def _per_example_forward(x, gamma, beta, eps, group_shape, axes, param_view, param_sum_axes):
    """Normalize ``x`` viewed as ``group_shape`` over ``axes``, then apply γ, β shaped ``param_view``."""
    x_hat_grouped, standardize_cache = standardize_forward(x.reshape(group_shape), axes, eps)
    x_hat = x_hat_grouped.reshape(x.shape)
    out = gamma.reshape(param_view) * x_hat + beta.reshape(param_view)    # (4)
    cache = {"standardize": standardize_cache, "x_hat": x_hat, "gamma": gamma, "view": param_view,
             "param_sum_axes": param_sum_axes, "group_shape": group_shape}
    return out, cache


def _per_example_backward(dout, cache):
    dx_hat, dgamma, dbeta = _affine_backward(dout, cache, cache["gamma"].shape)
    dx = standardize_backward(dx_hat.reshape(cache["group_shape"]), cache["standardize"]).reshape(dout.shape)
    return dx, dgamma, dbeta


def layernorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5):
    """Layer norm (Ba et al. 2016): each example normalized over all its features.

    Shapes: x (N, D) or (N, C, H, W); gamma and beta shaped like one example, x.shape[1:]
    (as ``torch.nn.functional.layer_norm`` with ``normalized_shape = x.shape[1:]``).
    Works the same in training and at test time. Returns ``(out, cache)``.
    Sequence models normalize each token of an (N, L, D) input over its D features alone:
    pass ``x.reshape(N * L, D)``, one row per token.
    """
    check_array("x", x, ndim=(2, 3, 4))
    _check_params(gamma, beta, x.shape[1:])
    check_positive("eps", eps)
    axes = tuple(range(1, x.ndim))
    return _per_example_forward(x, gamma, beta, eps, x.shape, axes, (1,) + x.shape[1:], (0,))


def layernorm_backward(dout: np.ndarray, cache: dict):
    """Layer norm backward. Shapes: dout like x → (dx, dgamma, dbeta) with γ's shape x.shape[1:]."""
    return _per_example_backward(dout, cache)


def instancenorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5):
    """Instance norm (Ulyanov et al. 2016): each (example, channel) normalized over its H, W.

    Shapes: x (N, C, H, W) or (N, C, L); gamma and beta (C,). Returns ``(out, cache)``.
    """
    check_array("x", x, ndim=(3, 4))
    _check_params(gamma, beta, (x.shape[1],))
    check_positive("eps", eps)
    if np.prod(x.shape[2:]) < 2:
        raise ValueError(f"x: instance norm needs more than 1 spatial value per channel, got shape {x.shape}")
    axes = tuple(range(2, x.ndim))
    return _per_example_forward(x, gamma, beta, eps, x.shape, axes, _channel_view(x.ndim), _all_axes_but(1, x.ndim))


def instancenorm_backward(dout: np.ndarray, cache: dict):
    """Instance norm backward. Shapes: dout like x → (dx, dgamma (C,), dbeta (C,))."""
    return _per_example_backward(dout, cache)


def groupnorm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, num_groups: int, eps: float = 1e-5):
    """Group norm (Wu & He 2018): each example's channels split into ``num_groups`` groups,
    each group normalized over its channels and H, W; then a per-channel γ, β.

    num_groups = 1 is layer norm with per-channel γ, β; num_groups = C is instance norm.
    Shapes: x (N, C, H, W) or (N, C, L), viewed as (N, G, C/G, H, W); gamma, beta (C,).
    """
    check_array("x", x, ndim=(3, 4))
    check_int("num_groups", num_groups, minimum=1)
    channels = x.shape[1]
    if channels % num_groups:
        raise ValueError(f"num_groups: must divide the number of channels {channels}, got {num_groups}")
    _check_params(gamma, beta, (channels,))
    check_positive("eps", eps)
    group_shape = (x.shape[0], num_groups, channels // num_groups) + x.shape[2:]
    axes = tuple(range(2, len(group_shape)))
    return _per_example_forward(x, gamma, beta, eps, group_shape, axes, _channel_view(x.ndim), _all_axes_but(1, x.ndim))


def groupnorm_backward(dout: np.ndarray, cache: dict):
    """Group norm backward. Shapes: dout like x → (dx, dgamma (C,), dbeta (C,))."""
    return _per_example_backward(dout, cache)


NORMALIZATIONS = ("batch", "layer", "instance", "group")


def normalization_forward(kind: str, x: np.ndarray, gamma=None, beta=None, num_groups: int = 1, eps: float = 1e-5):
    """Any of the four normalizations by name: 'batch' (training mode), 'layer', 'instance', 'group'.

    γ and β default to ones and zeros of the shape that ``kind`` needs: (C,), or x.shape[1:]
    for layer norm. Returns ``(out, cache)``; ``normalization_backward(kind, dout, cache)``
    differentiates it.
    """
    check_choice("kind", kind, NORMALIZATIONS)
    check_array("x", x, ndim=(2, 3, 4))
    param_shape = x.shape[1:] if kind == "layer" else (x.shape[1],)
    gamma = np.ones(param_shape, dtype=x.dtype) if gamma is None else gamma
    beta = np.zeros(param_shape, dtype=x.dtype) if beta is None else beta
    if kind == "batch":
        return batchnorm_forward(x, gamma, beta, {"mode": "train", "eps": eps})
    if kind == "layer":
        return layernorm_forward(x, gamma, beta, eps)
    if kind == "instance":
        return instancenorm_forward(x, gamma, beta, eps)
    return groupnorm_forward(x, gamma, beta, num_groups, eps)


def normalization_backward(kind: str, dout: np.ndarray, cache: dict):
    """Backward of :func:`normalization_forward`: ``(dx, dgamma, dbeta)``."""
    check_choice("kind", kind, NORMALIZATIONS)
    backward = {"batch": batchnorm_backward_alt, "layer": layernorm_backward,
                "instance": instancenorm_backward, "group": groupnorm_backward}[kind]
    return backward(dout, cache)


def normalization_groups(kind: str, shape: tuple, num_groups: int = 1) -> np.ndarray:
    """Label every element of an input of ``shape`` (N, C, H, W) with the id of the set whose
    statistics normalize it: elements with the same label share one μ and one σ.

    ``kind`` is 'batch', 'layer', 'instance' or 'group'. Used for the chapter's figures.
    """
    check_choice("kind", kind, NORMALIZATIONS)
    if len(shape) != 4:
        raise ValueError(f"shape: expected (N, C, H, W), got {shape}")
    n, c, h, w = shape
    if c % num_groups:
        raise ValueError(f"num_groups: must divide the number of channels {c}, got {num_groups}")
    example, channel = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    label = {
        "batch": channel,
        "layer": example,
        "instance": example * c + channel,
        "group": example * num_groups + channel // (c // num_groups),
    }[kind]
    return np.broadcast_to(label[:, :, None, None], shape).copy()


# ---------------------------------------------------------------------------------------
# Torch path: the same equations with torch operations; autograd supplies the backward
# ---------------------------------------------------------------------------------------

def _torch_standardize(x: torch.Tensor, dims: tuple, eps: float):
    """Equations (1)-(3) in torch. Returns x̂, the mean and the biased variance."""
    var, mu = torch.var_mean(x, dim=dims, correction=0, keepdim=True)   # (1) and (2) in one pass; biased
    return (x - mu) / torch.sqrt(var + eps), mu, var                    # (3)


class BatchNorm(nn.Module):
    """Batch norm as a torch module, written from the equations (not ``nn.BatchNorm1d``).

    Inputs (N, C), (N, C, L) or (N, C, H, W); statistics per channel over every other axis.
    Running statistics and momentum follow the same convention as ``batchnorm_forward``
    and ``torch.nn.BatchNorm*d``: momentum weights the new batch, running_var is unbiased.
    It is written for reading: autograd differentiates each operation separately, so it is
    several times slower than the fused ``nn.BatchNorm*d`` on large inputs
    (``benchmarks/batchnorm_speed.py``). The book's small networks train with it in seconds.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.num_features = check_int("num_features", num_features, minimum=1)
        self.eps = check_positive("eps", eps)
        self.momentum = check_probability("momentum", momentum)
        self.weight = nn.Parameter(torch.ones(num_features))   # γ
        self.bias = nn.Parameter(torch.zeros(num_features))    # β
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_array("x", x, ndim=(2, 3, 4))
        if x.shape[1] != self.num_features:
            raise ValueError(f"x: expected {self.num_features} channels on axis 1, got shape {tuple(x.shape)}")
        dims, view = _all_axes_but(1, x.ndim), _channel_view(x.ndim)
        if self.training:
            m = x.numel() // self.num_features
            if m < 2:
                raise ValueError(f"x: batch norm in training mode needs more than 1 value per channel, "
                                 f"got shape {tuple(x.shape)}; use a larger batch or model.eval()")
            x_hat, mu, var = _torch_standardize(x, dims, self.eps)
            with torch.no_grad():  # the running averages are bookkeeping, not part of the graph
                self.running_mean.lerp_(mu.reshape(-1), self.momentum)
                self.running_var.lerp_(var.reshape(-1) * m / (m - 1), self.momentum)
        else:
            x_hat = (x - self.running_mean.reshape(view)) / torch.sqrt(self.running_var.reshape(view) + self.eps)
        return self.weight.reshape(view) * x_hat + self.bias.reshape(view)   # (4)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class LayerNorm(nn.Module):
    """Layer norm as a torch module: each example over its trailing ``normalized_shape`` axes.

    ``LayerNorm(D)`` on an (N, L, D) sequence normalizes each token over its D features, as
    transformers do; ``LayerNorm((C, H, W))`` normalizes each image over all of its values.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape = tuple(check_int("normalized_shape", s, minimum=1) for s in shape)
        self.eps = check_positive("eps", eps)
        self.weight = nn.Parameter(torch.ones(self.normalized_shape))
        self.bias = nn.Parameter(torch.zeros(self.normalized_shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_array("x", x, ndim=range(len(self.normalized_shape) + 1, 6))
        if tuple(x.shape[-len(self.normalized_shape):]) != self.normalized_shape:
            raise ValueError(f"x: expected trailing shape {self.normalized_shape}, got shape {tuple(x.shape)}")
        dims = tuple(range(x.ndim - len(self.normalized_shape), x.ndim))
        x_hat, _, _ = _torch_standardize(x, dims, self.eps)
        return self.weight * x_hat + self.bias


class GroupNorm(nn.Module):
    """Group norm as a torch module; ``num_groups=1`` is layer norm, ``num_groups=C`` instance norm."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5):
        super().__init__()
        self.num_groups = check_int("num_groups", num_groups, minimum=1)
        self.num_channels = check_int("num_channels", num_channels, minimum=1)
        if num_channels % num_groups:
            raise ValueError(f"num_groups: must divide num_channels={num_channels}, got {num_groups}")
        self.eps = check_positive("eps", eps)
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_array("x", x, ndim=(3, 4))
        if x.shape[1] != self.num_channels:
            raise ValueError(f"x: expected {self.num_channels} channels on axis 1, got shape {tuple(x.shape)}")
        grouped = x.reshape(x.shape[0], self.num_groups, -1)     # (N, G, C/G · H · W)
        x_hat, _, _ = _torch_standardize(grouped, (2,), self.eps)
        view = _channel_view(x.ndim)
        return self.weight.reshape(view) * x_hat.reshape(x.shape) + self.bias.reshape(view)


class InstanceNorm(GroupNorm):
    """Instance norm as a torch module: group norm with one channel per group."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__(num_groups=num_features, num_channels=num_features, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_array("x", x, ndim=(3, 4))
        if x[0, 0].numel() < 2:
            raise ValueError(f"x: instance norm needs more than 1 spatial value per channel, got shape {tuple(x.shape)}")
        return super().forward(x)
