"""Initializers against torch.nn.init (fans and gains exactly; torch path value for value;
NumPy samples within a tolerance sized to the sample), the deep-stack forward/backward against
autograd and the numeric checker, the statistics helpers against direct computation, bad inputs."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from lib.gradcheck import check_layer_gradients
from lib.initialization import (
    ActivationRecorder, WeightRatioRecorder, calculate_gain, compute_fans, deep_backward, deep_forward, init_,
    init_model_, initialize, kaiming_std, layer_statistics, xavier_std,
)

SHAPES = [(3, 5), (64, 16), (10, 1), (8, 4, 3, 3), (2, 6, 5), (16, 3, 1, 7)]
TORCH_INIT = {
    "normal": (lambda t, g: nn.init.normal_(t, 0.0, 0.3, generator=g), {"std": 0.3}),
    "uniform": (lambda t, g: nn.init.uniform_(t, -0.7, 0.7, generator=g), {"bound": 0.7}),
    "xavier_normal": (lambda t, g: nn.init.xavier_normal_(t, gain=1.5, generator=g), {"gain": 1.5}),
    "xavier_uniform": (lambda t, g: nn.init.xavier_uniform_(t, gain=0.5, generator=g), {"gain": 0.5}),
    "kaiming_normal": (lambda t, g: nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu", generator=g),
                       {"mode": "fan_out", "nonlinearity": "relu"}),
    "kaiming_uniform": (lambda t, g: nn.init.kaiming_uniform_(t, a=0.2, generator=g), {"a": 0.2}),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_fans_match_torch(shape):
    assert compute_fans(shape) == nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


@pytest.mark.parametrize("nonlinearity,param", [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                                                ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None)])
def test_gains_match_torch(nonlinearity, param):
    assert calculate_gain(nonlinearity, param) == nn.init.calculate_gain(nonlinearity, param)


@pytest.mark.parametrize("method", sorted(TORCH_INIT))
@pytest.mark.parametrize("shape", SHAPES)
def test_torch_path_equals_torch_nn_init_value_for_value(method, shape):
    reference, options = TORCH_INIT[method]
    ours, theirs = torch.empty(shape), torch.empty(shape)
    init_(ours, method, torch.Generator().manual_seed(3), **options)
    reference(theirs, torch.Generator().manual_seed(3))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("method,options,expected_std", [
    ("normal", {"std": 0.3}, lambda s: 0.3),
    ("uniform", {"bound": 0.7}, lambda s: 0.7 / math.sqrt(3)),
    ("xavier_normal", {"gain": 5 / 3}, lambda s: 5 / 3 * math.sqrt(2 / (s[0] + s[1]))),
    ("xavier_uniform", {}, lambda s: math.sqrt(2 / (s[0] + s[1]))),
    ("kaiming_normal", {"nonlinearity": "relu"}, lambda s: math.sqrt(2 / s[1])),
    ("kaiming_uniform", {"mode": "fan_out", "nonlinearity": "tanh"}, lambda s: 5 / 3 / math.sqrt(s[0])),
])
def test_numpy_samples_have_the_intended_statistics(method, options, expected_std):
    shape = (300, 400)
    w = initialize(shape, method, np.random.default_rng(0), **options)
    n, std = w.size, expected_std(shape)
    # The sample std of n draws has relative standard error about 1/√(2n); allow 6 of them.
    assert abs(w.std() / std - 1) < 6 / math.sqrt(2 * n)
    assert abs(w.mean()) < 6 * std / math.sqrt(n)
    if method.endswith("uniform"):
        assert np.abs(w).max() <= math.sqrt(3) * std


def test_constant_and_zeros():
    np.testing.assert_array_equal(initialize((2, 3), "zeros"), np.zeros((2, 3)))
    np.testing.assert_array_equal(initialize((2, 3), "constant", value=2.0), np.full((2, 3), 2.0))
    t = torch.empty(2, 3)
    torch.testing.assert_close(init_(t, "constant", value=2.0), torch.full((2, 3), 2.0))


def test_scales_for_conv_weights_use_the_receptive_field():
    assert xavier_std((8, 4, 3, 3)) == pytest.approx(math.sqrt(2 / (36 + 72)))
    assert kaiming_std((8, 4, 3, 3), nonlinearity="relu") == pytest.approx(math.sqrt(2 / 36))


def test_init_model_initializes_every_layer_and_zeros_biases():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    init_model_(model, "constant", value=0.5)
    assert all(torch.all(m.weight == 0.5) and torch.all(m.bias == 0) for m in model if isinstance(m, nn.Linear))


# --------------------------------------------------------------------------------------
# Deep stack forward/backward and statistics
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("nonlinearity", ["linear", "tanh", "relu", "sigmoid"])
def test_deep_backward_matches_autograd_and_the_numeric_gradient(rng, nonlinearity):
    x = rng.normal(size=(5, 4))
    weights = [rng.normal(size=(6, 4)) * 0.5, rng.normal(size=(3, 6)) * 0.5]
    activations, cache = deep_forward(x, weights, nonlinearity)
    dout = rng.normal(size=activations[-1].shape)
    d_weights, d_activations = deep_backward(dout, cache)

    torch_act = {"linear": lambda z: z, "tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}[nonlinearity]
    w_t = [torch.tensor(w, requires_grad=True) for w in weights]
    a = torch.tensor(x)
    hidden = []
    for w in w_t:
        a = torch_act(a @ w.T)
        a.retain_grad()
        hidden.append(a)
    a.backward(torch.tensor(dout))
    for ours, theirs in zip(d_weights, w_t):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(d_activations[0], hidden[0].grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(activations[-1], a.detach().numpy(), atol=1e-12)

    results = check_layer_gradients(lambda w0, w1: deep_forward(x, [w0, w1], nonlinearity)[0][-1],
                                    {"w0": weights[0], "w1": weights[1]},
                                    {"w0": d_weights[0], "w1": d_weights[1]}, dout)
    assert all(r.passed(1e-7) for r in results.values()), results


def test_layer_statistics_against_direct_computation():
    a = np.array([[0.0, 0.99, -0.5], [0.0, -0.98, 0.2]])
    g = np.array([[1.0, -1.0, 0.0], [3.0, 1.0, 0.0]])
    (row,) = layer_statistics([a], [g])
    assert row["mean"] == pytest.approx(a.mean()) and row["std"] == pytest.approx(a.std())
    assert row["saturated"] == pytest.approx(2 / 6)          # 0.99 and -0.98
    assert row["dead"] == pytest.approx(1 / 3)               # the first unit is 0 for both examples
    assert row["grad_std"] == pytest.approx(g.std())


def test_activation_recorder_matches_the_numpy_forward_and_backward(rng):
    x = rng.normal(size=(8, 5))
    weights = [rng.normal(size=(7, 5)) * 0.4, rng.normal(size=(4, 7)) * 0.4]
    model = nn.Sequential(nn.Linear(5, 7, bias=False), nn.Tanh(), nn.Linear(7, 4, bias=False), nn.Tanh()).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(weights[0]))
        model[2].weight.copy_(torch.tensor(weights[1]))
    dout = rng.normal(size=(8, 4))
    with ActivationRecorder(model, (nn.Tanh,)) as recorder:
        model(torch.tensor(x)).backward(torch.tensor(dout))
    activations, cache = deep_forward(x, weights, "tanh")
    _, d_activations = deep_backward(dout, cache)
    ours = layer_statistics(recorder.activations, recorder.gradients)
    reference = layer_statistics(activations, d_activations)
    for a, b in zip(ours, reference):
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-12)
    assert not model[1]._forward_hooks  # hooks removed on exit


def _recorded_steps(optimizer_factory, steps=3):
    """A small conv + linear model trained ``steps`` steps under a WeightRatioRecorder, and a copy
    of every weight and gradient around each step, for checking the ratios directly."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6, 4))
    optimizer = optimizer_factory(model.parameters())
    recorder = WeightRatioRecorder(model)
    weights = [model[0].weight, model[3].weight]
    seen = []
    for _ in range(steps):
        optimizer.zero_grad()
        model(torch.randn(5, 2, 8)).square().mean().backward()
        before = [w.detach().clone() for w in weights]
        grads = [w.grad.clone() for w in weights]
        recorder.step(optimizer)
        seen.append((before, grads, [w.detach().clone() for w in weights]))
    return recorder, seen


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_weight_ratio_recorder_against_direct_computation(momentum):
    recorder, seen = _recorded_steps(lambda params: torch.optim.SGD(params, lr=0.1, momentum=momentum))
    assert recorder.grad_to_data.shape == recorder.update_to_data.shape == (3, 2)
    for step, (before, grads, after) in enumerate(seen):
        for layer in range(2):
            scale = before[layer].std()
            assert recorder.grad_to_data[step, layer] == pytest.approx((grads[layer].std() / scale).item(), rel=1e-6)
            change = (after[layer] - before[layer]).std() / scale
            assert recorder.update_to_data[step, layer] == pytest.approx(change.item(), rel=1e-6)
    # Plain SGD's update is lr · grad, so update:data = lr · grad:data (momentum too, on its first step).
    first = 1 if momentum else 3
    assert recorder.update_to_data[:first] == pytest.approx(0.1 * recorder.grad_to_data[:first], rel=1e-4)


