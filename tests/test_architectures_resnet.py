"""ResNet and ResNeXt (lib.architectures): layer for layer equal to torchvision's definitions
(names, shapes, outputs after loading their state dict), parameter counts as published, every
block's output shape, the zero-initialized branch, the small 8x8 models, and bad arguments."""
import math
import re

import pytest
import torch
import torchvision
from torch import nn

from lib.architectures import (BasicBlock, Bottleneck, PreActBlock, ResNet, count_parameters,
                               model_costs, randomize_batch_norms, resnet, resnext, stage_costs, stage_table,
                               torchvision_init, zero_init_residual)

# name: (our builder, torchvision's builder, published parameters in millions: He et al. 2016
# Table 3 / torchvision's model cards; Xie et al. 2017 Table 1 for ResNeXt-50 32x4d)
MODELS = {
    "resnet18": (lambda: resnet(18), torchvision.models.resnet18, 11.7),
    "resnet34": (lambda: resnet(34), torchvision.models.resnet34, 21.8),
    "resnet50": (lambda: resnet(50), torchvision.models.resnet50, 25.6),
    "resnet101": (lambda: resnet(101), torchvision.models.resnet101, 44.5),
    "resnet152": (lambda: resnet(152), torchvision.models.resnet152, 60.2),
    "resnext50_32x4d": (lambda: resnext(50), torchvision.models.resnext50_32x4d, 25.0),
    "resnext101_32x8d": (lambda: resnext(101, groups=32, width_per_group=8),
                         torchvision.models.resnext101_32x8d, 88.8),
}


def names_and_shapes(model: nn.Module) -> list:
    return [(name, tuple(tensor.shape)) for name, tensor in model.state_dict().items()]


@pytest.mark.parametrize("name", list(MODELS))
def test_same_layers_as_torchvision_and_published_parameter_count(name):
    ours, theirs, published_millions = MODELS[name]
    with torch.device("meta"):  # shapes only: no memory, no initialization arithmetic
        model, reference = ours(), theirs()
    assert names_and_shapes(model) == names_and_shapes(reference)
    assert count_parameters(model) == count_parameters(reference)
    assert round(count_parameters(model) / 1e6, 1) == published_millions


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d"])
def test_torchvision_state_dict_loads_strictly_and_outputs_agree(name):
    ours, theirs, _ = MODELS[name]
    generator = torch.Generator().manual_seed(0)
    reference = randomize_batch_norms(theirs().eval(), generator)
    with torch.device("meta"):
        model = ours()
    model = model.to_empty(device="cpu").eval()  # every value comes from the state dict below
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=generator)  # 32x32: the stem and stages leave 1x1
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


def ceil_half(size: int, stride: int) -> int:
    return math.ceil(size / stride)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("in_channels, channels", [(8, 8), (8, 16), (16, 8)])
def test_block_output_shapes(stride, in_channels, channels):
    size = 7  # odd: a stride-2 block rounds up, 7 -> 4
    x = torch.randn(2, in_channels, size, size)
    out_size = ceil_half(size, stride)
    blocks = {
        BasicBlock(in_channels, channels, stride): channels,
        BasicBlock(in_channels, channels, stride, shortcut=False): channels,
        PreActBlock(in_channels, channels, stride): channels,
        Bottleneck(in_channels, channels, stride): 4 * channels,
        Bottleneck(in_channels, channels, stride, groups=4, width_per_group=16): 4 * channels,
    }
    for block, out_channels in blocks.items():
        assert block(x).shape == (2, out_channels, out_size, out_size), type(block).__name__


def test_projection_only_where_the_shape_changes():
    assert BasicBlock(16, 16).downsample is None
    assert BasicBlock(16, 16, stride=2).downsample is not None
    assert BasicBlock(16, 32).downsample is not None
    assert BasicBlock(16, 32, shortcut=False).downsample is None  # plain: no shortcut at all
    assert Bottleneck(64, 16).downsample is None  # 64 = 4 * 16 channels in and out
    assert Bottleneck(16, 16).downsample is not None
    assert PreActBlock(16, 16).downsample is None


def test_resnext_block_width_and_groups():
    block = Bottleneck(256, 64, groups=32, width_per_group=4)  # ResNeXt-50's first stage
    assert block.conv2.groups == 32 and block.conv2.in_channels == 128  # 32 paths of 4


@pytest.mark.parametrize("training", [True, False])
def test_zero_initialized_branch(training):
    torch.manual_seed(0)
    x = torch.randn(4, 16, 6, 6)  # negative and positive entries
    post_activation = [BasicBlock(16, 16), Bottleneck(16, 4), Bottleneck(64, 16, groups=4, width_per_group=16)]
    for block in post_activation:
        zero_init_residual(block).train(training)
        inputs = x if block.conv1.in_channels == 16 else torch.randn(4, 64, 6, 6)
        with torch.no_grad():
            assert torch.equal(block(inputs), torch.relu(inputs)), type(block).__name__
    pre_activation = zero_init_residual(PreActBlock(16, 16)).train(training)
    with torch.no_grad():
        assert torch.equal(pre_activation(x), x)


