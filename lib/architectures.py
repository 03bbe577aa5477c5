"""CNN architectures: a NumPy reference for convolution and the residual block, counters of
parameters, multiply-adds and activation memory, and the torch models of the chapter (ResNet,
ResNeXt, MobileNet v1 and v2, ShuffleNet V2), each built at ImageNet size to match its reference
definition and small (8×8 digits) from the same code; the degradation experiment; an architecture
search in miniature.

Shapes follow torch: images are ``(N, C, H, W)``, convolution weights ``(C_out, C_in / groups, K, K)``.
"""
from __future__ import annotations

import copy
import ctypes
import json
import math
import os
import subprocess
import sys
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lib.checks import check_array, check_choice, check_int, check_positive, check_probability, check_shape
from lib.data import Splits, to_tensors
from lib.device import set_seed
from lib.notebook import best_seconds
from lib.train import evaluate, metric_over_seeds, train

# ---------------------------------------------------------------------------------------------
# NumPy reference: convolution, the residual block
# ---------------------------------------------------------------------------------------------
# The convolution is written as a sum over the kernel's offsets (p, q): the lesson's equation read
# term by term. For one offset, every output pixel (i, j) reads the padded input at (s·i + p, s·j + q),
# a strided slice, so the offset's whole contribution is one product over channels. im2col computes
# the same sums by first copying every receptive field into a matrix: faster for large kernels, but
# its index arithmetic hides the equation. Read this way the backward follows at once: what was read
# from a slice sends its gradient back into the same slice.


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """H_out = floor((H + 2P − K) / S) + 1: the positions a K-wide window takes in the padded input,
    S apart (the first at 0, the last no further than H + 2P − K)."""
    check_int("size", size, minimum=1)
    check_int("kernel", kernel, minimum=1)
    check_int("stride", stride, minimum=1)
    check_int("padding", padding, minimum=0)
    if kernel > size + 2 * padding:
        raise ValueError(f"kernel: expected at most the padded input's size {size} + 2·{padding} = "
                         f"{size + 2 * padding}, got {kernel}")
    return (size + 2 * padding - kernel) // stride + 1


def _check_conv_arguments(x, w, b, stride, padding, groups) -> None:
    check_array("x", x, ndim=4)
    check_array("w", w, ndim=4)
    check_int("stride", stride, minimum=1)
    check_int("padding", padding, minimum=0)
    check_int("groups", groups, minimum=1)
    c_in, c_out = x.shape[1], w.shape[0]
    if c_in % groups or c_out % groups:
        raise ValueError(f"groups: expected a divisor of both C_in = {c_in} (x's channels) and "
                         f"C_out = {c_out} (w's first dimension), got {groups}")
    if w.shape[1] != c_in // groups:
        raise ValueError(f"w: expected C_in / groups = {c_in} / {groups} = {c_in // groups} input channels "
                         f"per filter, shape (C_out, C_in / groups, K_h, K_w), got shape {w.shape}")
    padded = (x.shape[2] + 2 * padding, x.shape[3] + 2 * padding)
    if w.shape[2] > padded[0] or w.shape[3] > padded[1]:
        raise ValueError(f"w: kernel {w.shape[2]}×{w.shape[3]} is larger than the padded input "
                         f"{padded[0]}×{padded[1]} (x is {x.shape[2]}×{x.shape[3]}, padding={padding})")
    if b is not None:
        check_array("b", b, ndim=1)
        check_shape("b", b, (c_out,))