def test_weight_ratio_recorder_starts_empty():
    recorder = WeightRatioRecorder(nn.Linear(3, 2))
    assert recorder.grad_to_data.shape == recorder.update_to_data.shape == (0, 1)


# --------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("call,error,match", [
    (lambda: compute_fans((5,)), ValueError, r"shape: fans need a weight with at least 2 dimensions"),
    (lambda: compute_fans((5, 0)), ValueError, r"shape\[1\]: expected an integer >= 1"),
    (lambda: calculate_gain("softplus"), ValueError, r"nonlinearity: expected one of"),
    (lambda: calculate_gain("leaky_relu", "steep"), TypeError, r"negative_slope: expected a real number"),
    (lambda: kaiming_std((3, 4), mode="fan_avg"), ValueError, r"mode: expected one of 'fan_in', 'fan_out'"),
    (lambda: initialize((3, 4), "normal", np.random.default_rng(0), std=-1.0), ValueError, r"std: expected a finite number > 0"),
    (lambda: initialize((3, 4), "normal", np.random.default_rng(0)), TypeError, r"normal: needs the keyword argument 'std'"),
    (lambda: initialize((3, 4), "orthogonal", np.random.default_rng(0)), ValueError, r"method: expected one of"),
    (lambda: initialize((3, 4), "xavier_normal"), TypeError, r"rng: xavier_normal draws random numbers"),
    (lambda: initialize((3, 4), "xavier_normal", np.random.default_rng(0), mode="fan_in"), TypeError, r"unexpected options \['mode'\]"),
    (lambda: initialize((4,), "kaiming_normal", np.random.default_rng(0)), ValueError, r"shape: fans need"),
    (lambda: initialize((3, 4), "xavier_uniform", np.random.default_rng(0), gain=0.0), ValueError, r"gain: expected a finite number > 0"),
    (lambda: init_(np.ones((3, 4)), "zeros"), TypeError, r"tensor: expected a torch tensor"),
    (lambda: init_(torch.empty(3), "kaiming_uniform"), ValueError, r"shape: fans need"),
    (lambda: init_model_(nn.Sequential(nn.ReLU()), "zeros"), ValueError, r"model: has no Linear or Conv layer"),
    (lambda: deep_forward(np.ones(3), [np.ones((2, 3))]), ValueError, r"x: expected 2 dimensions"),
    (lambda: deep_forward(np.ones((2, 3)), [np.ones((2, 4))]), ValueError, r"weights\[0\]: expected 3 input columns"),
    (lambda: deep_forward(np.ones((2, 3)), [np.ones((2, 3))], "swish"), ValueError, r"nonlinearity: expected one of"),
    (lambda: deep_forward(np.ones((2, 3)), []), ValueError, r"weights: expected at least one layer"),
    (lambda: deep_backward(np.ones((2, 5)), deep_forward(np.ones((2, 3)), [np.ones((2, 3))])[1]), ValueError, r"dout: expected the shape"),
    (lambda: layer_statistics([]), ValueError, r"activations: expected at least one layer"),
    (lambda: layer_statistics([np.ones((2, 2))], [np.ones((2, 2))] * 2), ValueError, r"gradients: expected 1 layers"),
    (lambda: layer_statistics([np.array([[np.nan]])]), ValueError, r"activations\[0\]: contains NaN"),
    (lambda: ActivationRecorder(nn.Sequential(nn.Linear(2, 2)), (nn.Tanh,)), ValueError, r"model: has no module of types \['Tanh'\]"),
    (lambda: WeightRatioRecorder("model"), TypeError, r"model: expected a torch module"),
    (lambda: WeightRatioRecorder(nn.Sequential(nn.ReLU())), ValueError, r"model: has no Linear or Conv layer"),
    (lambda: WeightRatioRecorder(nn.Linear(2, 2)).step(0.1), TypeError, r"optimizer: expected a torch optimizer"),
    (lambda: WeightRatioRecorder(nn.Linear(2, 2)).step(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)),
     ValueError, r"model: the weights of layers \[0\] have no gradient; call loss.backward\(\) first"),
])
def test_initialization_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