def test_zero_init_residual_zeroes_every_last_bn_and_leaves_plain_blocks():
    model = zero_init_residual(resnet(50, num_classes=10, in_channels=1, small=True, stem_width=8))
    for module in model.modules():
        if isinstance(module, Bottleneck):
            assert torch.count_nonzero(module.bn3.weight) == 0
            assert torch.all(module.bn2.weight == 1)
    plain = zero_init_residual(BasicBlock(8, 8, shortcut=False))
    assert torch.all(plain.bn2.weight == 1)


def test_torchvision_initialization():
    torch.manual_seed(0)
    model = torchvision_init(nn.Sequential(nn.Conv2d(64, 256, 3, bias=False), nn.BatchNorm2d(256)))
    conv, bn = model
    fan_out = 256 * 3 * 3
    assert abs(conv.weight.std().item() - math.sqrt(2 / fan_out)) < 0.05 * math.sqrt(2 / fan_out)
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


@pytest.mark.parametrize("build", [
    lambda: resnet(18, num_classes=10, in_channels=1, small=True, stem_width=8),
    lambda: resnet(50, num_classes=10, in_channels=1, small=True, stem_width=8),
    lambda: resnext(50, groups=4, width_per_group=16, num_classes=10, in_channels=1, small=True, stem_width=8),
])
def test_small_models_on_8x8_digits(build):
    model = build()
    assert isinstance(model.maxpool, nn.Identity) and model.conv1.stride == (1, 1)
    assert model(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert [stage.output_shape[2] for stage in stage_costs(model, (1, 1, 8, 8))[1:5]] == [8, 4, 2, 1]


def test_stage_table_adds_up_to_the_model():
    with torch.device("meta"):
        model = resnet(50)
    stages = stage_costs(model, (1, 3, 224, 224))
    assert [stage.stage for stage in stages] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert [stage.blocks for stage in stages] == [0, 3, 4, 6, 3, 0]
    assert [stage.output_shape for stage in stages[:5]] == [
        (1, 64, 56, 56), (1, 256, 56, 56), (1, 512, 28, 28), (1, 1024, 14, 14), (1, 2048, 7, 7)]
    costs = model_costs(model, (1, 3, 224, 224))
    assert sum(stage.params for stage in stages) == costs.params
    assert sum(stage.macs for stage in stages) == costs.macs
    # torchvision's "v1.5" (stride in the 3x3) costs 4.1 G multiply-adds, the paper's 3.8 G
    assert round(costs.macs / 1e9, 1) == 4.1
    table = stage_table(model, (1, 3, 224, 224))
    assert len(table.splitlines()) == 7 and "Bottleneck" in table and "56 x 56" in table
    head = table.splitlines()[-1]  # class scores: no channels, no H x W
    assert re.search(r"fc to 1000 classes +- +- ", head), head


def test_stride_in_1x1_is_the_papers_v1_at_the_papers_cost():
    v1 = Bottleneck(64, 16, stride=2, stride_in_1x1=True)
    assert v1.conv1.stride == (2, 2) and v1.conv2.stride == (1, 1)
    assert v1(torch.randn(2, 64, 7, 7)).shape == (2, 64, 4, 4)
    with torch.device("meta"):
        paper, v1_5 = resnet(50, stride_in_1x1=True), resnet(50)
    assert names_and_shapes(paper) == names_and_shapes(v1_5)  # same layers, same weights
    # He et al. Table 1 prints 3.8 G multiply-adds for ResNet-50, 3.86 G counted (v1.5: 4.1 G)
    assert round(model_costs(paper, (1, 3, 224, 224)).macs / 1e9, 2) == 3.86


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="^depth"):
        resnet(20)
    with pytest.raises(ValueError, match="^depth"):
        resnext(18)
    with pytest.raises(ValueError, match="^groups"):
        Bottleneck(64, 16, groups=0)
    with pytest.raises(ValueError, match="^width_per_group"):
        Bottleneck(64, 8, width_per_group=4)  # 8 * 4 / 64 < 1 channel per path
    with pytest.raises(ValueError, match="^groups"):
        ResNet(BasicBlock, [2, 2, 2, 2], groups=32)
    with pytest.raises(ValueError, match="^block"):
        ResNet(nn.Conv2d, [2, 2, 2, 2])
    with pytest.raises(ValueError, match="^layers"):
        ResNet(BasicBlock, [2, 2, 2])
    with pytest.raises(ValueError, match="^layers"):
        ResNet(BasicBlock, [2, 0, 2, 2])
    with pytest.raises(ValueError, match="^in_channels"):
        BasicBlock(0, 8)
    with pytest.raises(ValueError, match="^stride"):
        PreActBlock(8, 8, stride=0)
    with pytest.raises(TypeError, match="^shortcut"):
        BasicBlock(8, 8, shortcut="yes")
    with pytest.raises(TypeError, match="^channels"):
        BasicBlock(8, 8.0)
    with pytest.raises(TypeError, match="^small"):
        resnet(18, small=1)  # a bool, not a number that compares equal to True
    with pytest.raises(TypeError, match="^stride_in_1x1"):
        Bottleneck(64, 16, stride_in_1x1=None)
    with pytest.raises(ValueError, match="^stride_in_1x1"):
        resnet(18, stride_in_1x1=True)  # the basic block has no 1x1 convolution
    with pytest.raises(TypeError, match="^model"):
        stage_table(nn.Linear(2, 2), (1, 2))
    with pytest.raises(TypeError, match="^model"):
        zero_init_residual("resnet")
    with pytest.raises(TypeError, match="^model"):
        torchvision_init(None)
