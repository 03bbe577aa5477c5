import numpy as np
import pytest

from lib.gradcheck import (
    check_layer_gradients, compare_gradients, numeric_gradient, numeric_gradient_array, relative_error,
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
    (lambda: check_layer_gradients(lambda x: x, {"x": np.ones(2)}, {"y": np.ones(2)}, np.ones(2)), ValueError, r"grads: 'y'"),
])
def test_gradcheck_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
