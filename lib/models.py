"""Model builders shared by the chapters."""
from __future__ import annotations

from torch import nn

from lib.checks import check_int


def mlp(sizes: list, activation=nn.ReLU, norm=None) -> nn.Sequential:
    """A multilayer perceptron: ``sizes = [inputs, hidden..., outputs]``.

    Each hidden layer is Linear → (norm) → activation; the output layer is Linear alone
    (logits). ``norm`` is a factory called with the layer width, e.g.
    ``lambda width: BatchNorm(width)``. A linear layer followed by a norm gets no bias:
    the norm subtracts the mean, which removes any constant the bias would add.
    """
    if len(sizes) < 2:
        raise ValueError(f"sizes: expected at least [inputs, outputs], got {sizes}")
    for index, size in enumerate(sizes):
        check_int(f"sizes[{index}]", size, minimum=1)
    layers = []
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1]):
        layers.append(nn.Linear(fan_in, fan_out, bias=norm is None))
        if norm is not None:
            layers.append(norm(fan_out))
        layers.append(activation())
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)
