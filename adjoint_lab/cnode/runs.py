"""Plain training runs of the C-NODE classifiers, for the reproduction scripts in `experiments/`.

The Hydra task (`adjoint_lab.cnode.tasks`) trains one model and one seed per run directory;
the experiments need many (model, seed) pairs in one process, so this module trains them in a
loop that compiles each model's step once and reuses it for every seed. It also measures
what the paper's tables report: parameters, forward and backward NFE, time per epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ..config.schema import OptimConfig
from ..core.ode import Integrator, count_evaluations
from ..data import images as image_files
from ..train import (
    TrainState,
    compile_unoptimized,
    make_optimizer,
    train_step,
    value_and_grad_of,
)
from ._fields import BatchedField
from ._losses import cross_entropy
from ._params import count_parameters
from .configs import ClassificationData, ModelSpec, ODEModelConfig, Split, model_spec

__all__ = [
    "DIGITS_OPTIONS",
    "RunResult",
    "TrainSettings",
    "digits_data",
    "digits_spec",
    "evaluation_counts",
    "parameter_count",
    "Split",
    "evaluate_accuracy",
    "train_classifier",
]

# The models' extra options at digits scale (as in configs/model/*.yaml): channels appended
# (augment) or produced by the input layer (lift), and C-NODE's k and path width.
DIGITS_OPTIONS: dict[str, dict[str, Any]] = {
    "node": {},
    "anode": {"augment": 5},
    "ilnode": {"lift": 6},
    "ilanode": {"lift": 4, "augment": 2},
    "sonode": {"lift": 3},
    "cnode": {"k": 2, "path_width": 4},
    "canode": {"k": 2, "path_width": 4, "augment": 5},
    "cilnode": {"k": 2, "path_width": 4, "lift": 6},
    "cilanode": {"k": 2, "path_width": 4, "lift": 4, "augment": 2},
}


def digits_data(
    val_fraction: float = 0.15, test_fraction: float = 0.2, split_seed: int = 0
) -> ClassificationData:
    """scikit-learn's 8x8 digits, split train / validation / test by class (as `data=digits`)."""
    x, y = image_files.load_digits()
    parts = image_files.stratified_split(
        y, (1 - val_fraction - test_fraction, val_fraction, test_fraction), seed=split_seed
    )
    train, val, test = (Split(x[i], y[i]) for i in parts)
    return ClassificationData("digits", train, val, test, (1, 8, 8), 10)


def digits_spec(
    name: str,
    integrator: Integrator,
    *,
    param_budget: int | None = 10_000,
    width: int | None = None,
    input_shape: tuple[int, ...] = (1, 8, 8),
    **overrides: Any,
) -> ModelSpec:
    """The model `name` at digits scale, its width matched to `param_budget` unless given."""
    options = {**DIGITS_OPTIONS[name], **overrides}
    config = ODEModelConfig(
        name=name, width=width, param_budget=None if width else param_budget, **options
    )
    config.validate()
    return model_spec(config, input_shape, 10, integrator)


