"""Config schemas of the C-NODE experiments, and the config -> model and data boundary.

The model schema is shared by every model option (`model=cnode`, `model=node`, ...), so an
experiment file can set widths or a parameter budget once for whichever model is chosen.
Nothing below this module sees a model's name as a string.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PRNGKeyArray

from ..config.errors import ConfigError, require
from ..core.ode import Integrator
from ..data import images as image_files
from . import data as synthetic
from ._layers import STYLES, AutoConv, Im2colConv, LaxConv, ShiftedMatmulConv, identity
from ._losses import cross_entropy, double_softmax_cross_entropy
from ._params import MODELS, PAPER_ARCHITECTURES, matched_width

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "softsign": jax.nn.soft_sign,
    "sigmoid": jax.nn.sigmoid,
    "relu": jax.nn.relu,
    "softplus": jax.nn.softplus,
    # The authors' MNIST path network (`nn.Hardtanh`).
    "hardtanh": jax.nn.hard_tanh,
}
# The path network's output: linear, or the authors' ReLU6 (directions a_j in [0, 6]).
PATH_OUTPUTS = {"linear": identity, "relu6": jax.nn.relu6}
CONV_METHODS = {
    "auto": AutoConv,
    "lax": LaxConv,
    "im2col": Im2colConv,
    "matmul": ShiftedMatmulConv,
}
LOSSES = {"cross_entropy": cross_entropy, "double_softmax": double_softmax_cross_entropy}
_NEEDS_AUGMENT = ("anode", "canode", "ilanode", "cilanode")
_NEEDS_LIFT = ("ilnode", "cilnode", "ilanode", "cilanode")


@dataclass(frozen=True)
class ODEModelConfig:
    """A C-NODE-family model (`adjoint_lab.cnode.MODELS`); fields a model lacks are ignored."""

    name: str = "cnode"
    # Hidden channels (units) of each vector-field block; null: the width whose parameter
    # count is closest to `param_budget`.
    width: int | None = None
    param_budget: int | None = None
    # C-models: directions and the path network a(s, z).
    k: int = 2
    path_width: int = 4
    path_activation: str = "tanh"
    # linear, or relu6 (the authors' MNIST code).
    path_output: str = "linear"
    # ANODE-type models: zero channels; IL-type models (and optionally SONODE): lifted channels.
    augment: int = 0
    lift: int | None = None
    # Images: the authors' layer layout (mnist or cifar) and the head's pool size.
    style: str = "mnist"
    pool: int = 4
    loss: str = "cross_entropy"
    # How 3x3 convolutions are computed (same function): auto (fastest on the backend),
    # lax, im2col or matmul.
    conv: str = "auto"
    # null, or a key of adjoint_lab.cnode.PAPER_ARCHITECTURES (mnist, cifar10): the authors'
    # constructor arguments for this model (width, k, path_width, augment, lift, style,
    # pool) replace the fields above.
    architecture: str | None = None

    def validate(self) -> None:
        require(self.name in MODELS, "name", self.name, f"choose one of {', '.join(MODELS)}")
        require(
            self.architecture is None or self.architecture in PAPER_ARCHITECTURES,
            "architecture",
            self.architecture,
            f"choose one of {', '.join(PAPER_ARCHITECTURES)}, or null",
        )
        require(
            self.path_output in PATH_OUTPUTS,
            "path_output",
            self.path_output,
            f"choose one of {', '.join(PATH_OUTPUTS)}",
        )
        require(
            self.conv in CONV_METHODS,
            "conv",
            self.conv,
            f"choose one of {', '.join(CONV_METHODS)}",
        )
        require(
            self.width is not None
            or self.param_budget is not None
            or self.architecture is not None,
            "width",
            self.width,
            "set model.width, or leave it null and set model.param_budget or model.architecture",
        )
        require(self.width is None or self.width > 0, "width", self.width, "must be > 0")
        require(
            self.param_budget is None or self.param_budget > 0,
            "param_budget",
            self.param_budget,
            "must be > 0, or null",
        )
        require(self.k > 0, "k", self.k, "must be > 0")
        require(self.path_width > 0, "path_width", self.path_width, "must be > 0")
        require(
            self.path_activation in ACTIVATIONS,
            "path_activation",
            self.path_activation,
            f"choose one of {', '.join(ACTIVATIONS)}",
        )
        require(self.augment >= 0, "augment", self.augment, "must be >= 0")
        require(
            self.name not in _NEEDS_AUGMENT or self.augment > 0 or self.architecture is not None,
            "augment",
            self.augment,
            f"model {self.name} appends zero channels: set model.augment > 0",
        )
        require(self.lift is None or self.lift > 0, "lift", self.lift, "must be > 0, or null")
        require(
            self.name not in _NEEDS_LIFT or self.lift is not None or self.architecture is not None,
            "lift",
            self.lift,
            f"model {self.name} has an input layer: set model.lift > 0",
        )
        require(self.style in STYLES, "style", self.style, f"choose one of {', '.join(STYLES)}")
        require(self.pool > 0, "pool", self.pool, "must be > 0")
        require(self.loss in LOSSES, "loss", self.loss, f"choose one of {', '.join(LOSSES)}")


class ModelSpec(NamedTuple):
    """A model factory and all its arguments but the key: `make(key)` builds the model."""

    factory: Callable[..., Any]
    input_shape: tuple[int, ...]
    num_classes: int | None
    kwargs: dict[str, Any]

    def make(self, key: PRNGKeyArray) -> Any:
        return self.factory(self.input_shape, self.num_classes, key=key, **self.kwargs)


def model_spec(
    config: ODEModelConfig,
    input_shape: tuple[int, ...],
    num_classes: int | None,
    integrator: Integrator,
) -> ModelSpec:
    """The model of `config` for this data, its width resolved from the budget if needed."""
    factory = MODELS[config.name]
    if config.architecture is not None:
        authors = dict(PAPER_ARCHITECTURES[config.architecture][config.name])
        authors.pop("input_shape")
        config = dataclasses.replace(config, param_budget=None, **authors)
    options = {
        "k": config.k,
        "path_width": config.path_width,
        "path_activation": ACTIVATIONS[config.path_activation],
        "path_output": PATH_OUTPUTS[config.path_output],
        "augment": config.augment,
        "lift": config.lift,
        "style": config.style,
        "pool": min(config.pool, *input_shape[1:]) if len(input_shape) == 3 else config.pool,
        "conv": CONV_METHODS[config.conv](),
        "integrator": integrator,
    }
    accepted = inspect.signature(factory).parameters
    kwargs = {name: value for name, value in options.items() if name in accepted}
    spec = ModelSpec(factory, tuple(input_shape), num_classes, {**kwargs, "width": config.width})
    if config.width is None:
        key = jax.random.PRNGKey(0)

        def with_width(width: int) -> Any:
            return spec._replace(kwargs={**kwargs, "width": width}).make(key)

        width = matched_width(with_width, config.param_budget)  # type: ignore[arg-type]
        spec = spec._replace(kwargs={**kwargs, "width": width})
    return spec


@dataclass(frozen=True)
class DigitsDataConfig:
    """scikit-learn's bundled 8x8 digits, split into train / validation / test by class."""

    val_fraction: float = 0.15
    test_fraction: float = 0.2
    # The split is fixed by `split_seed`, not by the run's seed, so runs share a test set.
    split_seed: int = 0
    eval_batch_size: int = 256

    def validate(self) -> None:
        _check_fractions(self.val_fraction, self.test_fraction)
        require(self.eval_batch_size > 0, "eval_batch_size", self.eval_batch_size, "must be > 0")


