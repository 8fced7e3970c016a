"""Datasets for the real-network experiments: MNIST (shipped), sklearn digits, Gaussian mixtures.

Nothing is downloaded. The MNIST test split (10,000 images, LeCun–Cortes–Burges, CC BY-SA
3.0) ships with the package as two IDX files in ``ufm/networks/data/``; `read_idx` parses
IDX itself and checks the magic number, the dimensions and the payload length, so a
corrupt or truncated file fails with a message naming the file.

Conventions: a `Dataset` stores samples as *rows* of ``X`` (N × features, or N × C × H × W
images), integer ``labels`` (N,) and ``num_classes``. Networks turn the last hidden layer
into features as *columns* (d × N), the project's convention (``docs/theory.md`` §1).
"Class-major" means sorted by label (stable), so with n per class, sample i has class i // n.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import numpy as np

__all__ = [
    "Dataset",
    "read_idx",
    "load_mnist",
    "load_digits",
    "gaussian_mixture",
    "subsample",
    "stratified_split",
    "MNIST_T10K_CLASS_COUNTS",
]

#: Class counts of the MNIST test split (``shared/data/mnist/README.md``).
MNIST_T10K_CLASS_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)

_DATA_DIR = Path(__file__).parent / "data"

# IDX type codes (the third byte of the magic number) -> numpy big-endian dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Samples as rows of ``X`` with integer ``labels`` in ``[0, num_classes)``.

    Fields:
      X: (N, p) vectors or (N, C, H, W) images, floating point.
      labels: (N,) integers.
      num_classes: K.
      name: a short description (for reports).
    """

    X: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str = ""

    def __post_init__(self):
        X, y = np.asarray(self.X), np.asarray(self.labels)
        if X.ndim not in (2, 4):
            raise ValueError(f"X must be (N, p) or (N, C, H, W), got shape {X.shape}")
        if not np.issubdtype(X.dtype, np.floating):
            raise TypeError(f"X must be floating point, got dtype {X.dtype}")
        if y.ndim != 1 or y.shape[0] != X.shape[0] or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels must be an integer array of shape ({X.shape[0]},), got {y.dtype} {y.shape}")
        if not (isinstance(self.num_classes, (int, np.integer)) and self.num_classes >= 2):
            raise ValueError(f"num_classes must be an int >= 2, got {self.num_classes!r}")
        if y.size and (y.min() < 0 or y.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got range [{y.min()}, {y.max()}]")
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "labels", y.astype(np.int64))

    @property
    def num_samples(self) -> int:
        return int(self.X.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample (``X.shape[1:]``)."""
        return tuple(self.X.shape[1:])

    @property
    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=self.num_classes)

    @property
    def per_class(self) -> int | None:
        """n if every class has exactly n samples, else ``None``."""
        counts = self.class_counts
        return int(counts[0]) if np.all(counts == counts[0]) else None

    def class_major(self) -> Dataset:
        """The same samples sorted by label (stable), so sample i of a balanced set has class i // n."""
        order = np.argsort(self.labels, kind="stable")
        return dataclasses.replace(self, X=self.X[order], labels=self.labels[order])

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "num_samples": self.num_samples,
            "input_shape": list(self.input_shape),
            "num_classes": int(self.num_classes),
            "class_counts": self.class_counts.tolist(),
        }


