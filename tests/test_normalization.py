"""The normalization module: NumPy reference against torch.nn.functional and autograd (float64),
against the numeric gradient checker, the torch path against the NumPy reference, running
statistics against torch.nn.BatchNorm1d/2d, and bad inputs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.gradcheck import check_layer_gradients
from lib.normalization import (
    BatchNorm, GroupNorm, InstanceNorm, LayerNorm, Standardizer, batchnorm_backward, batchnorm_backward_alt,
    batchnorm_forward, groupnorm_backward, groupnorm_forward, instancenorm_backward, instancenorm_forward,
    layernorm_backward, layernorm_forward, normalization_groups, standardize_backward, standardize_forward,
)

BN_SHAPES = [(2, 1), (5, 3), (16, 7), (64, 32), (3, 4, 6), (2, 3, 4, 5), (8, 2, 1, 3), (1, 4, 3, 3)]
SPATIAL_SHAPES = [(1, 2, 3), (2, 4, 5), (3, 6, 2, 2), (2, 8, 4, 3), (4, 6, 1, 5)]
BACKWARDS = [batchnorm_backward, batchnorm_backward_alt]


def tensors(*arrays):
    return [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays]


def assert_matches_torch(ours, theirs, atol=1e-11):
    """Compare (out, dx, dgamma, dbeta) from NumPy with the torch output and autograd gradients."""
    for name, a, b in zip(("out", "dx", "dgamma", "dbeta"), ours, theirs):
        np.testing.assert_allclose(a, b.detach().numpy(), atol=atol, err_msg=name)


def bn_inputs(rng, shape):
    c = shape[1]
    return rng.normal(1.5, 2.5, size=shape), rng.normal(size=c), rng.normal(size=c), rng.normal(size=shape)


# --------------------------------------------------------------------------------------
# Batch norm against torch
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("backward", BACKWARDS)
def test_batchnorm_train_matches_torch_forward_and_autograd(rng, shape, backward):
    x, gamma, beta, dout = bn_inputs(rng, shape)
    out, cache = batchnorm_forward(x, gamma, beta, {"mode": "train", "eps": 1e-5})
    x_t, gamma_t, beta_t = tensors(x, gamma, beta)
    out_t = F.batch_norm(x_t, None, None, gamma_t, beta_t, training=True, eps=1e-5)
    out_t.backward(torch.tensor(dout))
    assert_matches_torch((out, *backward(dout, cache)), (out_t, x_t.grad, gamma_t.grad, beta_t.grad), atol=1e-11)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5), (2, 3, 4, 4)])
@pytest.mark.parametrize("backward", BACKWARDS)
def test_batchnorm_eval_matches_torch_forward_and_autograd(rng, shape, backward):
    x, gamma, beta, dout = bn_inputs(rng, shape)
    c = shape[1]
    running_mean, running_var = rng.normal(size=c), rng.uniform(0.5, 2.0, size=c)
    bn_param = {"mode": "eval", "running_mean": running_mean.copy(), "running_var": running_var.copy()}
    out, cache = batchnorm_forward(x, gamma, beta, bn_param)
    x_t, gamma_t, beta_t = tensors(x, gamma, beta)
    out_t = F.batch_norm(x_t, torch.tensor(running_mean), torch.tensor(running_var), gamma_t, beta_t, training=False)
    out_t.backward(torch.tensor(dout))
    assert_matches_torch((out, *backward(dout, cache)), (out_t, x_t.grad, gamma_t.grad, beta_t.grad), atol=1e-12)
    np.testing.assert_array_equal(bn_param["running_mean"], running_mean)  # eval mode never updates


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 5), (2, 3, 3, 2)])
@pytest.mark.parametrize("backward", BACKWARDS)
def test_batchnorm_backward_passes_numeric_gradient_check(rng, shape, backward):
    x, gamma, beta, dout = bn_inputs(rng, shape)
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dx, dgamma, dbeta = backward(dout, cache)
    results = check_layer_gradients(
        lambda x, gamma, beta: batchnorm_forward(x, gamma, beta, {"mode": "train"})[0],
        {"x": x, "gamma": gamma, "beta": beta}, {"x": dx, "gamma": dgamma, "beta": dbeta}, dout)
    for name, result in results.items():
        assert result.passed(1e-7), result.report()


def test_staged_and_closed_form_backward_agree(rng):
    x, gamma, beta, dout = bn_inputs(rng, (32, 10))
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})
    for a, b in zip(batchnorm_backward(dout, cache), batchnorm_backward_alt(dout, cache)):
        np.testing.assert_allclose(a, b, atol=1e-13)


def test_batchnorm_input_gradient_sums_to_zero_over_the_batch(rng):
    x, gamma, beta, dout = bn_inputs(rng, (20, 5))
    _, cache = batchnorm_forward(x, gamma, beta, {"mode": "train"})
    dx, _, _ = batchnorm_backward_alt(dout, cache)
    np.testing.assert_allclose(dx.sum(axis=0), 0, atol=1e-12)


@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0])
def test_running_statistics_match_batchnorm1d_over_several_steps(rng, momentum):
    torch_bn = torch.nn.BatchNorm1d(6, momentum=momentum).double()
    bn_param = {"mode": "train", "momentum": momentum}
    gamma, beta = np.ones(6), np.zeros(6)
    for _ in range(7):
        x = rng.normal(3.0, 2.0, size=(10, 6))
        out, _ = batchnorm_forward(x, gamma, beta, bn_param)
        out_t = torch_bn(torch.tensor(x))
        np.testing.assert_allclose(out, out_t.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(bn_param["running_mean"], torch_bn.running_mean.numpy(), atol=1e-12)
    np.testing.assert_allclose(bn_param["running_var"], torch_bn.running_var.numpy(), atol=1e-12)
    x = rng.normal(size=(4, 6))
    eval_out, _ = batchnorm_forward(x, gamma, beta, {**bn_param, "mode": "eval"})
    np.testing.assert_allclose(eval_out, torch_bn.eval()(torch.tensor(x)).detach().numpy(), atol=1e-12)


def test_running_statistics_match_batchnorm2d_over_several_steps(rng):
    torch_bn = torch.nn.BatchNorm2d(3).double()
    bn_param = {"mode": "train"}
    module = BatchNorm(3).double()
    for _ in range(5):
        x = rng.normal(-1.0, 3.0, size=(4, 3, 5, 2))
        batchnorm_forward(x, np.ones(3), np.zeros(3), bn_param)
        torch_bn(torch.tensor(x))
        module(torch.tensor(x))
    for ours in (bn_param["running_mean"], module.running_mean.numpy()):
        np.testing.assert_allclose(ours, torch_bn.running_mean.numpy(), atol=1e-12)
    for ours in (bn_param["running_var"], module.running_var.numpy()):
        np.testing.assert_allclose(ours, torch_bn.running_var.numpy(), atol=1e-12)


def test_running_variance_is_unbiased(rng):
    x = rng.normal(size=(5, 3))
    bn_param = {"mode": "train", "momentum": 1.0}
    batchnorm_forward(x, np.ones(3), np.zeros(3), bn_param)
    np.testing.assert_allclose(bn_param["running_var"], x.var(axis=0, ddof=1))


# --------------------------------------------------------------------------------------
# Layer, instance, group norm against torch
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 5), (4, 1, 7), (2, 3, 4), (2, 3, 4, 5), (1, 6, 2, 2)])
def test_layernorm_matches_torch(rng, shape):
    x, dout = rng.normal(0.5, 2.0, size=shape), rng.normal(size=shape)
    gamma, beta = rng.normal(size=shape[1:]), rng.normal(size=shape[1:])
    out, cache = layernorm_forward(x, gamma, beta)
    x_t, gamma_t, beta_t = tensors(x, gamma, beta)
    out_t = F.layer_norm(x_t, shape[1:], gamma_t, beta_t, eps=1e-5)
    out_t.backward(torch.tensor(dout))
    assert_matches_torch((out, *layernorm_backward(dout, cache)), (out_t, x_t.grad, gamma_t.grad, beta_t.grad))


@pytest.mark.parametrize("shape", SPATIAL_SHAPES)
def test_instancenorm_matches_torch(rng, shape):
    x, dout = rng.normal(0.5, 2.0, size=shape), rng.normal(size=shape)
    gamma, beta = rng.normal(size=shape[1]), rng.normal(size=shape[1])
    out, cache = instancenorm_forward(x, gamma, beta)
    x_t, gamma_t, beta_t = tensors(x, gamma, beta)
    out_t = F.instance_norm(x_t, weight=gamma_t, bias=beta_t, eps=1e-5)
    out_t.backward(torch.tensor(dout))
    assert_matches_torch((out, *instancenorm_backward(dout, cache)), (out_t, x_t.grad, gamma_t.grad, beta_t.grad))


@pytest.mark.parametrize("shape,groups", [((2, 4, 3), 2), ((3, 6, 2, 2), 3), ((2, 8, 4, 3), 4),
                                          ((2, 6, 3, 3), 1), ((2, 6, 3, 3), 6), ((1, 4, 5), 2)])
def test_groupnorm_matches_torch(rng, shape, groups):
    x, dout = rng.normal(0.5, 2.0, size=shape), rng.normal(size=shape)
    gamma, beta = rng.normal(size=shape[1]), rng.normal(size=shape[1])
    out, cache = groupnorm_forward(x, gamma, beta, groups)
    x_t, gamma_t, beta_t = tensors(x, gamma, beta)
    out_t = F.group_norm(x_t, groups, gamma_t, beta_t, eps=1e-5)
    out_t.backward(torch.tensor(dout))
    assert_matches_torch((out, *groupnorm_backward(dout, cache)), (out_t, x_t.grad, gamma_t.grad, beta_t.grad))


@pytest.mark.parametrize("kind", ["layer", "instance", "group"])
def test_per_example_norms_pass_numeric_gradient_check(rng, kind):
    shape = (2, 4, 3, 2)
    x, dout = rng.normal(size=shape), rng.normal(size=shape)
    param_shape = shape[1:] if kind == "layer" else (4,)
    gamma, beta = rng.normal(size=param_shape), rng.normal(size=param_shape)
    forward = {
        "layer": lambda x, gamma, beta: layernorm_forward(x, gamma, beta),
        "instance": lambda x, gamma, beta: instancenorm_forward(x, gamma, beta),
        "group": lambda x, gamma, beta: groupnorm_forward(x, gamma, beta, 2),
    }[kind]
    backward = {"layer": layernorm_backward, "instance": instancenorm_backward, "group": groupnorm_backward}[kind]
    _, cache = forward(x, gamma, beta)
    dx, dgamma, dbeta = backward(dout, cache)
    results = check_layer_gradients(lambda **kw: forward(**kw)[0], {"x": x, "gamma": gamma, "beta": beta},
                                    {"x": dx, "gamma": dgamma, "beta": dbeta}, dout)
    for result in results.values():
        assert result.passed(1e-7), result.report()


def test_standardize_backward_passes_numeric_gradient_check(rng):
    from lib.gradcheck import compare_gradients, numeric_gradient_array
    x, dout = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
    _, cache = standardize_forward(x, (0, 2), 1e-5)
    numeric = numeric_gradient_array(lambda v: standardize_forward(v, (0, 2), 1e-5)[0], x, dout)
    assert compare_gradients(standardize_backward(dout, cache), numeric).passed(1e-7)


# --------------------------------------------------------------------------------------
# The torch path against the NumPy reference
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(8, 5), (4, 3, 6), (2, 3, 4, 5)])
def test_torch_batchnorm_matches_numpy_in_train_and_eval(rng, shape):
    c = shape[1]
    module = BatchNorm(c, momentum=0.2).double()
    with torch.no_grad():
        module.weight.copy_(torch.tensor(rng.normal(size=c)))
        module.bias.copy_(torch.tensor(rng.normal(size=c)))
    gamma, beta = module.weight.detach().numpy().copy(), module.bias.detach().numpy().copy()
    bn_param = {"mode": "train", "momentum": 0.2}
    for _ in range(3):
        x, _, _, dout = bn_inputs(rng, shape)
        out, cache = batchnorm_forward(x, gamma, beta, bn_param)
        x_t = torch.tensor(x, requires_grad=True)
        out_t = module(x_t)
        out_t.backward(torch.tensor(dout))
        dx, _, _ = batchnorm_backward_alt(dout, cache)
        np.testing.assert_allclose(out_t.detach().numpy(), out, atol=1e-12)
        np.testing.assert_allclose(x_t.grad.numpy(), dx, atol=1e-11)
    module.eval()
    x = rng.normal(size=shape)
    np.testing.assert_allclose(module(torch.tensor(x)).detach().numpy(),
                               batchnorm_forward(x, gamma, beta, {**bn_param, "mode": "eval"})[0], atol=1e-12)


def test_torch_per_example_norms_match_numpy(rng):
    x = rng.normal(size=(3, 6, 4, 2))
    x_t = torch.tensor(x)
    np.testing.assert_allclose(LayerNorm((6, 4, 2)).double()(x_t).detach().numpy(),
                               layernorm_forward(x, np.ones((6, 4, 2)), np.zeros((6, 4, 2)))[0], atol=1e-12)
    np.testing.assert_allclose(InstanceNorm(6).double()(x_t).detach().numpy(),
                               instancenorm_forward(x, np.ones(6), np.zeros(6))[0], atol=1e-12)
    for groups in (1, 2, 3, 6):
        np.testing.assert_allclose(GroupNorm(groups, 6).double()(x_t).detach().numpy(),
                                   groupnorm_forward(x, np.ones(6), np.zeros(6), groups)[0], atol=1e-12)


def test_layernorm_per_token_matches_torch(rng):
    # A sequence model's layer norm: each token of (N, L, D) over its D features alone.
    x = rng.normal(size=(2, 5, 8))
    expected = F.layer_norm(torch.tensor(x), (8,)).numpy()
    np.testing.assert_allclose(LayerNorm(8).double()(torch.tensor(x)).detach().numpy(), expected, atol=1e-12)
    tokens_as_rows, _ = layernorm_forward(x.reshape(-1, 8), np.ones(8), np.zeros(8))   # the docstring's recipe
    np.testing.assert_allclose(tokens_as_rows.reshape(x.shape), expected, atol=1e-12)


def test_torch_modules_match_nn_modules(rng):
    x = torch.tensor(rng.normal(size=(4, 6, 3, 3)), dtype=torch.float32)
    torch.testing.assert_close(GroupNorm(2, 6)(x), torch.nn.GroupNorm(2, 6)(x))
    torch.testing.assert_close(BatchNorm(6)(x), torch.nn.BatchNorm2d(6)(x))


# --------------------------------------------------------------------------------------
# Properties the chapter teaches
# --------------------------------------------------------------------------------------

def test_gamma_beta_can_recover_the_identity(rng):
    x = rng.normal(4.0, 3.0, size=(50, 4))
    out, _ = batchnorm_forward(x, np.sqrt(x.var(axis=0) + 1e-5), x.mean(axis=0), {"mode": "train"})
    np.testing.assert_allclose(out, x, atol=1e-12)


def test_bias_before_batchnorm_has_no_effect(rng):
    h = rng.normal(size=(16, 3))
    a, _ = batchnorm_forward(h, np.ones(3), np.zeros(3), {"mode": "train"})
    b, _ = batchnorm_forward(h + np.array([5.0, -2.0, 100.0]), np.ones(3), np.zeros(3), {"mode": "train"})
    np.testing.assert_allclose(a, b, atol=1e-10)


def test_normalization_groups_labels():
    shape = (2, 4, 1, 1)
    assert normalization_groups("batch", shape)[:, :, 0, 0].tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert normalization_groups("layer", shape)[:, :, 0, 0].tolist() == [[0, 0, 0, 0], [1, 1, 1, 1]]
    assert normalization_groups("instance", shape)[:, :, 0, 0].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert normalization_groups("group", shape, 2)[:, :, 0, 0].tolist() == [[0, 0, 1, 1], [2, 2, 3, 3]]


def test_standardizer_is_reexported():
    from lib.data import Standardizer as core_standardizer
    assert Standardizer is core_standardizer


# --------------------------------------------------------------------------------------
# Bad inputs raise errors that name the problem
# --------------------------------------------------------------------------------------

def _bn(x=None, gamma=None, beta=None, **bn_param):
    x = np.ones((4, 3)) + np.arange(12).reshape(4, 3) if x is None else x
    gamma = np.ones(3) if gamma is None else gamma
    beta = np.zeros(3) if beta is None else beta
    return batchnorm_forward(x, gamma, beta, {"mode": "train", **bn_param})


@pytest.mark.parametrize("call,error,match", [
    (lambda: _bn(x=np.ones(3)), ValueError, r"x: expected 2 or 3 or 4 dimensions"),
    (lambda: _bn(x=np.ones((2, 3, 4, 5, 6))), ValueError, r"x: expected 2 or 3 or 4 dimensions"),
    (lambda: _bn(x=np.ones((4, 3), dtype=int)), TypeError, r"x: expected a floating-point array"),
    (lambda: _bn(x=[[1.0, 2.0, 3.0]] * 4), TypeError, r"x: expected a NumPy array"),
    (lambda: _bn(gamma=np.ones(4)), ValueError, r"gamma: expected shape \(3,\)"),
    (lambda: _bn(beta=np.ones((3, 1))), ValueError, r"beta: expected shape \(3,\)"),
    (lambda: _bn(eps=0.0), ValueError, r"bn_param\['eps'\]: expected a finite number > 0"),
    (lambda: _bn(eps=-1e-5), ValueError, r"bn_param\['eps'\]"),
    (lambda: _bn(momentum=1.5), ValueError, r"bn_param\['momentum'\]: expected a probability"),
    (lambda: _bn(mode="test"), ValueError, r"bn_param\['mode'\]: expected one of 'train', 'eval'"),
    (lambda: _bn(momentun=0.1), ValueError, r"bn_param: unknown keys \['momentun'\]"),
    (lambda: _bn(running_mean=np.zeros(2)), ValueError, r"bn_param\['running_mean'\]: expected shape \(3,\)"),
    (lambda: _bn(running_var=-np.ones(3)), ValueError, r"bn_param\['running_var'\]: expected non-negative"),
    (lambda: _bn(x=np.array([[1.0, np.nan, 2.0]] * 4)), ValueError, r"x: contains NaN"),
    (lambda: _bn(x=np.ones((1, 3))), ValueError, r"more than 1 value per channel"),
    (lambda: batchnorm_forward(np.ones((4, 3)), np.ones(3), np.zeros(3), "train"), TypeError, r"bn_param: expected a dict"),
    (lambda: layernorm_forward(np.ones((2, 3)), np.ones(2), np.zeros(3)), ValueError, r"gamma: expected shape \(3,\)"),
    (lambda: layernorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3), eps=0), ValueError, r"eps: expected"),
    (lambda: instancenorm_forward(np.ones((2, 3)), np.ones(3), np.zeros(3)), ValueError, r"x: expected 3 or 4 dimensions"),
    (lambda: instancenorm_forward(np.ones((2, 3, 1, 1)), np.ones(3), np.zeros(3)), ValueError, r"more than 1 spatial value"),
    (lambda: groupnorm_forward(np.ones((2, 6, 3)), np.ones(6), np.zeros(6), 4), ValueError, r"num_groups: must divide"),
    (lambda: groupnorm_forward(np.ones((2, 6, 3)), np.ones(6), np.zeros(6), 0), ValueError, r"num_groups: expected an integer >= 1"),
    (lambda: groupnorm_forward(np.ones((2, 6, 3)), np.ones(6), np.zeros(6), 2.0), TypeError, r"num_groups: expected an integer"),
    (lambda: standardize_forward(np.ones((2, 3)), (0,), eps=float("nan")), ValueError, r"eps"),
    (lambda: normalization_groups("weight", (2, 3, 1, 1)), ValueError, r"kind: expected one of"),
    (lambda: normalization_groups("group", (2, 3, 1, 1), 2), ValueError, r"num_groups: must divide"),
])
def test_numpy_reference_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("call,error,match", [
    (lambda: BatchNorm(3)(torch.ones(4)), ValueError, r"x: expected 2 or 3 or 4 dimensions"),
    (lambda: BatchNorm(3)(torch.ones(4, 5)), ValueError, r"x: expected 3 channels"),
    (lambda: BatchNorm(3)(torch.ones(1, 3)), ValueError, r"more than 1 value per channel"),
    (lambda: BatchNorm(3)(torch.full((4, 3), float("nan"))), ValueError, r"x: contains NaN"),
    (lambda: BatchNorm(3)(torch.ones(4, 3, dtype=torch.int64)), TypeError, r"floating-point"),
    (lambda: BatchNorm(3, eps=0.0), ValueError, r"eps: expected a finite number > 0"),
    (lambda: BatchNorm(3, momentum=-0.1), ValueError, r"momentum: expected a probability"),
    (lambda: BatchNorm(0), ValueError, r"num_features: expected an integer >= 1"),
    (lambda: GroupNorm(4, 6), ValueError, r"num_groups: must divide"),
    (lambda: GroupNorm(2, 6)(torch.ones(2, 4, 3)), ValueError, r"x: expected 6 channels"),
    (lambda: LayerNorm(5)(torch.ones(2, 4)), ValueError, r"x: expected trailing shape \(5,\)"),
    (lambda: InstanceNorm(3)(torch.ones(2, 3, 1, 1)), ValueError, r"more than 1 spatial value"),
])
def test_torch_path_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_eval_mode_accepts_a_single_example():
    out, _ = batchnorm_forward(np.ones((1, 3)), np.ones(3), np.zeros(3), {"mode": "eval"})
    assert out.shape == (1, 3)
    module = BatchNorm(3).eval()
    assert module(torch.ones(1, 3)).shape == (1, 3)


@pytest.mark.parametrize("kind", ["batch", "layer", "instance", "group"])
def test_normalization_by_name_matches_the_specific_functions(rng, kind):
    from lib.normalization import normalization_backward, normalization_forward
    x, dout = rng.normal(size=(3, 4, 2, 5)), rng.normal(size=(3, 4, 2, 5))
    out, cache = normalization_forward(kind, x, num_groups=2)
    direct = {
        "batch": lambda: batchnorm_forward(x, np.ones(4), np.zeros(4), {"mode": "train"}),
        "layer": lambda: layernorm_forward(x, np.ones((4, 2, 5)), np.zeros((4, 2, 5))),
        "instance": lambda: instancenorm_forward(x, np.ones(4), np.zeros(4)),
        "group": lambda: groupnorm_forward(x, np.ones(4), np.zeros(4), 2),
    }[kind]
    expected, expected_cache = direct()
    np.testing.assert_array_equal(out, expected)
    backward = {"batch": batchnorm_backward_alt, "layer": layernorm_backward,
                "instance": instancenorm_backward, "group": groupnorm_backward}[kind]
    for a, b in zip(normalization_backward(kind, dout, cache), backward(dout, expected_cache)):
        np.testing.assert_array_equal(a, b)


def test_normalization_by_name_rejects_an_unknown_kind():
    from lib.normalization import normalization_backward, normalization_forward
    with pytest.raises(ValueError, match=r"kind: expected one of 'batch', 'layer', 'instance', 'group', got 'weight'"):
        normalization_forward("weight", np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"kind: expected one of"):
        normalization_backward("batchnorm", np.ones((2, 3)), {})
