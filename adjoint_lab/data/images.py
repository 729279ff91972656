"""Image classification data read from local files in their standard formats; no downloads.

- MNIST: the IDX files `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
  `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz` (gzipped or not).
- Fashion-MNIST: IDX files of the same names and format (Debian: `dataset-fashion-mnist`).
- SVHN (cropped digits): `train_32x32.mat`, `test_32x32.mat` (`extra_32x32.mat`).
- CIFAR-10: the python pickles `cifar-10-batches-py/data_batch_1` ... `data_batch_5` and
  `test_batch`.
- The 8x8 digits bundled with scikit-learn (1,797 images): the offline default.

Every reader returns `(images, labels)`: float32 images `[N, channels, height, width]` scaled
to [0, 1] and int32 labels `[N]`, after checking shapes and counts. A missing file raises
`DatasetNotFoundError`, which names the files and the directory searched.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jaxtyping import Float, Int

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DatasetNotFoundError",
    "DatasetFormatError",
    "load_digits",
    "FASHION_MNIST_ROOT",
    "read_cifar10",
    "read_fashion_mnist",
    "read_mnist",
    "read_svhn",
    "stratified_split",
]

Images = Float[np.ndarray, "n c h w"]
Labels = Int[np.ndarray, " n"]

# Per-channel statistics the C-NODE authors normalise CIFAR-10 with.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are not where they were looked for (nothing is downloaded)."""


class DatasetFormatError(ValueError):
    """A data set's file exists but does not hold what its format promises."""


def _check_split(reader: str, split: str, choices: Sequence[str]) -> None:
    if split not in choices:
        raise ValueError(f"`{reader}(split={split!r})`: `split` must be one of {tuple(choices)}.")


def _not_found(
    dataset: str, files: Sequence[str], searched: Sequence[Path], how: str
) -> DatasetNotFoundError:
    where = ", ".join(str(p) for p in searched)
    return DatasetNotFoundError(
        f"{dataset} not found: expected the files {', '.join(files)} in {where}. Nothing is "
        f"downloaded at run time: {how} and pass that directory (on the command line: "
        f"data.root=/path/to/dir)."
    )


def _find(root: Path, names: Sequence[str], subdirs: Sequence[str]) -> Path | None:
    """The first of `root/subdir` holding every name (plain or `.gz`)."""
    for subdir in subdirs:
        folder = root / subdir
        if all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in names):
            return folder
    return None


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if len(data) < 4 + 4 * ndim or data[:2] != b"\x00\x00" or data[2] != 0x08 or data[3] != ndim:
        raise DatasetFormatError(
            f"{path} is not an IDX file of unsigned bytes with {ndim} dimension(s) (its header "
            f"is {data[:4].hex() or 'empty'}; expected 000008{ndim:02x})."
        )
    dims = tuple(int(d) for d in np.frombuffer(data, ">i4", ndim, offset=4))
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DatasetFormatError(
            f"{path}: the header promises {dims} = {int(np.prod(dims))} values but the file "
            f"holds {body.size}; the file is truncated or corrupt."
        )
    return body.reshape(dims)


def _idx_path(folder: Path, name: str) -> Path:
    return folder / name if (folder / name).is_file() else folder / f"{name}.gz"


def _read_idx_images(
    dataset: str, root: Path, split: str, subdirs: Sequence[str], how: str
) -> tuple[Images, Labels]:
    """The 28 x 28 IDX image/label pair of `split` (MNIST's layout, shared by Fashion-MNIST)."""
    names = _MNIST_FILES[split]
    folder = _find(root, names, subdirs)
    if folder is None:
        raise _not_found(
            dataset,
            [f"{n}.gz" for n in names],
            [root / d if d != "." else root for d in subdirs],
            how,
        )
    images = _read_idx(_idx_path(folder, names[0]), 3)
    labels = _read_idx(_idx_path(folder, names[1]), 1)
    if images.shape[1:] != (28, 28):
        raise DatasetFormatError(
            f"{dataset} images in {folder} have shape {images.shape[1:]}; expected (28, 28)."
        )
    _check_labels(dataset, folder, images.shape[0], labels, 10)
    return _scaled(images[:, None]), labels.astype(np.int32)


