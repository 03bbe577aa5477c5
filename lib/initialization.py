"""Weight initialization, and the activation and gradient statistics that judge it.

Conventions follow ``torch.nn.init`` exactly, so that the NumPy reference and the torch
path can be checked against it:

- A weight has shape (fan_out, fan_in) for a linear layer (``y = x @ W.T``) and
  (out_channels, in_channels, kh, kw) for a convolution; a conv's fans are multiplied by
  the receptive field kh·kw.
- Xavier/Glorot (Glorot & Bengio 2010): Var[W] = gain² · 2 / (fan_in + fan_out).
- Kaiming/He (He et al. 2015): Var[W] = gain² / fan, with fan = fan_in (keeps the forward
  variance) or fan_out (keeps the backward variance).
- A uniform U(−b, b) has variance b²/3, so the uniform variants use b = √3 · std.
- Gains: 1 for linear and sigmoid, 5/3 for tanh, √2 for relu, √(2/(1+a²)) for leaky_relu
  with negative slope a, 3/4 for selu.

During training, ``WeightRatioRecorder`` tracks Karpathy's diagnostics: per layer and step,
the grad:data ratio std(∂L/∂W)/std(W) and the update:data ratio std(ΔW)/std(W).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from lib.checks import check_array, check_choice, check_int, check_positive
from lib.layers import ACTIVATION_LAYERS

NONLINEARITIES = ("linear", "sigmoid", "tanh", "relu", "leaky_relu", "selu")
MODES = ("fan_in", "fan_out")
METHODS = ("zeros", "constant", "normal", "uniform", "xavier_normal", "xavier_uniform",
           "kaiming_normal", "kaiming_uniform")
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


# ---------------------------------------------------------------------------------------
# Fans, gains and the resulting scales: shared by the NumPy and torch paths
# ---------------------------------------------------------------------------------------

def compute_fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of ``shape`` (out, in) or (out, in, *kernel).

    It takes no ``groups``: for a grouped convolution's weight (out, in / groups, *kernel) the
    fan-out it returns is ``groups`` times the group-corrected one, which
    ``lib.architectures.conv_fans`` gives.
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"shape: fans need a weight with at least 2 dimensions (out, in, ...), got {shape}")
    for index, size in enumerate(shape):
        check_int(f"shape[{index}]", size, minimum=1)
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def calculate_gain(nonlinearity: str, negative_slope: float | None = None) -> float:
    """The factor by which ``nonlinearity`` is expected to shrink the standard deviation, inverted."""
    check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
    if nonlinearity in ("linear", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "selu":
        return 3.0 / 4
    slope = 0.01 if negative_slope is None else negative_slope
    if isinstance(slope, bool) or not isinstance(slope, (int, float)) or not math.isfinite(slope):
        raise TypeError(f"negative_slope: expected a real number, got {negative_slope!r}")
    return math.sqrt(2.0 / (1 + slope**2))


def xavier_std(shape, gain: float = 1.0) -> float:
    """Glorot & Bengio: std = gain · √(2 / (fan_in + fan_out))."""
    check_positive("gain", gain)
    fan_in, fan_out = compute_fans(shape)
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def kaiming_std(shape, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> float:
    """He et al.: std = gain / √fan; ``a`` is the negative slope used when nonlinearity is leaky_relu."""
    check_choice("mode", mode, MODES)
    fan_in, fan_out = compute_fans(shape)
    gain = calculate_gain(nonlinearity, a)
    return gain / math.sqrt(fan_in if mode == "fan_in" else fan_out)


def _scale(method: str, shape, options: dict) -> float:
    """The std (normal methods) or bound (uniform methods) that ``method`` uses for ``shape``."""
    if method in ("normal", "uniform"):
        key = "std" if method == "normal" else "bound"
        if key not in options:
            raise TypeError(f"{method}: needs the keyword argument {key!r}")
        return check_positive(key, options[key])
    if method.startswith("xavier"):
        std = xavier_std(shape, options.get("gain", 1.0))
    else:
        std = kaiming_std(shape, options.get("a", 0.0), options.get("mode", "fan_in"),
                          options.get("nonlinearity", "leaky_relu"))
    return std if method.endswith("normal") else math.sqrt(3.0) * std


def _check_options(method: str, options: dict) -> None:
    allowed = {"zeros": set(), "constant": {"value"}, "normal": {"std"}, "uniform": {"bound"},
               "xavier_normal": {"gain"}, "xavier_uniform": {"gain"},
               "kaiming_normal": {"a", "mode", "nonlinearity"}, "kaiming_uniform": {"a", "mode", "nonlinearity"}}
    unknown = sorted(set(options) - allowed[method])
    if unknown:
        raise TypeError(f"{method}: unexpected options {unknown}; it takes {sorted(allowed[method]) or 'none'}")


# ---------------------------------------------------------------------------------------
# NumPy reference
# ---------------------------------------------------------------------------------------

def initialize(shape, method: str, rng: np.random.Generator | None = None, **options) -> np.ndarray:
    """A float64 weight of ``shape`` drawn by ``method``.

    Methods and their options: 'zeros'; 'constant' (value); 'normal' (std), N(0, std²);
    'uniform' (bound), U(−bound, bound); 'xavier_normal' / 'xavier_uniform' (gain);
    'kaiming_normal' / 'kaiming_uniform' (a, mode, nonlinearity), defaults as in torch.
    """
    check_choice("method", method, METHODS)
    _check_options(method, options)
    shape = tuple(shape)
    if method == "zeros":
        return np.zeros(shape)
    if method == "constant":
        if "value" not in options:
            raise TypeError("constant: needs the keyword argument 'value'")
        return np.full(shape, float(options["value"]))
    if rng is None:
        raise TypeError(f"rng: {method} draws random numbers; pass a np.random.Generator")
    scale = _scale(method, shape, options)
    if method.endswith("normal"):
        return rng.normal(0.0, scale, size=shape)
    return rng.uniform(-scale, scale, size=shape)


# ---------------------------------------------------------------------------------------
# Torch path: in place, like torch.nn.init
# ---------------------------------------------------------------------------------------

@torch.no_grad()
def init_(tensor: torch.Tensor, method: str, generator: torch.Generator | None = None, **options) -> torch.Tensor:
    """Fill ``tensor`` in place by ``method`` (same methods and options as :func:`initialize`)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor: expected a torch tensor, got {type(tensor).__name__}")
    check_choice("method", method, METHODS)
    _check_options(method, options)
    if method == "zeros":
        return tensor.zero_()
    if method == "constant":
        if "value" not in options:
            raise TypeError("constant: needs the keyword argument 'value'")
        return tensor.fill_(float(options["value"]))
    scale = _scale(method, tuple(tensor.shape), options)
    if method.endswith("normal"):
        return tensor.normal_(0.0, scale, generator=generator)
    return tensor.uniform_(-scale, scale, generator=generator)


