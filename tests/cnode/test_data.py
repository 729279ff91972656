"""Data: the image readers on tiny files written in each standard format, and the toys."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
from scipy.io import savemat

from adjoint_lab.cnode import data as toys
from adjoint_lab.data.images import (
    DatasetFormatError,
    DatasetNotFoundError,
    load_digits,
    read_cifar10,
    read_mnist,
    read_svhn,
    stratified_split,
)


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(folder, split, images, labels, compress=True):
    names = {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }[split]
    for name, array in zip(names, (images, labels), strict=True):
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(_idx(array)))
        else:
            (folder / name).write_bytes(_idx(array))


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_mnist_round_trip(tmp_path, rng):
    images = rng.integers(0, 256, (3, 28, 28))
    labels = np.array([7, 0, 9])
    write_mnist(tmp_path, "train", images, labels)
    write_mnist(tmp_path, "test", images[:2], labels[:2], compress=False)
    x, y = read_mnist(tmp_path, "train")
    assert x.shape == (3, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0] * 255, images, atol=1e-4)
    np.testing.assert_array_equal(y, labels)
    assert read_mnist(tmp_path, "test")[0].shape == (2, 1, 28, 28)


def test_mnist_checks_shape_count_and_header(tmp_path, rng):
    write_mnist(tmp_path, "train", rng.integers(0, 256, (3, 28, 28)), np.array([1, 2]))
    with pytest.raises(DatasetFormatError, match="3 images but labels of shape"):
        read_mnist(tmp_path)
    write_mnist(tmp_path, "train", rng.integers(0, 256, (2, 32, 32)), np.array([1, 2]))
    with pytest.raises(DatasetFormatError, match=r"expected \(28, 28\)"):
        read_mnist(tmp_path)
    data = _idx(rng.integers(0, 256, (2, 28, 28)))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data[:-5]))
    with pytest.raises(DatasetFormatError, match="truncated or corrupt"):
        read_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x03"))
    with pytest.raises(DatasetFormatError, match="not an IDX file"):
        read_mnist(tmp_path)


def test_svhn_round_trip(tmp_path, rng):
    x = rng.integers(0, 256, (32, 32, 3, 4)).astype(np.uint8)
    savemat(tmp_path / "train_32x32.mat", {"X": x, "y": np.array([[10], [1], [5], [10]])})
    images, labels = read_svhn(tmp_path, "train")
    assert images.shape == (4, 3, 32, 32)
    np.testing.assert_allclose(images[2] * 255, x[..., 2].transpose(2, 0, 1), atol=1e-4)
    np.testing.assert_array_equal(labels, [0, 1, 5, 0])
    savemat(tmp_path / "test_32x32.mat", {"X": x[:28], "y": np.ones((4, 1))})
    with pytest.raises(DatasetFormatError, match=r"expected \(32, 32, 3, N\)"):
        read_svhn(tmp_path, "test")


def test_cifar10_round_trip(tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (2, 3072)).astype(np.uint8), b"labels": [3, 8]}
        batches[name] = batch
        (folder / name).write_bytes(pickle.dumps(batch))
    images, labels = read_cifar10(tmp_path, "train")
    assert images.shape == (10, 3, 32, 32) and labels.tolist() == [3, 8] * 5
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32)
    np.testing.assert_allclose(images[0] * 255, first, atol=1e-4)
    images, _ = read_cifar10(folder, "test")  # the batches directory itself also works
    assert images.shape == (2, 3, 32, 32)
    (folder / "test_batch").write_bytes(
        pickle.dumps({b"data": np.zeros((2, 10)), b"labels": [0, 1]})
    )
    with pytest.raises(DatasetFormatError, match=r"expected \(N, 3072\)"):
        read_cifar10(tmp_path, "test")


@pytest.mark.parametrize(
    ("reader", "files"),
    [
        (read_mnist, ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]),
        (read_svhn, ["train_32x32.mat"]),
        (read_cifar10, ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/data_batch_5"]),
    ],
)
def test_missing_dataset_names_the_files_and_the_directory(tmp_path, reader, files):
    with pytest.raises(DatasetNotFoundError) as info:
        reader(tmp_path / "nowhere", "train")
    message = str(info.value)
    assert all(name in message for name in files)
    assert str(tmp_path / "nowhere") in message
    assert "Nothing is downloaded" in message and "data.root=" in message
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ValueError, match="`split` must be one of"):
        reader(tmp_path, "validation")


def test_digits_and_stratified_split():
    images, labels = load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.max() == 1.0 and images.min() == 0.0
    parts = stratified_split(labels, (0.65, 0.15, 0.2), seed=0)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(labels)))
    assert [len(p) for p in parts] == pytest.approx([0.65 * 1797, 0.15 * 1797, 0.2 * 1797], abs=10)
    for part in parts:  # every class in every part, in proportion
        counts = np.bincount(labels[part], minlength=10) / len(part)
        np.testing.assert_allclose(counts, np.bincount(labels) / len(labels), atol=0.02)
    again = stratified_split(labels, (0.65, 0.15, 0.2), seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    with pytest.raises(ValueError, match="summing to 1"):
        stratified_split(labels, (0.5, 0.2), seed=0)


def test_synthetic_sets():
    x, y = toys.crossing_map()
    np.testing.assert_array_equal(y, -x)
    points, labels = toys.annuli(100, 200, seed=1)
    radius = np.linalg.norm(points, axis=1)
    assert np.all(radius[labels == 0] <= 0.5) and np.all(
        (radius[labels == 1] >= 1.0) & (radius[labels == 1] <= 1.5)
    )
    assert np.bincount(labels).tolist() == [100, 200]
    with pytest.raises(ValueError, match="inner_radius < outer_radii"):
        toys.annuli(inner_radius=1.2)
    for make in (toys.interleaved_spirals, toys.shifted_sines):
        points, labels = make(50, seed=2)
        assert points.shape == (100, 2) and np.bincount(labels).tolist() == [50, 50]
        assert np.array_equal(make(50, seed=2)[0], points)
    points, labels = toys.shifted_sines(200, shift=1.4, noise=0.0)
    residual = points[:, 1] - np.sin(np.pi * points[:, 0])
    np.testing.assert_allclose(residual, np.where(labels == 1, 0.7, -0.7), atol=1e-5)
