"""Fashion-MNIST's reader on small IDX files written here, and on the real files when present."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from adjoint_lab.data.images import (
    FASHION_MNIST_ROOT,
    DatasetNotFoundError,
    read_fashion_mnist,
)


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    return header + np.asarray(array, np.uint8).tobytes()


def test_fashion_mnist_reads_torchvision_layout(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28))
    labels = np.array([9, 0, 3, 3, 7])
    folder = tmp_path / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
    (folder / "t10k-labels-idx1-ubyte").write_bytes(_idx(labels))
    x, y = read_fashion_mnist(tmp_path, split="test")
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0] * 255, images, atol=1e-3)
    np.testing.assert_array_equal(y, labels)


def test_missing_fashion_mnist_names_the_files_the_package_and_the_field(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        read_fashion_mnist(tmp_path)
    message = str(info.value)
    for needle in (
        "train-images-idx3-ubyte.gz",
        "dataset-fashion-mnist",
        "data.root",
        str(tmp_path),
    ):
        assert needle in message
    with pytest.raises(ValueError, match="split"):
        read_fashion_mnist(tmp_path, split="validation")


@pytest.mark.slow
@pytest.mark.skipif(
    not (Path(FASHION_MNIST_ROOT) / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="needs `apt-get install dataset-fashion-mnist`",
)
def test_real_fashion_mnist_files():
    x, y = read_fashion_mnist(split="test")
    assert x.shape == (10_000, 1, 28, 28)
    assert np.bincount(y).tolist() == [1000] * 10
    assert 0.2 < float(x.mean()) < 0.4