def _offset_slices(p: int, q: int, stride: int, out_height: int, out_width: int) -> tuple:
    """The padded-input positions (s·i + p, s·j + q) for every output pixel (i, j), as two slices."""
    return (slice(p, p + stride * (out_height - 1) + 1, stride),
            slice(q, q + stride * (out_width - 1) + 1, stride))


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: int = 1,
                   padding: int = 0, groups: int = 1):
    """2-D convolution with stride, zero padding and groups (a cross-correlation, as in every
    deep-learning library: the kernel is not flipped).

        out[n, o, i, j] = b[o] + Σ_{c in o's group, p, q} w[o, c, p, q] · x_pad[n, c, s·i + p, s·j + q]

    The channels split into ``groups`` equal groups: output channel o sees only the C_in / groups
    input channels of its own group, o // (C_out / groups). groups = C_in = C_out is the depthwise
    convolution (each output channel sees one input channel).

    Shapes: x (N, C_in, H, W); w (C_out, C_in / groups, K_h, K_w); b (C_out,) or None;
    out (N, C_out, H_out, W_out) with H_out = floor((H + 2P − K_h) / S) + 1, likewise W_out.
    Returns ``(out, cache)``.
    """
    _check_conv_arguments(x, w, b, stride, padding, groups)
    n, c_in, height, width = x.shape
    c_out, c_per_group, k_h, k_w = w.shape
    out_height = conv_output_size(height, k_h, stride, padding)
    out_width = conv_output_size(width, k_w, stride, padding)
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    # Split the channel axis into (group, channel within the group): a group never reads another's
    x_groups = x_pad.reshape(n, groups, c_per_group, *x_pad.shape[2:])       # (N, G, C_in/G, H_pad, W_pad)
    w_groups = w.reshape(groups, c_out // groups, c_per_group, k_h, k_w)     # (G, C_out/G, C_in/G, K_h, K_w)
    out = np.zeros((n, groups, c_out // groups, out_height, out_width), dtype=np.result_type(x, w))
    for p in range(k_h):
        for q in range(k_w):
            rows, cols = _offset_slices(p, q, stride, out_height, out_width)
            # the (p, q) term: Σ_c w[o, c, p, q] · x_pad[n, c, s·i + p, s·j + q], within each group
            out += np.einsum("goc,ngchw->ngohw", w_groups[..., p, q], x_groups[..., rows, cols])
    out = out.reshape(n, c_out, out_height, out_width)
    if b is not None:
        out = out + b.reshape(1, c_out, 1, 1)
    cache = {"x_groups": x_groups, "w_groups": w_groups, "stride": stride, "padding": padding,
             "has_bias": b is not None, "x_shape": x.shape, "out_shape": out.shape}
    return out, cache


def conv2d_backward(dout: np.ndarray, cache: dict):
    """Gradients ``(dx, dw, db)`` of :func:`conv2d_forward` (db is None when it had no bias).

    Each term w[o, c, p, q] · x_pad[n, c, s·i + p, s·j + q] of the forward sends dout[n, o, i, j]
    back to its two factors:

        dw[o, c, p, q] = Σ_{n, i, j} dout[n, o, i, j] · x_pad[n, c, s·i + p, s·j + q]
        dx_pad[n, c, s·i + p, s·j + q] += Σ_{o in c's group} dout[n, o, i, j] · w[o, c, p, q]
        db[o] = Σ_{n, i, j} dout[n, o, i, j]

    and dx is dx_pad without its border (the padded zeros are constants, not inputs).
    Shapes: dout (N, C_out, H_out, W_out); dx like x, dw like w, db (C_out,).
    """
    check_array("dout", dout, ndim=4)
    check_shape("dout", dout, cache["out_shape"])
    x_groups, w_groups, stride, padding = cache["x_groups"], cache["w_groups"], cache["stride"], cache["padding"]
    n, _, out_height, out_width = dout.shape
    groups = w_groups.shape[0]
    dout_groups = dout.reshape(n, groups, -1, out_height, out_width)     # (N, G, C_out/G, H_out, W_out)
    dx_groups = np.zeros_like(x_groups)
    dw_groups = np.zeros_like(w_groups)
    for p in range(w_groups.shape[3]):
        for q in range(w_groups.shape[4]):
            rows, cols = _offset_slices(p, q, stride, out_height, out_width)
            dw_groups[..., p, q] = np.einsum("ngohw,ngchw->goc", dout_groups, x_groups[..., rows, cols])
            # += : with kernel > stride, neighbouring offsets read (and so feed back into) the same pixels
            dx_groups[..., rows, cols] += np.einsum("ngohw,goc->ngchw", dout_groups, w_groups[..., p, q])
    height, width = cache["x_shape"][2:]
    dx = dx_groups.reshape(n, -1, *dx_groups.shape[3:])[:, :, padding:padding + height, padding:padding + width]
    dw = dw_groups.reshape(-1, *w_groups.shape[2:])
    db = dout.sum(axis=(0, 2, 3)) if cache["has_bias"] else None
    return dx, dw, db


# The residual block, without batch norm: the NumPy reference keeps only what makes a block
# residual. The torch blocks (BasicBlock below) put BN after each convolution, as He et al. do.
RESIDUAL_BLOCK_PARAMS = ("w1", "b1", "w2", "b2")


def residual_block_params(channels: int, rng: np.random.Generator, zero_branch: bool = False) -> dict:
    """Parameters of :func:`residual_block_forward`: He-initialized 3×3 weights (std √(2 / 9C)) and zero
    biases; ``zero_branch=True`` zeros every weight, so that F(x) = 0 and the block is relu(x).

    Shapes: {"w1", "w2": (C, C, 3, 3), "b1", "b2": (C,)} for C = ``channels``.
    """
    check_int("channels", channels, minimum=1)
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")
    std = 0.0 if zero_branch else np.sqrt(2.0 / (9 * channels))
    return {"w1": std * rng.normal(size=(channels, channels, 3, 3)), "b1": np.zeros(channels),
            "w2": std * rng.normal(size=(channels, channels, 3, 3)), "b2": np.zeros(channels)}


def _check_block_params(x, params) -> None:
    check_array("x", x, ndim=4)
    if not isinstance(params, dict) or set(params) != set(RESIDUAL_BLOCK_PARAMS):
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected a dict with keys {list(RESIDUAL_BLOCK_PARAMS)}, got {got}")
    channels = x.shape[1]
    for name in RESIDUAL_BLOCK_PARAMS:
        check_array(f"params[{name!r}]", params[name])
        expected = (channels, channels, 3, 3) if name.startswith("w") else (channels,)
        check_shape(f"params[{name!r}]", params[name], expected)  # same channels in and out: x + F(x) must add


def residual_block_forward(x: np.ndarray, params: dict):
    """y = relu(F(x) + x), F(x) = conv2(relu(conv1(x))), both convolutions 3×3, stride 1, padding 1.

    He et al.'s basic block without batch norm. Shapes: x (N, C, H, W); params as
    :func:`residual_block_params`; out like x. Returns ``(out, cache)``.
    """
    _check_block_params(x, params)
    a1, conv1_cache = conv2d_forward(x, params["w1"], params["b1"], padding=1)
    h1 = np.maximum(a1, 0.0)
    f, conv2_cache = conv2d_forward(h1, params["w2"], params["b2"], padding=1)   # F(x)
    total = f + x                                                                  # H(x) = F(x) + x
    cache = {"conv1": conv1_cache, "a1": a1, "conv2": conv2_cache, "total": total}
    return np.maximum(total, 0.0), cache


def residual_block_backward(dout: np.ndarray, cache: dict):
    """Gradients ``(dx, grads)`` of :func:`residual_block_forward`; grads has the keys of params.

    dL/dx = dL/dH · (I + dF/dx), dF/dx the branch's Jacobian and I the identity matrix: the sum
    hands its gradient to x unchanged, so x receives it even where the branch's dF/dx is small.
    Shapes: dout like x; dx like x.
    """
    check_array("dout", dout, ndim=4)
    check_shape("dout", dout, cache["total"].shape)
    d_total = dout * (cache["total"] > 0)                 # through the final ReLU
    dx_shortcut = d_total                                 # "+ x": the identity passes dL/dH untouched
    dh1, dw2, db2 = conv2d_backward(d_total, cache["conv2"])
    da1 = dh1 * (cache["a1"] > 0)
    dx_branch, dw1, db1 = conv2d_backward(da1, cache["conv1"])
    dx = dx_shortcut + dx_branch                          # dL/dH · I + dL/dH · dF/dx
    return dx, {"w1": dw1, "b1": db1, "w2": dw2, "b2": db2}


# ---------------------------------------------------------------------------------------------
# Cost counters: parameters, multiply-adds, activation memory
# ---------------------------------------------------------------------------------------------

# Multiply-adds are counted as the papers count them (AlexNet, VGG, GoogLeNet and ResNet all
# quote convolutions and fully connected layers only): a convolution or a linear layer costs one
# multiply-add per weight it applies; normalization, activations, pooling, dropout and additions
# cost 0. They are cheap next to the convolutions, and each would need its own convention.
_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TRANSPOSED_CONVOLUTIONS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMALIZATIONS = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm,
    nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
)
_ZERO_COST_WITH_PARAMETERS = _NORMALIZATIONS + (nn.PReLU, nn.Embedding)


@dataclass
class LayerCost:
    """What one call of one leaf module costs for a given input.

    ``params`` are the module's own weights, counted at its first call only: a module that runs
    twice (torchvision's BasicBlock calls its ReLU twice) reuses them, so the ``params`` of all
    entries add up to the model's count. ``activations`` are the elements of its output.
    """

    name: str  # qualified name in the model, e.g. "layer1.0.conv1"
    kind: str  # the module's class name, e.g. "Conv2d"
    output_shape: tuple  # e.g. (1, 64, 56, 56)
    params: int
    macs: int
    activations: int


@dataclass
class Costs:
    """A model's totals for one input: parameters, multiply-adds, activations (output elements of
    every layer call). The activations estimate what a training step keeps for the backward pass;
    it is an estimate, not a measurement: autograd keeps some outputs and not others, and tensors
    that are no module's output (see ``saved_for_backward``, which measures it)."""

    params: int
    macs: int
    activations: int

    @property
    def activation_bytes(self) -> int:
        """Activation memory in bytes, at 4 bytes per float32 element."""
        return 4 * self.activations


def count_parameters(model: nn.Module) -> int:
    """The number of weights in ``model``, trainable or not. Buffers (BatchNorm's running mean and
    variance) are statistics, not parameters, and are left out; a shared parameter counts once."""
    _check_model(model)
    return sum(parameter.numel() for parameter in model.parameters())


def layer_costs(model: nn.Module, input_shape: tuple) -> list[LayerCost]:
    """One ``LayerCost`` per call of a leaf module (one without children), in execution order,
    for a forward pass of a zero input of ``input_shape``, e.g. ``(1, 3, 224, 224)``.

    The pass runs on a copy of ``model`` on the "meta" device, in eval mode (GoogLeNet then skips
    its auxiliary classifiers): meta tensors carry shapes and no numbers, so counting VGG-16 at
    224×224 takes milliseconds and no memory. A module that runs several times gets one entry per
    call. Two caveats for ``activations``, which counts every output:

    - Work done outside modules (``x + identity``, ``torch.flatten``, ``torch.cat``, a functional
      ``F.relu`` as in torchvision's GoogLeNet) has no entry: it costs no multiply-adds, and its
      outputs are left out of the activations, even where autograd keeps them.
    - A module whose output is a view of its input (``nn.Flatten``) or its input itself
      (``nn.Identity``, an in-place ReLU) is counted again, although it holds no new memory.
    """
    _check_model(model)
    input_shape = _check_input_shape(input_shape, model)
    copy_on_meta = _on_meta(model).eval()
    costs, seen = [], set()

    def record(name):
        def hook(module, inputs, output):
            first_call = id(module) not in seen
            seen.add(id(module))
            params = sum(p.numel() for p in module.parameters(recurse=False)) if first_call else 0
            costs.append(LayerCost(name, type(module).__name__, _shape_of(output), params,
                                   _macs(module, inputs, output), _elements(output)))
        return hook

    for name, module in copy_on_meta.named_modules():
        if not any(module.children()):
            module.register_forward_hook(record(name or type(module).__name__))
    with torch.no_grad():
        copy_on_meta(torch.zeros(input_shape, device="meta"))
    return costs


def model_costs(model: nn.Module, input_shape: tuple) -> Costs:
    """The totals of ``layer_costs``: parameters (all of them, as stored on disk), multiply-adds and
    activations of one forward pass of an input of ``input_shape``."""
    layers = layer_costs(model, input_shape)
    return Costs(params=count_parameters(model), macs=sum(layer.macs for layer in layers),
                 activations=sum(layer.activations for layer in layers))


def flop_counter_macs(model: nn.Module, input_shape: tuple) -> int:
    """Multiply-adds as torch counts them: ``torch.utils.flop_counter.FlopCounterMode`` watches the
    operations themselves (conv, matmul) and counts 2 FLOPs per multiply-add, a multiply and an
    add; it counts nothing for elementwise operations. Its total FLOPs // 2 is then comparable with
    ``model_costs(...).macs``, which is computed from the layers' shapes instead."""
    _check_model(model)
    input_shape = _check_input_shape(input_shape, model)
    copy_on_meta = _on_meta(model).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        copy_on_meta(torch.zeros(input_shape, device="meta"))
    return counter.get_total_flops() // 2


@dataclass
class SavedForBackward:
    """What autograd keeps for the backward pass of one training-mode forward pass, in bytes, the
    weights and buffers left out (the model holds them anyway); a storage shared by several saved
    tensors (a view, an in-place result) counts once.

    ``by_kind`` maps a layer kind (the module's class name) to two numbers: the bytes of all the
    outputs of the layers of that kind (what ``layer_costs`` counts as their activations) and the
    bytes of those outputs that autograd keeps. ``not_outputs`` are the saved bytes that are no
    module's output: the input, the outputs of functional operations (``torch.cat``, ``F.relu``),
    max-pooling's indices, dropout's masks; ``total`` includes them.
    """

    total: int
    by_kind: dict  # kind -> (output bytes, output bytes kept for the backward pass)
    not_outputs: int

    @property
    def counted(self) -> int:
        """The bytes of every layer's output: ``model_costs(...).activation_bytes`` for float32."""
        return sum(output_bytes for output_bytes, _ in self.by_kind.values())


def saved_for_backward(model: nn.Module, input_shape: tuple) -> SavedForBackward:
    """Measure what autograd saves for the backward pass, per layer kind, for one training-mode
    forward pass of an input of ``input_shape``, e.g. ``(1, 3, 224, 224)``.

    Every tensor that an operation saves for its backward passes through the pack hook of
    ``torch.autograd.graph.saved_tensors_hooks``. The pass runs on a "meta" copy of ``model``, as
    ``layer_costs`` does: what is saved depends on the shapes only, so no number is computed. The
    normalizations run their real (slow on meta, 20 ms a call) code here, since what they save is
    the point.
    """
    _check_model(model)
    input_shape = _check_input_shape(input_shape, model)
    copy_on_meta = _on_meta(model, shapes_only=False).train()
    state = {id(tensor) for tensor in (*copy_on_meta.parameters(), *copy_on_meta.buffers())}
    saved = {}  # id -> tensor: the tensors hold their ids, so no id is reused during the pass
    outputs = []  # (kind, output) per call of a leaf module

    def pack(tensor):
        base = _storage_owner(tensor)
        if id(base) not in state:
            saved[id(base)] = base
        return tensor

    def record(module, inputs, output):
        outputs.extend((type(module).__name__, tensor) for tensor in _tensors(output))

    for module in copy_on_meta.modules():
        if not any(module.children()):
            module.register_forward_hook(record)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        copy_on_meta(torch.zeros(input_shape, device="meta"))
    by_kind = {}
    for kind, tensor in outputs:
        output_bytes, kept_bytes = by_kind.get(kind, (0, 0))
        size = tensor.numel() * tensor.element_size()
        by_kind[kind] = (output_bytes + size, kept_bytes + (size if id(_storage_owner(tensor)) in saved else 0))
    owned = {id(_storage_owner(tensor)) for _, tensor in outputs}
    return SavedForBackward(total=sum(base.untyped_storage().nbytes() for base in saved.values()),
                            by_kind=by_kind,
                            not_outputs=sum(base.untyped_storage().nbytes() for key, base in saved.items()
                                            if key not in owned))


def _storage_owner(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor whose storage ``tensor`` uses: itself, or the tensor it is a view of."""
    return tensor if tensor._base is None else tensor._base


def cost_table(models: dict[str, nn.Module], input_shape: tuple) -> str:
    """A plain-text table with one row per model: parameters, multiply-adds and activation memory
    (float32) for one forward pass of an input of ``input_shape``."""
    if not isinstance(models, dict):
        raise TypeError(f"models: expected a dict of name -> nn.Module, got {type(models).__name__}")
    if not models:
        raise ValueError("models: expected at least one model, got an empty dict")
    rows = [("model", "parameters", "multiply-adds", "activation memory")]
    for name, model in models.items():
        costs = model_costs(model, input_shape)
        rows.append((str(name), _format_count(costs.params), _format_count(costs.macs),
                     _format_count(costs.activation_bytes, unit="B")))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join(row[0].ljust(widths[0]) + "".join(f"  {cell:>{width}}" for cell, width in zip(row[1:], widths[1:]))
                     for row in rows)


def _macs(module: nn.Module, inputs: tuple, output) -> int:
    """Multiply-adds of one call of a leaf module (see the note above ``LayerCost``)."""
    if isinstance(module, _TRANSPOSED_CONVOLUTIONS):
        # Each input element is scattered to (C_out / groups) K_h K_w outputs.
        per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
        return inputs[0].numel() * per_input
    if isinstance(module, _CONVOLUTIONS):
        # Each output element (N C_out H_out W_out of them) is a dot product of length
        # K_h K_w C_in / groups: MACs = K_h K_w (C_in / groups) C_out H_out W_out per image.
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features  # each output is a dot product of length in
    if isinstance(module, _ZERO_COST_WITH_PARAMETERS) or next(module.parameters(recurse=False), None) is None:
        return 0
    # A leaf with weights of an unknown kind may multiply them in any way: refuse to guess.
    raise ValueError(f"model: cannot count the multiply-adds of its {type(module).__name__} layer; "
                     "known kinds: convolutions, Linear, normalization, parameter-free layers")


def _on_meta(model: nn.Module, shapes_only: bool = True) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers are empty "meta" tensors. The memo hands
    ``deepcopy`` a meta tensor for each one, so no weight is ever copied (VGG-16 has 138 M).
    ``shapes_only``: the normalizations pass their input through (same shapes, no autograd)."""
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in model.parameters()}
    memo.update({id(b): torch.empty_like(b, device="meta") for b in model.buffers()})
    copy_on_meta = copy.deepcopy(model, memo)
    for module in copy_on_meta.modules():
        if shapes_only and isinstance(module, _NORMALIZATIONS):
            # On meta, torch computes a normalization's output shape by running its decomposition
            # in Python (20 ms a call: 3 s for ResNet-152's 155 BatchNorms). Its output has its
            # input's shape, so passing the input through gives the same shapes at once.
            module.forward = _pass_through
    return copy_on_meta


def _pass_through(x: torch.Tensor) -> torch.Tensor:
    return x


def _shape_of(output) -> tuple:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    return tuple(_shape_of(item) for item in output if isinstance(item, (torch.Tensor, tuple, list)))


def _elements(output) -> int:
    return sum(tensor.numel() for tensor in _tensors(output))


def _tensors(output) -> list[torch.Tensor]:
    """The tensors in a module's output: a tensor, or tuples and lists of them (nested)."""
    if isinstance(output, torch.Tensor):
        return [output]
    return [tensor for item in output if isinstance(item, (torch.Tensor, tuple, list)) for tensor in _tensors(item)]


def _format_count(count: int, unit: str = "") -> str:
    """3 significant digits with a G/M/k prefix: 25557032 -> '25.6 M'."""
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.3g} {prefix}{unit}"
    return f"{count} {unit}".rstrip()


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")


def _check_input_shape(input_shape, model: nn.Module) -> tuple:
    """A tuple of positive ints; 4 of them, (N, C, H, W), for a model with 2-D convolutions."""
    if not isinstance(input_shape, (tuple, list)):
        raise TypeError(f"input_shape: expected a tuple of positive integers such as (1, 3, 224, 224), "
                        f"got {type(input_shape).__name__}")
    if not input_shape:
        raise ValueError("input_shape: expected at least one entry, got ()")
    for size in input_shape:
        check_int("input_shape", size, minimum=1)
    if any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules()) and len(input_shape) != 4:
        raise ValueError(f"input_shape: expected 4 entries (N, C, H, W) for a model with 2-D convolutions, "
                         f"got {tuple(input_shape)}")
    return tuple(int(size) for size in input_shape)


