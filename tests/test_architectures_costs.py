"""Cost counters (lib/architectures.py, section "Cost counters"): multiply-adds computed from shapes
against torch's FlopCounterMode on torchvision models and against hand-computed counts of single
layers; a module that runs twice counted twice; activations; parameter counts of torchvision's
models against the papers; the table; and every bad argument. All counting runs on "meta"."""
import functools

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from lib.architectures import (
    Costs, LayerCost, SavedForBackward, cost_table, count_parameters, flop_counter_macs, layer_costs,
    model_costs, saved_for_backward,
)

IMAGENET = (1, 3, 224, 224)


@functools.cache
def on_meta(builder, **kwargs) -> nn.Module:
    """A torchvision model built on "meta": shapes only, no memory. Built once per test session
    (initializing meta tensors still costs a second for a deep model); counting leaves it as it was."""
    with torch.device("meta"):
        return builder(**kwargs)


# --------------------------------------------------------------------------------------
# Multiply-adds: against FlopCounterMode, and by hand
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("builder, kwargs", [
    (tvm.alexnet, {}),
    (tvm.resnet18, {}),
    (tvm.resnet50, {}),
    (tvm.resnext50_32x4d, {}),
    (tvm.googlenet, {"aux_logits": False, "init_weights": False}),
    (tvm.mobilenet_v2, {}),
    (tvm.shufflenet_v2_x1_0, {}),
], ids=["alexnet", "resnet18", "resnet50", "resnext50", "googlenet", "mobilenet_v2", "shufflenet_v2"])
def test_macs_equal_flop_counter_mode_halved(builder, kwargs):
    model = on_meta(builder, **kwargs)
    assert model_costs(model, IMAGENET).macs == flop_counter_macs(model, IMAGENET)


