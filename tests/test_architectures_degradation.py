"""Plain and residual stacks (lib.architectures): He et al.'s CIFAR layout of depth 6n + 2 for
8x8 digits, its layer count as the paper counts it (convolutions and fc, not the 1x1 projections),
its parameters against the paper's Table 6, the plain net's missing additions, the degradation
experiment's records, and bad arguments."""
import numpy as np
import pytest
import torch
from torch import nn

from lib.architectures import (BasicBlock, count_parameters, errors_over_seeds, gradient_norms_over_seeds,
                               plain_or_residual_net, train_plain_and_residual, weighted_layers)
from lib.data import digits_splits

pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tests/conftest.py: one thread, as the notebook


@pytest.mark.parametrize("shortcut", [False, True])
@pytest.mark.parametrize("depth", [8, 14, 20, 56])
def test_a_depth_d_net_has_d_weighted_layers_convolutions_and_fc(depth, shortcut):
    model = plain_or_residual_net(depth, shortcut, width=4)
    layers = weighted_layers(model)
    assert len(layers) == depth
    assert sum(isinstance(module, nn.Conv2d) for _, module in layers) == depth - 1   # the stem and 6n in blocks
    assert layers[-1][0] == "fc" and layers[0][0] == "conv1"
    assert all(module.kernel_size == (3, 3) for _, module in layers[:-1])
    projections = [m for name, m in model.named_modules() if name.endswith("downsample.0")]
    assert len(projections) == (2 if shortcut else 0)   # where layer2 and layer3 change the shape
    assert all(m.kernel_size == (1, 1) for m in projections)