# ---------------------------------------------------------------------------------------------
# ResNet and ResNeXt
# ---------------------------------------------------------------------------------------------
# Attribute names (conv1, bn1, downsample, layer1, ...) are torchvision's, so that a torchvision
# model's state dict loads into these models and the two can be compared output for output.


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    # No bias: the batch norm that follows subtracts the channel mean, which would cancel a bias;
    # BN's own shift (beta) plays its role.
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def _needs_projection(in_channels: int, out_channels: int, stride: int) -> bool:
    # x + F(x) needs x and F(x) of one shape; when the block changes it, the shortcut must too.
    return stride != 1 or in_channels != out_channels


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """He et al.'s option B: a 1x1 convolution (with the block's stride) and BN where the shape
    changes, the identity (None) elsewhere. Option A, zero-padding the new channels, adds no
    parameters but was slightly worse in their Table 3."""
    if not _needs_projection(in_channels, out_channels, stride):
        return None
    return nn.Sequential(_conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):  # check_choice would let 1 and 0 pass as True and False
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def _check_block(in_channels, channels, stride, shortcut=True) -> None:
    check_int("in_channels", in_channels, minimum=1)
    check_int("channels", channels, minimum=1)
    check_int("stride", stride, minimum=1)
    _check_flag("shortcut", shortcut)


class BasicBlock(nn.Module):
    """ResNet-18/34's block (He et al. 2016, Fig. 2): two 3x3 convolutions and a shortcut,
    ``relu(F(x) + x)``. ``shortcut=False`` is the paper's plain counterpart: the same layers, no sum.

    (N, in_channels, H, W) -> (N, channels, ceil(H / stride), ceil(W / stride)).
    """

    expansion = 1  # output channels = expansion * channels

    def __init__(self, in_channels: int, channels: int, stride: int = 1, shortcut: bool = True):
        super().__init__()
        _check_block(in_channels, channels, stride, shortcut)
        # The stride sits in the first conv: the second then works at the reduced resolution.
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        # One ReLU module serves both places; it holds no state. Not in place, unlike torchvision's:
        # outputs and gradients are the same either way (0.0 difference, measured in float64),
        # but in place it would overwrite bn1's output, which a forward hook that records
        # activations would then see rectified.
        self.relu = nn.ReLU()
        self.shortcut = shortcut
        self.downsample = _projection(in_channels, channels, stride) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.bn1(out)  # BN after each conv, before the nonlinearity (He et al., Sec. 3.4)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.shortcut:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)  # the ReLU after the sum: why this block is not the identity at F = 0


def _bottleneck_width(channels: int, groups: int, width_per_group: int) -> int:
    """The 3x3 convolution's channels: ``groups`` paths of ``channels * width_per_group / 64``
    each (ResNet: 1 path of ``channels``; ResNeXt-50 32x4d's first stage: 32 paths of 4)."""
    check_int("groups", groups, minimum=1)
    check_int("width_per_group", width_per_group, minimum=1)
    path_width = channels * width_per_group // 64
    if path_width < 1:
        raise ValueError(f"width_per_group: channels * width_per_group / 64 must be >= 1, "
                         f"got {channels} * {width_per_group} / 64")
    return path_width * groups