def read_mnist(root: str | Path, split: str = "train") -> tuple[Images, Labels]:
    """MNIST from its IDX files in `root` (or `root/MNIST/raw`, torchvision's layout).

    **Arguments:**

    - `root`: the directory holding `train-images-idx3-ubyte.gz` etc. (`.gz` optional).
    - `split`: `"train"` (60,000 images) or `"test"` (10,000).

    **Returns:**

    `(images [N, 1, 28, 28] in [0, 1], labels [N] in 0..9)`.
    """
    _check_split("read_mnist", split, tuple(_MNIST_FILES))
    return _read_idx_images(
        "MNIST",
        Path(root),
        split,
        (".", "MNIST/raw"),
        "copy the four IDX files of http://yann.lecun.com/exdb/mnist/ (gzipped or not) "
        "into a directory",
    )


# Where Debian's `dataset-fashion-mnist` package puts the four IDX files.
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


def read_fashion_mnist(
    root: str | Path = FASHION_MNIST_ROOT, split: str = "train"
) -> tuple[Images, Labels]:
    """Fashion-MNIST (Xiao, Rasul and Vollgraf 2017) from its IDX files.

    The files have MNIST's names and format (28 x 28 grey images, 10 classes, 60,000 training
    and 10,000 test images). On Debian and Ubuntu, `apt-get install dataset-fashion-mnist`
    puts them in `FASHION_MNIST_ROOT`, the default `root`.

    **Arguments:**

    - `root`: the directory holding `train-images-idx3-ubyte.gz` etc. (or
        `root/FashionMNIST/raw`, torchvision's layout).
    - `split`: `"train"` or `"test"`.

    **Returns:**

    `(images [N, 1, 28, 28] in [0, 1], labels [N] in 0..9)`.
    """
    _check_split("read_fashion_mnist", split, tuple(_MNIST_FILES))
    return _read_idx_images(
        "Fashion-MNIST",
        Path(root),
        split,
        (".", "FashionMNIST/raw"),
        "install Debian's package with `apt-get install -y dataset-fashion-mnist` (it puts the "
        f"files in {FASHION_MNIST_ROOT}), or copy the four IDX files of the Fashion-MNIST "
        "repository into a directory",
    )


def read_svhn(root: str | Path, split: str = "train") -> tuple[Images, Labels]:
    """SVHN (cropped digits) from `train_32x32.mat` / `test_32x32.mat` in `root`.

    The label 10 of the files stands for the digit 0 and becomes 0.

    **Arguments:**

    - `root`: the directory holding the `.mat` files.
    - `split`: `"train"` (73,257 images), `"test"` (26,032) or `"extra"` (531,131).

    **Returns:**

    `(images [N, 3, 32, 32] in [0, 1], labels [N] in 0..9)`.
    """
    from scipy.io import loadmat

    _check_split("read_svhn", split, tuple(_SVHN_FILES))
    root = Path(root)
    name = _SVHN_FILES[split]
    path = root / name
    if not path.is_file():
        raise _not_found(
            "SVHN",
            [name],
            [root],
            "copy the cropped-digit files of http://ufldl.stanford.edu/housenumbers/ "
            "(train_32x32.mat, test_32x32.mat) into a directory",
        )
    content = loadmat(path)
    if "X" not in content or "y" not in content:
        raise DatasetFormatError(f"{path} holds no arrays `X` and `y`; is it an SVHN file?")
    x, y = np.asarray(content["X"]), np.asarray(content["y"]).reshape(-1)
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DatasetFormatError(
            f"{path}: `X` has shape {x.shape}; expected (32, 32, 3, N) (height, width, "
            "channels, images)."
        )
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DatasetFormatError(f"{path}: labels must be in 1..10 (10 for the digit 0).")
    labels = np.where(y == 10, 0, y)
    _check_labels("SVHN", path, x.shape[3], labels, 10)
    return _scaled(x.transpose(3, 2, 0, 1)), labels.astype(np.int32)


