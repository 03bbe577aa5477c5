"""lib.layers against torch autograd and the numeric checker; the model-level checker
(dict parameters, sparse checks, flattening) and its bad inputs."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.gradcheck import (
    check_layer_gradients, check_model_gradients, params_to_vector, reading, vector_to_params,
)
from lib.layers import (
    affine_backward, affine_forward, dropout_backward, dropout_forward, keep_mask_from_draws, mlp_init, mlp_loss,
    relu_backward, relu_forward, sigmoid_backward, sigmoid_forward, softmax, softmax_cross_entropy, tanh_backward,
    tanh_forward,
)


def data(rng, n=6, d=5, classes=4):
    return rng.normal(size=(n, d)), rng.integers(0, classes, size=n)


def test_affine_matches_autograd_and_numeric(rng):
    x, w, b, dout = rng.normal(size=(4, 3)), rng.normal(size=(3, 5)), rng.normal(size=5), rng.normal(size=(4, 5))
    out, cache = affine_forward(x, w, b)
    dx, dw, db = affine_backward(dout, cache)
    results = check_layer_gradients(lambda x, w, b: affine_forward(x, w, b)[0], {"x": x, "w": w, "b": b},
                                    {"x": dx, "w": dw, "b": db}, dout)
    assert all(r.passed(1e-8) for r in results.values())
    x_t, w_t, b_t = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    (x_t @ w_t + b_t).backward(torch.tensor(dout))
    for ours, theirs in [(dx, x_t), (dw, w_t), (db, b_t)]:
        np.testing.assert_allclose(ours, theirs.grad.numpy(), atol=1e-12)


@pytest.mark.parametrize("forward,backward,torch_fn", [(relu_forward, relu_backward, torch.relu),
                                                       (tanh_forward, tanh_backward, torch.tanh),
                                                       (sigmoid_forward, sigmoid_backward, torch.sigmoid)])
def test_activations_match_autograd(rng, forward, backward, torch_fn):
    x, dout = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    out, cache = forward(x)
    x_t = torch.tensor(x, requires_grad=True)
    torch_fn(x_t).backward(torch.tensor(dout))
    np.testing.assert_allclose(backward(dout, cache), x_t.grad.numpy(), atol=1e-12)


def test_softmax_cross_entropy_matches_torch(rng):
    scores, y = rng.normal(size=(7, 5)) * 3, rng.integers(0, 5, size=7)
    loss, dscores = softmax_cross_entropy(scores, y)
    s_t = torch.tensor(scores, requires_grad=True)
    loss_t = F.cross_entropy(s_t, torch.tensor(y))
    loss_t.backward()
    assert loss == pytest.approx(loss_t.item(), abs=1e-12)
    np.testing.assert_allclose(dscores, s_t.grad.numpy(), atol=1e-12)


@pytest.mark.parametrize("nonlinearity", ["relu", "tanh"])
@pytest.mark.parametrize("reg", [0.0, 0.3])
def test_mlp_loss_passes_the_model_check(rng, nonlinearity, reg):
    x, y = data(rng)
    params = mlp_init([5, 7, 6, 4], rng, weight_scale=0.5)
    loss, grads, _ = mlp_loss(params, x, y, reg, nonlinearity)
    results = check_model_gradients(lambda: mlp_loss(params, x, y, reg, nonlinearity)[0], params, grads)
    assert list(grads) == list(params)      # same order, so that flattened θ and dθ line up
    assert all(r.passed(1e-6) for r in results.values()), results


def test_mlp_loss_matches_torch(rng):
    x, y = data(rng)
    params = mlp_init([5, 8, 4], rng, weight_scale=0.5)
    loss, grads, _ = mlp_loss(params, x, y, reg=0.1, nonlinearity="tanh")
    t = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    scores = torch.tanh(torch.tensor(x) @ t["W1"] + t["b1"]) @ t["W2"] + t["b2"]
    loss_t = F.cross_entropy(scores, torch.tensor(y)) + 0.05 * (t["W1"].pow(2).sum() + t["W2"].pow(2).sum())
    loss_t.backward()
    assert loss == pytest.approx(loss_t.item(), abs=1e-12)
    for k in params:
        np.testing.assert_allclose(grads[k], t[k].grad.numpy(), atol=1e-12)


def test_dropout_with_a_fixed_mask_passes_and_a_fresh_mask_fails(rng):
    x, y = data(rng, n=10)
    params = mlp_init([5, 20, 4], rng, weight_scale=0.5)
    _, grads, masks = mlp_loss(params, x, y, dropout_p=0.5, rng=np.random.default_rng(1))
    fixed = check_model_gradients(lambda: mlp_loss(params, x, y, dropout_p=0.5, masks=masks)[0], params, grads)
    fresh_rng = np.random.default_rng(2)
    fresh = check_model_gradients(lambda: mlp_loss(params, x, y, dropout_p=0.5, rng=fresh_rng)[0], params, grads)
    assert all(r.passed(1e-6) for r in fixed.values())
    assert max(r.relative_error for r in fresh.values()) > 0.1


def test_dropout_keeps_the_expected_value(rng):
    out, mask = dropout_forward(np.ones((2000, 50)), 0.3, rng)
    assert abs(out.mean() - 1) < 0.02 and set(np.unique(mask)) == {0.0, 1 / 0.7}


class FixedDraws:
    """Stands in for a np.random.Generator whose next uniform draws are known."""

    def __init__(self, draws):
        self.draws = np.asarray(draws, dtype=float)

    def random(self, shape):
        return self.draws.reshape(shape)


def test_seed_example_draws_compared_with_the_drop_probability():
    draws = np.array([0.3, 0.6, 0.7])
    np.testing.assert_array_equal(keep_mask_from_draws(draws, 0.5), [False, True, True])   # kept where u >= p
    np.testing.assert_array_equal(draws < 1 - 0.5, [True, False, False])   # the keep-probability comparison
    x = np.array([1.0, 2.0, 3.0])
    out, scaled_mask = dropout_forward(x, 0.5, FixedDraws(draws))
    np.testing.assert_array_equal(out, [0.0, 4.0, 6.0])
    np.testing.assert_array_equal(scaled_mask, [0.0, 2.0, 2.0])
    out, scaled_mask = dropout_forward(x, 0.5, FixedDraws(draws), mode="original")
    np.testing.assert_array_equal(out, [0.0, 2.0, 3.0])
    np.testing.assert_array_equal(scaled_mask, [0.0, 1.0, 1.0])


@pytest.mark.parametrize("mode", ["inverted", "original"])
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9])
def test_dropout_expectation_over_all_masks_is_the_test_output(rng, mode, p):
    x = rng.normal(size=(2, 2))
    expected = 0.0
    for bits in itertools.product((0.0, 1.0), repeat=x.size):
        mask = np.array(bits).reshape(x.shape)
        kept = int(mask.sum())
        expected = expected + (1 - p) ** kept * p ** (x.size - kept) * dropout_forward(x, p, mask=mask, mode=mode)[0]
    test_out, _ = dropout_forward(x, p, mode=mode, train=False)
    np.testing.assert_allclose(expected, test_out, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(test_out, x if mode == "inverted" else (1 - p) * x, rtol=1e-15)


@pytest.mark.parametrize("shape", [(1,), (4, 3), (2, 3, 5), (6, 2, 2, 3)])
@pytest.mark.parametrize("mode", ["inverted", "original"])
@pytest.mark.parametrize("train", [True, False])
def test_dropout_matches_autograd_and_numeric_with_a_fixed_mask(rng, shape, mode, train):
    p = 0.3
    x, dout = rng.normal(size=shape), rng.normal(size=shape)
    mask = (rng.random(shape) >= p).astype(float) if train else None
    out, cache = dropout_forward(x, p, mask=mask, mode=mode, train=train)
    dx = dropout_backward(dout, cache)
    factor = {("inverted", True): 1 / (1 - p), ("original", True): 1.0,
              ("inverted", False): 1.0, ("original", False): 1 - p}[mode, train]
    x_t = torch.tensor(x, requires_grad=True)
    out_t = x_t * (torch.tensor(mask) if train else 1.0) * factor
    out_t.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-14)
    result = check_layer_gradients(lambda x: dropout_forward(x, p, mask=mask, mode=mode, train=train)[0],
                                   {"x": x}, {"x": dx}, dout)["x"]
    assert result.passed(1e-9), result


def test_inverted_dropout_matches_torch_dropout_given_the_same_mask(rng):
    torch.manual_seed(0)
    x = torch.tensor(rng.normal(size=(40, 30)) + 5.0)           # shifted away from 0: kept entries are nonzero
    out_t = F.dropout(x, p=0.4, training=True)
    mask = (out_t != 0).double().numpy()
    out, _ = dropout_forward(x.numpy(), 0.4, mask=mask)
    np.testing.assert_allclose(out, out_t.numpy(), rtol=1e-15)


def test_the_returned_mask_can_be_passed_back(rng):
    x = rng.normal(size=(5, 4))
    for mode in ("inverted", "original"):
        out, scaled_mask = dropout_forward(x, 0.6, np.random.default_rng(3), mode=mode)
        again, same_mask = dropout_forward(x, 0.6, mask=scaled_mask, mode=mode)     # as mlp_loss passes it back
        keep = (scaled_mask != 0).astype(int)
        from_keep, _ = dropout_forward(x, 0.6, mask=keep, mode=mode)
        np.testing.assert_array_equal(again, out)
        np.testing.assert_array_equal(from_keep, out)
        np.testing.assert_array_equal(same_mask, scaled_mask)


def test_dropout_with_p_zero_is_the_identity_and_draws_nothing(rng):
    x = rng.normal(size=(3, 4))
    generator = np.random.default_rng(5)
    state = generator.bit_generator.state
    out, scaled_mask = dropout_forward(x, 0.0, generator)
    np.testing.assert_array_equal(out, x)
    np.testing.assert_array_equal(scaled_mask, np.ones_like(x))
    assert generator.bit_generator.state == state


def test_softmax_rows_are_probabilities(rng):
    scores = rng.normal(size=(4, 6)) * 50                  # large scores: the shift keeps exp finite
    probabilities = softmax(scores)
    np.testing.assert_allclose(probabilities, torch.softmax(torch.tensor(scores), dim=1).numpy(), rtol=1e-12)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-14)


def test_sparse_check_reports_entries_by_their_own_index(rng):
    params = {"W": rng.normal(size=(30, 40))}
    grads = {"W": 2 * params["W"]}
    grads["W"][7, 9] += 1.0  # one wrong entry
    loss = lambda: float((params["W"] ** 2).sum())
    full = check_model_gradients(loss, params, grads)
    assert full["W"].worst[0][0] == (7, 9)
    every_entry = check_model_gradients(loss, params, grads, num_checks=1200, rng=np.random.default_rng(0))
    assert every_entry["W"].worst[0][0] == (7, 9)          # a "sparse" check of all entries finds it too
    sparse = check_model_gradients(loss, params, grads, num_checks=50, rng=np.random.default_rng(0))
    assert len(sparse["W"].worst) == 3 and all(0 <= i < 30 and 0 <= j < 40 for (i, j), *_ in sparse["W"].worst)


def test_flatten_and_unflatten_round_trip(rng):
    params = {"W1": rng.normal(size=(3, 4)), "b1": rng.normal(size=4), "W2": rng.normal(size=(4, 2))}
    theta, layout = params_to_vector(params)
    assert theta.shape == (24,)
    back = vector_to_params(theta, layout)
    assert list(back) == list(params) and all(np.array_equal(back[k], params[k]) for k in params)


def test_reading_thresholds():
    assert [reading(v) for v in (1e-9, 1e-6, 1e-4, 1e-2)] == ["fine", "look closer", "suspicious", "a bug"]


@pytest.mark.parametrize("call,error,match", [
    (lambda: check_model_gradients(lambda: 1.0, {"W": np.ones(2)}, {"V": np.ones(2)}), ValueError, r"grads: expected the keys"),
    (lambda: check_model_gradients(lambda: 1.0, {"W": np.ones(2)}, {"W": np.ones(3)}), ValueError, r"grads\['W'\]: expected shape \(2,\)"),
    (lambda: check_model_gradients(lambda: 1.0, {"W": np.ones(2, dtype=int)}, {"W": np.ones(2)}), TypeError, r"params\['W'\]: expected a floating-point"),
    (lambda: check_model_gradients(lambda: np.ones(2), {"W": np.ones(2)}, {"W": np.ones(2)}), ValueError, r"f: expected a scalar loss"),
    (lambda: check_model_gradients(lambda: 1.0, {"W": np.ones(2)}, {"W": np.ones(2)}, eps=0), ValueError, r"eps: expected a finite number > 0"),
    (lambda: check_model_gradients(lambda: 1.0, {"W": np.ones(2)}, {"W": np.ones(2)}, num_checks=0), ValueError, r"num_checks"),
    (lambda: params_to_vector({}), TypeError, r"params: expected a non-empty dict"),
    (lambda: vector_to_params(np.ones(3), [("W", (2, 2))]), ValueError, r"theta: expected a vector of 4 entries"),
    (lambda: affine_forward(np.ones((2, 3)), np.ones((4, 5)), np.ones(5)), ValueError, r"x, w, b: shapes"),
    (lambda: softmax_cross_entropy(np.ones((2, 3)), np.array([0, 3])), ValueError, r"y: expected 2 integer labels in \[0, 3\)"),
    (lambda: softmax_cross_entropy(np.ones((2, 3)), np.array([0.0, 1.0])), ValueError, r"y: expected 2 integer labels"),
    (lambda: dropout_forward(np.ones(3), 1.0, np.random.default_rng(0)), ValueError, r"p: expected a probability in \[0, 1\)"),
    (lambda: dropout_forward(np.ones(3), 0.5), TypeError, r"rng: dropout with p > 0"),
    (lambda: dropout_forward(np.ones(3), 0.5, mask=np.ones(2)), ValueError, r"mask: expected shape \(3,\)"),
    (lambda: dropout_forward(np.ones(3), 0.5, mask=np.array([0.0, 0.5, 1.0])), ValueError, r"mask: expected a keep mask of 0"),
    (lambda: dropout_forward(np.ones(3), 0.5, mask=np.array([0.0, 2.0, 1.0])), ValueError, r"mask: expected a keep mask of 0"),
    (lambda: dropout_forward(np.ones(3), 0.5, mask=np.ones(3), train=False), ValueError, r"mask: test time"),
    (lambda: dropout_forward(np.ones(3), 0.5, np.random.default_rng(0), mode="gaussian"), ValueError, r"mode: expected one of 'inverted', 'original'"),
    (lambda: dropout_forward(np.ones(3), -0.1, np.random.default_rng(0)), ValueError, r"p: expected a probability in \[0, 1\)"),
    (lambda: dropout_forward([1.0, 2.0], 0.5, np.random.default_rng(0)), TypeError, r"x: expected a NumPy array"),
    (lambda: keep_mask_from_draws(np.array([0.3]), 1.0), ValueError, r"p: expected a probability in \[0, 1\)"),
    (lambda: softmax(np.ones(3)), ValueError, r"scores: expected 2 dimensions"),
    (lambda: mlp_init([5], np.random.default_rng(0)), ValueError, r"sizes: expected at least"),
    (lambda: mlp_loss({"W1": np.ones((2, 2))}, np.ones((1, 2)), np.array([0])), ValueError, r"params: expected keys W1, b1"),
    (lambda: mlp_loss(mlp_init([2, 2], np.random.default_rng(0)), np.ones((1, 2)), np.array([0]), nonlinearity="gelu"), ValueError, r"nonlinearity"),
    (lambda: mlp_loss(mlp_init([2, 2], np.random.default_rng(0)), np.ones((1, 2)), np.array([0]), reg=-1.0), ValueError, r"reg: expected a finite number >= 0"),
])
def test_bad_input_names_the_problem(call, error, match):
    with pytest.raises(error, match=match):
        call()
