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


def small_cnn(in_channels: int = 1, num_classes: int = 10, width: int = 16, image_hw: tuple = (8, 8)) -> nn.Sequential:
    """A small convolutional network for small images (the 8×8 digits; 32×32 CIFAR-10):

        conv 3×3 (width) → ReLU → conv 3×3 (2·width) → ReLU → max-pool 2×2 → linear (num_classes)

    The 3×3 convolutions are padded by 1, so they keep the image size; after the pooling the
    linear layer sees 2·width · (H/2) · (W/2) features, so the network is built for one image
    size ``image_hw`` (even H and W). Input ``(N, in_channels, H, W)``, output logits ``(N, num_classes)``.
    """
    check_int("in_channels", in_channels, minimum=1)
    check_int("num_classes", num_classes, minimum=2)
    check_int("width", width, minimum=1)
    if (not isinstance(image_hw, (tuple, list)) or len(image_hw) != 2
            or not all(isinstance(side, int) and side >= 2 and side % 2 == 0 for side in image_hw)):
        raise ValueError(f"image_hw: expected (height, width), two even integers >= 2, got {image_hw!r}")
    height, width_px = image_hw
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(2 * width * (height // 2) * (width_px // 2), num_classes),
    )
