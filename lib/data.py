"""Data for the book's experiments: MNIST-1D generated locally, digits, photos, CIFAR-10; splits, batches.

MNIST-1D (Greydanus 2020) is a 1-D, 10-class stand-in for MNIST that is small enough to
train on a CPU in seconds and hard enough that architectures and tricks still matter.
It is *generated* here from the package's templates, so nothing is downloaded.

Images come from files that ship inside installed packages, so they need no network either:
the 1,797 handwritten 8×8 digits of scikit-learn (``digits_splits``) and the photos of
scikit-image and matplotlib (``load_photo``). CIFAR-10 (``load_cifar10``, ``cifar10_splits``)
is the full-size path for readers with a network and a GPU: it is read from its standard
python archive, which is downloaded only when ``download=True`` is asked for.
Images are float arrays in [0, 1], channels first: ``(C, H, W)``, or ``(N, C, H, W)`` for a set.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lib.checks import check_array, check_choice, check_int, check_probability

MNIST1D_CLASSES = 10


def cache_dir() -> Path:
    """The book's cache directory: ``$DLBOOK_CACHE``, default ``~/.cache/dlbook`` (data, studies)."""
    return Path(os.environ.get("DLBOOK_CACHE", Path.home() / ".cache" / "dlbook"))


def load_mnist1d(cache: bool = True) -> dict:
    """Generate MNIST-1D with the package's default arguments (4000 train / 1000 test, 40 features).

    Returns ``{"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,)}``
    with float64 features and int64 labels. Generation is seeded by the package's own
    arguments and takes a few seconds; with ``cache=True`` the arrays are kept in
    ``$DLBOOK_CACHE`` (default ``~/.cache/dlbook``), keyed by those arguments.
    """
    from mnist1d.data import get_dataset_args, make_dataset  # make_dataset never downloads

    args = get_dataset_args()
    key = hashlib.sha256(json.dumps(vars(args), sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-{key}.npz"
    if cache and path.exists():
        with np.load(path) as stored:
            return {name: stored[name] for name in ("x", "y", "x_test", "y_test")}
    generated = make_dataset(args)
    data = {
        "x": generated["x"].astype(np.float64),
        "y": generated["y"].astype(np.int64),
        "x_test": generated["x_test"].astype(np.float64),
        "y_test": generated["y_test"].astype(np.int64),
    }
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of this process's own, then an atomic rename: two notebooks generating at once
        # (make test runs two side by side) neither write into one file nor read half of one.
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, **data)
        tmp.replace(path)
    return data


@dataclass(frozen=True)
class Standardizer:
    """Per-feature standardization with statistics of the *training* set.

    ``fit`` computes the mean and standard deviation of each feature on training data;
    ``transform`` applies that same shift and scale to any data (train, validation, test,
    or a single example), so every split sees one and the same function.
    Shapes: ``mean`` and ``std`` are ``(D,)``; inputs are ``(N, D)``.
    """

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x_train: np.ndarray, eps: float = 1e-12) -> "Standardizer":
        check_array("x_train", x_train, ndim=2)
        if x_train.shape[0] < 2:
            raise ValueError(f"x_train: need at least 2 examples to estimate a spread, got shape {x_train.shape}")
        std = x_train.std(axis=0)
        # A constant feature has std 0; dividing by eps instead leaves it at 0 after centering.
        return cls(mean=x_train.mean(axis=0), std=np.maximum(std, eps))

    def transform(self, x: np.ndarray) -> np.ndarray:
        self._check_features("x", x)
        return (x - self.mean) / self.std

    def inverse_transform(self, x_standardized: np.ndarray) -> np.ndarray:
        self._check_features("x_standardized", x_standardized)
        return x_standardized * self.std + self.mean

    def _check_features(self, name: str, x: np.ndarray) -> None:
        check_array(name, x, ndim=2)
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"{name}: expected shape (N, {self.mean.shape[0]}), got {x.shape}")


