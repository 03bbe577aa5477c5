"""The regularization module: weight decay step for step against torch.optim, Monte-Carlo dropout,
DropConnect, stochastic depth and fractional max pooling against torch (float64 autograd,
torchvision, ATen's fractional max pooling) and the numeric gradient checker, expectations over
masks against the test-time output, and bad inputs."""
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import stochastic_depth

from lib.gradcheck import check_layer_gradients
from lib.layers import dropout_forward, softmax
from lib.regularization import (
    DropConnectLinear, StochasticDepthBlock, StochasticDepthMLP, adam_step, dropconnect_backward,
    dropconnect_forward, expected_depth, expected_depth_linear, fractional_max_pool2d,
    fractional_max_pool2d_backward, fractional_output_size, l2_penalty, l2_penalty_torch, mc_dropout_predict,
    mc_dropout_predict_torch, pooling_intervals, residual_block_backward, residual_block_forward, sgd_step,
    survival_probabilities,
)


def tensors(*arrays):
    return [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]


def all_masks(shape):
    """Every 0/1 mask of ``shape``, with the number of kept entries."""
    for bits in itertools.product((0.0, 1.0), repeat=math.prod(shape)):
        mask = np.array(bits).reshape(shape)
        yield mask, int(mask.sum())


# --------------------------------------------------------------------------------------
# Weight decay
# --------------------------------------------------------------------------------------

def quadratic_sine_grad(w, a, b):
    """Gradient of Σ a·w²/2 + b·sin(w): it depends on w, so the trajectories can drift apart."""
    return a * w + b * np.cos(w)


def parameter_set(rng):
    shapes = {"W1": (4, 3), "b1": (3,), "W2": (3, 5)}
    params = {k: rng.normal(size=s) for k, s in shapes.items()}
    coefficients = {k: (rng.uniform(0.1, 2.0, size=s), rng.normal(size=s)) for k, s in shapes.items()}
    return params, coefficients


def run_torch(optimizer_class, params, coefficients, steps, **options):
    torch_params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    optimizer = optimizer_class(list(torch_params.values()), **options)
    for _ in range(steps):
        for k, p in torch_params.items():
            p.grad = torch.tensor(quadratic_sine_grad(p.detach().numpy(), *coefficients[k]))
        optimizer.step()
    return {k: p.detach().numpy() for k, p in torch_params.items()}


def run_numpy(step, params, coefficients, steps, **options):
    params = {k: v.copy() for k, v in params.items()}
    state = None
    for _ in range(steps):
        grads = {k: quadratic_sine_grad(w, *coefficients[k]) for k, w in params.items()}
        state = step(params, grads, state=state, **options)
    return params


@pytest.mark.parametrize("weight_decay", [0.0, 0.05, 0.3])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_step_matches_torch_sgd_step_for_step(rng, weight_decay, momentum):
    params, coefficients = parameter_set(rng)
    ours = run_numpy(sgd_step, params, coefficients, 25, lr=0.05, weight_decay=weight_decay, momentum=momentum)
    theirs = run_torch(torch.optim.SGD, params, coefficients, 25, lr=0.05, weight_decay=weight_decay,
                       momentum=momentum)
    for k in params:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01, 0.5])
@pytest.mark.parametrize("decoupled,torch_class", [(False, torch.optim.Adam), (True, torch.optim.AdamW)])
def test_adam_step_matches_torch_adam_and_adamw_step_for_step(rng, weight_decay, decoupled, torch_class):
    params, coefficients = parameter_set(rng)
    options = dict(lr=0.02, betas=(0.8, 0.99), eps=1e-8, weight_decay=weight_decay)
    ours = run_numpy(adam_step, params, coefficients, 25, decoupled=decoupled, **options)
    theirs = run_torch(torch_class, params, coefficients, 25, **options)
    for k in params:
        np.testing.assert_allclose(ours[k], theirs[k], rtol=1e-12, atol=1e-14)


def test_sgd_with_l2_equals_decoupled_decay_without_momentum_but_not_with_it(rng):
    params, coefficients = parameter_set(rng)
    runs = {(decoupled, momentum): run_numpy(sgd_step, params, coefficients, 30, lr=0.05, weight_decay=0.2,
                                             decoupled=decoupled, momentum=momentum)
            for decoupled in (False, True) for momentum in (0.0, 0.9)}
    for k in params:   # W − η(g + λW) and (1 − ηλ)W − ηg: the same update, up to round-off
        np.testing.assert_allclose(runs[False, 0.0][k], runs[True, 0.0][k], rtol=1e-13, atol=1e-15)
    gap = max(np.abs(runs[False, 0.9][k] - runs[True, 0.9][k]).max() for k in params)
    assert gap > 0.05       # with momentum, λW accumulates in the velocity under L2 only


