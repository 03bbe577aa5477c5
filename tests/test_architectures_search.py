"""The architecture search in miniature: every candidate builds from the chapter's blocks, its
costs grow with depth and width, a candidate's training gives lib.search what it needs (a
score and a curve of `budget` epochs, the same for the same seed), the Pareto front, and bad
configs raise errors that name the key."""
import re

import numpy as np
import pytest
import torch

from lib.architectures import (SEARCH_BLOCKS, BasicBlock, Bottleneck, DepthwiseSeparable, InvertedResidual,
                               candidate_costs, candidate_network, count_parameters, model_costs, pareto_front,
                               train_candidate)
from lib.data import digits_splits
from lib.search import TrialResult

BLOCK_CLASSES = {"plain": BasicBlock, "basic": BasicBlock, "bottleneck": Bottleneck,
                 "separable": DepthwiseSeparable, "inverted": InvertedResidual}


pytestmark = pytest.mark.usefixtures("one_torch_thread")   # tests/conftest.py


@pytest.fixture(scope="module")
def small_digits():
    return digits_splits(train_size=64, val_size=64)


@pytest.mark.parametrize("block", SEARCH_BLOCKS)
@pytest.mark.parametrize("depth, width", [(1, 4), (2, 8)])
def test_every_block_kind_builds_a_network_of_logits(block, depth, width):
    model = candidate_network({"block": block, "depth": depth, "width": width})
    blocks = [module for module in model if isinstance(module, BLOCK_CLASSES[block])]
    assert len(blocks) == 2 * depth  # two stages of `depth` blocks
    assert model(torch.zeros(5, 1, 8, 8)).shape == (5, 10)


def test_plain_and_basic_differ_only_by_the_shortcut():
    plain = candidate_network({"block": "plain", "depth": 2, "width": 8})
    basic = candidate_network({"block": "basic", "depth": 2, "width": 8})
    assert all(not m.shortcut for m in plain if isinstance(m, BasicBlock))
    assert all(m.shortcut for m in basic if isinstance(m, BasicBlock))
    # the basic net adds the projection shortcut where the second stage changes shape: 1x1 conv + BN
    assert count_parameters(basic) - count_parameters(plain) == 8 * 16 + 2 * 16


def test_the_second_stage_halves_the_resolution_and_doubles_the_channels():
    model = candidate_network({"block": "basic", "depth": 1, "width": 8})
    x = torch.zeros(2, 1, 8, 8)
    shapes = []
    for module in model:
        x = module(x)
        shapes.append(tuple(x.shape))
    assert (2, 8, 8, 8) in shapes and (2, 16, 4, 4) in shapes
    # the bottleneck's output is 4 times its stage's channels, as in ResNet-50
    assert candidate_network({"block": "bottleneck", "depth": 1, "width": 8})[-1].in_features == 4 * 16


def test_in_channels_and_classes_are_options():
    model = candidate_network({"block": "inverted", "depth": 1, "width": 4}, in_channels=3, num_classes=7)
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 7)


@pytest.mark.parametrize("block", SEARCH_BLOCKS)
def test_costs_grow_with_depth_and_width(block):
    def costs(depth, width):
        return candidate_costs({"block": block, "depth": depth, "width": width})

    for smaller, larger in [(costs(1, 8), costs(2, 8)), (costs(1, 8), costs(1, 16)), (costs(2, 8), costs(3, 8))]:
        assert smaller.params < larger.params
        assert smaller.macs < larger.macs
        assert smaller.activations < larger.activations


def test_candidate_costs_are_the_counters_of_the_candidate_network():
    config = {"block": "separable", "depth": 2, "width": 8}
    assert candidate_costs(config) == model_costs(candidate_network(config), (1, 1, 8, 8))
    assert candidate_costs(config).params == count_parameters(candidate_network(config))
    # four times the pixels, four times the multiply-adds: every layer is a convolution but the last
    assert candidate_costs(config, image_size=16).macs > 3 * candidate_costs(config).macs


def test_separable_blocks_are_the_cheapest_and_bottlenecks_widest():
    macs = {block: candidate_costs({"block": block, "depth": 2, "width": 16}).macs for block in SEARCH_BLOCKS}
    assert min(macs, key=macs.get) == "separable"
    assert max(macs, key=macs.get) == "bottleneck"