@dataclass(frozen=True)
class Splits:
    """Train / validation / test arrays. ``x_*`` are ``(N, D)`` float, ``y_*`` are ``(N,)`` int."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def train_val_split(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int = 0):
    """Shuffle ``(x, y)`` with ``seed`` and split off the last ``val_fraction`` as validation data."""
    check_array("x", x)
    check_array("y", y, ndim=1, float_only=False)
    if len(x) != len(y):
        raise ValueError(f"x, y: expected the same number of examples, got {len(x)} and {len(y)}")
    check_probability("val_fraction", val_fraction, closed_right=False)
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(round(val_fraction * len(x)))
    train, val = order[: len(x) - n_val], order[len(x) - n_val :]
    return x[train], y[train], x[val], y[val]


def mnist1d_splits(val_fraction: float = 0.1, standardize: bool = True, seed: int = 0,
                   train_size: int | None = None) -> Splits:
    """MNIST-1D as train / validation / test splits, standardized with training statistics.

    The package's 4000 training examples are split into train and validation
    (``val_fraction``); its 1000 test examples are kept aside untouched. ``train_size``
    keeps only the first that many training examples (of the shuffled split), a small
    training set that a network can memorize; validation and test stay the same size.
    """
    data = load_mnist1d()
    x_train, y_train, x_val, y_val = train_val_split(data["x"], data["y"], val_fraction, seed)
    if train_size is not None:
        check_int("train_size", train_size, minimum=2)
        if train_size > len(y_train):
            raise ValueError(f"train_size: expected at most {len(y_train)} training examples, got {train_size}")
        x_train, y_train = x_train[:train_size], y_train[:train_size]
    x_test = data["x_test"]
    if standardize:
        scaler = Standardizer.fit(x_train)
        x_train, x_val, x_test = scaler.transform(x_train), scaler.transform(x_val), scaler.transform(x_test)
    return Splits(x_train, y_train, x_val, y_val, x_test, data["y_test"])


def numpy_batches(x: np.ndarray, y: np.ndarray, batch_size: int, rng: np.random.Generator | None = None):
    """Yield ``(x_batch, y_batch)`` mini-batches covering the data once.

    With ``rng`` the order is shuffled (a new permutation every call); without, it is kept.
    The last batch may be smaller.
    """
    check_int("batch_size", batch_size, minimum=1)
    if len(x) != len(y):
        raise ValueError(f"x, y: expected the same number of examples, got {len(x)} and {len(y)}")
    order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
    for start in range(0, len(x), batch_size):
        index = order[start : start + batch_size]
        yield x[index], y[index]


class TensorBatches:
    """Endless shuffled mini-batches of in-memory tensors, for step-based training.

    A ``DataLoader`` collates example by example; for data that already sits in one
    tensor (as MNIST-1D does) slicing a shuffled index is many times faster.
    Each pass over the data uses a fresh permutation drawn from ``generator``;
    ``drop_last`` keeps every batch the same size (batch norm likes that).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0, drop_last: bool = True):
        check_int("batch_size", batch_size, minimum=1)
        if len(x) != len(y):
            raise ValueError(f"x, y: expected the same number of examples, got {len(x)} and {len(y)}")
        if drop_last and batch_size > len(x):
            raise ValueError(f"batch_size: expected at most {len(x)} (the number of examples), got {batch_size}")
        self.x, self.y, self.batch_size, self.drop_last = x, y, batch_size, drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        while True:
            order = torch.randperm(len(self.x), generator=self.generator).to(self.x.device)
            stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
            for start in range(0, stop, self.batch_size):
                index = order[start : start + self.batch_size]
                yield self.x[index], self.y[index]


def to_tensors(x: np.ndarray, y: np.ndarray, device="cpu", dtype=torch.float32):
    """NumPy ``(x, y)`` to torch: features as ``dtype``, labels as int64, both on ``device``."""
    return torch.as_tensor(x, dtype=dtype, device=device), torch.as_tensor(y, dtype=torch.int64, device=device)


# ---------------------------------------------------------------------------------------------
# Images: digits and photos shipped inside installed packages, CIFAR-10 on request
# ---------------------------------------------------------------------------------------------

DIGITS_CLASSES = 10


def image_splits(x: np.ndarray, y: np.ndarray, train_size: int, val_size: int, seed: int = 0,
                 test: tuple | None = None) -> Splits:
    """Shuffle images ``x (N, C, H, W)`` and labels ``y (N,)`` with ``seed``; the first
    ``train_size`` train, the next ``val_size`` validate, and the rest test, unless a separate
    ``test = (x_test, y_test)`` is given (then the rest is unused).

    Images are not standardized: augmentations act on pixel values in [0, 1], and a network
    can learn any shift and scale itself.
    """
    check_array("x", x, ndim=4)
    check_array("y", y, ndim=1, float_only=False)
    if len(x) != len(y):
        raise ValueError(f"x, y: expected the same number of examples, got {len(x)} and {len(y)}")
    check_int("train_size", train_size, minimum=1)
    check_int("val_size", val_size, minimum=1)
    left_for_test = 0 if test is not None else 1
    if train_size + val_size + left_for_test > len(x):
        raise ValueError(f"train_size, val_size: expected a sum of at most {len(x) - left_for_test} "
                         f"(of {len(x)} examples), got {train_size} + {val_size}")
    order = np.random.default_rng(seed).permutation(len(x))
    train, val, rest = np.split(order, [train_size, train_size + val_size])
    x_test, y_test = test if test is not None else (x[rest], y[rest])
    return Splits(x[train], y[train], x[val], y[val], x_test, y_test)


