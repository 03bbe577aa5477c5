"""Model builders shared by the chapters."""
from __future__ import annotations

from torch import nn

from lib.checks import check_int
from lib.normalization import BatchNorm

# Norms that subtract each feature's mean over the batch. mlp's layers are (N, D), so the
# 1-d batch norms are the ones that apply.
BATCH_NORMS = (BatchNorm, nn.BatchNorm1d, nn.SyncBatchNorm)


def mlp(sizes: list, activation=nn.ReLU, norm=None) -> nn.Sequential:
    """A multilayer perceptron: ``sizes = [inputs, hidden..., outputs]``.

    Each hidden layer is Linear → (norm) → activation; the output layer is Linear alone
    (logits). ``norm`` is a factory called with the layer width, e.g. ``BatchNorm``,
    ``nn.BatchNorm1d`` or ``lambda width: LayerNorm(width)``.

    A linear layer followed by batch norm gets no bias: batch norm subtracts each feature's
    mean over the batch, which removes any constant the bias adds to that feature, and its β
    takes over the bias's job. Layer and group norm subtract a mean over the *features*
    instead, which leaves a bias that differs between features in place, so a linear layer
    before them keeps its bias.
    """
    if len(sizes) < 2:
        raise ValueError(f"sizes: expected at least [inputs, outputs], got {sizes}")
    for index, size in enumerate(sizes):
        check_int(f"sizes[{index}]", size, minimum=1)
    if norm is not None and not callable(norm):
        raise TypeError(f"norm: expected a function of the layer width (such as BatchNorm), got {type(norm).__name__}")
    layers = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        # The norm is built first because it decides the linear layer's bias. Norm layers
        # start from γ = 1, β = 0 and draw no random numbers, so the weights drawn do not
        # depend on this order.
        norm_layer = _build_norm(norm, fan_out)
        layers.append(nn.Linear(fan_in, fan_out, bias=not isinstance(norm_layer, BATCH_NORMS)))
        if norm_layer is not None:
            layers.append(norm_layer)
        layers.append(activation())
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


def _build_norm(norm, width: int):
    if norm is None:
        return None
    layer = norm(width)
    if not isinstance(layer, nn.Module):
        raise TypeError(f"norm: expected a function that returns an nn.Module, got {type(layer).__name__} from norm({width})")
    return layer
