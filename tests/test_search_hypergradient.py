import math

import numpy as np
import pytest
import torch
from torch import nn

from lib.data import Splits, TensorBatches, to_tensors
from lib.device import set_seed
from lib.gradcheck import numeric_gradient, relative_error
from lib.models import mlp
from lib.search import hypergradient, hypergradient_descent, saved_tensor_bytes, unrolled_sgd, unrolled_val_loss

CURVATURE, W0 = 2.0, 1.5        # the quadratic f(w) = h·w²/2, started at w0


@pytest.fixture
def data(rng):
    """A tiny 3-class problem: 60 training and 20 validation examples of 4 features."""
    x = rng.normal(size=(100, 4))
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1).astype(int)
    return Splits(x[:60], y[:60], x[60:80], y[60:80], x[80:], y[80:])


def tiny_model(activation=nn.Tanh) -> nn.Module:
    # tanh, not ReLU: the unrolled loss of a ReLU network is discontinuous in the rate. ReLU's
    # derivative is a step, every update's gradient contains it, so when the rate moves a
    # pre-activation across 0 the gradient, the next weights and the loss jump. Autograd gives the
    # derivative of the piece it is on; a finite difference that straddles a jump measures the jump.
    set_seed(0)
    return mlp([4, 8, 3], activation=activation).double()


def central_difference(val_loss_of_lr, lr: float) -> float:
    return numeric_gradient(lambda rate: val_loss_of_lr(float(rate[0])).item(), np.array([lr]))[0]


def quadratic_val_loss(lr, steps: int) -> torch.Tensor:
    """h·w_T²/2 after `steps` updates of gradient descent on h·w²/2 from w0."""
    w = unrolled_sgd({"w": torch.tensor(W0, dtype=torch.float64)}, lambda p, _: 0.5 * CURVATURE * p["w"] ** 2,
                     range(steps), lr)["w"]
    return 0.5 * CURVATURE * w**2


@pytest.mark.parametrize("lr, steps", [(0.1, 1), (0.2, 5), (0.7, 3), (0.9, 10)])
def test_hypergradient_of_the_quadratic_equals_the_closed_form(lr, steps):
    # w_T = (1 − lr·h)^T w0, so d(h w_T²/2)/dlr = h w_T · dw_T/dlr = −h² T w0² (1 − lr·h)^(2T − 1)
    closed_form = -CURVATURE**2 * steps * W0**2 * (1 - lr * CURVATURE) ** (2 * steps - 1)
    val_loss, d_lr = hypergradient(lambda rate: quadratic_val_loss(rate, steps), lr)
    assert val_loss == pytest.approx(0.5 * CURVATURE * ((1 - lr * CURVATURE) ** steps * W0) ** 2, rel=1e-12)
    assert d_lr == pytest.approx(closed_form, rel=1e-10, abs=1e-14)
    assert d_lr == pytest.approx(central_difference(lambda rate: quadratic_val_loss(rate, steps), lr), rel=1e-6)


def test_unrolled_sgd_matches_torch_sgd(data):
    model, reference = tiny_model(), tiny_model()
    x, y = to_tensors(data.x_train, data.y_train, dtype=torch.float64)
    batches = list(zip(range(5), TensorBatches(x, y, batch_size=16, seed=3)))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.3, weight_decay=0.01)
    for _, (xb, yb) in batches:
        optimizer.zero_grad()
        nn.functional.cross_entropy(reference(xb), yb).backward()
        optimizer.step()

    def batch_loss(params, batch):
        _, (xb, yb) = batch
        return nn.functional.cross_entropy(torch.func.functional_call(model, params, (xb,)), yb)

    trained = unrolled_sgd(dict(model.named_parameters()), batch_loss, batches, lr=0.3, weight_decay=0.01)
    for name, value in reference.named_parameters():
        torch.testing.assert_close(trained[name], value, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lr, steps, batch_size, weight_decay", [
    (0.05, 1, 60, 0.0), (0.3, 4, 16, 0.0), (1.0, 10, 32, 0.0), (0.5, 6, 8, 0.01),
])
def test_hypergradient_equals_a_central_difference(data, lr, steps, batch_size, weight_decay):
    model = tiny_model()

    def val_loss_of_lr(rate):
        return unrolled_val_loss(model, data, rate, steps=steps, batch_size=batch_size, seed=1,
                                 weight_decay=weight_decay)

    _, d_lr = hypergradient(val_loss_of_lr, lr)
    numeric = central_difference(val_loss_of_lr, lr)
    assert relative_error(np.array([d_lr]), np.array([numeric])) < 1e-7