class Bottleneck(nn.Module):
    """ResNet-50/101/152's block (He et al. 2016, Fig. 5 right): 1x1 reduce, 3x3, 1x1 expand to
    ``4 * channels``; with ``groups > 1`` the 3x3 is grouped and this is ResNeXt's block (Xie et
    al. 2017, Fig. 3c).

    ``stride_in_1x1=False`` puts the stride in the 3x3, as torchvision does ("ResNet v1.5");
    ``True`` puts it in the first 1x1, as the paper did ("v1"). The layers and their parameters
    are the same; only where the resolution halves differs.

    (N, in_channels, H, W) -> (N, 4 * channels, ceil(H / stride), ceil(W / stride)).
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, groups: int = 1,
                 width_per_group: int = 64, shortcut: bool = True, stride_in_1x1: bool = False):
        super().__init__()
        _check_block(in_channels, channels, stride, shortcut)
        _check_flag("stride_in_1x1", stride_in_1x1)
        width = _bottleneck_width(channels, groups, width_per_group)
        out_channels = channels * self.expansion
        # v1's strided 1x1 skips 3 of 4 pixels unseen; v1.5's strided 3x3 reads them all. The 3x3
        # costs the same in both (its output has the same size); the first 1x1 does not: in v1.5
        # it runs at the block's input resolution, 4 times the pixels, in each stage's first
        # block. ResNet-50 costs 4.1 G multiply-adds instead of 3.8 G.
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        # reduce: the 3x3 then works on few channels
        self.conv1 = _conv1x1(in_channels, width, stride_1x1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride_3x3, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, out_channels)  # expand back to the stage's width
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut = shortcut
        self.downsample = _projection(in_channels, out_channels, stride) if shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv3(out)
        out = self.bn3(out)
        if self.shortcut:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)


class PreActBlock(nn.Module):
    """The pre-activation block (He et al. 2016, "Identity mappings", Fig. 1b): BN -> ReLU -> conv,
    twice, and nothing after the sum, so ``x_{l+1} = x_l + F(x_l)`` exactly.

    (N, in_channels, H, W) -> (N, channels, ceil(H / stride), ceil(W / stride)).
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        _check_block(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = _conv3x3(channels, channels)
        self.relu = nn.ReLU()
        # A 1x1 convolution without BN: the next block's BN normalizes the sum.
        needs_projection = _needs_projection(in_channels, channels, stride)
        self.downsample = _conv1x1(in_channels, channels, stride) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn1(x)
        out = self.relu(out)
        # Where the shape changes, the projection reads the normalized input, as in the
        # authors' code; elsewhere the shortcut is x itself, untouched by any BN or ReLU.
        identity = x if self.downsample is None else self.downsample(out)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv2(out)
        return out + identity


def torchvision_init(model: nn.Module) -> nn.Module:
    """Initialize as torchvision's ResNet does, in place: He (Kaiming) normal weights for every
    convolution, with the fan-out (K^2 C_out) so that gradients keep their scale going backward;
    every BN's gamma 1 and beta 0. Linear layers keep PyTorch's default. Returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def _stem(in_channels: int, width: int, small: bool) -> tuple[nn.Module, nn.Module]:
    """The first conv and pooling. ImageNet (from GoogLeNet): a 7x7 stride-2 conv and a stride-2
    max-pool cut 224x224 to 56x56 before any stage, so the stages work on 16x fewer pixels.
    Small (8x8 digits): a 3x3 stride-1 conv and no pooling; there is no resolution to spare."""
    if small:
        return nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False), nn.Identity()
    conv = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
    return conv, nn.MaxPool2d(kernel_size=3, stride=2, padding=1)


def _stage(block: type, in_channels: int, channels: int, num_blocks: int, stride: int,
           block_options: dict) -> nn.Sequential:
    """``num_blocks`` blocks; only the first changes the resolution (``stride``) and channels."""
    blocks = [block(in_channels, channels, stride, **block_options)]
    out_channels = channels * block.expansion
    blocks += [block(out_channels, channels, 1, **block_options) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


def _block_options(block: type, groups: int, width_per_group: int, stride_in_1x1: bool) -> dict:
    check_choice("block", block, (BasicBlock, Bottleneck))
    _check_flag("stride_in_1x1", stride_in_1x1)
    if block is Bottleneck:
        return {"groups": groups, "width_per_group": width_per_group,
                "stride_in_1x1": stride_in_1x1}
    if groups != 1 or width_per_group != 64:  # as torchvision: the basic block has one path
        raise ValueError(f"groups: BasicBlock takes groups=1 and width_per_group=64, "
                         f"got {groups} and {width_per_group}")
    if stride_in_1x1:  # the basic block has no 1x1 convolution to put it in
        raise ValueError("stride_in_1x1: BasicBlock has no 1x1 convolution; expected False")
    return {}


class ResNet(nn.Module):
    """He et al.'s ResNet (torchvision's definition; ResNeXt with ``groups > 1``): a stem, four
    stages of ``layers[i]`` blocks at ``stem_width * (1, 2, 4, 8)`` channels (times the block's
    expansion), each stage after the first halving the resolution, then global average pooling
    and one fully connected layer. ``stem_width`` (64) is the stem's and the first stage's
    channels; torchvision's ``base_width`` is another thing, this class's ``width_per_group``.
    ``stride_in_1x1`` (bottleneck only): see :class:`Bottleneck`.

    ``small=True`` builds the 8x8-digits version from the same code: a 3x3 stride-1 stem, no
    max-pool (stages at 8, 4, 2, 1 pixels). (N, in_channels, H, W) -> (N, num_classes) logits.
    """

    def __init__(self, block: type, layers: list[int], num_classes: int = 1000, in_channels: int = 3,
                 groups: int = 1, width_per_group: int = 64, small: bool = False, stem_width: int = 64,
                 stride_in_1x1: bool = False):
        super().__init__()
        block_options = _block_options(block, groups, width_per_group, stride_in_1x1)
        if not isinstance(layers, (list, tuple)) or len(layers) != 4:
            raise ValueError(f"layers: expected a list of 4 block counts, got {layers!r}")
        for count in layers:
            check_int("layers", count, minimum=1)
        check_int("num_classes", num_classes, minimum=1)
        check_int("in_channels", in_channels, minimum=1)
        check_int("stem_width", stem_width, minimum=1)
        _check_flag("small", small)

        self.conv1, maxpool = _stem(in_channels, stem_width, small)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU()
        self.maxpool = maxpool
        stages, channels_in = [], stem_width
        for index, num_blocks in enumerate(layers):
            # VGG's rule: channels double where the resolution halves, so each stage costs
            # about the same multiply-adds. The stem's pooling already halved before stage 1.
            channels = stem_width * 2 ** index
            stride = 1 if index == 0 else 2
            stages.append(_stage(block, channels_in, channels, num_blocks, stride, block_options))
            channels_in = channels * block.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        # Global average pooling (Lin et al.'s NiN) and one fc layer replace VGG's three fc layers.
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels_in, num_classes)
        torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))


# depth = 2 (stem conv, fc) + layers per block (2 basic, 3 bottleneck) * blocks: 2 + 2*8 = 18.
_RESNET_LAYOUTS = {
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
    152: (Bottleneck, [3, 8, 36, 3]),
}


def resnet(depth: int, num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-``depth`` for depth in 18, 34, 50, 101, 152 (He et al. 2016, Table 1); ``kwargs``
    go to :class:`ResNet` (``in_channels``, ``small``, ``stem_width``,
    ``stride_in_1x1``, ...)."""
    check_choice("depth", depth, tuple(_RESNET_LAYOUTS))
    block, layers = _RESNET_LAYOUTS[depth]
    return ResNet(block, layers, num_classes=num_classes, **kwargs)


def resnext(depth: int = 50, groups: int = 32, width_per_group: int = 4, **kwargs) -> ResNet:
    """ResNeXt-``depth`` (``groups``x``width_per_group``d), e.g. 50-32x4d (Xie et al. 2017):
    ResNet's bottleneck layout with a grouped 3x3 convolution."""
    check_choice("depth", depth, (50, 101, 152))
    return resnet(depth, groups=groups, width_per_group=width_per_group, **kwargs)


@dataclass(frozen=True)
class PaperNumbers:
    """What He et al. (2016) print for a ResNet on ImageNet: multiply-adds (their "FLOPs", Table 1)
    and the top-1 / top-5 validation error in % with 10-crop testing; ``error_source`` names the
    table the errors come from (None: the table gives no top-5)."""

    macs: float
    top1_error: float
    top5_error: float | None
    error_source: str


# Quoted by two lessons (the cost table and the ResNet family), so written down once.
RESNET_PAPER_NUMBERS = {
    "ResNet-18": PaperNumbers(1.8e9, 27.88, None, "Table 2 (zero-padding shortcuts, option A)"),
    "ResNet-34": PaperNumbers(3.6e9, 24.52, 7.46, "Table 3 (projection shortcuts, option B)"),
    "ResNet-50": PaperNumbers(3.8e9, 22.85, 6.71, "Table 3"),
    "ResNet-101": PaperNumbers(7.6e9, 21.75, 6.05, "Table 3"),
    "ResNet-152": PaperNumbers(11.3e9, 21.43, 5.71, "Table 3"),
}


def zero_init_residual(model: nn.Module) -> nn.Module:
    """Zero the last BN's gamma in every residual branch (Goyal et al. 2017), in place: each
    branch then outputs 0 (BN's beta is 0 at init), so a post-activation block computes relu(x)
    and a pre-activation block exactly x. Plain blocks (no shortcut) are left alone: zeroing
    them would cut the signal. Returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        if isinstance(module, Bottleneck) and module.shortcut:
            nn.init.zeros_(module.bn3.weight)
        elif isinstance(module, BasicBlock) and module.shortcut:
            nn.init.zeros_(module.bn2.weight)
        elif isinstance(module, PreActBlock):
            nn.init.zeros_(module.bn2.weight)
    return model


@dataclass
class StageCost:
    """One stage of a ResNet for a given input: ``stage`` is "stem", "layer1".."layer4" or "head"
    (pooling and fc); ``blocks`` its residual blocks (0 for stem and head); ``kind`` the block's
    class name or the stem's and head's layers; ``output_shape`` the stage's last output."""

    stage: str
    blocks: int
    kind: str
    output_shape: tuple
    params: int
    macs: int