# ---- IDX ----------------------------------------------------------------------------
def read_idx(path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a numpy array.

    Format (LeCun's MNIST page): two zero bytes, a type code, the number of dimensions
    D, then D big-endian uint32 sizes, then the row-major payload.

    Raises:
      FileNotFoundError: ``path`` does not exist.
      ValueError: bad magic number, unknown type code, truncated header or payload, or
        trailing bytes; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise ValueError(f"{path}: not a readable gzip file ({err})") from err
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: bad IDX magic number {raw[:4].hex()} (expected 0000 + type code + ndim)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header (ndim={ndim}, {len(raw)} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise ValueError(f"{path}: IDX payload {what}: shape {shape} needs {expected} bytes, file has {len(raw)}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"no {stem}[.gz] in {directory}")


def load_mnist(directory=None, *, split: str = "t10k", dtype=np.float32) -> Dataset:
    """MNIST images as (N, 1, 28, 28) floats in [0, 1] with labels, read from IDX files.

    Args:
      directory: a folder holding ``{split}-images-idx3-ubyte[.gz]`` and
        ``{split}-labels-idx1-ubyte[.gz]``; default: the shipped test split.
      split: the file prefix, ``"t10k"`` (shipped) or e.g. ``"train"`` in your own folder.
      dtype: floating dtype of the images.

    The shipped files are checked against the class counts of the data README; any
    directory is checked for 28 × 28 uint8 images, uint8 labels in 0..9 and equal counts.
    """
    shipped = directory is None
    directory = _DATA_DIR if shipped else Path(os.fspath(directory))
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST directory not found: {directory}")
    img_path = _find(directory, f"{split}-images-idx3-ubyte")
    lab_path = _find(directory, f"{split}-labels-idx1-ubyte")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{img_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{lab_path}: expected {images.shape[0]} uint8 labels to match the images, "
            f"got {labels.dtype} {labels.shape}"
        )
    if labels.max() > 9:
        raise ValueError(f"{lab_path}: MNIST labels must lie in 0..9, found {labels.max()}")
    counts = np.bincount(labels, minlength=10)
    if shipped and tuple(counts.tolist()) != MNIST_T10K_CLASS_COUNTS:
        raise ValueError(f"{lab_path}: class counts {counts.tolist()} differ from {list(MNIST_T10K_CLASS_COUNTS)}")
    X = (images.astype(dtype) / 255.0)[:, None, :, :]
    return Dataset(X, labels.astype(np.int64), 10, name=f"mnist-{split}")


def load_digits(*, dtype=np.float32) -> Dataset:
    """scikit-learn's bundled 8 × 8 digits (1,797 images, 10 classes) as (N, 1, 8, 8) in [0, 1]."""
    from sklearn.datasets import load_digits as _sk_digits  # lazy: sklearn is an optional extra

    d = _sk_digits()
    X = (d.images.astype(dtype) / 16.0)[:, None, :, :]
    return Dataset(X, d.target.astype(np.int64), 10, name="sklearn-digits")


def gaussian_mixture(
    num_classes: int = 10,
    per_class: int = 100,
    dim: int = 64,
    *,
    separation: float = 4.0,
    noise: float = 1.0,
    seed: int = 0,
    dtype=np.float32,
) -> Dataset:
    """K isotropic Gaussians ``x = μ_c + noise · ξ``, ``ξ ~ N(0, I_dim)``, class-major.

    The means are ``separation`` times orthonormal directions (a random orthogonal
    frame from the QR of a Gaussian matrix; needs ``dim >= num_classes``).
    """
    if not (isinstance(num_classes, int) and num_classes >= 2):
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not (isinstance(per_class, int) and per_class >= 1):
        raise ValueError(f"per_class must be a positive int, got {per_class!r}")
    if not (isinstance(dim, int) and dim >= num_classes):
        raise ValueError(f"dim must be an int >= num_classes={num_classes}, got {dim!r}")
    if not (separation > 0 and noise >= 0):
        raise ValueError(f"separation must be > 0 and noise >= 0, got {separation}, {noise}")
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((dim, num_classes)))
    means = separation * Q.T  # K × dim
    labels = np.repeat(np.arange(num_classes), per_class)
    X = means[labels] + noise * rng.standard_normal((labels.size, dim))
    return Dataset(X.astype(dtype), labels, num_classes, name=f"gmm-K{num_classes}-d{dim}")


# ---- balanced subsets ---------------------------------------------------------------
def _per_class_indices(data: Dataset, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.permutation(np.flatnonzero(data.labels == c)) for c in range(data.num_classes)]


def _take(data: Dataset, idx: list[np.ndarray], suffix: str) -> Dataset:
    order = np.concatenate(idx)  # class-major: class 0 block, class 1 block, ...
    return dataclasses.replace(data, X=data.X[order], labels=data.labels[order], name=data.name + suffix)


def subsample(data: Dataset, per_class: int, *, seed: int = 0) -> Dataset:
    """A balanced, class-major random subset with ``per_class`` samples of every class."""
    if not (isinstance(per_class, (int, np.integer)) and per_class >= 1):
        raise ValueError(f"per_class must be a positive int, got {per_class!r}")
    smallest = int(data.class_counts.min())
    if per_class > smallest:
        raise ValueError(f"per_class={per_class} exceeds the smallest class ({smallest} samples)")
    idx = _per_class_indices(data, np.random.default_rng(seed))
    return _take(data, [i[:per_class] for i in idx], f"[n={per_class}]")


def stratified_split(
    data: Dataset, train_per_class: int, test_per_class: int | None = None, *, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Disjoint balanced train / test sets, both class-major, drawn with one seed.

    ``test_per_class`` defaults to everything the smallest class has left, so both parts
    are balanced.
    """
    if not (isinstance(train_per_class, (int, np.integer)) and train_per_class >= 1):
        raise ValueError(f"train_per_class must be a positive int, got {train_per_class!r}")
    smallest = int(data.class_counts.min())
    left = smallest - train_per_class
    if test_per_class is None:
        test_per_class = left
    if not (isinstance(test_per_class, (int, np.integer)) and 1 <= test_per_class <= left):
        raise ValueError(
            f"test_per_class must be an int in [1, {left}] (smallest class {smallest} minus "
            f"train_per_class {train_per_class}), got {test_per_class!r}"
        )
    idx = _per_class_indices(data, np.random.default_rng(seed))
    train = _take(data, [i[:train_per_class] for i in idx], f"[train n={train_per_class}]")
    test = _take(
        data, [i[train_per_class : train_per_class + test_per_class] for i in idx], f"[test n={test_per_class}]"
    )
    return train, test