def test_adam_with_l2_differs_from_adamw(rng):
    params, coefficients = parameter_set(rng)
    l2 = run_numpy(adam_step, params, coefficients, 20, lr=0.02, weight_decay=0.5, decoupled=False)
    adamw = run_numpy(adam_step, params, coefficients, 20, lr=0.02, weight_decay=0.5, decoupled=True)
    no_decay = run_numpy(adam_step, params, coefficients, 20, lr=0.02)
    gap = max(np.abs(l2[k] - adamw[k]).max() for k in params)
    decay_effect = max(np.abs(adamw[k] - no_decay[k]).max() for k in params)
    assert gap > 0.02 and gap > 0.1 * decay_effect


def test_adamw_shrinks_every_weight_by_the_same_factor_when_the_gradient_is_zero():
    w = {"W": np.array([1e-3, 1.0, 50.0])}
    state = None
    for _ in range(3):
        state = adam_step(w, {"W": np.zeros(3)}, state, lr=0.1, weight_decay=0.5, decoupled=True)
    np.testing.assert_allclose(w["W"], np.array([1e-3, 1.0, 50.0]) * 0.95**3, rtol=1e-14)


@pytest.mark.parametrize("as_list", [False, True])
def test_l2_penalty_matches_autograd(rng, as_list):
    weights = {"W1": rng.normal(size=(3, 4)), "W2": rng.normal(size=(4, 2))}
    given = list(weights.values()) if as_list else weights
    penalty, grads = l2_penalty(given, 0.3)
    w_t = tensors(*weights.values())
    penalty_t = l2_penalty_torch(w_t, 0.3)
    penalty_t.backward()
    assert penalty == pytest.approx(penalty_t.item(), rel=1e-14)
    ours = grads if as_list else list(grads.values())
    assert isinstance(grads, list) == as_list
    for g, t in zip(ours, w_t):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-14)


def test_sgd_step_accepts_lists_and_updates_in_place(rng):
    w = [rng.normal(size=(2, 2)), rng.normal(size=3)]
    before = [a.copy() for a in w]
    g = [np.ones((2, 2)), np.ones(3)]
    sgd_step(w, g, lr=0.1, weight_decay=0.5)
    for after, start in zip(w, before):
        np.testing.assert_allclose(after, start - 0.1 * (1 + 0.5 * start), rtol=1e-14)


# --------------------------------------------------------------------------------------
# Monte-Carlo dropout
# --------------------------------------------------------------------------------------

def numpy_dropout_net(rng_weights):
    w1, w2 = rng_weights.normal(size=(5, 16)), rng_weights.normal(size=(16, 3))

    def forward(x, rng):
        h, _ = dropout_forward(np.maximum(x @ w1, 0), 0.5, rng)
        return h @ w2
    return forward


def test_mc_dropout_predict_averages_k_sampled_passes(rng):
    forward, x = numpy_dropout_net(rng), rng.normal(size=(4, 5))
    probabilities = mc_dropout_predict(forward, x, 7, np.random.default_rng(3))
    replay = np.random.default_rng(3)
    expected = np.mean([softmax(forward(x, replay)) for _ in range(7)], axis=0)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-14)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-14)
    single = mc_dropout_predict(forward, x, 1, np.random.default_rng(3))
    assert not np.allclose(single, probabilities)        # one mask is not the average of seven


def dropout_bn_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Dropout(0.4),
                          DropConnectLinear(12, 12, p=0.3), nn.ReLU(), nn.Linear(12, 3)).double()
    model.train()
    model(torch.randn(32, 5, dtype=torch.float64))     # running statistics away from their start
    return model


@pytest.mark.parametrize("start_in_training", [True, False])
def test_mc_dropout_predict_torch_samples_dropout_only_and_restores_modes(start_in_training):
    model, x = dropout_bn_model(), torch.randn(6, 5, dtype=torch.float64)
    model.train(start_in_training)
    modes = [m.training for m in model.modules()]
    running_mean = model[1].running_mean.clone()
    torch.manual_seed(11)
    probabilities = mc_dropout_predict_torch(model, x, 5)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(model[1].running_mean, running_mean)     # batch norm ran in eval mode
    # the same computation by hand: eval everywhere, dropout and DropConnect sampling
    model.eval()
    model[3].train()
    model[4].train()
    torch.manual_seed(11)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(model(x), dim=1) for _ in range(5)]).mean(dim=0)
    torch.testing.assert_close(probabilities, expected, rtol=1e-14, atol=0)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(6, dtype=torch.float64))
    assert not torch.allclose(mc_dropout_predict_torch(model, x, 1), mc_dropout_predict_torch(model, x, 1))


