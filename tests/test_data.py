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


# ---------------------------------------------------------------------------------------
# Images: digits, photos, CIFAR-10 from a tiny archive in the real format
# ---------------------------------------------------------------------------------------
import io  # noqa: E402
import pickle  # noqa: E402
import tarfile  # noqa: E402

from lib.data import (  # noqa: E402
    CIFAR10_FOLDER, PHOTOS, cifar10_splits, digits_splits, download_cifar10, image_dataset_splits, image_splits,
    load_cifar10, load_digits_images, load_photo,
)


def test_digits_are_8x8_images_in_the_unit_interval_split_without_overlap():
    x, y = load_digits_images()
    assert x.shape == (1797, 1, 8, 8) and x.min() == 0 and x.max() == 1 and set(np.unique(y)) == set(range(10))
    splits = digits_splits(train_size=200, val_size=100, seed=3)
    assert splits.sizes() == {"train": 200, "val": 100, "test": 1497}
    rows = np.concatenate([splits.x_train, splits.x_val, splits.x_test]).reshape(1797, -1)
    assert np.array_equal(np.sort(rows, axis=0), np.sort(x.reshape(1797, -1), axis=0))  # each image once
    assert not np.array_equal(digits_splits(seed=4).y_train, digits_splits(seed=3).y_train)


@pytest.mark.parametrize("name", PHOTOS)
def test_photos_load_channels_first_in_the_unit_interval(name):
    photo = load_photo(name)
    assert photo.ndim == 3 and photo.shape[0] in (1, 3) and min(photo.shape[1:]) >= 300
    assert photo.dtype == np.float64 and 0 <= photo.min() and photo.max() <= 1


def tiny_cifar10_archive(folder, per_batch=2):
    """An archive in CIFAR-10's python format (pickled dicts of bytes keys), with per_batch
    images in each of its six batches; pixel values encode (batch, image, channel)."""
    path = folder / "cifar-10-python.tar.gz"
    images = {}
    with tarfile.open(path, "w:gz") as archive:
        for index, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
            data = np.zeros((per_batch, 3, 32, 32), dtype=np.uint8)
            for image in range(per_batch):
                data[image] = (index * 40 + image * 10 + np.arange(3))[:, None, None]
            batch = {b"batch_label": name.encode(), b"labels": [index, 9 - index][:per_batch],
                     b"data": data.reshape(per_batch, 3072), b"filenames": [b"x.png"] * per_batch}
            payload = pickle.dumps(batch, protocol=2)
            info = tarfile.TarInfo(f"{CIFAR10_FOLDER}/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
            images[name] = data
    return path, images


def test_cifar10_reads_the_python_archive_format(tmp_path):
    _, images = tiny_cifar10_archive(tmp_path)
    data = load_cifar10(tmp_path)
    assert data["x"].shape == (10, 3, 32, 32) and data["x_test"].shape == (2, 3, 32, 32)
    assert data["x"].dtype == np.float32 and data["y"].tolist() == [0, 9, 1, 8, 2, 7, 3, 6, 4, 5]
    np.testing.assert_allclose(data["x"][2], images["data_batch_2"][0] / 255, rtol=1e-6)
    assert data["x_test"][1, :, 0, 0].tolist() == pytest.approx([(200 + 10 + c) / 255 for c in range(3)])
    splits = cifar10_splits(train_size=6, val_size=4, root=tmp_path)
    assert splits.sizes() == {"train": 6, "val": 4, "test": 2}
    np.testing.assert_array_equal(image_dataset_splits("cifar10", train_size=6, val_size=4, root=tmp_path).y_train,
                                  splits.y_train)


def test_cifar10_is_never_downloaded_unless_asked(tmp_path, monkeypatch):
    def no_network(*args):
        raise AssertionError("tried to download")

    monkeypatch.setattr("urllib.request.urlretrieve", no_network)
    with pytest.raises(FileNotFoundError, match=r"root: no cifar-10-python.tar.gz .*download=True"):
        load_cifar10(tmp_path)


def test_cifar10_download_fetches_the_archive_and_checks_its_md5(tmp_path):
    source, _ = tiny_cifar10_archive(tmp_path)
    url = source.as_uri()  # a file:// URL: the same code path as https, with no network
    md5 = __import__("hashlib").md5(source.read_bytes()).hexdigest()
    archive = download_cifar10(tmp_path / "downloads", url=url, md5=md5)
    assert archive.read_bytes() == source.read_bytes()
    archive.write_bytes(b"corrupt")
    with pytest.raises(ValueError, match=r"md5: .* expected"):
        download_cifar10(tmp_path / "downloads", url=url, md5=md5)


def test_image_loaders_reject_bad_input():
    x, y = np.zeros((10, 1, 8, 8)), np.zeros(10, dtype=int)
    with pytest.raises(ValueError, match=r"x: expected 4 dimensions"):
        image_splits(x[:, 0], y, 2, 2)
    with pytest.raises(ValueError, match=r"train_size, val_size: expected a sum of at most 9"):
        image_splits(x, y, 8, 2)
    with pytest.raises(ValueError, match=r"x, y: expected the same number"):
        image_splits(x, y[:5], 2, 2)
    with pytest.raises(ValueError, match=r"name: expected one of"):
        load_photo("dog")
    with pytest.raises(ValueError, match=r"dataset: expected one of 'digits', 'cifar10'"):
        image_dataset_splits("mnist")
