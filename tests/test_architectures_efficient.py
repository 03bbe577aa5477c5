"""lib.architectures' efficient networks: MobileNet v1 against the paper's tables, MobileNetV2 and
ShuffleNet V2 against torchvision (state dicts load, outputs agree) and their papers, the channel
shuffle, every block's shapes, the timing helpers and the argument checks."""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from lib.architectures import (
    ConvWork, DepthwiseSeparable, InvertedResidual, MobileNetV1, MobileNetV2, ShuffleNetV2,
    ShuffleUnit, channel_shuffle, channel_shuffle_torch, conv_fans, conv_work, count_parameters,
    convolution_seconds, depthwise_bandwidth, flop_counter_macs, forward_seconds, keep_freed_memory,
    model_costs, randomize_batch_norms, run_without_cpu_pinning, timed_convolutions,
)

IMAGENET = (1, 3, 224, 224)


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tests/conftest.py


def costs_on_meta(build, input_shape=IMAGENET):
    with torch.device("meta"):  # full size without allocating or initializing weights
        model = build()
    return model_costs(model, input_shape)


def assert_published(count: int, published_millions: float, unit: float):
    """The papers print millions to ``unit`` (0.1 M of parameters, 1 M of operations), some rounded
    and some cut (Table 7's 290.7 M prints as 290): the count lies within one printed unit."""
    assert abs(count / 1e6 - published_millions) < unit, (count, published_millions)


# Howard et al. (2017), Table 6 (width multiplier, at 224) and Table 7 (resolution, at alpha 1).
@pytest.mark.parametrize("alpha, macs, params", [(1.0, 569, 4.2), (0.75, 325, 2.6), (0.5, 149, 1.3), (0.25, 41, 0.5)])
def test_mobilenet_v1_width_multiplier_matches_table_6(alpha, macs, params):
    costs = costs_on_meta(lambda: MobileNetV1(alpha))
    assert_published(costs.macs, macs, 1)
    assert_published(costs.params, params, 0.1)


@pytest.mark.parametrize("size, macs", [(224, 569), (192, 418), (160, 290), (128, 186)])
def test_mobilenet_v1_resolution_multiplier_matches_table_7(size, macs):
    costs = costs_on_meta(MobileNetV1, (1, 3, size, size))
    assert_published(costs.macs, macs, 1)
    assert_published(costs.params, 4.2, 0.1)


def test_mobilenet_v1_follows_table_1_layer_for_layer():
    with torch.device("meta"):
        model = MobileNetV1()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 2 * 13  # the stem, then 13 depthwise + pointwise pairs
    assert convs[0].out_channels == 32 and convs[0].stride == (2, 2)
    depthwise = convs[1::2]
    assert all(c.groups == c.in_channels == c.out_channels and c.kernel_size == (3, 3) for c in depthwise)
    assert [c.stride[0] for c in depthwise].count(2) == 4  # 224 / 2 (stem) / 2^4 = 7
    assert model.fc.in_features == 1024 and model.fc.out_features == 1000


def test_mobilenet_v2_matches_the_paper():
    costs = costs_on_meta(MobileNetV2)
    # Sandler et al. (2018), Table 4: 300 M multiply-adds, 3.4 M parameters; torchvision's
    # definition (which we equal) has 3.50 M: the paper's count leaves some weights out.
    assert_published(costs.macs, 300, 1)
    assert abs(costs.params / 1e6 - 3.4) < 0.11


# Ma et al. (2018), Table 5: ShuffleNet V2's complexity (FLOPs, which that paper counts as
# multiply-adds) and parameters, per width.
@pytest.mark.parametrize("width, macs, params", [(0.5, 41, 1.4), (1.0, 146, 2.3), (1.5, 299, 3.5), (2.0, 591, 7.4)])
def test_shufflenet_v2_matches_the_paper(width, macs, params):
    costs = costs_on_meta(lambda: ShuffleNetV2(width))
    assert abs(costs.macs / 1e6 - macs) / macs < 0.015  # the paper's counts are 0.75-1.3 % higher
    assert_published(costs.params, params, 0.1)


def test_counted_macs_agree_with_flop_counter_mode():
    with torch.device("meta"):
        model = ShuffleNetV2(0.5)
    assert flop_counter_macs(model, IMAGENET) == costs_on_meta(lambda: ShuffleNetV2(0.5)).macs