def init_model_(model: nn.Module, method: str, generator: torch.Generator | None = None, **options) -> nn.Module:
    """Initialize the weight of every Linear and Conv layer of ``model`` by ``method``; zero their biases."""
    layers = [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
    if not layers:
        raise ValueError("model: has no Linear or Conv layer to initialize")
    for layer in layers:
        init_(layer.weight, method, generator, **options)
        if layer.bias is not None:
            init_(layer.bias, "zeros")
    return model


# ---------------------------------------------------------------------------------------
# A deep stack of layers: forward, backward and per-layer statistics (NumPy)
# ---------------------------------------------------------------------------------------

def deep_forward(x: np.ndarray, weights: list, nonlinearity: str = "tanh"):
    """Forward through layers a[l] = f(a[l−1] @ W[l].T), no biases; f from ``lib.layers``.

    Shapes: x (N, D_0); W[l] (D_l, D_{l−1}). Returns (activations a[1..L], cache).
    """
    check_array("x", x, ndim=2)
    check_choice("nonlinearity", nonlinearity, tuple(ACTIVATION_LAYERS))
    if not weights:
        raise ValueError("weights: expected at least one layer")
    forward, _ = ACTIVATION_LAYERS[nonlinearity]
    a, activations, activation_caches = x, [], []
    for layer, w in enumerate(weights, start=1):
        check_array(f"weights[{layer - 1}]", w, ndim=2)
        if w.shape[1] != a.shape[1]:
            raise ValueError(f"weights[{layer - 1}]: expected {a.shape[1]} input columns, got shape {w.shape}")
        a, activation_cache = forward(a @ w.T)
        activations.append(a)
        activation_caches.append(activation_cache)
    return activations, {"x": x, "weights": weights, "a": activations, "activation_caches": activation_caches,
                         "nonlinearity": nonlinearity}


def deep_backward(dout: np.ndarray, cache: dict):
    """Backward of :func:`deep_forward` for upstream gradient ``dout`` on the last activation.

    Returns (dW per layer, d(activation) per layer): the gradients that vanish or explode.
    """
    _, backward = ACTIVATION_LAYERS[cache["nonlinearity"]]
    weights, a = cache["weights"], cache["a"]
    check_array("dout", dout)
    if dout.shape != a[-1].shape:
        raise ValueError(f"dout: expected the shape of the last activation {a[-1].shape}, got {dout.shape}")
    inputs = [cache["x"]] + a[:-1]
    d_weights, d_activations = [None] * len(weights), [None] * len(weights)
    da = dout
    for layer in reversed(range(len(weights))):
        d_activations[layer] = da
        dz = backward(da, cache["activation_caches"][layer])
        d_weights[layer] = dz.T @ inputs[layer]
        da = dz @ weights[layer]
    return d_weights, d_activations


def layer_statistics(activations: list, gradients: list | None = None, saturation: float = 0.97) -> list:
    """Per-layer statistics of activations (and, if given, of their gradients).

    For each layer: mean, std, ``saturated`` (share of values with |a| > ``saturation``,
    meaningful for tanh), ``dead`` (share of units that are exactly 0 for every example,
    meaningful for ReLU) and ``grad_std``. Arrays are (N, D) NumPy arrays or tensors.
    """
    if not activations:
        raise ValueError("activations: expected at least one layer")
    if gradients is not None and len(gradients) != len(activations):
        raise ValueError(f"gradients: expected {len(activations)} layers, got {len(gradients)}")
    rows = []
    for index, values in enumerate(activations):
        values = _as_numpy(values, f"activations[{index}]")
        row = {
            "layer": index + 1,
            "mean": float(values.mean()),
            "std": float(values.std()),
            "saturated": float((np.abs(values) > saturation).mean()),
            "dead": float((values.reshape(len(values), -1) == 0).all(axis=0).mean()),
        }
        if gradients is not None:
            row["grad_std"] = float(_as_numpy(gradients[index], f"gradients[{index}]").std())
        rows.append(row)
    return rows


def _as_numpy(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    check_array(name, values)
    return values


class ActivationRecorder:
    """Record the output of every module of the given types, and the gradient flowing into it.

    Use as a context manager around a forward (and backward) pass::

        with ActivationRecorder(model, (nn.Tanh,)) as recorder:
            model(x).sum().backward()
        layer_statistics(recorder.activations, recorder.gradients)
    """

    def __init__(self, model: nn.Module, module_types=(nn.Tanh, nn.ReLU, nn.Sigmoid, nn.LeakyReLU)):
        self.modules = [m for m in model.modules() if isinstance(m, tuple(module_types))]
        if not self.modules:
            raise ValueError(f"model: has no module of types {[t.__name__ for t in module_types]}")
        self.activations, self.gradients, self._handles = [], [], []

    def __enter__(self):
        self.activations = [None] * len(self.modules)
        self.gradients = [None] * len(self.modules)
        for index, module in enumerate(self.modules):
            self._handles.append(module.register_forward_hook(self._make_hook(index)))
        return self

    def _make_hook(self, index: int):
        def hook(module, inputs, output):
            self.activations[index] = output.detach()
            if output.requires_grad:
                output.register_hook(lambda grad: self.gradients.__setitem__(index, grad.detach()))
        return hook

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return False


class WeightRatioRecorder:
    """Karpathy's training-time diagnostics for the weight of every Linear and Conv layer.

    At every step it records, per layer, the grad:data ratio std(∂L/∂W) / std(W) and the
    update:data ratio std(ΔW) / std(W), where ΔW is the change the optimizer's step made
    (lr · ∂L/∂W for plain SGD; with momentum or Adam, whatever they did). An update:data
    ratio near 1e-3 is the usual healthy range; far below it, the layer barely moves. Call
    ``step(optimizer)`` in place of ``optimizer.step()``, after ``loss.backward()``::

        recorder = WeightRatioRecorder(model)
        for x, y in batches:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            recorder.step(optimizer)
        recorder.update_to_data   # (steps, layers)

    A weight whose entries are all equal (a zero-initialized layer) has std 0: its ratios are inf or NaN.
    """

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch module, got {type(model).__name__}")
        self.weights = [m.weight for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
        if not self.weights:
            raise ValueError("model: has no Linear or Conv layer whose weight could be tracked")
        self._grad_to_data, self._update_to_data = [], []

    @torch.no_grad()
    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Record the grad:data ratios, take ``optimizer``'s step, record the update:data ratios."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer: expected a torch optimizer, got {type(optimizer).__name__}")
        missing = [index for index, w in enumerate(self.weights) if w.grad is None]
        if missing:
            raise ValueError(f"model: the weights of layers {missing} have no gradient; call loss.backward() first")
        before = [w.detach().clone() for w in self.weights]
        scales = torch.stack([w.std() for w in before])
        grads = torch.stack([w.grad.std() for w in self.weights])
        optimizer.step()
        updates = torch.stack([(w - old).std() for w, old in zip(self.weights, before)])
        self._grad_to_data.append((grads / scales).cpu().numpy())
        self._update_to_data.append((updates / scales).cpu().numpy())

    @property
    def grad_to_data(self) -> np.ndarray:
        """std(∂L/∂W) / std(W): one row per recorded step, one column per layer, (steps, layers)."""
        return np.array(self._grad_to_data).reshape(-1, len(self.weights))

    @property
    def update_to_data(self) -> np.ndarray:
        """std(ΔW) / std(W) of each step's change: (steps, layers)."""
        return np.array(self._update_to_data).reshape(-1, len(self.weights))
