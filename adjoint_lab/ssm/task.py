"""The `ssm_lm` experiment: train the SSM language model with any gradient method.

Data: byte-level text (the offline default is the Python standard library's sources; a
user's file or folder via `data.path`), or the synthetic long-context tasks selective copying
and associative recall. Before anything runs, XLA's compile-time estimate of the gradient's
memory is compared with the memory available, and a context that cannot fit stops with a
message naming the estimate and the methods that would fit.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from flax import nnx

from ..config.errors import ConfigError
from ..config.schema import SSM_GRADIENTS, ExperimentConfig
from ..core.measure import available_memory, compiled_memory
from ..data.synthetic import associative_recall, selective_copying
from ..data.text import read_text_bytes, split_corpus, stdlib_corpus, text_windows
from ..train.mesh import make_mesh
from ..train.task import Task
from .api import gradient_function
from .config import PRESETS, SSMConfig
from .evaluate import evaluation_function
from .layouts import layer_shardings
from .methods import AbstractSSMGradient, gradient_method
from .model import SSMLM

__all__ = ["SCHEMAS", "MemoryBudgetError", "build"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SSMModelConfig:
    """A preset of `adjoint_lab.ssm.PRESETS`, with optional changes (null keeps the preset's).
    The vocabulary always comes from the data."""

    preset: str = "ssm-ref"
    width: int | None = None
    state_size: int | None = None
    num_layers: int | None = None
    param_dtype: str | None = None

    def validate(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError("preset", self.preset, f"choose one of {', '.join(PRESETS)}")
        for name in ("width", "state_size", "num_layers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(name, value, "must be >= 1, or null for the preset's")
        allowed = ("float32", "float64", "bfloat16", "float16")
        if self.param_dtype is not None and self.param_dtype not in allowed:
            raise ConfigError("param_dtype", self.param_dtype, f"choose one of {allowed}")


@dataclass(frozen=True)
class TextDataConfig:
    """Random windows of `context + 1` bytes; the last `eval_fraction` is held out."""

    path: str | None = None
    max_bytes: int = 8_000_000
    context: int = 512
    eval_fraction: float = 0.05
    eval_batches: int = 4

    def validate(self) -> None:
        if self.context < 1:
            raise ConfigError("context", self.context, "must be >= 1")
        if not 0 < self.eval_fraction < 1:
            raise ConfigError("eval_fraction", self.eval_fraction, "must be in (0, 1)")
        if self.max_bytes < 2 or self.eval_batches < 1:
            raise ConfigError("max_bytes", self.max_bytes, "max_bytes >= 2, eval_batches >= 1")


@dataclass(frozen=True)
class SelectiveCopyingConfig:
    """Selective copying: `num_memorize` tokens among `length` blanks, reproduced in order."""

    length: int = 256
    num_memorize: int = 8
    vocab_size: int = 16
    eval_batches: int = 4

    def validate(self) -> None:
        if self.vocab_size < 3:
            raise ConfigError("vocab_size", self.vocab_size, "must be >= 3")
        if not 1 <= self.num_memorize <= self.length:
            raise ConfigError("num_memorize", self.num_memorize, "must be in [1, length]")


@dataclass(frozen=True)
class AssociativeRecallConfig:
    """Associative recall: `num_pairs` key-value pairs, then a key whose value is asked."""

    num_pairs: int = 32
    vocab_size: int = 130
    eval_batches: int = 4

    def validate(self) -> None:
        if self.num_pairs < 1 or self.num_pairs > (self.vocab_size - 2) // 2:
            raise ConfigError(
                "num_pairs", self.num_pairs, "must be in [1, (vocab_size - 2) // 2] (distinct keys)"
            )


SCHEMAS: dict[tuple[str, str], type] = {
    ("model", "ssm"): SSMModelConfig,
    ("data", "text"): TextDataConfig,
    ("data", "selective_copying"): SelectiveCopyingConfig,
    ("data", "associative_recall"): AssociativeRecallConfig,
}


class MemoryBudgetError(RuntimeError):
    """The gradient of a configuration is estimated not to fit in the available memory."""


def _model_config(config: ExperimentConfig, vocab_size: int) -> SSMConfig:
    model: SSMModelConfig = config.model
    changes = {
        name: getattr(model, name)
        for name in ("width", "state_size", "num_layers", "param_dtype")
        if getattr(model, name) is not None
    }
    return PRESETS[model.preset].replace(vocab_size=vocab_size, **changes)


def _gradient_method(config: ExperimentConfig) -> AbstractSSMGradient:
    """The method from the config's `gradient` group (the options the method takes)."""
    gradient = config.gradient
    if gradient.name not in SSM_GRADIENTS:
        raise ConfigError(
            "gradient.name",
            gradient.name,
            f"the SSM language model takes one of {', '.join(SSM_GRADIENTS)}",
        )
    # Each method's schema holds exactly the options that method takes (config.schema).
    options = {name: getattr(gradient, name) for name in gradient.options()}
    try:
        return gradient_method(gradient.name, **options)
    except ValueError as error:
        raise ConfigError("gradient.name", gradient.name, str(error)) from error


class _Batches:
    """Batches as a function of the step only (so a resumed run sees the same data)."""

    def __init__(self, config: ExperimentConfig):
        self.data = data = config.data
        self.seed = config.seed
        self.batch_size = config.train.batch_size
        if isinstance(data, TextDataConfig):
            corpus = (
                stdlib_corpus(data.max_bytes)
                if data.path is None
                else read_text_bytes(data.path, data.max_bytes)
            )
            self.train_bytes, self.eval_bytes = split_corpus(corpus, data.eval_fraction)
            self.vocab_size, self.context = 256, data.context
        elif isinstance(data, SelectiveCopyingConfig):
            self.vocab_size = data.vocab_size
            self.context = data.length + data.num_memorize
        elif isinstance(data, AssociativeRecallConfig):
            self.vocab_size, self.context = data.vocab_size, 2 * data.num_pairs + 2
        else:
            raise ConfigError(
                "data",
                type(data).__name__,
                "ssm_lm takes text, selective_copying or associative_recall",
            )

    def __call__(self, step: int, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, step, 0 if split == "train" else 1])
        data = self.data
        if isinstance(data, TextDataConfig):
            corpus = self.train_bytes if split == "train" else self.eval_bytes
            tokens = text_windows(corpus, data.context, self.batch_size, rng)
            return tokens, np.ones((self.batch_size, data.context), np.float32)
        if isinstance(data, SelectiveCopyingConfig):
            return selective_copying(
                rng, self.batch_size, data.length, data.num_memorize, data.vocab_size
            )
        return associative_recall(rng, self.batch_size, data.num_pairs, data.vocab_size)