@dataclass(frozen=True)
class TrainSettings:
    """AdamW with a warm-up then cosine decay (as `experiment=cnode_digits`), or a step decay.

    `decay_every` > 0 instead multiplies the rate by `decay_factor` every `decay_every`
    epochs, without warm-up (the authors' MNIST schedule: x0.9 every 5 epochs). `loss` maps
    `(logits, labels)` to the mean loss. `test_every_epoch` records the test accuracy after
    every epoch (`RunResult.epoch_test_accuracy`); the final-epoch value is still the result.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_steps: int = 20
    eval_batch_size: int = 256
    decay_every: int = 0
    decay_factor: float = 0.9
    loss: Callable[[Array, Array], Array] = cross_entropy
    test_every_epoch: bool = False

    def optim_config(self, total_steps: int, steps_per_epoch: int = 1) -> OptimConfig:
        """The optimiser of `total_steps` steps, for `adjoint_lab.train.make_optimizer`."""
        if self.decay_every > 0:
            every = self.decay_every * steps_per_epoch
            return OptimConfig(
                name="adamw",
                lr=self.lr,
                weight_decay=self.weight_decay,
                schedule="step",
                decay_factor=self.decay_factor,
                decay_boundaries=tuple(range(every, max(total_steps, every + 1), every)),
            )
        return OptimConfig(
            name="adamw",
            lr=self.lr,
            weight_decay=self.weight_decay,
            schedule="warmup_cosine",
            # The warm-up must end before the last step (a short run still decays).
            warmup_steps=min(self.warmup_steps, total_steps - 1),
        )


@dataclass
class RunResult:
    """One (model, seed) run: final-epoch accuracies (no selection on the test set)."""

    seed: int
    val_accuracy: float
    test_accuracy: float
    epoch_seconds: list[float] = field(default_factory=list)
    train_nfe: float = float("nan")  # mean forward NFE of a training batch
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    epoch_test_accuracy: list[float] = field(default_factory=list)  # if test_every_epoch
    params: Any = None  # the trained parameters (combine with the model's static part)


def _parameter_leaf(leaf: Any) -> bool:
    return eqx.is_inexact_array(leaf)


def evaluate_accuracy(
    model: Any, x: Float[np.ndarray, " n *shape"], y: Int[np.ndarray, " n"], batch: int = 256
) -> float:
    """The accuracy of `model` on `(x, y)`, in equal-shape chunks (one compilation)."""
    params, static = eqx.partition(model, _parameter_leaf)
    return _accuracy(params, static, x, y, batch)


@eqx.filter_jit
def _correct(params: Any, static: Any, x: Array, y: Array, weight: Array) -> Array:
    logits = eqx.combine(params, static)(x)
    return jnp.sum(weight * (jnp.argmax(logits, axis=-1) == y))


def _accuracy(params: Any, static: Any, x: np.ndarray, y: np.ndarray, batch: int) -> float:
    size = min(batch, len(y))
    correct = 0.0
    for start in range(0, len(y), size):
        # Pad the last chunk with real examples weighted zero: one shape, one compilation.
        index = np.arange(start, start + size) % len(y)
        weight = (np.arange(start, start + size) < len(y)).astype(np.float32)
        correct += float(_correct(params, static, x[index], y[index], weight))  # pyright: ignore[reportArgumentType]
    return correct / len(y)


def train_classifier(
    spec: ModelSpec, data: ClassificationData, seeds: list[int], settings: TrainSettings
) -> list[RunResult]:
    """Train `spec`'s model once per seed on `data.train`; evaluate the final epoch.

    The seed sets the initialisation and the order of the training examples; the split is
    fixed by `data`. Every epoch visits `len(train) // batch_size` full batches, so every
    step has one shape. Epoch times exclude compilation (a step is compiled before timing).
    """
    x_train, y_train = data.train
    steps_per_epoch = max(1, len(y_train) // settings.batch_size)
    total = steps_per_epoch * settings.epochs
    optimizer = make_optimizer(settings.optim_config(total, steps_per_epoch), total)
    _, static = eqx.partition(eqx.filter_eval_shape(spec.make, jax.random.PRNGKey(0)), _is_param)

    def initial_state(key):
        params = eqx.partition(spec.make(key), eqx.is_inexact_array)[0]
        return TrainState.create(params, optimizer)

    init = compile_unoptimized(initial_state, jax.random.PRNGKey(0))

    def loss(params, batch, key):
        x, y = batch
        logits, stats = eqx.combine(params, static).logits_and_stats(x)
        return settings.loss(logits, y), {"nfe": stats["nfe"]}

    step = jax.jit(train_step(value_and_grad_of(loss), optimizer))
    # The loss draws no random numbers: one key serves every step.
    key = jax.random.PRNGKey(0)
    results = []
    for seed in seeds:
        state = init(jax.random.PRNGKey(seed))
        rng = np.random.default_rng(seed)
        times, losses, nfes, tests = [], [], [], []
        for _ in range(settings.epochs):
            order = rng.permutation(len(y_train))
            start = time.perf_counter()
            epoch_losses = []
            for i in range(steps_per_epoch):
                which = order[i * settings.batch_size : (i + 1) * settings.batch_size]
                state, value, metrics = step(state, (x_train[which], y_train[which]), key)
                epoch_losses.append(value)
                nfes.append(metrics["nfe"])
            losses.append(float(np.mean(jax.device_get(epoch_losses))))
            times.append(time.perf_counter() - start)
            if settings.test_every_epoch:
                tests.append(_accuracy(state.params, static, *data.test, settings.eval_batch_size))
        evaluate = settings.eval_batch_size
        params = state.params
        results.append(
            RunResult(
                seed=seed,
                val_accuracy=(
                    _accuracy(params, static, *data.val, evaluate)
                    if len(data.val.labels)
                    else float("nan")
                ),
                test_accuracy=tests[-1]
                if tests
                else _accuracy(params, static, *data.test, evaluate),
                epoch_test_accuracy=tests,
                # The first epoch of the first seed includes compilation: drop it then.
                epoch_seconds=times[1:] if seed == seeds[0] and len(times) > 1 else times,
                train_nfe=float(np.mean(jax.device_get(nfes))),
                losses=losses,
                params=params,
            )
        )
    return results


def _is_param(leaf: Any) -> bool:
    return isinstance(leaf, jax.ShapeDtypeStruct) or eqx.is_inexact_array(leaf)


def evaluation_counts(
    model: Any, x: Float[Array, " batch *shape"], y: Int[Array, " batch"]
) -> tuple[int, int]:
    """Forward and backward vector-field evaluations of one training step on `(x, y)`.

    Counted at run time by `adjoint_lab.core.count_evaluations` (every evaluation and every
    vector-Jacobian product of the batched field), so the backward count includes the
    gradient method's recomputation; the batch is one solve, as in training.
    """
    x = jnp.asarray(x)
    images = x.ndim == 4

    def loss(batched_field, model, x, y):
        xs = jnp.moveaxis(x, 1, -1) if images else x  # channels-last inside the models
        u0 = jax.vmap(model.initial)(xs)
        sol = model.integrator.solve(batched_field, 0.0, 1.0, u0, xs)
        return cross_entropy(jax.vmap(model.head)(sol.ys[-1]), y)

    counts = count_evaluations(loss, BatchedField(model.field), model, x, jnp.asarray(y))
    return counts.forward, counts.backward


def parameter_count(spec: ModelSpec) -> int:
    """The parameter count of `spec`'s model (from shapes only)."""
    return count_parameters(eqx.filter_eval_shape(spec.make, jax.random.PRNGKey(0)))
