import numpy as np
import pytest

from lib.gradcheck import (
    check_layer_gradients, check_model_gradients, compare_gradients, elementwise_relative_error, numeric_gradient,
    numeric_gradient_array, relative_error,
)


def test_numeric_gradient_of_a_quadratic(rng):
    a = rng.normal(size=(4, 4))
    x = rng.normal(size=4)
    numeric = numeric_gradient(lambda v: v @ a @ v, x)
    assert relative_error(numeric, (a + a.T) @ x) < 1e-9


def test_numeric_gradient_restores_the_input(rng):
    x = rng.normal(size=(3, 2))
    before = x.copy()
    numeric_gradient(lambda v: np.sum(v**3), x)
    np.testing.assert_array_equal(x, before)


def test_numeric_gradient_array_matches_a_matrix_product_backward(rng):
    x, w, dout = rng.normal(size=(5, 3)), rng.normal(size=(3, 2)), rng.normal(size=(5, 2))
    np.testing.assert_allclose(numeric_gradient_array(lambda v: v @ w, x, dout), dout @ w.T, atol=1e-8)


def test_check_layer_gradients_flags_a_wrong_gradient(rng):
    x, w, dout = rng.normal(size=(4, 3)), rng.normal(size=(3, 2)), rng.normal(size=(4, 2))
    good = check_layer_gradients(lambda x, w: x @ w, {"x": x, "w": w}, {"x": dout @ w.T, "w": x.T @ dout}, dout)
    bad = check_layer_gradients(lambda x, w: x @ w, {"x": x, "w": w}, {"x": dout @ w.T, "w": -x.T @ dout}, dout)
    assert good["x"].passed() and good["w"].passed()
    assert not bad["w"].passed() and bad["w"].relative_error > 0.5


def test_compare_gradients_reports_the_worst_entries():
    analytic = np.zeros((3, 3))
    numeric = np.zeros((3, 3))
    numeric[1, 2] = 1.0
    result = compare_gradients(analytic, numeric, name="W", show=2)
    assert result.worst[0][0] == (1, 2)
    assert "W: relative error" in result.report() and "at (1, 2)" in result.report()


def test_elementwise_relative_error_entry_by_entry():
    a, b = np.array([1.0, 0.0, 2.0]), np.array([3.0, 0.0, 2.0])
    np.testing.assert_array_equal(elementwise_relative_error(a, b), [0.5, 0.0, 0.0])   # 0/0 is 0, not NaN
    assert elementwise_relative_error(np.array([1e-9]), np.array([0.0]))[0] == pytest.approx(0.1)  # the 1e-8 floor


def test_one_wrong_entry_is_diluted_in_the_block_but_not_element_wise(rng):
    numeric = rng.normal(size=(100, 100))
    numeric[3, 7] = 1.0                                       # a typical entry
    analytic = numeric.copy()
    analytic[3, 7] = -1.0                                     # one entry of 10,000 has the wrong sign
    result = compare_gradients(analytic, numeric, name="W")
    assert result.relative_error < 0.02                       # the block's norm hides it
    assert result.elementwise_error == pytest.approx(1.0)     # the entry itself reads 1
    assert result.worst[0][0] == (3, 7) and "largest element-wise 1.0e+00" in result.report()


def test_check_model_gradients_keeps_the_compared_gradients(rng):
    params = {"W": rng.normal(size=(4, 5))}
    grads = {"W": 2 * params["W"]}
    loss = lambda: float((params["W"] ** 2).sum())
    full = check_model_gradients(loss, params, grads)["W"]
    assert full.analytic.shape == full.numeric.shape == (4, 5)
    np.testing.assert_allclose(full.numeric, grads["W"], atol=1e-8)
    sparse = check_model_gradients(loss, params, grads, num_checks=6, rng=np.random.default_rng(0))["W"]
    assert sparse.analytic.shape == sparse.numeric.shape == (6,) and sparse.elementwise_error < 1e-8


def test_relative_error_of_two_zero_arrays_is_zero():
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0


@pytest.mark.parametrize("call,error,match", [
    (lambda: numeric_gradient(lambda v: v, np.ones(3)), ValueError, r"f: expected a scalar loss"),
    (lambda: numeric_gradient(lambda v: v.sum(), np.ones(3), eps=0.0), ValueError, r"eps: expected a finite number > 0"),
    (lambda: numeric_gradient(lambda v: v.sum(), np.ones(3, dtype=int)), TypeError, r"x: expected a floating-point"),
    (lambda: numeric_gradient(lambda v: v.sum(), np.ones(3, dtype=np.float32)), TypeError, r"x: expected float64"),
    (lambda: numeric_gradient(lambda v: v.sum(), np.array([np.nan])), ValueError, r"x: contains NaN"),
    (lambda: numeric_gradient_array(lambda v: v, np.ones(3), np.ones(4)), ValueError, r"dout: expected the shape of f\(x\)"),
    (lambda: compare_gradients(np.ones(3), np.ones(4)), ValueError, r"analytic, numeric: expected the same shape"),
    (lambda: relative_error(np.ones(3), np.ones(2)), ValueError, r"a, b: expected the same shape"),
    (lambda: elementwise_relative_error(np.ones(3), np.ones(2)), ValueError, r"a, b: expected the same shape"),
    (lambda: elementwise_relative_error(np.ones(3), np.ones(3), floor=0.0), ValueError, r"floor: expected a finite number > 0"),
    (lambda: elementwise_relative_error(np.ones(3), np.ones(3), floor="1e-8"), TypeError, r"floor: expected a real number"),
    (lambda: check_layer_gradients(lambda x: x, {"x": np.ones(2)}, {"y": np.ones(2)}, np.ones(2)), ValueError, r"grads: 'y'"),
])
def test_gradcheck_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