def load_and_compare(mine: nn.Module, reference: nn.Module):
    """Load the reference's state dict strictly into ours, give its batch norms random statistics
    (at initialization the outputs hardly depend on the input: see randomize_batch_norms) and
    compare outputs on a small input, relative to their size."""
    randomize_batch_norms(reference, torch.Generator().manual_seed(1))
    mine.load_state_dict(reference.state_dict(), strict=True)
    mine.eval()
    reference.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(x)
        assert expected.abs().max() > 0.1           # outputs of order 1: the comparison can fail
        torch.testing.assert_close(mine(x), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.parametrize("width_mult", [1.0, 0.5])
def test_mobilenet_v2_loads_torchvision_weights_and_gives_the_same_outputs(width_mult):
    torch.manual_seed(0)
    load_and_compare(MobileNetV2(width_mult), torchvision.models.mobilenet_v2(width_mult=width_mult))


def test_the_comparison_catches_a_block_without_its_shortcut(monkeypatch):
    # The wiring the section teaches: with the shortcut left out, the outputs must differ.
    monkeypatch.setattr(InvertedResidual, "forward", lambda self, x: self.conv(x))
    torch.manual_seed(0)
    with pytest.raises(AssertionError):
        load_and_compare(MobileNetV2(0.5), torchvision.models.mobilenet_v2(width_mult=0.5))


def test_the_comparison_catches_a_missing_channel_shuffle(monkeypatch):
    monkeypatch.setattr("lib.architectures.channel_shuffle_torch", lambda x, groups: x)
    torch.manual_seed(0)
    with pytest.raises(AssertionError):
        load_and_compare(ShuffleNetV2(0.5), torchvision.models.shufflenet_v2_x0_5())


def test_randomize_batch_norms_sets_every_bn_in_place():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4))
    assert randomize_batch_norms(model, torch.Generator().manual_seed(0)) is model
    for bn in (model[1], model[3]):
        assert torch.all(bn.running_var >= 0.5) and torch.all(bn.weight >= 0.5)
        assert torch.all(bn.running_mean != 0) and torch.all(bn.bias != 0)
    assert not torch.equal(model[1].weight, model[3].weight)


@pytest.mark.parametrize("width", [0.5, 1.0, 1.5, 2.0])
def test_shufflenet_v2_loads_torchvision_weights_and_gives_the_same_outputs(width):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, f"shufflenet_v2_x{str(width).replace('.', '_')}")()
    load_and_compare(ShuffleNetV2(width), reference)


def test_channel_shuffle_is_the_reshape_transpose_and_equals_torch():
    x = np.random.default_rng(0).normal(size=(2, 12, 3, 3))
    out = channel_shuffle(x, 3)
    # the definition, channel by channel: output j * groups + g is input g * C / groups + j
    for g in range(3):
        for j in range(4):
            np.testing.assert_array_equal(out[:, j * 3 + g], x[:, g * 4 + j])
    np.testing.assert_array_equal(channel_shuffle_torch(torch.from_numpy(x), 3).numpy(), out)
    np.testing.assert_array_equal(channel_shuffle(x, 1), x)


def test_channel_shuffle_torch_equals_torchvisions():
    x = torch.randn(2, 8, 4, 4)
    from torchvision.models.shufflenetv2 import channel_shuffle as reference
    torch.testing.assert_close(channel_shuffle_torch(x, 2), reference(x, 2), rtol=0, atol=0)