def read_cifar10(root: str | Path, split: str = "train") -> tuple[Images, Labels]:
    """CIFAR-10 from the python pickles in `root/cifar-10-batches-py` (or `root` itself).

    The files are Python pickles: read only copies you trust.

    **Arguments:**

    - `root`: the directory holding `cifar-10-batches-py/`, or that directory.
    - `split`: `"train"` (`data_batch_1..5`, 50,000 images) or `"test"` (`test_batch`,
        10,000).

    **Returns:**

    `(images [N, 3, 32, 32] in [0, 1], labels [N] in 0..9)`, not normalised (see
    `CIFAR10_MEAN`, `CIFAR10_STD`).
    """
    _check_split("read_cifar10", split, tuple(_CIFAR_FILES))
    root = Path(root)
    names = _CIFAR_FILES[split]
    folder = next(
        (f for f in (root / _CIFAR_DIR, root) if all((f / n).is_file() for n in names)), None
    )
    if folder is None:
        raise _not_found(
            "CIFAR-10",
            [f"{_CIFAR_DIR}/{n}" for n in names],
            [root],
            "unpack cifar-10-python.tar.gz of https://www.cs.toronto.edu/~kriz/cifar.html "
            "into a directory",
        )
    images, labels = [], []
    for name in names:
        with (folder / name).open("rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise DatasetFormatError(
                f"{folder / name} is not a CIFAR-10 batch (a dict with b'data', b'labels')."
            )
        data = np.asarray(batch[b"data"], np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DatasetFormatError(
                f"{folder / name}: `data` has shape {data.shape}; expected (N, 3072)."
            )
        batch_labels = np.asarray(batch[b"labels"])
        _check_labels("CIFAR-10", folder / name, data.shape[0], batch_labels, 10)
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(batch_labels)
    return _scaled(np.concatenate(images)), np.concatenate(labels).astype(np.int32)


def load_digits() -> tuple[Images, Labels]:
    """The 8x8 handwritten digits bundled with scikit-learn (1,797 images, 10 classes).

    **Returns:**

    `(images [1797, 1, 8, 8] in [0, 1], labels [1797] in 0..9)`.
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = np.asarray(bunch.data, np.float32).reshape(-1, 1, 8, 8) / 16.0  # pyright: ignore[reportAttributeAccessIssue]
    return images, np.asarray(bunch.target, np.int32)  # pyright: ignore[reportAttributeAccessIssue]


def stratified_split(
    labels: Int[np.ndarray, " n"], fractions: Sequence[float], *, seed: int
) -> list[Int[np.ndarray, " m"]]:
    """Split example indices into parts of the given fractions, class by class.

    Each class is shuffled and cut at the cumulative fractions, so every part has about the
    class proportions of the whole; the indices within each part are shuffled.

    **Arguments:**

    - `labels`: `[N]` class labels.
    - `fractions`: the size of each part as a fraction of N; positive, summing to 1.
    - `seed`: the shuffling seed.

    **Returns:**

    One index array per fraction; together they cover `range(N)` once.
    """
    fractions = [float(f) for f in fractions]
    if not fractions or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(
            f"`stratified_split(fractions={fractions})`: give positive fractions summing to 1."
        )
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    bounds = np.cumsum([0.0, *fractions])
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cuts = np.round(bounds * len(members)).astype(int)
        for i in range(len(fractions)):
            parts[i].append(members[cuts[i] : cuts[i + 1]])
    return [rng.permutation(np.concatenate(p)) for p in parts]


def _check_labels(dataset: str, where: Path, count: int, labels: np.ndarray, classes: int) -> None:
    if labels.shape != (count,):
        raise DatasetFormatError(
            f"{dataset} in {where}: {count} images but labels of shape {labels.shape}; the "
            "image and label files do not belong together."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DatasetFormatError(
            f"{dataset} in {where}: labels must be in 0..{classes - 1}; got "
            f"{labels.min()}..{labels.max()}."
        )


def _scaled(images: np.ndarray) -> Images:
    return np.ascontiguousarray(images, dtype=np.float32) / np.float32(255.0)