def test_the_weight_decay_gets_its_derivative_too(data):
    model = tiny_model()
    decay = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    (d_decay,) = torch.autograd.grad(unrolled_val_loss(model, data, 0.5, steps=5, batch_size=16, weight_decay=decay),
                                     decay)
    numeric = numeric_gradient(lambda value: unrolled_val_loss(model, data, 0.5, steps=5, batch_size=16,
                                                               weight_decay=float(value[0])).item(), np.array([0.05]))
    assert relative_error(d_decay.numpy().reshape(1), numeric) < 1e-7


def test_unrolled_val_loss_is_a_fixed_function_of_the_rate_and_leaves_the_model_alone(data):
    model = tiny_model()
    before = [value.clone() for value in model.parameters()]
    first = unrolled_val_loss(model, data, 0.4, steps=5, batch_size=16, seed=2)
    assert unrolled_val_loss(model, data, 0.4, steps=5, batch_size=16, seed=2).item() == first.item()
    assert unrolled_val_loss(model, data, 0.4, steps=5, batch_size=16, seed=3).item() != first.item()
    for value, saved in zip(model.parameters(), before):
        torch.testing.assert_close(value, saved, rtol=0, atol=0)


def test_a_relu_network_agrees_with_a_central_difference_of_a_small_step(data):
    # away from the jumps (tiny_model's comment) autograd is exact; this rate and ε straddle none
    model = tiny_model(activation=nn.ReLU)

    def val_loss_of_lr(rate):
        return unrolled_val_loss(model, data, rate, steps=5, batch_size=16)

    _, d_lr = hypergradient(val_loss_of_lr, 0.3)
    assert relative_error(np.array([d_lr]), np.array([central_difference(val_loss_of_lr, 0.3)])) < 1e-6


def test_hypergradient_descent_finds_the_quadratics_best_rate():
    # after one step, h w_1²/2 = h w0² (1 − lr·h)²/2 is smallest, 0, at lr = 1/h
    lrs, val_losses, d_lrs = hypergradient_descent(lambda rate: quadratic_val_loss(rate, 1), lr=0.1,
                                                   hyper_lr=0.2, hyper_steps=15)
    assert lrs.shape == val_losses.shape == d_lrs.shape == (16,)
    assert np.all(np.diff(lrs) > 0)                   # from below, every step raises the rate
    assert lrs[-1] == pytest.approx(1 / CURVATURE, rel=1e-6)
    assert val_losses[-1] < 1e-12 * val_losses[0]


def test_hypergradient_descent_changes_the_rate_by_at_most_max_factor():
    lrs, _, _ = hypergradient_descent(lambda rate: quadratic_val_loss(rate, 3), lr=0.01, hyper_lr=1e6,
                                      hyper_steps=4, max_factor=3.0)
    factors = lrs[1:] / lrs[:-1]
    assert np.all(factors <= 3.0 * (1 + 1e-12)) and np.all(factors >= 1 / 3.0 * (1 - 1e-12))
    assert factors[0] == pytest.approx(3.0)      # the first step, far below the best rate, is clipped


def test_saved_tensor_bytes_counts_what_the_backward_pass_needs():
    x = torch.ones(100, dtype=torch.float64, requires_grad=True)
    y = torch.ones(100, dtype=torch.float64, requires_grad=True)
    product, saved = saved_tensor_bytes(lambda: x * y)       # d(xy)/dx needs y and d(xy)/dy needs x
    assert saved == 2 * 100 * 8
    torch.testing.assert_close(product, x * y)
    assert saved_tensor_bytes(lambda: x + y)[1] == 0          # an addition needs neither


