"""The NumPy reference of the architectures chapter: convolution (stride, padding, groups) against
torch.nn.functional.conv2d and its autograd in float64, against the numeric gradient checker; the
residual block against a torch autograd twin and the checker; the zero branch; bad inputs."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.architectures import (
    conv2d_backward, conv2d_forward, conv_output_size, residual_block_backward, residual_block_forward,
    residual_block_params,
)
from lib.gradcheck import check_layer_gradients, check_model_gradients

# (N, C_in, C_out, H, W, K, groups): batch > 1, rectangular images, groups 1, 2 and C (depthwise)
CONV_SHAPES = [
    (2, 3, 4, 7, 7, 3, 1),
    (3, 4, 6, 6, 9, 3, 2),
    (2, 4, 4, 8, 5, 3, 4),     # depthwise
    (1, 6, 12, 5, 7, 2, 3),
    (2, 2, 2, 4, 4, 1, 1),
    (2, 5, 5, 9, 6, 5, 5),     # depthwise, 5×5
]
STRIDES_PADDINGS = list(itertools.product((1, 2, 3), (0, 1, 2)))


def tensors(*arrays):
    return [None if a is None else torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]


def conv_inputs(rng, shape, bias):
    n, c_in, c_out, h, w, k, groups = shape
    x = rng.normal(size=(n, c_in, h, w))
    weight = rng.normal(size=(c_out, c_in // groups, k, k))
    return x, weight, (rng.normal(size=c_out) if bias else None)


@pytest.mark.parametrize("shape", CONV_SHAPES)
@pytest.mark.parametrize("stride,padding", STRIDES_PADDINGS)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_matches_torch_and_its_autograd(rng, shape, stride, padding, bias):
    groups, k = shape[6], shape[5]
    x, w, b = conv_inputs(rng, shape, bias)
    if k > min(x.shape[2:]) + 2 * padding:
        pytest.skip("kernel larger than the padded input")
    out, cache = conv2d_forward(x, w, b, stride=stride, padding=padding, groups=groups)
    dout = rng.normal(size=out.shape)
    dx, dw, db = conv2d_backward(dout, cache)

    xt, wt, bt = tensors(x, w, b)
    out_t = F.conv2d(xt, wt, bt, stride=stride, padding=padding, groups=groups)
    out_t.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, out_t.detach().numpy(), atol=1e-12, err_msg="out")
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-12, err_msg="dx")
    np.testing.assert_allclose(dw, wt.grad.numpy(), atol=1e-12, err_msg="dw")
    if bias:
        np.testing.assert_allclose(db, bt.grad.numpy(), atol=1e-12, err_msg="db")
    else:
        assert db is None


@pytest.mark.parametrize("size,kernel,stride,padding", [(7, 3, 1, 0), (7, 3, 2, 1), (8, 3, 3, 2), (5, 5, 1, 0),
                                                        (224, 7, 2, 3), (4, 1, 2, 0)])
def test_output_size_is_the_lessons_formula_and_torchs(size, kernel, stride, padding):
    expected = (size + 2 * padding - kernel) // stride + 1
    x = torch.zeros(1, 1, size, size)
    assert conv_output_size(size, kernel, stride, padding) == expected
    assert F.conv2d(x, torch.zeros(1, 1, kernel, kernel), stride=stride, padding=padding).shape[-1] == expected


def test_conv2d_is_the_equation_written_as_loops(rng):
    """out[n, o, i, j] = b[o] + Σ_{c in o's group, p, q} w[o, c, p, q] x_pad[n, c, s i + p, s j + q]."""
    x, w, b = conv_inputs(rng, (1, 4, 6, 5, 6, 3, 2), bias=True)
    stride, padding, groups = 2, 1, 2
    out, _ = conv2d_forward(x, w, b, stride, padding, groups)
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    per_group_in, per_group_out = 4 // groups, 6 // groups
    for o, i, j in np.ndindex(out.shape[1:]):
        g = o // per_group_out
        expected = b[o] + sum(w[o, c, p, q] * x_pad[0, g * per_group_in + c, stride * i + p, stride * j + q]
                              for c, p, q in np.ndindex(w.shape[1:]))
        assert out[0, o, i, j] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("stride,padding,groups", [(1, 1, 1), (2, 0, 2), (3, 2, 4), (2, 1, 4)])
def test_conv2d_backward_passes_the_numeric_checker(rng, stride, padding, groups):
    x, w, b = conv_inputs(rng, (2, 4, 4, 5, 6, 3, groups), bias=True)
    out, cache = conv2d_forward(x, w, b, stride, padding, groups)
    dout = rng.normal(size=out.shape)
    dx, dw, db = conv2d_backward(dout, cache)
    results = check_layer_gradients(lambda x, w, b: conv2d_forward(x, w, b, stride, padding, groups)[0],
                                    {"x": x, "w": w, "b": b}, {"x": dx, "w": dw, "b": db}, dout)
    for name, result in results.items():
        assert result.relative_error < 1e-8, result.report()


def test_depthwise_output_channel_sees_only_its_own_input_channel(rng):
    x, w, _ = conv_inputs(rng, (1, 3, 3, 5, 5, 3, 3), bias=False)
    out, _ = conv2d_forward(x, w, padding=1, groups=3)
    x_changed = x.copy()
    x_changed[:, 1] += 1.0                               # only input channel 1 changes
    out_changed, _ = conv2d_forward(x_changed, w, padding=1, groups=3)
    changed = np.abs(out_changed - out).reshape(3, -1).max(axis=1) > 0
    assert changed.tolist() == [False, True, False]


def test_conv2d_keeps_float32(rng):
    x, w, b = (a.astype(np.float32) for a in conv_inputs(rng, (1, 2, 2, 4, 4, 3, 1), bias=True))
    out, cache = conv2d_forward(x, w, b, padding=1)
    dx, dw, db = conv2d_backward(np.ones_like(out), cache)
    assert out.dtype == dx.dtype == dw.dtype == np.float32


# --------------------------------------------------------------------------------------
# The residual block
# --------------------------------------------------------------------------------------

def torch_residual_block(x, params):
    """The autograd twin: relu(conv2(relu(conv1(x))) + x), 3×3, padding 1."""
    h = F.relu(F.conv2d(x, params["w1"], params["b1"], padding=1))
    return F.relu(F.conv2d(h, params["w2"], params["b2"], padding=1) + x)


def block_inputs(rng, shape=(2, 3, 5, 6)):
    params = residual_block_params(shape[1], rng)
    params["b1"], params["b2"] = rng.normal(scale=0.1, size=(2, shape[1]))   # nonzero biases are tested too
    return rng.normal(size=shape), params


@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 1, 4, 4), (3, 4, 3, 7)])
def test_residual_block_matches_a_torch_autograd_twin(rng, shape):
    x, params = block_inputs(rng, shape)
    out, cache = residual_block_forward(x, params)
    dout = rng.normal(size=out.shape)
    dx, grads = residual_block_backward(dout, cache)

    xt = torch.tensor(x, requires_grad=True)
    params_t = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
    out_t = torch_residual_block(xt, params_t)
    out_t.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, out_t.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-12)
    for name in params:
        np.testing.assert_allclose(grads[name], params_t[name].grad.numpy(), atol=1e-12, err_msg=name)