def _check_memory(
    fn: Any, weights: Any, batches: _Batches, method: AbstractSSMGradient, devices: int = 1
) -> None:
    """Stop before anything runs if XLA's estimate of the step exceeds the free memory.
    On a mesh the estimate is per device; simulated CPU devices share the host's memory,
    so it counts `devices` times (an upper bound on a GPU, where each has its own)."""
    tokens, target_weights = batches(0)
    as_spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    args = jax.tree.map(as_spec, (weights, tokens, target_weights))
    estimate = compiled_memory(fn, *args).total * devices
    # Parameters, gradients and two Adam moments live beside the gradient computation.
    state = 3 * sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(weights))
    needed, free = estimate + state, available_memory()
    logger.info("memory estimate %.3g GB (free %.3g GB)", needed / 1e9, free / 1e9)
    if needed > free:
        raise MemoryBudgetError(
            f"gradient={method.name} at context {batches.context} and batch "
            f"{batches.batch_size} needs about {needed / 1e9:.3g} GB (XLA's compile-time "
            f"estimate plus parameters and optimizer state), more than the "
            f"{free / 1e9:.3g} GB available; use gradient=checkpointed or adjoint, a smaller "
            "train.batch_size, or a shorter context."
        )


def _layout(config: ExperimentConfig) -> str | None:
    """The device layout the mesh asks for: a `layer` axis, a `sequence` axis, or both (the
    exact adjoint's 2-D layout)."""
    axes = set(config.mesh.axes)
    if "layer" in axes and "data" in axes:
        raise ConfigError(
            "mesh.axes",
            list(config.mesh.axes),
            "the layer layouts take the axes 'layer' and optionally 'sequence', not 'data'",
        )
    if {"layer", "sequence"} <= axes:
        return "layer_sequence"
    return "layer" if "layer" in axes else "sequence" if "sequence" in axes else None


def build(config: ExperimentConfig, method: AbstractSSMGradient | None = None) -> Task:
    """The `ssm_lm` task of `config`.

    **Arguments:**

    - `config`: the composed experiment config.
    - `method`: the gradient method; `None` builds it from `config.gradient`.

    **Returns:**

    The `Task` (its `value_and_grad` runs `method`).
    """
    batches = _Batches(config)
    model_config = _model_config(config, batches.vocab_size)
    method = _gradient_method(config) if method is None else method
    layout = _layout(config)
    mesh = make_mesh(config.mesh) if layout else None
    if (
        mesh is not None
        and layout in ("layer", "layer_sequence")
        and model_config.num_layers % mesh.shape["layer"]
    ):
        raise ConfigError(
            "mesh.shape",
            list(config.mesh.shape),
            f"the {model_config.num_layers} layers must split evenly over the 'layer' axis",
        )
    try:
        grad_fn = gradient_function(model_config, method, batches.context, mesh, layout)
    except ValueError as error:  # an unsupported method/layout pair: name both
        raise ConfigError("gradient.name", method.name, str(error)) from error
    eval_fn = evaluation_function(model_config, batches.context)

    def init(key):
        model = SSMLM(model_config, rngs=nnx.Rngs(params=key))
        return nnx.to_pure_dict(nnx.state(model, nnx.Param))

    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    _check_memory(grad_fn, shapes, batches, method, devices=mesh.size if mesh else 1)

    def value_and_grad(params, batch, key):
        tokens, target_weights = batch
        loss, grads = grad_fn(params, tokens, target_weights)
        return (loss, {"bits_per_token": loss / math.log(2)}), grads

    def loss(params, batch, key):
        tokens, target_weights = batch
        total, _, weight = eval_fn(params, tokens, target_weights)
        return total / weight, {}

    def evaluate(params):
        totals = np.zeros(3)
        for i in range(config.data.eval_batches):
            tokens, target_weights = batches(i, split="eval")
            totals += np.asarray(eval_fn(params, tokens, target_weights), np.float64)
        loss_value, correct, weight = totals[0] / totals[2], totals[1], totals[2]
        return {
            "loss": float(loss_value),
            "bits_per_token": float(loss_value / math.log(2)),
            "accuracy": float(correct / weight),
        }

    return Task(
        name=f"ssm_lm[{method.name}{f', {layout} layout' if layout else ''}]",
        init=init,
        loss=loss,
        batch=batches,
        batch_size=config.train.batch_size,
        evaluate=evaluate,
        value_and_grad=value_and_grad,
        param_shardings=layer_shardings if layout in ("layer", "layer_sequence") else None,
    )