def test_the_memory_of_the_unrolled_graph_grows_with_the_number_of_steps(data):
    model = tiny_model()
    rate = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    saved = [saved_tensor_bytes(lambda: unrolled_val_loss(model, data, rate, steps=steps, batch_size=16))[1]
             for steps in (2, 4, 8)]
    per_step = np.diff(saved) / np.array([2, 4])
    assert per_step[0] > 0 and per_step[1] == pytest.approx(per_step[0], rel=0.05)


@pytest.mark.parametrize("lr, error", [(0.0, ValueError), (-0.1, ValueError), (math.inf, ValueError),
                                       ("0.1", TypeError), (torch.ones(2), ValueError)])
def test_bad_learning_rates(data, lr, error):
    with pytest.raises(error, match="^lr: expected"):
        unrolled_val_loss(tiny_model(), data, lr, steps=2, batch_size=16)


def test_bad_arguments_of_unrolled_val_loss(data):
    model = tiny_model()
    with pytest.raises(ValueError, match="^weight_decay: expected"):
        unrolled_val_loss(model, data, 0.1, steps=2, batch_size=16, weight_decay=-1e-4)
    with pytest.raises(ValueError, match="^steps: expected"):
        unrolled_val_loss(model, data, 0.1, steps=0, batch_size=16)
    with pytest.raises(TypeError, match="^steps: expected"):
        unrolled_val_loss(model, data, 0.1, steps=2.0, batch_size=16)
    with pytest.raises(ValueError, match="^batch_size: expected"):
        unrolled_val_loss(model, data, 0.1, steps=2, batch_size=0)
    with pytest.raises(ValueError, match="^batch_size: expected"):
        unrolled_val_loss(model, data, 0.1, steps=2, batch_size=61)        # more than the 60 examples
    with pytest.raises(ValueError, match="^seed: expected"):
        unrolled_val_loss(model, data, 0.1, steps=2, batch_size=16, seed=-1)
    with pytest.raises(TypeError, match="^model: expected"):
        unrolled_val_loss(lambda x: x, data, 0.1, steps=2, batch_size=16)
    with pytest.raises(ValueError, match="^model: expected a model without buffers"):
        unrolled_val_loss(mlp([4, 8, 3], norm=nn.BatchNorm1d).double(), data, 0.1, steps=2, batch_size=16)
    with pytest.raises(TypeError, match="^data: expected"):
        unrolled_val_loss(model, (data.x_train, data.y_train), 0.1, steps=2, batch_size=16)


def test_bad_arguments_of_unrolled_sgd():
    def loss(params, _):
        return params["w"].sum()

    with pytest.raises(TypeError, match="^params: expected"):
        unrolled_sgd({}, loss, range(2), 0.1)
    with pytest.raises(TypeError, match=r"^params\['w'\]: expected"):
        unrolled_sgd({"w": [1.0]}, loss, range(2), 0.1)
    with pytest.raises(TypeError, match="^batch_loss: expected"):
        unrolled_sgd({"w": torch.ones(2)}, None, range(2), 0.1)
    with pytest.raises(ValueError, match="^lr: expected a 0-d floating-point tensor"):
        unrolled_sgd({"w": torch.ones(2)}, loss, range(2), torch.tensor(1))


def test_bad_arguments_of_hypergradient_and_its_descent():
    with pytest.raises(TypeError, match="^val_loss_of_lr: expected"):
        hypergradient(0.1, 0.1)
    with pytest.raises(ValueError, match="^val_loss_of_lr: expected it to return a 0-d tensor"):
        hypergradient(lambda rate: torch.stack([rate, rate]), 0.1)
    with pytest.raises(ValueError, match="^lr: expected"):
        hypergradient(lambda rate: rate**2, 0.0)
    with pytest.raises(ValueError, match="^hyper_lr: expected"):
        hypergradient_descent(lambda rate: rate**2, 0.1, hyper_lr=0.0, hyper_steps=2)
    with pytest.raises(ValueError, match="^hyper_steps: expected"):
        hypergradient_descent(lambda rate: rate**2, 0.1, hyper_lr=1.0, hyper_steps=0)
    with pytest.raises(ValueError, match="^max_factor: expected"):
        hypergradient_descent(lambda rate: rate**2, 0.1, hyper_lr=1.0, hyper_steps=2, max_factor=1.0)
    with pytest.raises(TypeError, match="^compute: expected"):
        saved_tensor_bytes(None)
