"""The options of the authors' MNIST C-NODE: convolution methods, path output and activation,
initialisation, and the Fashion-MNIST data config (on small IDX files the tests write)."""

from __future__ import annotations

import math
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab import cnode
from adjoint_lab.cnode._layers import Conv, ConvPath
from adjoint_lab.cnode.configs import ImageFilesDataConfig, load_classification
from adjoint_lab.config import ConfigError
from adjoint_lab.data.images import FASHION_MNIST_ROOT
from tests.cnode.conftest import EULER
from tests.cnode.test_data import write_mnist

METHODS = [cnode.LaxConv(), cnode.Im2colConv(), cnode.ShiftedMatmulConv(), cnode.AutoConv()]


def _direct_conv(x, weight):
    # The definition, with numpy loops: out[p, q] = sum_ij x_pad[p + i, q + j] @ w[i, j].
    size, (h, w) = weight.shape[0], x.shape[:2]
    pad = size // 2
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    out = np.zeros((h, w, weight.shape[-1]))
    for i in range(size):
        for j in range(size):
            out += padded[i : i + h, j : j + w] @ weight[i, j]
    return out


@pytest.mark.parametrize("method", METHODS, ids=lambda m: type(m).__name__)
def test_conv_methods_compute_the_convolution_and_its_gradient(method):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4, 3))
    weight = rng.standard_normal((3, 3, 3, 2))
    # float64 (the suite enables x64).
    ours = method(jnp.asarray(x), jnp.asarray(weight))
    np.testing.assert_allclose(ours, _direct_conv(x, weight), rtol=1e-10, atol=1e-12)
    cotangent = rng.standard_normal((5, 4, 2))

    def pairing(w):
        return jnp.sum(method(jnp.asarray(x), w) * cotangent)

    grad = jax.grad(pairing)(jnp.asarray(weight))
    # Finite differences along a random direction.
    direction = rng.standard_normal(weight.shape)
    eps = 1e-6
    fd = (pairing(weight + eps * direction) - pairing(weight - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(np.sum(grad * direction), fd, rtol=1e-7)


def test_conv_method_is_a_model_option_and_changes_no_value(getkey):
    key = getkey()
    x = jax.random.uniform(key, (2, 1, 6, 6))
    outs = [
        cnode.CNODE((1, 6, 6), 3, width=3, pool=2, conv=m, integrator=EULER, key=key)(x)
        for m in (cnode.LaxConv(), cnode.ShiftedMatmulConv())
    ]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="AbstractConvMethod"):
        Conv(2, 2, 3, method="lax", key=key)


def test_relu6_path_output_bounds_the_directions_and_linear_does_not(getkey):
    key, kz = getkey(), getkey()
    z = 50.0 * jax.random.normal(kz, (6, 6, 1))
    relu6 = ConvPath((6, 6, 1), 8, 3, "mnist", jax.nn.hard_tanh, output=jax.nn.relu6, key=key)
    linear = ConvPath((6, 6, 1), 8, 3, "mnist", jax.nn.hard_tanh, key=key)
    a, b = relu6(0.5, z), linear(0.5, z)
    assert jnp.all((a >= 0) & (a <= 6))
    assert jnp.any((b < 0) | (b > 6))  # the same network without ReLU6 leaves [0, 6]
    np.testing.assert_allclose(a, jnp.clip(b, 0, 6), rtol=1e-6)


def test_initialisation_is_pytorchs_default(getkey):
    """PyTorch's Conv2d / Linear default: U(+-1/sqrt(fan_in)) for weights and biases."""
    conv = Conv(16, 32, 3, key=getkey())
    bound = 1 / math.sqrt(16 * 9)
    for values in (conv.weight, conv.bias):
        assert jnp.max(jnp.abs(values)) <= bound
        assert jnp.max(jnp.abs(values)) > 0.9 * bound  # uniform over the whole interval
    assert abs(float(jnp.std(conv.weight)) - bound / math.sqrt(3)) < 0.05 * bound


def _fashion_files(folder: Path, train: int = 10, test: int = 4) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("test", test)):
        labels = np.arange(count) % 10
        write_mnist(folder, split, rng.integers(0, 256, (count, 28, 28)), labels)


def test_fashion_mnist_split_holds_out_validation_or_trains_on_all(tmp_path):
    _fashion_files(tmp_path)
    held = load_classification(ImageFilesDataConfig("fashion_mnist", str(tmp_path), val_size=3))
    sizes = [len(s.labels) for s in (held.train, held.val, held.test)]
    assert sizes == [7, 3, 4] and held.input_shape == (1, 28, 28)
    # Validation and training images are disjoint and together the training files.
    rows = {tuple(r.ravel()[:40]) for r in np.concatenate([held.train.inputs, held.val.inputs])}
    assert len(rows) == 10
    every = load_classification(ImageFilesDataConfig("fashion_mnist", str(tmp_path), val_size=0))
    assert [len(s.labels) for s in (every.train, every.val, every.test)] == [10, 0, 4]


def test_fashion_mnist_default_root_and_missing_files(tmp_path):
    config = ImageFilesDataConfig("fashion_mnist", None)
    config.validate()
    with pytest.raises(ConfigError) as info:
        ImageFilesDataConfig("mnist", None).validate()
    assert info.value.field == "root"
    with pytest.raises(ConfigError) as info:
        load_classification(ImageFilesDataConfig("fashion_mnist", str(tmp_path / "none")))
    assert info.value.field == "data.root" and "dataset-fashion-mnist" in str(info.value)
    assert FASHION_MNIST_ROOT in str(info.value)


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(FASHION_MNIST_ROOT, "train-images-idx3-ubyte.gz").exists(),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_the_installed_fashion_mnist_files():
    data = load_classification(ImageFilesDataConfig("fashion_mnist", None, val_size=0))
    assert [len(s.labels) for s in (data.train, data.val, data.test)] == [60_000, 0, 10_000]
    assert np.bincount(data.test.labels).tolist() == [1000] * 10
    assert data.train.inputs.min() >= 0 and data.train.inputs.max() <= 1


def test_paper_architecture_option_uses_the_authors_arguments():
    from adjoint_lab.cnode.configs import ODEModelConfig, model_spec

    config = ODEModelConfig(name="canode", architecture="mnist", path_output="relu6")
    config.validate()
    spec = model_spec(config, (1, 28, 28), 10, EULER)
    authors = cnode.PAPER_ARCHITECTURES["mnist"]["canode"]
    assert {k: spec.kwargs[k] for k in ("width", "augment", "k", "path_width", "pool")} == {
        k: authors[k] for k in ("width", "augment", "k", "path_width", "pool")
    }
    assert spec.kwargs["path_output"] is jax.nn.relu6
    model = eqx.filter_eval_shape(spec.make, jax.random.PRNGKey(0))
    assert 83_000 <= cnode.count_parameters(model) <= 89_600