def _stage_name(layer_name: str) -> str:
    """"layer2.0.conv1" -> "layer2"; the stem's conv1, bn1, relu, maxpool -> "stem"; else "head"."""
    top = layer_name.split(".")[0]
    if top.startswith("layer"):
        return top
    return "head" if top in ("avgpool", "fc") else "stem"


def _stage_description(model: ResNet, stage: str) -> tuple[int, str]:
    if stage.startswith("layer"):
        blocks = getattr(model, stage)
        return len(blocks), type(blocks[0]).__name__
    if stage == "head":
        return 0, f"avg-pool, fc to {model.fc.out_features} classes"
    kernel, stride = model.conv1.kernel_size[0], model.conv1.stride[0]
    pool = ", max-pool/2" if isinstance(model.maxpool, nn.MaxPool2d) else ""
    return 0, f"{kernel}x{kernel} conv/{stride}{pool}"


def stage_costs(model: ResNet, input_shape: tuple) -> list[StageCost]:
    """The costs of ``layer_costs`` summed per stage of a :class:`ResNet`, in execution order."""
    if not isinstance(model, ResNet):
        raise TypeError(f"model: expected a ResNet, got {type(model).__name__}")
    totals = {}  # stage -> [params, macs, output shape of its last layer]; dicts keep the order
    for layer in layer_costs(model, input_shape):
        entry = totals.setdefault(_stage_name(layer.name), [0, 0, None])
        entry[0] += layer.params
        entry[1] += layer.macs
        entry[2] = layer.output_shape
    return [StageCost(stage, *_stage_description(model, stage), shape, params, macs)
            for stage, (params, macs, shape) in totals.items()]


def stage_table(model: ResNet, input_shape: tuple) -> str:
    """A plain-text table of :func:`stage_costs`: stage, blocks, block kind, output channels and
    H x W (both "-" for the head, whose output is the class scores), parameters, multiply-adds
    and each stage's share of the multiply-adds."""
    stages = stage_costs(model, input_shape)
    total_macs = sum(stage.macs for stage in stages)
    rows = [("stage", "blocks", "block", "channels", "H x W", "params", "MACs", "% MACs")]
    for stage in stages:
        shape = stage.output_shape
        image = len(shape) == 4  # the head's output is (N, classes): no channels, no H x W
        channels, size = (str(shape[1]), f"{shape[2]} x {shape[3]}") if image else ("-", "-")
        rows.append((stage.stage, str(stage.blocks), stage.kind, channels, size,
                     _format_count(stage.params), _format_count(stage.macs),
                     f"{100 * stage.macs / total_macs:.1f}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) if column < 3 else cell.rjust(width)
                               for column, (cell, width) in enumerate(zip(row, widths)))
                     for row in rows)


