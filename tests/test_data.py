import numpy as np
import pytest
import torch

from lib.data import Standardizer, TensorBatches, load_mnist1d, mnist1d_splits, numpy_batches, train_val_split


@pytest.fixture(scope="module")
def mnist1d():
    return load_mnist1d()


def test_mnist1d_is_generated_with_the_documented_shapes(mnist1d):
    assert mnist1d["x"].shape == (4000, 40) and mnist1d["x_test"].shape == (1000, 40)
    assert mnist1d["y"].shape == (4000,) and set(np.unique(mnist1d["y"])) == set(range(10))
    assert mnist1d["x"].dtype == np.float64 and mnist1d["y"].dtype == np.int64


def test_mnist1d_cache_returns_the_same_arrays(mnist1d, tmp_path, monkeypatch):
    monkeypatch.setenv("DLBOOK_CACHE", str(tmp_path))
    fresh = load_mnist1d(cache=True)              # generates and writes the cache
    cached = load_mnist1d(cache=True)             # reads it
    assert list(tmp_path.glob("mnist1d-*.npz"))
    for key in mnist1d:
        np.testing.assert_array_equal(fresh[key], mnist1d[key])
        np.testing.assert_array_equal(cached[key], mnist1d[key])


def test_splits_are_standardized_with_training_statistics(mnist1d):
    splits = mnist1d_splits(val_fraction=0.1)
    assert splits.sizes() == {"train": 3600, "val": 400, "test": 1000}
    np.testing.assert_allclose(splits.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(splits.x_train.std(axis=0), 1, atol=1e-12)
    x_train, _, _, _ = train_val_split(mnist1d["x"], mnist1d["y"], 0.1, seed=0)
    expected_test = Standardizer.fit(x_train).transform(mnist1d["x_test"])
    np.testing.assert_allclose(splits.x_test, expected_test)


def test_a_small_training_subset_keeps_validation_and_test_and_is_standardized_on_itself(mnist1d):
    full, small = mnist1d_splits(val_fraction=0.1, standardize=False), mnist1d_splits(train_size=300)
    assert small.sizes() == {"train": 300, "val": 400, "test": 1000}
    scaler = Standardizer.fit(full.x_train[:300])
    np.testing.assert_allclose(small.x_train, scaler.transform(full.x_train[:300]))
    np.testing.assert_allclose(small.x_val, scaler.transform(full.x_val))
    np.testing.assert_array_equal(small.y_train, full.y_train[:300])
    with pytest.raises(ValueError, match=r"train_size: expected at most 3600"):
        mnist1d_splits(train_size=5000)
    with pytest.raises(ValueError, match=r"train_size"):
        mnist1d_splits(train_size=1)


def test_standardizer_fit_transform_inverse(rng):
    x = rng.normal([3.0, -1.0], [2.0, 0.5], size=(100, 2))
    scaler = Standardizer.fit(x)
    z = scaler.transform(x)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(scaler.inverse_transform(z), x)
    constant = np.column_stack([x[:, 0], np.full(100, 7.0)])
    assert np.isfinite(Standardizer.fit(constant).transform(constant)).all()


def test_numpy_batches_cover_the_data_once(rng):
    x, y = np.arange(10.0).reshape(10, 1), np.arange(10)
    seen = np.concatenate([yb for _, yb in numpy_batches(x, y, 3, rng=rng)])
    assert sorted(seen.tolist()) == list(range(10))
    assert [len(yb) for _, yb in numpy_batches(x, y, 4)] == [4, 4, 2]


def test_tensor_batches_are_seeded_and_full_size():
    x, y = torch.arange(10.0).reshape(10, 1), torch.arange(10)
    first = [yb.tolist() for _, (_, yb) in zip(range(4), TensorBatches(x, y, 3, seed=5))]
    again = [yb.tolist() for _, (_, yb) in zip(range(4), TensorBatches(x, y, 3, seed=5))]
    assert first == again and all(len(b) == 3 for b in first)
    assert sorted(sum(first[:3], [])) == sorted(set(sum(first[:3], [])))   # no repeats within a pass


@pytest.mark.parametrize("call,error,match", [
    (lambda: Standardizer.fit(np.ones(5)), ValueError, r"x_train: expected 2 dimensions"),
    (lambda: Standardizer.fit(np.ones((1, 3))), ValueError, r"x_train: need at least 2 examples"),
    (lambda: Standardizer.fit(np.ones((4, 3))).transform(np.ones((4, 2))), ValueError, r"x: expected shape"),
    (lambda: Standardizer.fit(np.array([[1.0, np.nan], [2.0, 3.0]])), ValueError, r"x_train: contains NaN"),
    (lambda: train_val_split(np.ones((4, 2)), np.ones(3, dtype=int), 0.5), ValueError, r"x, y: expected the same number"),
    (lambda: train_val_split(np.ones((4, 2)), np.ones(4, dtype=int), 1.0), ValueError, r"val_fraction: expected a probability in \[0, 1\)"),
    (lambda: list(numpy_batches(np.ones((4, 2)), np.ones(4), 0)), ValueError, r"batch_size: expected an integer >= 1"),
    (lambda: TensorBatches(torch.ones(4, 2), torch.ones(4), 8), ValueError, r"batch_size: expected at most 4"),
])
def test_data_rejects_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