def test_residual_block_passes_the_numeric_checker(rng):
    x, params = block_inputs(rng, (2, 2, 4, 5))
    out, cache = residual_block_forward(x, params)
    dout = rng.normal(size=out.shape)
    dx, grads = residual_block_backward(dout, cache)
    loss = lambda: float(np.sum(residual_block_forward(x, params)[0] * dout))
    results = check_model_gradients(loss, {"x": x, **params}, {"x": dx, **grads})
    for name, result in results.items():
        assert result.relative_error < 1e-7, result.report()


def test_zero_branch_makes_the_block_relu_and_the_identity_for_nonnegative_inputs(rng):
    params = residual_block_params(3, rng, zero_branch=True)
    x = rng.normal(size=(2, 3, 5, 5))
    out, cache = residual_block_forward(x, params)
    np.testing.assert_array_equal(out, np.maximum(x, 0.0))             # relu(x): the final ReLU stays
    x_nonnegative = np.abs(x)
    np.testing.assert_array_equal(residual_block_forward(x_nonnegative, params)[0], x_nonnegative)
    dout = rng.normal(size=x.shape)
    dx, _ = residual_block_backward(dout, cache)
    np.testing.assert_array_equal(dx, dout * (x > 0))                  # the gradient reaches x through "+ x" alone