def test_mc_dropout_predict_torch_geometric_mean():
    model, x = dropout_bn_model(), torch.randn(6, 5, dtype=torch.float64)
    torch.manual_seed(3)
    geometric = mc_dropout_predict_torch(model, x, 4, average="geometric")
    model.eval()
    model[3].train()
    model[4].train()
    torch.manual_seed(3)
    with torch.no_grad():
        log_probabilities = torch.stack([torch.log_softmax(model(x), dim=1) for _ in range(4)])
    # softmax of the mean log-probability: the product of the probabilities, renormalized
    expected = log_probabilities.mean(dim=0).exp()
    torch.testing.assert_close(geometric, expected / expected.sum(dim=1, keepdim=True), rtol=1e-12, atol=0)
    # with a single pass both averages are that pass's probabilities
    torch.manual_seed(5)
    one_geometric = mc_dropout_predict_torch(model, x, 1, average="geometric")
    torch.manual_seed(5)
    torch.testing.assert_close(one_geometric, mc_dropout_predict_torch(model, x, 1), rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------------------
# DropConnect
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 1, 1), (4, 3, 5), (7, 6, 2), (3, 8, 8)])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropconnect_matches_autograd_and_numeric_with_a_fixed_mask(rng, shape, p):
    n, d, m = shape
    x, w, b, dout = rng.normal(size=(n, d)), rng.normal(size=(d, m)), rng.normal(size=m), rng.normal(size=(n, m))
    mask = (rng.random((d, m)) >= p).astype(float)
    out, cache = dropconnect_forward(x, w, b, p, mask=mask)
    dx, dw, db = dropconnect_backward(dout, cache)
    x_t, w_t, b_t = tensors(x, w, b)
    out_t = x_t @ (w_t * torch.tensor(mask) / (1 - p)) + b_t
    out_t.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-13, atol=1e-13)
    for ours, theirs in [(dx, x_t), (dw, w_t), (db, b_t)]:
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-13, atol=1e-13)
    results = check_layer_gradients(lambda x, w, b: dropconnect_forward(x, w, b, p, mask=mask)[0],
                                    {"x": x, "w": w, "b": b}, {"x": dx, "w": dw, "b": db}, dout)
    assert all(r.passed(1e-8) for r in results.values()), results
    assert np.all(dw[mask == 0] == 0)                   # a dropped weight gets no gradient


@pytest.mark.parametrize("p", [0.25, 0.6])
def test_dropconnect_expectation_over_all_masks_is_the_test_output(rng, p):
    x, w, b = rng.normal(size=(3, 2)), rng.normal(size=(2, 2)), rng.normal(size=2)
    expected = sum((1 - p) ** kept * p ** (w.size - kept) * dropconnect_forward(x, w, b, p, mask=mask)[0]
                   for mask, kept in all_masks(w.shape))
    np.testing.assert_allclose(expected, dropconnect_forward(x, w, b, p, train=False)[0], rtol=1e-13, atol=1e-14)


def test_dropconnect_draws_keep_weights_with_probability_one_minus_p(rng):
    x, w, b = np.eye(40), np.ones((40, 50)), np.zeros(50)
    out, _ = dropconnect_forward(x, w, b, 0.3, rng)     # x = I: out is the used weights themselves
    kept = out > 0
    assert set(np.unique(out)) == {0.0, 1 / 0.7}
    assert abs(kept.mean() - 0.7) < 4 * math.sqrt(0.7 * 0.3 / kept.size)