# ---------------------------------------------------------------------------------------------
# Efficient networks: MobileNet v1, MobileNetV2, ShuffleNet V2, channel shuffle, timing
# ---------------------------------------------------------------------------------------------


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
             groups: int = 1) -> list[nn.Module]:
    """A convolution padded to keep the size (before the stride) and its batch norm, as a list so that
    callers can splice it flat into their ``nn.Sequential`` (torchvision's parameter names are flat
    indices). No bias: the batch norm's shift makes it redundant."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=(kernel_size - 1) // 2,
                     groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(out_channels)]


def _conv_bn_act(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, activation=nn.ReLU) -> nn.Sequential:
    """conv -> BN -> activation as one ``nn.Sequential`` (indices 0, 1, 2, as torchvision's
    ``Conv2dNormActivation``)."""
    return nn.Sequential(*_conv_bn(in_channels, out_channels, kernel_size, stride, groups),
                         activation(inplace=True))


def _check_groups(channels: int, groups) -> int:
    groups = check_int("groups", groups, minimum=1)
    if channels % groups:
        raise ValueError(f"groups: expected a divisor of the {channels} channels, got {groups}")
    return groups


def _check_stride(stride) -> int:
    stride = check_int("stride", stride, minimum=1)
    if stride > 2:
        raise ValueError(f"stride: expected 1 or 2, got {stride}")
    return stride


class DepthwiseSeparable(nn.Module):
    """MobileNet v1's block: a depthwise 3×3 convolution (one filter per channel, ``groups = C``)
    filters space, then a pointwise 1×1 convolution mixes channels; each followed by BN and ReLU.

    (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        in_channels = check_int("in_channels", in_channels, minimum=1)
        out_channels = check_int("out_channels", out_channels, minimum=1)
        stride = _check_stride(stride)
        self.depthwise = _conv_bn_act(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = _conv_bn_act(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def conv_fans(conv: nn.modules.conv._ConvNd) -> tuple[int, int]:
    """The group-corrected (fan-in, fan-out) of one unit of ``conv``, a 1-D, 2-D or 3-D
    convolution with kernel K = prod(kernel_size): an output unit sums (C_in / groups) K inputs,
    and an input unit feeds (C_out / groups) K outputs, since with groups each channel reaches
    only its own group's channels.

    Like He et al. and PyTorch, the fan-out counts the connections per kernel position and ignores
    the stride: at stride 2 an input pixel falls in 9/4 windows of a 3×3 kernel on average, not in 9.
    ``torch.nn.init._calculate_fan_in_and_fan_out``, which ``kaiming_normal_`` uses, reads the fan-in
    from the weight's shape (C_out, C_in / groups, *kernel_size) correctly but takes the fan-out to be
    C_out K whatever the groups: ``groups`` times too large. For a depthwise convolution
    (groups = C) the group-corrected fan-out is K, torch's C K.

    Transposed convolutions share the base class but are refused: their weight is laid out the
    other way round, (C_in, C_out / groups, *kernel_size), and this function reads convolutions'.
    """
    if not isinstance(conv, nn.modules.conv._ConvNd) or isinstance(conv, nn.modules.conv._ConvTransposeNd):
        raise TypeError(f"conv: expected a torch convolution (nn.Conv1d, 2d or 3d), got {type(conv).__name__}")
    if isinstance(conv.weight, nn.parameter.UninitializedParameter):
        raise ValueError("conv: a lazy convolution has no shape before its first forward pass; run one first")
    kernel = math.prod(conv.kernel_size)
    return conv.in_channels // conv.groups * kernel, conv.out_channels // conv.groups * kernel


# MobileNet v1, Table 1 of Howard et al. (2017): the stem is a full 3×3 convolution with 32
# channels at stride 2, then 13 depthwise-separable blocks as (output channels, stride). The
# table prints "s2" for the next-to-last block, but its own feature sizes (7×7 in and out) say
# stride 1, as every released implementation uses.
MOBILENET_V1_STEM = 32
MOBILENET_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


class MobileNetV1(nn.Module):
    """MobileNet v1 (Howard et al., 2017, Table 1), every layer's channels ``int(alpha * c)``.

    The resolution multiplier rho is not a parameter: it is the input size (224 rho), so count the
    costs at that input shape. ``small=True`` is for 8×8 digits: the stem and the first downsampling
    block keep stride 1, so the input shrinks 8 times instead of 32 and ends at 1×1.
    (N, in_channels, H, W) -> (N, num_classes) logits.
    """

    def __init__(self, alpha: float = 1.0, num_classes: int = 1000, in_channels: int = 3,
                 small: bool = False):
        super().__init__()
        alpha = check_positive("alpha", alpha)
        num_classes = check_int("num_classes", num_classes, minimum=1)
        in_channels = check_int("in_channels", in_channels, minimum=1)

        def width(channels: int) -> int:
            return max(1, int(alpha * channels))

        strides = [stride for _, stride in MOBILENET_V1_BLOCKS]
        if small:
            strides[strides.index(2)] = 1
        self.stem = _conv_bn_act(in_channels, width(MOBILENET_V1_STEM), 3, stride=1 if small else 2)
        blocks, channels = [], width(MOBILENET_V1_STEM)
        for (out_channels, _), stride in zip(MOBILENET_V1_BLOCKS, strides):
            blocks.append(DepthwiseSeparable(channels, width(out_channels), stride))
            channels = width(out_channels)
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


class InvertedResidual(nn.Module):
    """MobileNetV2's block (Sandler et al., 2018): expand the thin input ``expand_ratio`` times with
    a 1×1 convolution, filter with a depthwise 3×3, project back to a thin output with a LINEAR 1×1
    (BN, no ReLU6: the paper argues a ReLU in the thin space destroys information). The shortcut
    joins the thin ends when the shape allows (stride 1, in = out channels).

    Attribute ``conv`` holds the layers under torchvision's names, so its state dicts load.
    (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int):
        super().__init__()
        in_channels = check_int("in_channels", in_channels, minimum=1)
        out_channels = check_int("out_channels", out_channels, minimum=1)
        stride = _check_stride(stride)
        expand_ratio = check_int("expand_ratio", expand_ratio, minimum=1)
        hidden = in_channels * expand_ratio
        expand = [_conv_bn_act(in_channels, hidden, 1, activation=nn.ReLU6)] if expand_ratio > 1 else []
        self.conv = nn.Sequential(
            *expand,
            _conv_bn_act(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
            *_conv_bn(hidden, out_channels, 1),  # the linear bottleneck
        )
        self.use_shortcut = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_shortcut else self.conv(x)


# MobileNetV2, Table 2 of Sandler et al. (2018): (expansion t, output channels c, repeats n,
# stride s of the first repeat).
MOBILENET_V2_SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                         (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _round_to_eight(channels: float) -> int:
    """Channels scaled by a width multiplier, rounded to the nearest multiple of 8 (hardware likes
    them) but never below 90 % of the scaled value: the rule of the reference implementation."""
    rounded = max(8, int(channels + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * channels else rounded


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al., 2018, Table 2), parameter names as torchvision's ``mobilenet_v2``
    (``features``, ``classifier``), so its state dicts load.

    ``small=True`` is for 8×8 digits: the stem and the first downsampling stage keep stride 1.
    (N, in_channels, H, W) -> (N, num_classes) logits.
    """

    def __init__(self, width_mult: float = 1.0, num_classes: int = 1000, in_channels: int = 3,
                 small: bool = False):
        super().__init__()
        width_mult = check_positive("width_mult", width_mult)
        num_classes = check_int("num_classes", num_classes, minimum=1)
        in_channels = check_int("in_channels", in_channels, minimum=1)
        settings = list(MOBILENET_V2_SETTINGS)
        if small:
            first_down = next(i for i, (*_, s) in enumerate(settings) if s == 2)
            settings[first_down] = (*settings[first_down][:3], 1)
        channels = _round_to_eight(32 * width_mult)
        layers = [_conv_bn_act(in_channels, channels, 3, stride=1 if small else 2, activation=nn.ReLU6)]
        for expand_ratio, c, repeats, stride in settings:
            out_channels = _round_to_eight(c * width_mult)
            for i in range(repeats):
                layers.append(InvertedResidual(channels, out_channels, stride if i == 0 else 1, expand_ratio))
                channels = out_channels
        # The last 1×1 widens to 1280 features; a width multiplier below 1 does not shrink it.
        last = _round_to_eight(1280 * max(1.0, width_mult))
        layers.append(_conv_bn_act(channels, last, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def channel_shuffle(x: np.ndarray, groups: int) -> np.ndarray:
    """ShuffleNet's channel shuffle: view the C channels as a (groups, C / groups) grid, transpose it
    and flatten, so output channel ``j * groups + g`` is input channel ``g * C / groups + j``: each
    group's channels spread over all groups. (N, C, H, W) -> (N, C, H, W)."""
    # Any dtype, and no finiteness check: a shuffle only moves values (and runs on meta tensors).
    check_array("x", x, ndim=4, float_only=False, finite=False)
    n, c, h, w = x.shape
    groups = _check_groups(c, groups)
    return x.reshape(n, groups, c // groups, h, w).transpose(0, 2, 1, 3, 4).reshape(n, c, h, w)


def channel_shuffle_torch(x: torch.Tensor, groups: int) -> torch.Tensor:
    """:func:`channel_shuffle` on a torch tensor (differentiable). (N, C, H, W) -> (N, C, H, W)."""
    # Any dtype, and no finiteness check: a shuffle only moves values (and runs on meta tensors).
    check_array("x", x, ndim=4, float_only=False, finite=False)
    n, c, h, w = x.shape
    groups = _check_groups(c, groups)
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNet V2's unit (Ma et al., 2018, Figure 3 c, d). Stride 1: split the channels in two
    halves, leave one untouched, pass the other through 1×1 -> depthwise 3×3 -> 1×1 (equal widths,
    no grouped 1×1), concatenate and shuffle the two halves together. Stride 2: no split; both
    branches see the whole input and downsample, which doubles the channels.

    Attributes ``branch1`` (None at stride 1) and ``branch2`` as torchvision's, so its state dicts
    load. (N, in_channels, H, W) -> (N, out_channels, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        in_channels = check_int("in_channels", in_channels, minimum=1)
        out_channels = check_int("out_channels", out_channels, minimum=2)
        self.stride = _check_stride(stride)
        if out_channels % 2:
            raise ValueError(f"out_channels: expected an even number (two halves), got {out_channels}")
        half = out_channels // 2
        if self.stride == 1 and in_channels != out_channels:
            raise ValueError(f"in_channels: expected {out_channels} (= out_channels at stride 1), got {in_channels}")
        branch_in = in_channels if self.stride == 2 else half
        self.branch1 = None if self.stride == 1 else nn.Sequential(
            *_conv_bn(in_channels, in_channels, 3, stride, groups=in_channels),
            *_conv_bn(in_channels, half, 1), nn.ReLU(inplace=True))
        self.branch2 = nn.Sequential(
            *_conv_bn(branch_in, half, 1), nn.ReLU(inplace=True),
            *_conv_bn(half, half, 3, stride, groups=half),
            *_conv_bn(half, half, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.branch1 is None:
            kept, processed = x.chunk(2, dim=1)
            out = torch.cat((kept, self.branch2(processed)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle_torch(out, 2)


# ShuffleNet V2, Table 5 of Ma et al. (2018): output channels of the stem, the three stages and
# the last 1×1 convolution, per width; each stage repeats its unit 4, 8, 4 times.
SHUFFLENET_V2_CHANNELS = {0.5: (24, 48, 96, 192, 1024), 1.0: (24, 116, 232, 464, 1024),
                          1.5: (24, 176, 352, 704, 1024), 2.0: (24, 244, 488, 976, 2048)}
SHUFFLENET_V2_REPEATS = (4, 8, 4)


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 at ``width`` in 0.5, 1.0, 1.5, 2.0 (Ma et al., 2018, Table 5), parameter names as
    torchvision's ``shufflenet_v2_x*`` (``conv1``, ``stage2..4``, ``conv5``, ``fc``).

    ``small=True`` is for 8×8 digits: the stem keeps stride 1 and the max-pool is left out.
    (N, in_channels, H, W) -> (N, num_classes) logits.
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3,
                 small: bool = False):
        super().__init__()
        check_choice("width", width, tuple(SHUFFLENET_V2_CHANNELS))
        num_classes = check_int("num_classes", num_classes, minimum=1)
        in_channels = check_int("in_channels", in_channels, minimum=1)
        stem, *stages, last = SHUFFLENET_V2_CHANNELS[width]
        self.conv1 = _conv_bn_act(in_channels, stem, 3, stride=1 if small else 2)
        self.maxpool = nn.Identity() if small else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = stem
        for name, repeats, out_channels in zip(("stage2", "stage3", "stage4"), SHUFFLENET_V2_REPEATS, stages):
            units = [ShuffleUnit(channels, out_channels, 2)]
            units += [ShuffleUnit(out_channels, out_channels, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*units))
            channels = out_channels
        self.conv5 = _conv_bn_act(channels, last, 1)
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.stage4(self.stage3(self.stage2(x)))
        return self.fc(self.conv5(x).mean((2, 3)))


@dataclass
class ConvWork:
    """What one convolution does: its multiply-adds, and the bytes it must move at the least (read
    the input and the weights once, write the output once, float32)."""
    macs: int
    bytes_moved: int

    @property
    def intensity(self) -> float:
        """Arithmetic intensity: multiply-adds per byte moved. Below the machine's ratio of compute
        to memory bandwidth, a layer waits on memory (the roofline model)."""
        return self.macs / self.bytes_moved


def conv_work(conv: nn.Conv2d, input_shape: tuple, bytes_per_element: int = 4) -> ConvWork:
    """The multiply-adds K_h K_w (C_in / groups) C_out H_out W_out N of ``conv`` on an input of
    ``input_shape`` (N, C_in, H, W), and the bytes of its input, weights and output."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv: expected a torch.nn.Conv2d, got {type(conv).__name__}")
    if isinstance(conv.padding, str) or conv.dilation != (1, 1):
        raise ValueError(f"conv: expected numeric padding and no dilation, got padding={conv.padding!r}, "
                         f"dilation={conv.dilation}")
    if len(input_shape) != 4 or input_shape[1] != conv.in_channels:
        raise ValueError(f"input_shape: expected (N, {conv.in_channels}, H, W), got {tuple(input_shape)}")
    bytes_per_element = check_int("bytes_per_element", bytes_per_element, minimum=1)
    n, _, h, w = input_shape
    h_out, w_out = (conv_output_size(size, k, s, p) for size, k, s, p in
                    zip((h, w), conv.kernel_size, conv.stride, conv.padding))
    macs = conv.weight.numel() * h_out * w_out * n  # weight = C_out * (C_in / groups) * K_h * K_w
    elements = math.prod(input_shape) + conv.weight.numel() + n * conv.out_channels * h_out * w_out
    return ConvWork(macs=macs, bytes_moved=elements * bytes_per_element)


def forward_seconds(module: nn.Module, x: torch.Tensor, repeats: int = 5) -> float:
    """The best of ``repeats`` timed forward passes of ``module`` on ``x`` (no autograd graph), after
    one untimed pass that warms caches and lets the library pick its algorithm."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    check_array("x", x)
    with torch.no_grad():
        module(x)
        return best_seconds(lambda: module(x), repeats=repeats)


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed blocks (up to 1 GB) in the process instead of handing
    every block over 128 kB back to the operating system. Otherwise each call of a layer gets
    fresh pages from the system and pays one page fault per 4 kB page, which a timing would
    count as the layer's own time. True where it applied (Linux with glibc), False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # mallopt's parameter numbers (malloc.h)
    libc.mallopt(M_MMAP_THRESHOLD, 256 * 2**20)      # blocks up to 256 MB come from the heap ...
    libc.mallopt(M_TRIM_THRESHOLD, 1024 * 2**20)     # ... which keeps up to 1 GB of freed memory
    return True


def randomize_batch_norms(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Give every BatchNorm2d random running statistics and affine parameters, in place.

    A fresh BN in eval mode computes the identity (mean 0, variance 1, gamma 1, beta 0), and
    through a deep fresh network the activations shrink until the output hardly depends on the
    input: two such networks agree to 1e-9 even when one is wired wrongly. With these values the
    outputs are of order 1 and a missing shortcut or a misplaced activation shows."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                channels = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(channels, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(channels, generator=generator))
                module.weight.copy_(0.5 + torch.rand(channels, generator=generator))
                module.bias.copy_(0.1 * torch.randn(channels, generator=generator))
    return model


def timed_convolutions(channels: int) -> dict[str, nn.Module]:
    """The layers notebook 05 times, all ``channels`` -> ``channels`` and 3×3 padded (or 1×1): a
    standard, a grouped (8 groups), a depthwise and a pointwise convolution, and the separable
    pair (the same depthwise and pointwise layers in a row)."""
    channels = check_int("channels", channels, minimum=8)
    layers = {"standard 3×3": nn.Conv2d(channels, channels, 3, padding=1, bias=False),
              "grouped 3×3, 8 groups": nn.Conv2d(channels, channels, 3, padding=1, groups=8, bias=False),
              "depthwise 3×3": nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
              "pointwise 1×1": nn.Conv2d(channels, channels, 1, bias=False)}
    layers["separable (dw + pw)"] = nn.Sequential(layers["depthwise 3×3"], layers["pointwise 1×1"])
    return layers


def convolution_seconds(input_shape: tuple, repeats: int = 5, rounds: int = 1) -> dict[str, list[float]]:
    """For each of :func:`timed_convolutions` on a random input of ``input_shape`` (N, C, H, W):
    the best of ``repeats`` forward passes, in each of ``rounds`` rounds (a list of ``rounds``
    seconds per layer). Every layer is run once before any is timed, and each round times every
    layer in turn, so that a busy spell of a shared CPU shows as a spread over the rounds."""
    if len(input_shape) != 4:
        raise ValueError(f"input_shape: expected (N, C, H, W), got {tuple(input_shape)}")
    rounds = check_int("rounds", rounds, minimum=1)
    layers = timed_convolutions(input_shape[1])
    x = torch.randn(input_shape)
    for layer in layers.values():
        forward_seconds(layer, x, repeats=1)
    timings = [{name: forward_seconds(layer, x, repeats) for name, layer in layers.items()} for _ in range(rounds)]
    return {name: [timing[name] for timing in timings] for name in layers}


def depthwise_bandwidth(channels: int, sides: list[int], repeats: int = 5) -> list[dict]:
    """For each side s: a depthwise 3×3 convolution on (1, channels, s, s), and a copy of a tensor
    of that size. Returns one dict per side with the working set (input + output bytes), the
    bytes per second the convolution achieves (its input read and output written once, over its
    time) and the bytes per second of the copy, which moves the same bytes and nothing else."""
    channels = check_int("channels", channels, minimum=1)
    conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
    rows = []
    for side in sides:
        x = torch.randn(1, channels, check_int("sides", side, minimum=1), side)
        target = torch.empty_like(x)
        moved = 2 * x.numel() * x.element_size()               # read the input, write the output
        rows.append({"working set": moved, "depthwise": moved / forward_seconds(conv, x, repeats),
                     "copy": moved / best_seconds(lambda: target.copy_(x), repeats=repeats)})
    return rows


def run_without_cpu_pinning(function: str, **kwargs):
    """``lib.architectures.<function>(**kwargs)`` in a child Python process started WITHOUT the
    book's CPU settings (lib.reproducible.CPU_SETTINGS: MKL's COMPATIBLE branch, the portable
    ATen and AVX2-only oneDNN kernels ...), so it runs this CPU's native kernels, on one thread
    as here. Returns the function's result, which must be JSON (a dict's keys come back as str)."""
    from lib.reproducible import CPU_SETTINGS     # the names of the pinning variables
    function = check_choice("function", function, ("convolution_seconds", "depthwise_bandwidth"))
    env = {name: value for name, value in os.environ.items() if name not in CPU_SETTINGS}
    env.update(DLBOOK_CPU_NATIVE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                           env.get("PYTHONPATH", "")]))
    code = ("import json, sys, torch\n"
            "import lib.architectures as a\n"
            "torch.set_num_threads(1); a.keep_freed_memory(); torch.manual_seed(0)\n"
            f"print(json.dumps(a.{function}(**json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], env=env, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout)


# ---------------------------------------------------------------------------------------------
# Plain and residual stacks: the degradation experiment
# ---------------------------------------------------------------------------------------------
# He et al.'s CIFAR-10 networks (2016, Sec. 4.2), for 8×8 digits: a 3×3 stem convolution, three
# stages of n basic blocks at width, 2·width and 4·width channels on 8×8, 4×4 and 2×2 pixels,
# global average pooling and one fully connected layer: 1 + 6n + 1 = 6n + 2 weighted layers.
# The plain net is the same stack with shortcut=False. Where the residual net changes shape it
# uses the 1×1 projection (option B; on CIFAR He et al. used option A, zero padding, which adds
# no parameters): two small extra layers that the depth, as in the paper, does not count.
DEGRADATION_KINDS = ("plain", "residual")
ERROR_MEASURES = ("train", "val", "train_batches")


def _check_depth(depth) -> int:
    depth = check_int("depth", depth)
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth: expected 6n + 2 with n >= 1 (8, 14, 20, 26, 32, ...), got {depth}")
    return depth


def plain_or_residual_net(depth: int, shortcut: bool, width: int = 16, in_channels: int = 1,
                          num_classes: int = 10) -> nn.Sequential:
    """He et al.'s plain (``shortcut=False``) or residual CIFAR network of ``depth = 6n + 2``
    layers: (N, in_channels, H, W) -> (N, num_classes) logits; on 8×8 digits its three stages
    work on 8×8, 4×4 and 2×2 pixels. He-initialized, as torchvision's ResNet.

    Children: conv1, bn1, relu (the stem), layer1..layer3 (n ``BasicBlock`` each), avgpool,
    flatten, fc. ``weighted_layers`` lists the ``depth`` layers that the name counts.
    """
    n = (_check_depth(depth) - 2) // 6
    if not isinstance(shortcut, bool):   # check_choice would let 1 and 0 pass as True and False
        raise TypeError(f"shortcut: expected True or False, got {shortcut!r}")
    check_int("width", width, minimum=1)
    check_int("in_channels", in_channels, minimum=1)
    check_int("num_classes", num_classes, minimum=1)
    blocks = {"shortcut": shortcut}
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        bn1=nn.BatchNorm2d(width),
        relu=nn.ReLU(),
        layer1=_stage(BasicBlock, width, width, n, 1, blocks),
        layer2=_stage(BasicBlock, width, 2 * width, n, 2, blocks),   # channels double as the pixels quarter
        layer3=_stage(BasicBlock, 2 * width, 4 * width, n, 2, blocks),
        avgpool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc=nn.Linear(4 * width, num_classes),
    ))
    return torchvision_init(model)


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers that a network's depth counts, in order, as (name, module): every convolution
    and fully connected layer except the 1×1 projections on the shortcuts (``downsample``), as
    He et al. count them. ``plain_or_residual_net(depth, ...)`` has ``depth`` of them."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear)) and "downsample" not in name.split(".")]


def _gradient_norm_logger(model: nn.Module):
    """An ``on_step`` for ``train``: after each backward, the norm of every weighted layer's
    weight gradient, as {"gradient_norms": array (depth,)}."""
    weights = [module.weight for _, module in weighted_layers(model)]

    def log(_step, _loss, _model):   # train's on_step signature; the weights were bound above
        # one stacked tensor, converted once per update, not one .item() per layer
        return {"gradient_norms": torch.stack([weight.grad.norm() for weight in weights]).numpy()}

    return log


def _check_list(name: str, values, kind: str) -> list:
    if not isinstance(values, (list, tuple, range)):
        raise TypeError(f"{name}: expected a list of {kind}, got {type(values).__name__}")
    if len(values) == 0:
        raise ValueError(f"{name}: expected a non-empty list of {kind}, got none")
    return list(values)


def _check_distinct(name: str, values: list) -> list:
    # a repeated seed would report a spread of 0; a repeated depth would retrain and overwrite its runs
    if len(set(values)) != len(values):
        raise ValueError(f"{name}: expected distinct values, got {values}")
    return values


def train_plain_and_residual(data: Splits, depths, seeds, steps: int, width: int = 8, lr: float = 0.1,
                             lr_drop_at: int | None = None, momentum: float = 0.9, weight_decay: float = 1e-4,
                             batch_size: int = 64, eval_every: int = 25, progress: bool = False,
                             kinds=DEGRADATION_KINDS) -> dict[str, list]:
    """Train the plain and the residual net (or only the ``kinds`` named) of every depth once per
    seed, all with one recipe: SGD with momentum and weight decay, as He et al., at rate ``lr``
    for ``steps`` updates, divided by 10 from update ``lr_drop_at`` on if given (He et al. divide
    it at 32k and 48k of 64k).

    Returns ``{"plain-8": [one History per seed], "residual-8": [...], ...}`` with what
    ``lib.train.train`` records, and: ``extra["train_error"]``, the error on the whole training
    split in eval mode (batch norm with its running statistics: the network that would be
    deployed) at every record; ``step_extra["gradient_norms"]``, one array (depth,) per update:
    each weighted layer's gradient norm, in ``weighted_layers`` order.

    Seeds run one after another with ``train``: batched with ``train_seeds`` (vmap) these small
    convolutions ran no faster on a CPU, and ``train`` lets ``on_step`` read each update's gradients.
    """
    if not isinstance(data, Splits):
        raise TypeError(f"data: expected lib.data.Splits, got {type(data).__name__}")
    depths = _check_distinct("depths", [_check_depth(d) for d in _check_list("depths", depths, "depths 6n + 2")])
    seeds = _check_distinct("seeds", [check_int("seeds", s, minimum=0) for s in _check_list("seeds", seeds, "seeds")])
    kinds = _check_distinct("kinds", [check_choice("kinds", kind, DEGRADATION_KINDS)
                                      for kind in _check_list("kinds", kinds, "'plain' or 'residual'")])
    check_int("steps", steps, minimum=1)
    check_positive("lr", lr)
    if lr_drop_at is not None and not 0 <= check_int("lr_drop_at", lr_drop_at, minimum=0) < steps:
        raise ValueError(f"lr_drop_at: expected an update before the last ({steps}), got {lr_drop_at}")
    check_probability("momentum", momentum, closed_right=False)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    if check_int("eval_every", eval_every, minimum=1) > steps:
        raise ValueError(f"eval_every: expected at most steps ({steps}), got {eval_every}: no record after update 0")
    train_split = to_tensors(data.x_train, data.y_train)

    def record(model):   # train calls it in eval mode, without gradients
        return {"train_error": 1.0 - evaluate(model, *train_split)[1]}

    def schedule(update):
        return lr if lr_drop_at is None or update < lr_drop_at else lr / 10

    runs = {}
    for depth in depths:
        for kind in kinds:
            runs[f"{kind}-{depth}"] = []
            for seed in seeds:
                set_seed(seed)   # the initialization; train's seed fixes the mini-batch order
                model = plain_or_residual_net(depth, kind == "residual", width, data.x_train.shape[1],
                                              int(data.y_train.max()) + 1)
                optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
                runs[f"{kind}-{depth}"].append(train(
                    model, data, optimizer, steps=steps, batch_size=batch_size, eval_every=eval_every, seed=seed,
                    record=record, schedule=schedule, on_step=_gradient_norm_logger(model), progress=progress,
                    description=f"{kind}-{depth}, seed {seed}"))
    return runs


def errors_over_seeds(histories: list, measure: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The error curves of k seeds of one ``train_plain_and_residual`` net: (steps (T,), errors (k, T)).

    ``measure``: "train", on the whole training split in eval mode (``extra["train_error"]``);
    "val", on the validation split in eval mode; "train_batches", on the mini-batches since the
    previous record, in training mode (batch norm with each batch's own statistics), as they
    went by (at step 0, the whole training split in eval mode).
    """
    histories = _check_list("histories", histories, "History")
    check_choice("measure", measure, ERROR_MEASURES)
    # metric_over_seeds checks that every run recorded at the same steps
    steps, accuracies = metric_over_seeds(histories, "val_acc" if measure == "val" else "train_acc")
    if measure == "train":
        return steps, np.array([history.extra["train_error"] for history in histories], dtype=float)
    return steps, 1.0 - accuracies


def gradient_norms_over_seeds(histories: list) -> np.ndarray:
    """Each update's gradient norm of each weighted layer, for k seeds: (k, updates, depth)."""
    histories = _check_list("histories", histories, "History")
    return np.array([np.stack(history.step_extra["gradient_norms"]) for history in histories])


# ---------------------------------------------------------------------------------------------
# Architecture search in miniature
# ---------------------------------------------------------------------------------------------
# A candidate is a small network for 8×8 digits: a 3×3 stem convolution at ``width`` channels,
# two stages of ``depth`` blocks of one kind (``width`` channels at 8×8, then ``2 * width`` at
# 4×4, the second stage's first block halving the resolution), global average pooling and one
# fully connected layer. The search space is the block kind, the depth and the width; everything
# else (stem, stages, training recipe) is fixed, so a search compares architectures only.
SEARCH_BLOCKS = ("plain", "basic", "bottleneck", "separable", "inverted")
SEARCH_KEYS = ("block", "depth", "width")
INVERTED_EXPANSION = 6  # MobileNetV2's expansion factor t (Sandler et al., Table 2)


def _check_candidate_config(config) -> tuple[str, int, int]:
    """``config``'s block, depth and width, checked; every message names the key at fault."""
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a dict with keys {SEARCH_KEYS}, got {type(config).__name__}")
    missing = [key for key in SEARCH_KEYS if key not in config]
    unknown = sorted(set(config) - set(SEARCH_KEYS))
    if missing or unknown:
        raise ValueError(f"config: expected the keys {SEARCH_KEYS}, missing {missing}, unknown {unknown}")
    return (check_choice("config['block']", config["block"], SEARCH_BLOCKS),
            check_int("config['depth']", config["depth"], minimum=1),
            check_int("config['width']", config["width"], minimum=1))


def _candidate_block(block: str, in_channels: int, channels: int, stride: int) -> tuple[nn.Module, int]:
    """One block of kind ``block`` for a stage of ``channels`` channels, and its output channels.

    The bottleneck follows ResNet-50's convention: its 3×3 works at ``channels`` and its output
    is 4 times wider, as ResNet-50's stages are 4 times wider than ResNet-34's.
    """
    if block == "plain":
        return BasicBlock(in_channels, channels, stride, shortcut=False), channels
    if block == "basic":
        return BasicBlock(in_channels, channels, stride), channels
    if block == "bottleneck":
        return Bottleneck(in_channels, channels, stride), channels * Bottleneck.expansion
    if block == "separable":
        return DepthwiseSeparable(in_channels, channels, stride), channels
    return InvertedResidual(in_channels, channels, stride, INVERTED_EXPANSION), channels


def candidate_network(config: dict, in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """The network of one search config, e.g. ``{"block": "basic", "depth": 2, "width": 8}``:
    (N, in_channels, H, W) -> (N, num_classes) logits, with PyTorch's default initialization.

    Its ``2 * depth`` blocks are the chapter's own: ``BasicBlock`` with ``shortcut=False``
    ("plain") or True ("basic"), ``Bottleneck``, ``DepthwiseSeparable`` (MobileNet v1) and
    ``InvertedResidual`` (MobileNetV2, expansion 6).
    """
    block, depth, width = _check_candidate_config(config)
    in_channels = check_int("in_channels", in_channels, minimum=1)
    num_classes = check_int("num_classes", num_classes, minimum=1)
    layers = [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
    channels = width
    for stage_channels, first_stride in ((width, 1), (2 * width, 2)):
        for index in range(depth):
            module, channels = _candidate_block(block, channels, stage_channels, first_stride if index == 0 else 1)
            layers.append(module)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)]
    return nn.Sequential(*layers)


def candidate_costs(config: dict, image_size: int = 8) -> Costs:
    """Parameters, multiply-adds and activations of ``candidate_network(config)`` for one
    one-channel image of ``image_size × image_size`` (an 8×8 digit by default), as ``model_costs``
    counts them."""
    image_size = check_int("image_size", image_size, minimum=1)
    return model_costs(candidate_network(config), (1, 1, image_size, image_size))


def train_candidate(config: dict, budget: int, data: Splits, seed: int = 0, lr: float = 0.01,
                    batch_size: int = 32) -> tuple[float, np.ndarray]:
    """Train ``candidate_network(config)`` on ``data`` (images (N, C, H, W)) for ``budget`` epochs
    with Adam at rate ``lr``; return ``(score, curve)``: the validation accuracy after the last
    epoch, and after each epoch, shape (budget,), so that ``curve[-1] == score``.

    ``seed`` sets the initialization and the mini-batch order: the same config, budget and seed
    give the same numbers. A run whose loss diverges scores chance, 1 / classes, from then on.
    This is what an objective ``(config, budget) -> TrialResult`` of ``lib.search`` needs.
    """
    _check_candidate_config(config)
    budget = check_int("budget", budget, minimum=1)
    if not isinstance(data, Splits):
        raise TypeError(f"data: expected lib.data.Splits, got {type(data).__name__}")
    check_int("seed", seed, minimum=0)
    check_positive("lr", lr)
    if check_int("batch_size", batch_size, minimum=1) > len(data.y_train):
        raise ValueError(f"batch_size: expected at most {len(data.y_train)} (the training images), got {batch_size}")
    classes = int(data.y_train.max()) + 1
    set_seed(seed)
    model = candidate_network(config, in_channels=data.x_train.shape[1], num_classes=classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = len(data.y_train) // batch_size
    history = train(model, data, optimizer, epochs=budget, batch_size=batch_size, eval_every=steps_per_epoch,
                    seed=seed, progress=False)
    curve = np.full(budget, 1.0 / classes)  # a diverged run stops recording: chance from then on
    after_epochs = history.val_acc[1:]      # record 0 is before the first update
    curve[: len(after_epochs)] = after_epochs
    return float(curve[-1]), curve


def pareto_front(costs, scores) -> np.ndarray:
    """The indices of the candidates that no other candidate beats on both counts, by increasing cost.

    ``costs`` (n,) (lower is better, e.g. multiply-adds) and ``scores`` (n,) (higher is better,
    e.g. validation accuracy). Candidate i is dominated when some j costs no more and scores no
    less, and is strictly better in one of the two; the front is every candidate not dominated.
    """
    costs = check_array("costs", np.asarray(costs, dtype=float), ndim=1)
    scores = check_array("scores", np.asarray(scores, dtype=float), ndim=1)
    check_shape("scores", scores, costs.shape)
    no_worse = (costs[None, :] <= costs[:, None]) & (scores[None, :] >= scores[:, None])  # [i, j]: j no worse than i
    better = (costs[None, :] < costs[:, None]) | (scores[None, :] > scores[:, None])
    dominated = (no_worse & better).any(axis=1)
    front = np.flatnonzero(~dominated)
    return front[np.argsort(costs[front], kind="stable")]