@dataclass(frozen=True)
class ImageFilesDataConfig:
    """MNIST, Fashion-MNIST, SVHN or CIFAR-10 from local files.

    The validation split is held out of the training files (the test files are never used
    for selection); `val_size: 0` trains on every training image, as the authors did.
    """

    name: str = "mnist"
    # null: the reader's default directory (fashion_mnist: where Debian's package puts it).
    root: str | None = "data/mnist"
    val_size: int = 5000
    # Normalise per channel with the authors' CIFAR-10 mean and std.
    normalize: bool = False
    split_seed: int = 0
    eval_batch_size: int = 500

    def validate(self) -> None:
        require(self.name in _READERS, "name", self.name, f"choose one of {', '.join(_READERS)}")
        require(
            self.root is not None or self.name in _DEFAULT_ROOTS,
            "root",
            self.root,
            f"set data.root to the directory of the {self.name} files",
        )
        require(self.val_size >= 0, "val_size", self.val_size, "must be >= 0")
        require(
            not self.normalize or self.name not in ("mnist", "fashion_mnist"),
            "normalize",
            self.normalize,
            "uses CIFAR-10's per-channel statistics: only for 3-channel data (svhn, cifar10)",
        )
        require(self.eval_batch_size > 0, "eval_batch_size", self.eval_batch_size, "must be > 0")