@pytest.mark.parametrize("p", [0.0, 0.4])
def test_dropconnect_linear_matches_the_numpy_reference(rng, p):
    layer = DropConnectLinear(6, 4, p=p).double()
    x, dout = rng.normal(size=(5, 6)), rng.normal(size=(5, 4))
    mask = (rng.random((4, 6)) >= p).astype(float)            # torch's layout (out, in)
    x_t = torch.tensor(x, requires_grad=True)
    out_t = layer(x_t, mask=torch.tensor(mask))
    out_t.backward(torch.tensor(dout))
    w, b = layer.weight.detach().numpy().T, layer.bias.detach().numpy()
    out, cache = dropconnect_forward(x, w, b, p, mask=mask.T)
    dx, dw, db = dropconnect_backward(dout, cache)
    np.testing.assert_allclose(out_t.detach().numpy(), out, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(x_t.grad.numpy(), dx, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(layer.weight.grad.numpy().T, dw, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(layer.bias.grad.numpy(), db, rtol=1e-13, atol=1e-13)
    layer.eval()
    np.testing.assert_allclose(layer(torch.tensor(x)).detach().numpy(),
                               dropconnect_forward(x, w, b, p, train=False)[0], rtol=1e-13, atol=1e-13)


def test_dropconnect_linear_draws_fresh_masks_in_training():
    torch.manual_seed(0)
    layer = DropConnectLinear(30, 30, p=0.5).double()
    x = torch.eye(30, dtype=torch.float64)
    first, second = layer(x), layer(x)
    assert not torch.equal(first, second)
    used = first - layer.bias                               # x = I: the used weights, transposed
    kept = used != 0
    torch.testing.assert_close(used[kept], (layer.weight.T * 2)[kept])
    assert abs(kept.double().mean().item() - 0.5) < 4 * math.sqrt(0.25 / kept.numel())


# --------------------------------------------------------------------------------------
# Stochastic depth
# --------------------------------------------------------------------------------------

def test_survival_probabilities_decay_linearly_to_p_last():
    p = survival_probabilities(54, 0.5)
    assert p.shape == (54,) and p[-1] == pytest.approx(0.5) and p[0] == pytest.approx(1 - 0.5 / 54)
    np.testing.assert_allclose(np.diff(p), -0.5 / 54, rtol=1e-12)
    np.testing.assert_array_equal(survival_probabilities(5, 1.0), np.ones(5))


@pytest.mark.parametrize("num_blocks,p_last", [(1, 0.5), (3, 0.2), (54, 0.5), (110, 0.5), (18, 0.8)])
def test_expected_depth_closed_forms(num_blocks, p_last):
    exact = expected_depth(survival_probabilities(num_blocks, p_last))
    assert exact == pytest.approx(expected_depth_linear(num_blocks, p_last), rel=1e-13)
    assert exact == pytest.approx(num_blocks - (1 - p_last) * (num_blocks + 1) / 2, rel=1e-13)
    large_l = num_blocks * (1 + p_last) / 2        # the approximation: too large by (1 − p_L)/2
    assert large_l - exact == pytest.approx((1 - p_last) / 2, abs=1e-12)
    if p_last == 0.5:
        assert exact == pytest.approx((3 * num_blocks - 1) / 4, rel=1e-13)   # Huang et al.: 40.25 of 54


def test_expected_depth_matches_sampled_block_counts(rng):
    p = survival_probabilities(20, 0.5)
    counts = (rng.random((4000, 20)) < p).sum(axis=1)
    spread = math.sqrt((p * (1 - p)).sum() / len(counts))
    assert abs(counts.mean() - expected_depth(p)) < 4 * spread


def block_params(rng, d, h):
    return {"W1": rng.normal(size=(d, h)), "b1": rng.normal(size=h), "W2": rng.normal(size=(h, d)),
            "b2": rng.normal(size=d)}


def torch_block(params, x_t, scale):
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    out = x_t + scale * (torch.relu(x_t @ t["W1"] + t["b1"]) @ t["W2"] + t["b2"])
    return out, t


@pytest.mark.parametrize("shape", [(1, 2, 3), (5, 4, 6), (8, 3, 2)])
@pytest.mark.parametrize("mode", ["original", "inverted"])
@pytest.mark.parametrize("survive,train", [(True, True), (False, True), (None, False)])
def test_residual_block_matches_autograd_and_numeric(rng, shape, mode, survive, train):
    n, d, h = shape
    params, x, dout = block_params(rng, d, h), rng.normal(size=(n, d)), rng.normal(size=(n, d))
    survival_p = 0.7
    out, cache = residual_block_forward(x, params, survive, survival_p, train=train, mode=mode)
    dx, grads = residual_block_backward(dout, cache)
    scale = {("original", True): 1.0, ("inverted", True): 1 / survival_p,
             ("original", False): survival_p, ("inverted", False): 1.0}[mode, train] * (survive is not False)
    x_t = torch.tensor(x, requires_grad=True)
    out_t, p_t = torch_block(params, x_t, scale)
    out_t.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-13, atol=1e-13)
    for k in params:
        np.testing.assert_allclose(grads[k], p_t[k].grad.numpy(), rtol=1e-13, atol=1e-13)
    results = check_layer_gradients(
        lambda x, W1, b1, W2, b2: residual_block_forward(x, {"W1": W1, "b1": b1, "W2": W2, "b2": b2}, survive,
                                                         survival_p, train=train, mode=mode)[0],
        {"x": x, **params}, {"x": dx, **grads}, dout)
    assert all(r.passed(1e-7) for r in results.values()), results


@pytest.mark.parametrize("mode", ["original", "inverted"])
def test_residual_block_expectation_over_survival_is_the_test_output(rng, mode):
    params, x, p = block_params(rng, 3, 4), rng.normal(size=(5, 3)), 0.35
    expected = (p * residual_block_forward(x, params, True, p, mode=mode)[0]
                + (1 - p) * residual_block_forward(x, params, False, p, mode=mode)[0])
    np.testing.assert_allclose(expected, residual_block_forward(x, params, None, p, train=False, mode=mode)[0],
                               rtol=1e-13, atol=1e-13)


def test_residual_block_draws_survival_with_probability_p(rng):
    params, x = block_params(rng, 2, 2), rng.normal(size=(1, 2))
    survived = [residual_block_forward(x, params, None, 0.3, rng=rng)[1]["branch"] is not None for _ in range(2000)]
    assert abs(np.mean(survived) - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 2000)


def module_from_params(params):
    branch = nn.Sequential(nn.Linear(*params["W1"].shape), nn.ReLU(), nn.Linear(*params["W2"].shape)).double()
    with torch.no_grad():
        for layer, (w, b) in zip((branch[0], branch[2]), (("W1", "b1"), ("W2", "b2"))):
            layer.weight.copy_(torch.tensor(params[w].T))
            layer.bias.copy_(torch.tensor(params[b]))
    return branch


@pytest.mark.parametrize("mode", ["original", "inverted"])
def test_stochastic_depth_block_matches_the_numpy_reference(rng, mode):
    params, x = block_params(rng, 4, 6), rng.normal(size=(3, 4))
    block = StochasticDepthBlock(module_from_params(params), 0.6, mode=mode)
    for survive in (True, False):
        ours = block(torch.tensor(x), survive=survive).detach().numpy()
        np.testing.assert_allclose(ours, residual_block_forward(x, params, survive, 0.6, mode=mode)[0],
                                   rtol=1e-13, atol=1e-13)
        assert block.last_survival == float(survive)
    block.eval()
    np.testing.assert_allclose(block(torch.tensor(x)).detach().numpy(),
                               residual_block_forward(x, params, None, 0.6, train=False, mode=mode)[0],
                               rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("per_example,torchvision_mode", [(False, "batch"), (True, "row")])
def test_inverted_stochastic_depth_block_equals_torchvision_given_the_same_draws(per_example, torchvision_mode):
    torch.manual_seed(0)
    branch = nn.Sequential(nn.Linear(5, 5), nn.Tanh()).double()
    block = StochasticDepthBlock(branch, 0.7, mode="inverted", per_example=per_example)
    x = torch.randn(16, 5, dtype=torch.float64)
    outputs = set()
    for seed in range(12):
        torch.manual_seed(seed)
        ours = block(x)
        torch.manual_seed(seed)
        theirs = x + stochastic_depth(branch(x), 1 - 0.7, torchvision_mode, training=True)
        torch.testing.assert_close(ours, theirs, rtol=1e-14, atol=1e-14)
        outputs.add(round(block.last_survival, 6))
    assert len(outputs) > 1                          # the draws did vary


def test_stochastic_depth_block_skips_a_dropped_branch():
    calls = []
    branch = nn.Linear(3, 3)
    branch.register_forward_hook(lambda *args: calls.append(1))
    block = StochasticDepthBlock(branch, 0.5)
    x = torch.randn(4, 3)
    assert torch.equal(block(x, survive=False), x) and not calls
    block(x, survive=True)
    assert len(calls) == 1


def test_stochastic_depth_mlp_runs_the_expected_number_of_blocks_on_average():
    torch.manual_seed(0)
    model = StochasticDepthMLP(6, 8, num_blocks=10, num_classes=3, p_last=0.5)
    x = torch.randn(4, 6)
    counts = []
    with torch.no_grad():
        for _ in range(400):
            model(x)
            counts.append(model.blocks_run())
    p = survival_probabilities(10, 0.5)
    np.testing.assert_allclose([b.survival_p for b in model.blocks], p)
    assert abs(np.mean(counts) - expected_depth(p)) < 4 * math.sqrt((p * (1 - p)).sum() / len(counts))
    model.eval()
    assert torch.equal(model(x), model(x)) and model.blocks_run() is None


# --------------------------------------------------------------------------------------
# Fractional max pooling
# --------------------------------------------------------------------------------------

def test_pooling_intervals_by_hand():
    # α' = (10 − 2)/(6 − 1) = 1.6, u = 0.3: ⌊(i + 0.3)·1.6⌋ − ⌊0.48⌋ = ⌊0.48, 2.08, 3.68, 5.28, 6.88⌋,
    # then 10 − 2 = 8 for the last region
    np.testing.assert_array_equal(pooling_intervals(10, 6, 2, 0.3), [0, 2, 3, 5, 6, 8])
    np.testing.assert_array_equal(pooling_intervals(5, 1, 2, 0.7), [3])


@pytest.mark.parametrize("input_size,output_size", [(32, 22), (22, 15), (25, 17), (9, 5), (100, 51)])
def test_pooling_intervals_step_by_one_or_two_and_end_at_the_edge(rng, input_size, output_size):
    for sample in rng.random(20):
        starts = pooling_intervals(input_size, output_size, 2, sample)
        assert starts[0] == 0 and starts[-1] == input_size - 2
        assert set(np.diff(starts)) <= {1, 2}


# (input shape, kernel_size, output size or None, output ratio or None); ratios as pairs, because
# torch 2.14's fractional_max_pool2d takes len() of output_ratio and fails on a single number
FMP_CASES = [
    ((1, 1, 5, 5), 2, (3, 3), None), ((2, 3, 9, 7), 2, (5, 4), None), ((2, 2, 11, 13), (3, 2), (7, 9), None),
    ((1, 4, 32, 32), 2, None, (1 / math.sqrt(2),) * 2), ((3, 2, 22, 15), 3, None, (0.7, 0.6)),
    ((2, 1, 16, 16), 2, 15, None), ((1, 2, 8, 6), (2, 3), (1, 1), None), ((2, 2, 10, 10), 1, (6, 7), None),
]


@pytest.mark.parametrize("shape,kernel,output_size,output_ratio", FMP_CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fractional_max_pool2d_equals_torch_value_for_value(rng, shape, kernel, output_size, output_ratio, dtype):
    x = rng.normal(size=shape).astype(dtype)
    samples = rng.random((shape[0], shape[1], 2)).astype(dtype)
    out, cache = fractional_max_pool2d(x, kernel, output_size=output_size, output_ratio=output_ratio, samples=samples)
    out_t, indices_t = F.fractional_max_pool2d(torch.tensor(x), kernel, output_size=output_size,
                                               output_ratio=output_ratio, return_indices=True,
                                               _random_samples=torch.tensor(samples))
    np.testing.assert_array_equal(out, out_t.numpy())
    np.testing.assert_array_equal(cache["indices"], indices_t.numpy())


def test_fractional_max_pool2d_sample_0_places_columns_and_sample_1_rows(rng):
    x = rng.normal(size=(1, 1, 12, 12))
    samples = np.array([[[0.05, 0.95]]])
    _, cache = fractional_max_pool2d(x, 2, output_size=(7, 7), samples=samples)
    rows, cols = np.divmod(cache["indices"][0, 0], 12)
    region_rows = pooling_intervals(12, 7, 2, 0.95)[:, None] + np.array([0, 1])
    region_cols = pooling_intervals(12, 7, 2, 0.05)[:, None] + np.array([0, 1])
    assert not np.array_equal(region_rows, region_cols)
    assert all(rows[i, j] in region_rows[i] and cols[i, j] in region_cols[j] for i in range(7) for j in range(7))
    _, swapped = fractional_max_pool2d(x, 2, output_size=(7, 7), samples=samples[..., ::-1].copy())
    assert not np.array_equal(swapped["indices"], cache["indices"])


@pytest.mark.parametrize("shape,kernel,output_size,output_ratio", FMP_CASES)
def test_fractional_max_pool2d_backward_matches_autograd(rng, shape, kernel, output_size, output_ratio):
    x = rng.normal(size=shape)
    samples = rng.random((shape[0], shape[1], 2))
    out, cache = fractional_max_pool2d(x, kernel, output_size=output_size, output_ratio=output_ratio, samples=samples)
    dout = rng.normal(size=out.shape)
    x_t = torch.tensor(x, requires_grad=True)
    F.fractional_max_pool2d(x_t, kernel, output_size=output_size, output_ratio=output_ratio,
                            _random_samples=torch.tensor(samples)).backward(torch.tensor(dout))
    np.testing.assert_allclose(fractional_max_pool2d_backward(dout, cache), x_t.grad.numpy(), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("shape,kernel,output_size", [((1, 1, 5, 5), 2, (3, 3)), ((2, 3, 9, 7), 2, (5, 4)),
                                                      ((2, 2, 11, 13), (3, 2), (7, 9)), ((1, 2, 10, 10), 3, 7)])
def test_fractional_max_pool2d_backward_passes_the_numeric_check(rng, shape, kernel, output_size):
    x, samples = rng.normal(size=shape), rng.random((shape[0], shape[1], 2))
    out, cache = fractional_max_pool2d(x, kernel, output_size=output_size, samples=samples)
    dout = rng.normal(size=out.shape)
    result = check_layer_gradients(lambda x: fractional_max_pool2d(x, kernel, output_size=output_size,
                                                                   samples=samples)[0],
                                   {"x": x}, {"x": fractional_max_pool2d_backward(dout, cache)}, dout)["x"]
    assert result.passed(1e-8), result


def test_overlapping_regions_add_their_gradients():
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0                                   # the maximum of every region that contains it
    out, cache = fractional_max_pool2d(x, 3, output_size=(3, 3), samples=np.full((1, 1, 2), 0.5))
    dx = fractional_max_pool2d_backward(np.ones_like(out), cache)
    assert dx[0, 0, 2, 2] == (cache["indices"] == 12).sum() == 9


def test_alpha_root_two_output_sizes_match_torch_output_ratio(rng):
    alpha = math.sqrt(2)
    sizes = [32]
    for _ in range(4):
        sizes.append(fractional_output_size(sizes[-1], alpha))
    assert sizes == [32, 22, 15, 10, 7]
    x = rng.normal(size=(1, 1, 32, 32))
    out, _ = fractional_max_pool2d(x, 2, alpha=alpha, rng=rng)
    out_t = F.fractional_max_pool2d(torch.tensor(x), 2, output_ratio=(1 / alpha, 1 / alpha))
    assert out.shape == tuple(out_t.shape) == (1, 1, 22, 22)


# --------------------------------------------------------------------------------------
# Bad inputs: errors that name the argument
# --------------------------------------------------------------------------------------

X, W, B = np.ones((2, 3)), np.ones((3, 4)), np.ones(4)
PARAMS = {"W1": np.ones((3, 2)), "b1": np.ones(2), "W2": np.ones((2, 3)), "b2": np.ones(3)}
IMAGE = np.ones((1, 1, 8, 8))


@pytest.mark.parametrize("call,error,match", [
    (lambda: l2_penalty([np.ones(2)], -0.1), ValueError, r"lam: expected a finite number >= 0"),
    (lambda: l2_penalty("W", 0.1), TypeError, r"weights: expected a dict or list"),
    (lambda: l2_penalty([], 0.1), ValueError, r"weights: expected at least one array"),
    (lambda: sgd_step({"W": np.ones(2)}, {"W": np.ones(2)}, 0.1, weight_decay=-1.0), ValueError, r"weight_decay"),
    (lambda: sgd_step({"W": np.ones(2)}, {"W": np.ones(2)}, 0.0), ValueError, r"lr: expected a finite number > 0"),
    (lambda: sgd_step({"W": np.ones(2)}, {"W": np.ones(2)}, 0.1, momentum=1.0), ValueError, r"momentum"),
    (lambda: sgd_step({"W": np.ones(2)}, {"V": np.ones(2)}, 0.1), ValueError, r"grads: expected the keys"),
    (lambda: sgd_step({"W": np.ones(2)}, {"W": np.ones(3)}, 0.1), ValueError, r"grads\['W'\]: expected shape"),
    (lambda: adam_step({"W": np.ones(2)}, {"W": np.ones(2)}, None, 0.1, weight_decay=-0.5), ValueError, r"weight_decay"),
    (lambda: adam_step({"W": np.ones(2)}, {"W": np.ones(2)}, None, 0.1, betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    (lambda: adam_step({"W": np.ones(2)}, {"W": np.ones(2)}, None, 0.1, eps=0), ValueError, r"eps"),
    (lambda: adam_step({"W": np.ones(2)}, {"W": np.ones(2)}, [], 0.1), TypeError, r"state: expected a dict"),
    (lambda: mc_dropout_predict(lambda x, rng: x, X, 0, np.random.default_rng(0)), ValueError, r"k: expected an integer >= 1"),
    (lambda: mc_dropout_predict("net", X, 2, np.random.default_rng(0)), TypeError, r"forward: expected a callable"),
    (lambda: mc_dropout_predict_torch(nn.Linear(3, 2), torch.ones(2, 3), 0), ValueError, r"k: expected an integer >= 1"),
    (lambda: mc_dropout_predict_torch(nn.Linear(3, 2), torch.ones(2, 3), 2, average="mean"), ValueError, r"average: expected one of"),
    (lambda: dropconnect_forward(X, W, B, 1.0, np.random.default_rng(0)), ValueError, r"p: expected a probability in \[0, 1\)"),
    (lambda: dropconnect_forward(X, W, B, -0.1, np.random.default_rng(0)), ValueError, r"p: expected a probability"),
    (lambda: dropconnect_forward(X, W, B, 0.5), TypeError, r"rng: dropout with p > 0"),
    (lambda: dropconnect_forward(X, W, B, 0.5, mask=np.ones((4, 3))), ValueError, r"mask: expected shape \(3, 4\)"),
    (lambda: dropconnect_forward(X, W, B, 0.5, mask=np.full((3, 4), 0.5)), ValueError, r"mask: expected a keep mask of 0"),
    (lambda: dropconnect_forward(X, W, B, 0.5, mask=np.ones((3, 4)), train=False), ValueError, r"mask: test time"),
    (lambda: DropConnectLinear(3, 2, p=1.0), ValueError, r"p: expected a probability in \[0, 1\)"),
    (lambda: DropConnectLinear(3, 2)(torch.ones(1, 3), mask=torch.ones(3, 2)), ValueError, r"mask: expected shape \(2, 3\)"),
    (lambda: DropConnectLinear(3, 2)(torch.ones(1, 3), mask=torch.full((2, 3), 2.0)), ValueError, r"mask: expected a keep mask"),
    (lambda: survival_probabilities(10, 0.0), ValueError, r"p_last: expected a survival probability in \(0, 1\]"),
    (lambda: survival_probabilities(10, 1.5), ValueError, r"p_last: expected a probability in \[0, 1\]"),
    (lambda: survival_probabilities(0, 0.5), ValueError, r"num_blocks: expected an integer >= 1"),
    (lambda: expected_depth([1.0, 0.0]), ValueError, r"probabilities\[1\]: expected a survival probability"),
    (lambda: expected_depth([1.0, 1.2]), ValueError, r"probabilities\[1\]: expected a probability"),
    (lambda: residual_block_forward(X[:, :3], PARAMS, True, 0.0), ValueError, r"survival_p: expected a survival probability"),
    (lambda: residual_block_forward(X, PARAMS, True, 1.1), ValueError, r"survival_p: expected a probability"),
    (lambda: residual_block_forward(X, PARAMS, True, 0.5, mode="row"), ValueError, r"mode: expected one of"),
    (lambda: residual_block_forward(X, PARAMS, None, 0.5), TypeError, r"rng: a training pass with survive=None"),
    (lambda: residual_block_forward(X, PARAMS, True, 0.5, train=False), ValueError, r"survive: test time"),
    (lambda: residual_block_forward(X, PARAMS, 1, 0.5), TypeError, r"survive: expected True, False or None"),
    (lambda: residual_block_forward(X, {"W1": np.ones((3, 2))}, True, 0.5), ValueError, r"params: expected keys W1, b1, W2, b2"),
    (lambda: residual_block_forward(X, {**PARAMS, "W2": np.ones((2, 4)), "b2": np.ones(4)}, True, 0.5), ValueError, r"params\['W2'\]: the branch must return"),
    (lambda: StochasticDepthBlock(nn.Linear(2, 2), 0.0), ValueError, r"survival_p: expected a survival probability"),
    (lambda: StochasticDepthBlock(nn.Linear(2, 2), 0.5, mode="batch"), ValueError, r"mode: expected one of"),
    (lambda: StochasticDepthBlock("branch", 0.5), TypeError, r"branch: expected an nn.Module"),
    (lambda: StochasticDepthMLP(4, 8, 3, 2, p_last=0.0), ValueError, r"p_last: expected a survival probability"),
    (lambda: fractional_max_pool2d(IMAGE, 2, alpha=2.0, rng=np.random.default_rng(0)), ValueError, r"alpha: expected a reduction ratio α in \(1, 2\)"),
    (lambda: fractional_max_pool2d(IMAGE, 2, alpha=1.0, rng=np.random.default_rng(0)), ValueError, r"alpha: expected a reduction ratio"),
    (lambda: fractional_max_pool2d(IMAGE, 2, output_ratio=0.4, rng=np.random.default_rng(0)), ValueError, r"output_ratio: expected torch's output/input ratio"),
    (lambda: fractional_max_pool2d(IMAGE, 2, output_size=5, alpha=1.5, rng=np.random.default_rng(0)), ValueError, r"output_size, output_ratio, alpha: give exactly one"),
    (lambda: fractional_max_pool2d(IMAGE, 2, rng=np.random.default_rng(0)), ValueError, r"output_size, output_ratio, alpha: give exactly one"),
    (lambda: fractional_max_pool2d(IMAGE, 2, output_size=8, rng=np.random.default_rng(0)), ValueError, r"output_size: height 8 with kernel 2 does not fit"),
    (lambda: fractional_max_pool2d(IMAGE, 0, output_size=4, rng=np.random.default_rng(0)), ValueError, r"kernel_size: expected an integer >= 1"),
    (lambda: fractional_max_pool2d(IMAGE, 2, output_size=5), TypeError, r"rng: fractional max pooling without samples"),
    (lambda: fractional_max_pool2d(IMAGE, 2, output_size=5, samples=np.full((1, 2, 2), 0.5)), ValueError, r"samples: expected shape \(1, 1, 2\)"),
    (lambda: fractional_max_pool2d(IMAGE, 2, output_size=5, samples=np.full((1, 1, 2), 1.0)), ValueError, r"samples: expected values in \[0, 1\)"),
    (lambda: pooling_intervals(8, 4, 2, -0.1), ValueError, r"sample: expected values in \[0, 1\)"),
    (lambda: fractional_max_pool2d(np.ones((8, 8)), 2, output_size=5), ValueError, r"x: expected 4 dimensions"),
    (lambda: fractional_output_size(32, 2.5), ValueError, r"alpha: expected a reduction ratio"),
    (lambda: pooling_intervals(5, 4, 3, 0.5), ValueError, r"output_size: 4 regions of size 3 do not fit"),
])
def test_bad_input_names_the_problem(call, error, match):
    with pytest.raises(error, match=match):
        call()