def test_shortcut_carries_the_gradient_when_the_branch_carries_none(rng):
    """Tiny branch weights: dF/dx ≈ 0, yet dL/dx = dL/dH (1 + dF/dx) ≈ dL/dH where the sum is positive."""
    x, params = block_inputs(rng)
    params = {name: value * 1e-6 for name, value in params.items()}
    out, cache = residual_block_forward(x, params)
    dout = rng.normal(size=out.shape)
    dx, grads = residual_block_backward(dout, cache)
    np.testing.assert_allclose(dx, dout * (cache["total"] > 0), atol=1e-4)
    assert np.abs(grads["w1"]).max() < 1e-4                            # while the first layer's weights learn slowly


def test_residual_block_params_are_he_initialized(rng):
    params = residual_block_params(64, rng)
    assert params["w1"].shape == (64, 64, 3, 3) and params["b2"].shape == (64,)
    assert params["w1"].std() == pytest.approx(np.sqrt(2 / (9 * 64)), rel=0.02)
    assert not params["b1"].any()


# --------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------

X = np.zeros((1, 4, 5, 5))
W = np.zeros((6, 4, 3, 3))


@pytest.mark.parametrize("call,error,match", [
    (lambda: conv2d_forward(X, np.zeros((6, 2, 3, 3)), groups=3), ValueError, r"^groups: .*C_in = 4"),
    (lambda: conv2d_forward(X, np.zeros((6, 1, 3, 3)), groups=4), ValueError, r"^groups: .*C_out = 6"),
    (lambda: conv2d_forward(X, np.zeros((6, 4, 3, 3)), groups=2), ValueError, r"^w: expected C_in / groups"),
    (lambda: conv2d_forward(X, np.zeros((6, 4, 7, 3))), ValueError, r"^w: kernel 7×3 is larger than the padded"),
    (lambda: conv2d_forward(X, np.zeros((6, 4, 8, 8)), padding=1), ValueError, r"^w: kernel 8×8 .* 7×7"),
    (lambda: conv2d_forward(X, W, stride=0), ValueError, r"^stride: expected an integer >= 1"),
    (lambda: conv2d_forward(X, W, stride=1.5), TypeError, r"^stride: expected an integer"),
    (lambda: conv2d_forward(X, W, padding=-1), ValueError, r"^padding: expected an integer >= 0"),
    (lambda: conv2d_forward(X, W, groups=0), ValueError, r"^groups: expected an integer >= 1"),
    (lambda: conv2d_forward(X, W, b=np.zeros(4)), ValueError, r"^b: expected shape \(6,\)"),
    (lambda: conv2d_forward(X[0], W), ValueError, r"^x: expected 4 dimensions"),
    (lambda: conv2d_forward(X.astype(int), W), TypeError, r"^x: expected a floating-point array"),
    (lambda: conv2d_forward(X, W[0]), ValueError, r"^w: expected 4 dimensions"),
    (lambda: conv2d_backward(np.zeros((1, 6, 4, 4)), conv2d_forward(X, W)[1]), ValueError,
     r"^dout: expected shape \(1, 6, 3, 3\)"),
    (lambda: conv_output_size(5, 8, padding=1), ValueError, r"^kernel: expected at most .* 7"),
    (lambda: residual_block_forward(X, {"w1": W}), ValueError, r"^params: expected a dict with keys"),
    (lambda: residual_block_forward(X, residual_block_params(3, np.random.default_rng(0))), ValueError,
     r"^params\['w1'\]: expected shape \(4, 4, 3, 3\)"),
    (lambda: residual_block_params(0, np.random.default_rng(0)), ValueError, r"^channels: expected an integer >= 1"),
    (lambda: residual_block_params(2, 0), TypeError, r"^rng: expected a numpy.random.Generator"),
])
def test_bad_inputs_raise_errors_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