@dataclass(frozen=True)
class ToyDataConfig:
    """A synthetic 2-D classification set: annuli, spirals or sines (`adjoint_lab.cnode.data`)."""

    name: str = "annuli"
    # Points per class (annuli: the inner disc; the shell gets twice as many).
    n_per_class: int = 1000
    noise: float = 0.1
    # sines: the vertical shift between the two curves.
    shift: float = 1.4
    val_fraction: float = 0.15
    test_fraction: float = 0.35
    split_seed: int = 0
    eval_batch_size: int = 512

    def validate(self) -> None:
        require(self.name in _TOYS, "name", self.name, f"choose one of {', '.join(_TOYS)}")
        require(self.n_per_class > 0, "n_per_class", self.n_per_class, "must be > 0")
        require(self.noise >= 0, "noise", self.noise, "must be >= 0")
        _check_fractions(self.val_fraction, self.test_fraction)
        require(self.eval_batch_size > 0, "eval_batch_size", self.eval_batch_size, "must be > 0")


@dataclass(frozen=True)
class CrossingDataConfig:
    """The two-point map -1 -> +1, +1 -> -1 (`adjoint_lab.cnode.data.crossing_map`)."""

    # A fit counts as exact when the mean squared error is below this.
    tolerance: float = 1e-3

    def validate(self) -> None:
        require(self.tolerance > 0, "tolerance", self.tolerance, "must be > 0")


def _check_fractions(val: float, test: float) -> None:
    require(0 < val < 1, "val_fraction", val, "must be in (0, 1)")
    require(0 < test < 1, "test_fraction", test, "must be in (0, 1)")
    require(val + test < 1, "test_fraction", test, "val_fraction + test_fraction must be < 1")


class Split(NamedTuple):
    inputs: np.ndarray
    labels: np.ndarray


class ClassificationData(NamedTuple):
    """Train / validation / test splits and what a model needs to know about them."""

    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int


_READERS = {
    "mnist": image_files.read_mnist,
    "fashion_mnist": image_files.read_fashion_mnist,
    "svhn": image_files.read_svhn,
    "cifar10": image_files.read_cifar10,
}
_DEFAULT_ROOTS = {"fashion_mnist": image_files.FASHION_MNIST_ROOT}
_TOYS = {
    "annuli": lambda c, seed: synthetic.annuli(c.n_per_class, 2 * c.n_per_class, seed=seed),
    "spirals": lambda c, seed: synthetic.interleaved_spirals(
        c.n_per_class, noise=c.noise, seed=seed
    ),
    "sines": lambda c, seed: synthetic.shifted_sines(
        c.n_per_class, shift=c.shift, noise=c.noise, seed=seed
    ),
}


def _three_way(name: str, x: np.ndarray, y: np.ndarray, val: float, test: float, seed: int):
    train_idx, val_idx, test_idx = image_files.stratified_split(
        y, (1 - val - test, val, test), seed=seed
    )
    splits = [Split(x[i], y[i]) for i in (train_idx, val_idx, test_idx)]
    return ClassificationData(name, *splits, tuple(x.shape[1:]), int(y.max()) + 1)  # pyright: ignore[reportCallIssue]


def load_classification(config: Any) -> ClassificationData:
    """The splits of a classification data config (digits, image files or a toy set).

    **Raises:**

    `ConfigError` for `data.root` when image files are missing (its message names them).
    """
    if isinstance(config, DigitsDataConfig):
        x, y = image_files.load_digits()
        return _three_way(
            "digits", x, y, config.val_fraction, config.test_fraction, config.split_seed
        )
    if isinstance(config, ToyDataConfig):
        x, y = _TOYS[config.name](config, config.split_seed)
        return _three_way(
            config.name, x, y, config.val_fraction, config.test_fraction, config.split_seed
        )
    if isinstance(config, ImageFilesDataConfig):
        read = _READERS[config.name]
        root = _DEFAULT_ROOTS[config.name] if config.root is None else config.root
        try:
            x, y = read(root, "train")
            x_test, y_test = read(root, "test")
        except image_files.DatasetNotFoundError as error:
            # A user error: the CLI prints it as one line.
            raise ConfigError("data.root", root, str(error)) from error
        if config.val_size >= len(y):
            raise ConfigError(
                "data.val_size", config.val_size, f"must be below the {len(y)} training images"
            )
        # A random hold-out of exactly val_size images (near-stratified at these sizes).
        order = np.random.default_rng(config.split_seed).permutation(len(y))
        val_idx, train_idx = order[: config.val_size], order[config.val_size :]
        if config.normalize:
            mean = np.asarray(image_files.CIFAR10_MEAN, np.float32)[:, None, None]
            std = np.asarray(image_files.CIFAR10_STD, np.float32)[:, None, None]
            x, x_test = (x - mean) / std, (x_test - mean) / std
        return ClassificationData(
            config.name,
            Split(x[train_idx], y[train_idx]),
            Split(x[val_idx], y[val_idx]),
            Split(x_test, y_test),
            tuple(x.shape[1:]),
            10,
        )
    raise ConfigError(
        "data",
        type(config).__name__,
        "the classification task takes data=digits, mnist, fashion_mnist, svhn, cifar10, annuli, "
        "spirals or sines",
    )