def load_digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's handwritten digits: images ``(1797, 1, 8, 8)`` in [0, 1], labels ``(1797,)``.

    The stored pixels are counts 0-16 (each pixel of the 8×8 image counts the set pixels of a
    4×4 block of the 32×32 original); dividing by 16 puts them in [0, 1].
    """
    from sklearn.datasets import load_digits  # the data ships inside scikit-learn

    digits = load_digits()
    return (digits.images[:, None] / 16.0).astype(np.float64), digits.target.astype(np.int64)


def digits_splits(train_size: int = 300, val_size: int = 300, seed: int = 0) -> Splits:
    """The digits as ``Splits``: ``train_size`` training and ``val_size`` validation images drawn
    with ``seed``, the other 1797 − train_size − val_size for test. Images ``(N, 1, 8, 8)`` in [0, 1]."""
    return image_splits(*load_digits_images(), train_size, val_size, seed)


PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cell", "camera", "grace_hopper")


def load_photo(name: str) -> np.ndarray:
    """A photo shipped inside scikit-image (or matplotlib's ``grace_hopper``), as a float
    ``(C, H, W)`` array in [0, 1]: C = 3 for colour photos, 1 for grey ones (``cell``, ``camera``).

    ``chelsea`` is a cat, ``coffee`` a cup of coffee, ``cell`` a microscopy image.
    """
    check_choice("name", name, PHOTOS)
    if name == "grace_hopper":
        import matplotlib.cbook
        import matplotlib.image

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as file:
            pixels = matplotlib.image.imread(file, format="jpg")
    else:
        import skimage.data

        pixels = getattr(skimage.data, name)()
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    return np.ascontiguousarray(pixels.transpose(2, 0, 1) / 255.0, dtype=np.float64)


CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_cifar10(root, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5) -> Path:
    """Download CIFAR-10's python archive (163 MB) into ``root`` and check its MD5; return its path.

    Nothing in the book calls this unless a reader asks for CIFAR-10 with ``download=True``.
    """
    archive = Path(root) / url.rsplit("/", 1)[-1]
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        partial = archive.with_suffix(".part")
        urllib.request.urlretrieve(url, partial)
        partial.replace(archive)
    if _md5(archive) != md5:
        raise ValueError(f"md5: {archive} has MD5 {_md5(archive)}, expected {md5}; delete it and download again")
    return archive


def _read_cifar10_batch(archive: tarfile.TarFile, name: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch of the archive: uint8 images ``(n, 3, 32, 32)`` and int64 labels ``(n,)``.

    Each row of ``b"data"`` holds 3072 bytes: the 1024 red values of the 32×32 image row by
    row, then the green, then the blue, so a reshape to (3, 32, 32) is channels first already.
    """
    member = archive.extractfile(f"{CIFAR10_FOLDER}/{name}")
    if member is None:
        raise ValueError(f"root: the archive has no file {CIFAR10_FOLDER}/{name}")
    batch = pickle.load(member, encoding="bytes")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return images, np.asarray(batch[b"labels"], dtype=np.int64)


def load_cifar10(root=None, download: bool = False) -> dict:
    """CIFAR-10 from its standard python archive ``cifar-10-python.tar.gz`` in ``root``
    (default ``$DLBOOK_CACHE``): ``{"x": (50000, 3, 32, 32), "y": (50000,), "x_test": (10000, 3, 32, 32),
    "y_test": (10000,)}``, images float32 in [0, 1] (float32 halves the 600 MB float64 would take).

    The archive is read as it is, without unpacking it. If it is missing, ``download=True``
    fetches it (``download_cifar10``); otherwise a ``FileNotFoundError`` says how to get it.
    """
    root = Path(root) if root is not None else cache_dir()
    archive_path = root / CIFAR10_URL.rsplit("/", 1)[-1]
    if not archive_path.exists():
        if not download:
            raise FileNotFoundError(f"root: no {archive_path.name} in {root}; pass download=True to fetch it "
                                    f"(163 MB) from {CIFAR10_URL}, or put the file there yourself")
        download_cifar10(root)
    with tarfile.open(archive_path, "r:gz") as archive:
        train = [_read_cifar10_batch(archive, name) for name in CIFAR10_TRAIN_FILES]
        x_test, y_test = _read_cifar10_batch(archive, "test_batch")
    x = np.concatenate([images for images, _ in train])
    y = np.concatenate([labels for _, labels in train])
    scale = np.float32(1 / 255)
    return {"x": x * scale, "y": y, "x_test": x_test * scale, "y_test": y_test}


def cifar10_splits(train_size: int = 45000, val_size: int = 5000, seed: int = 0, root=None,
                   download: bool = False) -> Splits:
    """CIFAR-10 as ``Splits``: ``train_size`` and ``val_size`` images drawn from its 50,000
    training images with ``seed``; its own 10,000 test images as the test split."""
    data = load_cifar10(root, download)
    return image_splits(data["x"], data["y"], train_size, val_size, seed, test=(data["x_test"], data["y_test"]))


def image_dataset_splits(dataset: str = "digits", **options) -> Splits:
    """The one switch between the book's default image data and the full-size path:
    ``"digits"`` (shipped with scikit-learn, the default) or ``"cifar10"`` (downloaded only with
    ``download=True``). ``options`` go to ``digits_splits`` or ``cifar10_splits``."""
    check_choice("dataset", dataset, ("digits", "cifar10"))
    return digits_splits(**options) if dataset == "digits" else cifar10_splits(**options)