@pytest.mark.parametrize("kernel, stride, padding, groups, h_out, w_out", [
    (3, 1, 1, 1, 10, 12),
    (3, 2, 1, 4, 5, 6),
    ((3, 5), (2, 1), (1, 0), 2, 5, 8),
    (1, 1, 0, 8, 10, 12),  # depthwise: groups = C_in = 8
])
def test_conv_macs_equal_the_formula(kernel, stride, padding, groups, h_out, w_out):
    conv = nn.Conv2d(8, 16, kernel, stride=stride, padding=padding, groups=groups)
    k_h, k_w = (kernel, kernel) if isinstance(kernel, int) else kernel
    batch = 2
    [layer] = layer_costs(conv, (batch, 8, 10, 12))
    assert layer.output_shape == (batch, 16, h_out, w_out)
    assert layer.macs == batch * k_h * k_w * (8 // groups) * 16 * h_out * w_out
    assert layer.params == 16 * (8 // groups) * k_h * k_w + 16
    assert layer.activations == batch * 16 * h_out * w_out
    assert layer.macs == flop_counter_macs(conv, (batch, 8, 10, 12))


def test_linear_macs_are_in_times_out_per_row():
    linear = nn.Linear(20, 7)
    assert model_costs(linear, (5, 20)) == Costs(params=20 * 7 + 7, macs=5 * 20 * 7, activations=5 * 7)
    assert model_costs(linear, (3, 4, 20)).macs == 3 * 4 * 20 * 7  # every leading index is a row


def test_transposed_conv_macs_equal_flop_counter_mode():
    upsample = nn.ConvTranspose2d(6, 4, kernel_size=3, stride=2, padding=1, groups=2)
    assert model_costs(upsample, (2, 6, 5, 5)).macs == 2 * 6 * 5 * 5 * (4 // 2) * 3 * 3
    assert model_costs(upsample, (2, 6, 5, 5)).macs == flop_counter_macs(upsample, (2, 6, 5, 5))


def test_normalization_activation_pooling_cost_no_macs():
    model = nn.Sequential(nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    layers = layer_costs(model, (2, 3, 8, 8))
    assert [layer.macs for layer in layers] == [0] * 5
    assert [layer.activations for layer in layers] == [2 * 3 * 64, 2 * 3 * 64, 2 * 3 * 16, 2 * 3, 2 * 3]
    assert sum(layer.params for layer in layers) == 6  # BN's gamma and beta; running stats are buffers


# --------------------------------------------------------------------------------------
# Layers in execution order, a module that runs twice counted twice
# --------------------------------------------------------------------------------------

class TwiceThroughOneLinear(nn.Module):
    """Applies the same Linear twice (defined first, runs second and third)."""

    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.first = nn.Linear(3, 4)

    def forward(self, x):
        return self.shared(self.shared(self.first(x)))


def test_a_module_that_runs_twice_is_counted_at_each_call():
    model = TwiceThroughOneLinear()
    layers = layer_costs(model, (2, 3))
    assert [layer.name for layer in layers] == ["first", "shared", "shared"]  # execution order
    assert [layer.macs for layer in layers] == [2 * 3 * 4, 2 * 4 * 4, 2 * 4 * 4]
    assert [layer.params for layer in layers] == [3 * 4 + 4, 4 * 4 + 4, 0]  # weights stored once
    assert sum(layer.params for layer in layers) == count_parameters(model)
    assert model_costs(model, (2, 3)).macs == flop_counter_macs(model, (2, 3))


def test_torchvision_basic_block_relu_runs_twice():
    layers = layer_costs(on_meta(tvm.resnet18), (1, 3, 64, 64))
    relus = [layer.name for layer in layers if layer.kind == "ReLU"]
    assert len(relus) == 1 + 8 * 2  # the stem's, then two calls of each of 8 blocks' one ReLU
    assert relus.count("layer1.0.relu") == 2


def test_layer_params_add_up_and_leave_the_model_untouched():
    model = tvm.resnet18()  # on the CPU, in training mode: counting must not move or switch it
    weight_before = model.conv1.weight.detach().clone()
    layers = layer_costs(model, (1, 3, 32, 32))
    assert sum(layer.params for layer in layers) == count_parameters(model) == 11_689_512
    assert model.training and model.conv1.weight.device.type == "cpu"
    assert torch.equal(model.conv1.weight, weight_before)
    assert all(isinstance(layer, LayerCost) for layer in layers)


def test_activation_bytes_are_four_per_element_and_scale_with_batch():
    model = on_meta(tvm.resnet18)
    one, eight = model_costs(model, (1, 3, 64, 64)), model_costs(model, (8, 3, 64, 64))
    assert one.activation_bytes == 4 * one.activations
    assert (eight.macs, eight.activations, eight.params) == (8 * one.macs, 8 * one.activations, one.params)


# --------------------------------------------------------------------------------------
# What autograd saves for the backward pass
# --------------------------------------------------------------------------------------

def bytes_saved_on_the_cpu(model: nn.Module, x: torch.Tensor) -> int:
    """The same measurement with real tensors: each saved storage once, the weights and buffers left out."""
    state = {tensor.untyped_storage().data_ptr() for tensor in (*model.parameters(), *model.buffers())}
    saved = {}

    def pack(tensor):
        if tensor.untyped_storage().data_ptr() not in state:
            saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model.train()(x)
    return sum(saved.values())


@pytest.mark.parametrize("builder", [tvm.resnet18, tvm.alexnet], ids=["resnet18", "alexnet"])
def test_saved_on_meta_equals_saved_on_the_cpu(builder):
    torch.manual_seed(0)
    model, shape = builder(), (2, 3, 64, 64)
    measured = saved_for_backward(model, shape)
    assert measured.total == bytes_saved_on_the_cpu(model, torch.randn(shape))
    assert measured.counted == model_costs(model, shape).activation_bytes


def test_batch_norm_outputs_are_not_kept_relu_outputs_are():
    # BN saves its input (the conv's output), ReLU its output, which the next conv saves too.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    measured = saved_for_backward(model, (1, 3, 5, 5))
    outputs = 4 * 4 * 25
    assert measured == SavedForBackward(
        total=4 * 3 * 25 + 2 * outputs + 2 * 4 * 4,  # input, conv and ReLU outputs, BN's mean and 1/std
        by_kind={"Conv2d": (outputs + 4 * 2 * 25, outputs), "BatchNorm2d": (outputs, 0), "ReLU": (outputs, outputs)},
        not_outputs=4 * 3 * 25 + 2 * 4 * 4)


def test_an_in_place_relu_shares_its_input_s_storage():
    # Counted twice by layer_costs (conv output, then ReLU output), kept once.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1))
    measured = saved_for_backward(model, (1, 3, 5, 5))
    assert measured.total == 4 * 3 * 25 + 4 * 4 * 25
    assert measured.counted == 4 * (4 * 25 + 4 * 25 + 2 * 25)


# --------------------------------------------------------------------------------------
# Parameter counts of torchvision's models against the papers
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("builder, published_millions", [
    (tvm.alexnet, 61.1),  # torchvision's one-weird-trick variant (Krizhevsky 2014), not 2012's 60 M
    (tvm.vgg16, 138.4),  # Simonyan & Zisserman, Table 2: 138 M
    (tvm.resnet18, 11.7),
    (tvm.resnet34, 21.8),
    (tvm.resnet50, 25.6),
    (tvm.resnet101, 44.5),
    (tvm.resnet152, 60.2),
], ids=["alexnet", "vgg16", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_parameter_counts_match_the_papers(builder, published_millions):
    assert round(count_parameters(on_meta(builder)) / 1e6, 1) == published_millions


def test_count_parameters_leaves_out_batch_norm_buffers():
    assert count_parameters(nn.BatchNorm2d(10)) == 20
    assert count_parameters(nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU())) == 9


# --------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------

def test_cost_table_has_a_row_per_model_with_units():
    table = cost_table({"ResNet-50": on_meta(tvm.resnet50), "AlexNet": on_meta(tvm.alexnet)}, IMAGENET)
    header, resnet_row, alexnet_row = table.splitlines()
    assert "parameters" in header and "multiply-adds" in header and "activation memory" in header
    assert resnet_row.split() == ["ResNet-50", "25.6", "M", "4.09", "G", "128", "MB"]
    assert alexnet_row.split() == ["AlexNet", "61.1", "M", "714", "M", "4.39", "MB"]
    assert len({len(line) for line in table.splitlines()}) == 1  # columns aligned


# --------------------------------------------------------------------------------------
# Bad arguments
# --------------------------------------------------------------------------------------

class OwnWeights(nn.Module):
    """A leaf with a weight of an unknown kind: the counter cannot know how it multiplies it."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3))

    def forward(self, x):
        return x * self.weight


@pytest.mark.parametrize("function", [layer_costs, model_costs, flop_counter_macs, saved_for_backward])
def test_model_must_be_a_module(function):
    with pytest.raises(TypeError, match="^model: expected a torch.nn.Module"):
        function(lambda x: x, (1, 3, 8, 8))
    with pytest.raises(TypeError, match="^model: expected a torch.nn.Module"):
        count_parameters("resnet")


@pytest.mark.parametrize("input_shape, error, message", [
    (224, TypeError, "^input_shape: expected a tuple"),
    ((), ValueError, "^input_shape: expected at least one entry"),
    ((1, 3, 0, 8), ValueError, "^input_shape: expected an integer >= 1"),
    ((1, 3, -8, 8), ValueError, "^input_shape: expected an integer >= 1"),
    ((1, 3, 8.0, 8), TypeError, "^input_shape: expected an integer"),
    ((3, 8, 8), ValueError, r"^input_shape: expected 4 entries \(N, C, H, W\)"),
])
@pytest.mark.parametrize("function", [layer_costs, model_costs, flop_counter_macs, saved_for_backward])
def test_input_shape_must_be_positive_ints_with_four_for_images(function, input_shape, error, message):
    with pytest.raises(error, match=message):
        function(nn.Conv2d(3, 4, 3), input_shape)


def test_an_unknown_layer_with_weights_is_refused():
    with pytest.raises(ValueError, match="^model: cannot count the multiply-adds of its OwnWeights layer"):
        model_costs(OwnWeights(), (2, 3))


def test_cost_table_needs_a_non_empty_dict():
    with pytest.raises(TypeError, match="^models: expected a dict"):
        cost_table([nn.Linear(2, 2)], (1, 2))
    with pytest.raises(ValueError, match="^models: expected at least one model"):
        cost_table({}, (1, 2))