def test_training_gives_a_score_and_a_curve_of_budget_epochs(small_digits):
    score, curve = train_candidate({"block": "basic", "depth": 1, "width": 4}, 3, small_digits)
    assert curve.shape == (3,) and curve[-1] == score
    assert np.all((curve >= 0) & (curve <= 1))
    result = TrialResult(*train_candidate({"block": "basic", "depth": 1, "width": 4}, 2, small_digits))
    assert len(result.curve) == 2


def test_training_is_deterministic_for_a_seed(small_digits):
    config = {"block": "inverted", "depth": 1, "width": 4}
    first = train_candidate(config, 2, small_digits, seed=3)
    again = train_candidate(config, 2, small_digits, seed=3)
    other = train_candidate(config, 2, small_digits, seed=4)
    assert first[0] == again[0]
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_training_learns_the_digits():
    data = digits_splits(train_size=300, val_size=100)
    score, curve = train_candidate({"block": "basic", "depth": 1, "width": 8}, 4, data)
    assert score > 0.5 and curve[-1] > curve[0]


def test_a_diverged_run_scores_chance_from_then_on(small_digits):
    score, curve = train_candidate({"block": "plain", "depth": 1, "width": 4}, 3, small_digits, lr=1e30)
    assert score == pytest.approx(0.1) and curve.shape == (3,)


def test_pareto_front_keeps_the_candidates_nothing_beats():
    costs = np.array([1.0, 2.0, 3.0, 4.0, 2.0, 5.0])
    scores = np.array([0.5, 0.7, 0.6, 0.9, 0.8, 0.9])
    front = pareto_front(costs, scores)
    assert front.tolist() == [0, 4, 3]   # by increasing cost; 1 and 2 are beaten by 4, 5 by 3 (same score, cheaper)
    for index in set(range(len(costs))) - set(front.tolist()):
        assert any(costs[j] <= costs[index] and scores[j] >= scores[index] for j in front)


@pytest.mark.parametrize("config, error, key", [
    ({"block": "dense", "depth": 1, "width": 8}, ValueError, "config['block']"),
    ({"block": "basic", "depth": 0, "width": 8}, ValueError, "config['depth']"),
    ({"block": "basic", "depth": 1.5, "width": 8}, TypeError, "config['depth']"),
    ({"block": "basic", "depth": 1, "width": 0}, ValueError, "config['width']"),
    ({"block": "basic", "depth": 1}, ValueError, "config: expected the keys"),
    ({"block": "basic", "depth": 1, "width": 8, "lr": 0.1}, ValueError, "config: expected the keys"),
    (["basic", 1, 8], TypeError, "config: expected a dict"),
])
def test_bad_configs_raise_naming_the_key(config, error, key, small_digits):
    with pytest.raises(error, match="^" + re.escape(key)):
        candidate_network(config)
    with pytest.raises(error, match=r"^config"):
        candidate_costs(config)
    with pytest.raises(error, match=r"^config"):
        train_candidate(config, 1, small_digits)


def test_bad_arguments_raise_naming_them(small_digits):
    config = {"block": "basic", "depth": 1, "width": 4}
    with pytest.raises(ValueError, match="^in_channels"):
        candidate_network(config, in_channels=0)
    with pytest.raises(ValueError, match="^num_classes"):
        candidate_network(config, num_classes=0)
    with pytest.raises(ValueError, match="^image_size"):
        candidate_costs(config, image_size=0)
    with pytest.raises(ValueError, match="^budget"):
        train_candidate(config, 0, small_digits)
    with pytest.raises(TypeError, match="^data"):
        train_candidate(config, 1, (small_digits.x_train, small_digits.y_train))
    with pytest.raises(ValueError, match="^lr"):
        train_candidate(config, 1, small_digits, lr=0.0)
    with pytest.raises(ValueError, match="^seed"):
        train_candidate(config, 1, small_digits, seed=-1)
    with pytest.raises(ValueError, match="^batch_size"):
        train_candidate(config, 1, small_digits, batch_size=65)
    with pytest.raises(ValueError, match="^scores"):
        pareto_front([1.0, 2.0], [0.5])
    with pytest.raises(ValueError, match="^costs"):
        pareto_front([[1.0, 2.0]], [[0.5, 0.6]])