def test_output_shape_and_stage_resolutions_on_8x8_digits():
    model = plain_or_residual_net(14, True, width=4, num_classes=10).eval()
    x = torch.randn(5, 1, 8, 8)
    assert model(x).shape == (5, 10)
    shapes = {}
    for name in ("layer1", "layer2", "layer3"):
        getattr(model, name).register_forward_hook(lambda m, i, out, name=name: shapes.__setitem__(name, out.shape))
    model(x)
    assert shapes == {"layer1": (5, 4, 8, 8), "layer2": (5, 8, 4, 4), "layer3": (5, 16, 2, 2)}
    assert plain_or_residual_net(8, False, width=2, in_channels=3, num_classes=7)(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("depth, millions", [(20, 0.27), (56, 0.85), (110, 1.7)])
def test_the_plain_net_has_the_parameters_of_he_et_al_table_6(depth, millions):
    # The paper's CIFAR ResNets use option A shortcuts (zero padding, no parameters), so they have
    # exactly the plain net's parameters; option B's projections add 2,752 at width 16.
    with torch.device("meta"):
        plain = plain_or_residual_net(depth, False, width=16, in_channels=3)
        residual = plain_or_residual_net(depth, True, width=16, in_channels=3)
    assert round(count_parameters(plain) / 1e6, 2 if millions < 1 else 1) == millions
    assert count_parameters(residual) - count_parameters(plain) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_the_plain_net_adds_nothing_a_zero_branch_cuts_its_signal():
    # With every block's last BN at gamma = beta = 0, each branch outputs 0: a plain block then
    # outputs relu(0) = 0, so the logits no longer depend on the input; a residual block outputs
    # relu(shortcut), and they still do.
    x = torch.randn(6, 1, 8, 8)
    logits = {}
    for shortcut in (False, True):
        torch.manual_seed(0)
        model = plain_or_residual_net(8, shortcut, width=4).eval()
        for block in model.modules():
            if isinstance(block, BasicBlock):
                nn.init.zeros_(block.bn2.weight), nn.init.zeros_(block.bn2.bias)
                assert block.shortcut is shortcut
        with torch.no_grad():
            logits[shortcut] = model(x)
    assert logits[False].std(dim=0).max() == 0
    assert logits[True].std(dim=0).min() > 0


def test_plain_and_residual_blocks_differ_only_by_the_addition():
    torch.manual_seed(0)
    plain, residual = BasicBlock(4, 4, shortcut=False).eval(), BasicBlock(4, 4, shortcut=True).eval()
    residual.load_state_dict(plain.state_dict())
    x = torch.randn(3, 4, 8, 8)
    with torch.no_grad():
        branch = residual.bn2(residual.conv2(residual.relu(residual.bn1(residual.conv1(x)))))
        torch.testing.assert_close(plain(x), torch.relu(branch))
        torch.testing.assert_close(residual(x), torch.relu(branch + x))


def test_the_experiment_records_training_error_and_gradient_norms_per_update():
    data = digits_splits(train_size=64, val_size=32)
    runs = train_plain_and_residual(data, depths=[8], seeds=[0, 1], steps=4, width=2, batch_size=16,
                                    eval_every=2, lr_drop_at=2)
    assert list(runs) == ["plain-8", "residual-8"]
    for histories in runs.values():
        assert len(histories) == 2
        steps, errors = errors_over_seeds(histories, "train")
        assert steps.tolist() == [0, 2, 4] and errors.shape == (2, 3)
        assert np.all((errors >= 0) & (errors <= 1))
        assert errors_over_seeds(histories, "val")[1].shape == (2, 3)
        assert errors_over_seeds(histories, "train_batches")[1].shape == (2, 3)
        assert gradient_norms_over_seeds(histories).shape == (2, 4, 8)     # seeds, updates, layers
        assert histories[0].step_lr == [0.1, 0.1, 0.01, 0.01]
    # at step 0 the training error is measured on the whole split in eval mode, both ways
    np.testing.assert_allclose(errors_over_seeds(runs["plain-8"], "train")[1][:, 0],
                               errors_over_seeds(runs["plain-8"], "train_batches")[1][:, 0])
    # the same seed gives the same run
    again = train_plain_and_residual(data, depths=[8], seeds=[1], steps=4, width=2, batch_size=16, eval_every=2,
                                     lr_drop_at=2)
    assert again["residual-8"][0].extra == runs["residual-8"][1].extra
    # kinds picks the nets: only the plain one, the same run as in the pair
    only_plain = train_plain_and_residual(data, depths=[8], seeds=[0], steps=4, width=2, batch_size=16, eval_every=2,
                                          lr_drop_at=2, kinds=["plain"])
    assert list(only_plain) == ["plain-8"]
    assert only_plain["plain-8"][0].extra == runs["plain-8"][0].extra


def test_errors_over_seeds_refuses_runs_recorded_at_other_steps():
    data = digits_splits(train_size=64, val_size=32)
    every_2 = train_plain_and_residual(data, [8], [0], steps=4, width=2, batch_size=16, eval_every=2, kinds=["plain"])
    every_4 = train_plain_and_residual(data, [8], [1], steps=4, width=2, batch_size=16, eval_every=4, kinds=["plain"])
    with pytest.raises(ValueError, match="^histories: run 1 recorded at other steps"):
        errors_over_seeds(every_2["plain-8"] + every_4["plain-8"], "train")


@pytest.mark.parametrize("depth", [7, 9, 18, 2, 0])
def test_a_depth_not_6n_plus_2_raises_naming_depth(depth):
    with pytest.raises(ValueError, match="^depth: expected 6n \\+ 2"):
        plain_or_residual_net(depth, True)


@pytest.mark.parametrize("call, error, message", [
    (lambda: plain_or_residual_net(8.0, True), TypeError, "^depth: expected an integer"),
    (lambda: plain_or_residual_net(8, 1), TypeError, "^shortcut: expected True or False"),
    (lambda: plain_or_residual_net(8, True, width=0), ValueError, "^width: expected an integer >= 1"),
    (lambda: plain_or_residual_net(8, True, in_channels=0), ValueError, "^in_channels"),
    (lambda: plain_or_residual_net(8, True, num_classes=0), ValueError, "^num_classes"),
    (lambda: weighted_layers("net"), TypeError, "^model: expected a torch.nn.Module"),
    (lambda: train_plain_and_residual("data", [8], [0], 2), TypeError, "^data: expected lib.data.Splits"),
    (lambda: train_plain_and_residual(digits_splits(), [8, 10], [0], 2), ValueError, "^depth: expected 6n"),
    (lambda: train_plain_and_residual(digits_splits(), 8, [0], 2), TypeError, "^depths: expected a list of depths"),
    (lambda: train_plain_and_residual(digits_splits(), [8], [], 2), ValueError, "^seeds: expected a non-empty list"),
    (lambda: train_plain_and_residual(digits_splits(), [8], [0], 0), ValueError, "^steps: expected an integer >= 1"),
    (lambda: train_plain_and_residual(digits_splits(), [8], [0], 2, lr=0), ValueError, "^lr: expected a finite"),
    (lambda: train_plain_and_residual(digits_splits(), [8], [0], 2, momentum=1.0), ValueError, "^momentum"),
    (lambda: train_plain_and_residual(digits_splits(), [8], [0], 2, weight_decay=-1.0), ValueError,
     "^weight_decay"),
    (lambda: train_plain_and_residual(digits_splits(), [8], [0], 2, lr_drop_at=-1), ValueError, "^lr_drop_at"),
    (lambda: train_plain_and_residual(digits_splits(), [8], [0], 2, lr_drop_at=2), ValueError,
     "^lr_drop_at: expected an update before the last"),
    (lambda: train_plain_and_residual(digits_splits(), [8], [0], 2, eval_every=3), ValueError,
     "^eval_every: expected at most steps"),
    (lambda: train_plain_and_residual(digits_splits(), [8, 8], [0], 2), ValueError, "^depths: expected distinct"),
    (lambda: train_plain_and_residual(digits_splits(), [8], [1, 1], 2), ValueError, "^seeds: expected distinct"),
    (lambda: train_plain_and_residual(digits_splits(), [8], [0], 2, kinds=["plane"]), ValueError,
     "^kinds: expected one of"),
    (lambda: train_plain_and_residual(digits_splits(), [8], [0], 2, kinds=[]), ValueError,
     "^kinds: expected a non-empty list"),
    (lambda: errors_over_seeds([], "train"), ValueError, "^histories: expected a non-empty list"),
    (lambda: errors_over_seeds([object()], "test"), ValueError, "^measure: expected one of"),
    (lambda: gradient_norms_over_seeds(None), TypeError, "^histories: expected a list of History"),
])
def test_bad_arguments_raise_errors_that_name_them(call, error, message):
    with pytest.raises(error, match=message):
        call()