@pytest.mark.parametrize("block, shape", [
    (DepthwiseSeparable(8, 16), (2, 16, 6, 6)),
    (DepthwiseSeparable(8, 16, stride=2), (2, 16, 3, 3)),
    (InvertedResidual(8, 8, 1, 6), (2, 8, 6, 6)),
    (InvertedResidual(8, 12, 2, 6), (2, 12, 3, 3)),
    (InvertedResidual(8, 4, 1, 1), (2, 4, 6, 6)),
    (ShuffleUnit(8, 8, 1), (2, 8, 6, 6)),
    (ShuffleUnit(8, 16, 2), (2, 16, 3, 3)),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else str(v))
def test_every_block_gives_its_output_shape(block, shape):
    assert block(torch.randn(2, 8, 6, 6)).shape == shape


def test_inverted_residual_adds_the_shortcut_only_between_equal_shapes():
    assert InvertedResidual(8, 8, 1, 6).use_shortcut
    assert not InvertedResidual(8, 8, 2, 6).use_shortcut
    assert not InvertedResidual(8, 16, 1, 6).use_shortcut
    block = InvertedResidual(8, 8, 1, 6)
    nn.init.zeros_(block.conv[-1].weight)  # the projection's BN gamma: the branch outputs zero
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("model", [MobileNetV1, MobileNetV2, ShuffleNetV2])
def test_small_models_take_8x8_digits(model):
    net = model(in_channels=1, num_classes=10, small=True)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert count_parameters(net) > 0


def test_mobilenet_v1_small_keeps_more_resolution():
    # small: stem at stride 1 and one fewer downsampling block, so 8x8 ends at 1x1 (not below)
    net = MobileNetV1(alpha=0.25, in_channels=1, num_classes=10, small=True)
    assert net.blocks(net.stem(torch.randn(2, 1, 8, 8))).shape[-2:] == (1, 1)
    assert net.blocks(net.stem(torch.randn(2, 1, 16, 16))).shape[-2:] == (2, 2)


def test_conv_work_counts_macs_and_bytes_from_shapes():
    conv = nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=4, bias=False)
    work = conv_work(conv, (2, 16, 10, 10))
    assert work.macs == 3 * 3 * (16 // 4) * 32 * 5 * 5 * 2
    assert work.bytes_moved == 4 * (2 * 16 * 10 * 10 + 32 * 4 * 3 * 3 + 2 * 32 * 5 * 5)
    assert work.intensity == work.macs / work.bytes_moved
    depthwise = conv_work(nn.Conv2d(16, 16, 3, padding=1, groups=16), (2, 16, 10, 10))
    standard = conv_work(nn.Conv2d(16, 16, 3, padding=1), (2, 16, 10, 10))
    assert standard.intensity > 10 * depthwise.intensity
    assert isinstance(work, ConvWork)


@pytest.mark.parametrize("in_channels, out_channels, kernel", [(3, 8, 3), (16, 4, 1), (5, 7, (3, 1)), (2, 6, (1, 5))])
def test_conv_fans_equal_torchs_without_groups(in_channels, out_channels, kernel):
    conv = nn.Conv2d(in_channels, out_channels, kernel)
    assert conv_fans(conv) == nn.init._calculate_fan_in_and_fan_out(conv.weight)


@pytest.mark.parametrize("channels, out_channels, groups, kernel", [
    (16, 32, 4, 3), (12, 6, 3, (1, 3)), (96, 96, 96, 3), (8, 16, 8, (5, 3))])   # grouped, then depthwise
def test_conv_fans_divide_torchs_fan_out_by_the_groups(channels, out_channels, groups, kernel):
    conv = nn.Conv2d(channels, out_channels, kernel, groups=groups)
    torch_in, torch_out = nn.init._calculate_fan_in_and_fan_out(conv.weight)
    assert conv_fans(conv) == (torch_in, torch_out // groups)
    if groups == channels == out_channels:                    # depthwise: one input feeds K_h K_w outputs
        assert conv_fans(conv)[1] == conv.kernel_size[0] * conv.kernel_size[1]


@pytest.mark.parametrize("conv", [nn.Conv1d(6, 12, 5, groups=3), nn.Conv3d(4, 4, (3, 3, 2), groups=4)])
def test_conv_fans_count_1d_and_3d_kernels(conv):
    torch_in, torch_out = nn.init._calculate_fan_in_and_fan_out(conv.weight)
    assert conv_fans(conv) == (torch_in, torch_out // conv.groups)


def test_conv_fans_refuse_a_transposed_convolution():
    # it subclasses _ConvNd, but its weight is laid out the other way round, (C_in, C_out / groups, ...)
    with pytest.raises(TypeError, match="^conv: .*got ConvTranspose2d"):
        conv_fans(nn.ConvTranspose2d(4, 8, 3, groups=2))


def test_conv_fans_of_a_lazy_convolution_once_it_has_run():
    conv = nn.LazyConv2d(8, 3, groups=2)
    with pytest.raises(ValueError, match="^conv:"):
        conv_fans(conv)             # no weight shape yet: (0, 0) would be a silent wrong answer
    conv(torch.zeros(1, 4, 5, 5))
    assert conv_fans(conv) == (2 * 9, 4 * 9)


def test_forward_seconds_times_a_forward_pass():
    seconds = forward_seconds(nn.Conv2d(3, 4, 3), torch.randn(1, 3, 8, 8), repeats=2)
    assert 0 < seconds < 1


def test_conv_work_uses_the_output_size_of_strides_and_asymmetric_kernels():
    work = conv_work(nn.Conv2d(2, 3, (3, 1), stride=(2, 1), padding=(1, 0), bias=False), (1, 2, 7, 5))
    assert work.macs == 3 * 1 * 2 * 3 * (4 * 5)       # K_h K_w C_in C_out H_out W_out, H_out = 4


def test_timed_convolutions_share_the_separable_pairs_layers():
    layers = timed_convolutions(16)
    assert list(layers["separable (dw + pw)"]) == [layers["depthwise 3×3"], layers["pointwise 1×1"]]
    assert layers["grouped 3×3, 8 groups"].groups == 8 and layers["depthwise 3×3"].groups == 16
    seconds = convolution_seconds((1, 16, 6, 6), repeats=1, rounds=2)
    assert set(seconds) == set(layers) and all(len(s) == 2 and 0 < min(s) <= max(s) < 1 for s in seconds.values())


def test_depthwise_bandwidth_rows():
    rows = depthwise_bandwidth(4, [3, 5], repeats=1)
    assert [row["working set"] for row in rows] == [2 * 4 * 9 * 4, 2 * 4 * 25 * 4]
    assert all(row["depthwise"] > 0 and row["copy"] > 0 for row in rows)


def test_run_without_cpu_pinning_returns_the_childs_result():
    rows = run_without_cpu_pinning("depthwise_bandwidth", channels=2, sides=[3], repeats=1)
    assert len(rows) == 1 and rows[0]["working set"] == 2 * 2 * 9 * 4
    assert isinstance(keep_freed_memory(), bool)


@pytest.mark.parametrize("alpha", [0, -0.5])
def test_alpha_must_be_positive(alpha):
    with pytest.raises(ValueError, match="^alpha"):
        MobileNetV1(alpha)


@pytest.mark.parametrize("call, name, error", [
    (lambda: channel_shuffle(np.zeros((1, 6, 2, 2)), 4), "groups", ValueError),
    (lambda: channel_shuffle_torch(torch.zeros(1, 6, 2, 2), 4), "groups", ValueError),
    (lambda: channel_shuffle(np.zeros((6, 2, 2)), 2), "x", ValueError),
    (lambda: channel_shuffle([1, 2], 2), "x", TypeError),
    (lambda: channel_shuffle_torch(torch.zeros(1, 6, 2, 2), 0), "groups", ValueError),
    (lambda: MobileNetV1("wide"), "alpha", TypeError),
    (lambda: MobileNetV2(0), "width_mult", ValueError),
    (lambda: ShuffleNetV2(0.75), "width", ValueError),
    (lambda: DepthwiseSeparable(8, 8, stride=3), "stride", ValueError),
    (lambda: DepthwiseSeparable(0, 8), "in_channels", ValueError),
    (lambda: InvertedResidual(8, 8, 1, 0), "expand_ratio", ValueError),
    (lambda: ShuffleUnit(8, 16, 1), "in_channels", ValueError),
    (lambda: ShuffleUnit(8, 15, 2), "out_channels", ValueError),
    (lambda: conv_work(nn.Linear(2, 2), (1, 2, 3, 3)), "conv", TypeError),
    (lambda: conv_fans(nn.Linear(2, 2)), "conv", TypeError),
    (lambda: conv_fans(nn.LazyConv1d(2, 3)), "conv", ValueError),
    (lambda: conv_work(nn.Conv2d(3, 4, 3), (1, 2, 8, 8)), "input_shape", ValueError),
    (lambda: forward_seconds(lambda x: x, torch.zeros(1)), "module", TypeError),
    (lambda: conv_work(nn.Conv2d(2, 2, 3, dilation=2), (1, 2, 8, 8)), "conv", ValueError),
    (lambda: conv_work(nn.Conv2d(2, 2, 3, padding="same"), (1, 2, 8, 8)), "conv", ValueError),
    (lambda: conv_work(nn.Conv2d(2, 2, 5), (1, 2, 3, 3)), "kernel", ValueError),
    (lambda: randomize_batch_norms("net", torch.Generator()), "model", TypeError),
    (lambda: randomize_batch_norms(nn.BatchNorm2d(2), 0), "generator", TypeError),
    (lambda: timed_convolutions(4), "channels", ValueError),
    (lambda: convolution_seconds((8, 8, 8)), "input_shape", ValueError),
    (lambda: convolution_seconds((1, 8, 4, 4), rounds=0), "rounds", ValueError),
    (lambda: depthwise_bandwidth(4, [0]), "sides", ValueError),
    (lambda: run_without_cpu_pinning("train"), "function", ValueError),
])
def test_bad_arguments_raise_errors_that_name_them(call, name, error):
    with pytest.raises(error, match=f"^{name}:"):
        call()
