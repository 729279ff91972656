"""Training tasks of the C-NODE experiments, built from the frozen experiment config.

- `build_classification` (task `cnode_classification`): any model of `MODELS` on digits,
  MNIST, Fashion-MNIST, SVHN, CIFAR-10 or a 2-D toy set; logs forward NFE; evaluates on the
  validation and the test split (model selection must use the validation split, unlike the
  authors' code; with `data.val_size=0` there is no validation split and no selection).
- `build_crossing` (task `cnode_crossing`): fit the map -1 -> +1, +1 -> -1 with the final
  state itself (no head). C-NODE (and SONODE, and augmented models) can; NODE cannot do
  better than a mean squared error of 1.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..config.build import build_integrator
from ..config.schema import ExperimentConfig
from ..core.ode import Integrator
from ..train import compile_unoptimized
from ..train.task import Task
from . import data as synthetic
from ._losses import accuracy
from ._params import MODELS, count_parameters
from .configs import (
    LOSSES,
    ClassificationData,
    CrossingDataConfig,
    DigitsDataConfig,
    ImageFilesDataConfig,
    ModelSpec,
    ODEModelConfig,
    ToyDataConfig,
    load_classification,
    model_spec,
)

__all__ = ["CLASSIFICATION_SCHEMAS", "CROSSING_SCHEMAS", "build_classification", "build_crossing"]

logger = logging.getLogger(__name__)

# The (group, option) -> schema registrations of each task (see `adjoint_lab.tasks.TASKS`).
_MODEL_SCHEMAS: dict[tuple[str, str], type] = {("model", name): ODEModelConfig for name in MODELS}
CLASSIFICATION_SCHEMAS: dict[tuple[str, str], type] = {
    **_MODEL_SCHEMAS,
    ("data", "digits"): DigitsDataConfig,
    **{
        ("data", name): ImageFilesDataConfig
        for name in ("mnist", "fashion_mnist", "svhn", "cifar10")
    },
    **{("data", name): ToyDataConfig for name in ("annuli", "spirals", "sines")},
}
CROSSING_SCHEMAS: dict[tuple[str, str], type] = {
    **_MODEL_SCHEMAS,
    ("data", "crossing"): CrossingDataConfig,
}


def integrator_from_config(config: ExperimentConfig) -> Integrator:
    """The `adjoint_lab.core.Integrator` of the config's `solver` and `gradient` sections."""
    return build_integrator(config.solver, config.gradient)


def _describe(spec: ModelSpec, parameters: int) -> dict[str, Any]:
    skip = {"integrator", "path_activation", "path_output", "conv"}
    if len(spec.input_shape) == 1:
        skip |= {"style", "pool"}  # image-only options
    options = {k: v for k, v in spec.kwargs.items() if k not in skip}
    return {
        "model": spec.factory.__name__,
        "parameters": parameters,
        "input_shape": list(spec.input_shape),
        "num_classes": spec.num_classes,
        **options,
    }


def _is_parameter(leaf: Any) -> bool:
    return isinstance(leaf, jax.ShapeDtypeStruct) or eqx.is_inexact_array(leaf)


def _init_and_static(spec: ModelSpec) -> tuple[Callable, Any, int]:
    """`key -> parameters`, the model's static part, and its parameter count.

    The static part comes from an abstract model (no arrays are made), and the
    initialisation is compiled as one program (`adjoint_lab.train.compile_unoptimized`, when
    first called): on CPU, drawing each parameter shape eagerly compiles its own random kernel,
    and XLA's full optimisation of the whole program takes seconds more.
    """
    shapes, static = eqx.partition(
        eqx.filter_eval_shape(spec.make, jax.random.PRNGKey(0)), _is_parameter
    )

    def make(key):
        return eqx.partition(spec.make(key), eqx.is_inexact_array)[0]

    compiled = []  # compiled at the first call's key shape, then reused

    def init(key):
        if not compiled:
            compiled.append(compile_unoptimized(make, key))
        return compiled[0](key)

    return init, static, count_parameters(shapes)


def build_classification(config: ExperimentConfig, integrator: Integrator | None = None) -> Task:
    """The classification task of `config` (`task: cnode_classification`).

    **Arguments:**

    - `config`: the experiment config.
    - `integrator`: the models' solve; `None` builds it from the config's `solver` and
        `gradient` sections (`integrator_from_config`).

    **Returns:**

    The `adjoint_lab.train.Task`.
    """
    data: ClassificationData = load_classification(config.data)
    if integrator is None:
        integrator = integrator_from_config(config)
    spec = model_spec(config.model, data.input_shape, data.num_classes, integrator)
    init, static, parameters = _init_and_static(spec)
    description = {
        **_describe(spec, parameters),
        "data": data.name,
        "examples": {s: len(getattr(data, s).labels) for s in ("train", "val", "test")},
    }
    logger.info("cnode_classification: %s", json.dumps(description))
    loss_fn = LOSSES[config.model.loss]
    per_example = jax.vmap(lambda logits, label: loss_fn(logits[None], label[None]))
    batch_size = config.train.batch_size
    train_x, train_y = data.train
    eval_batch = config.data.eval_batch_size

    def loss(params, batch, key):
        x, y = batch
        logits, stats = eqx.combine(params, static).logits_and_stats(x)
        return loss_fn(logits, y), {"accuracy": accuracy(logits, y), "nfe": stats["nfe"]}

    def batch(step):
        rng = np.random.default_rng([config.seed, step])
        which = rng.choice(len(train_y), batch_size, replace=batch_size > len(train_y))
        return train_x[which], train_y[which]

    @jax.jit
    def evaluate_chunk(params, x, y, weight):
        logits, stats = eqx.combine(params, static).logits_and_stats(x)
        correct = (jnp.argmax(logits, axis=-1) == y).astype(logits.dtype)
        return (
            jnp.sum(weight * per_example(logits, y)),
            jnp.sum(weight * correct),
            stats["nfe"],
        )

    def evaluate_split(params, x, y):
        size = min(eval_batch, len(y))
        totals = np.zeros(2)
        nfes = []
        for start in range(0, len(y), size):
            # Pad the last chunk with examples from the start, weighted zero, so every chunk
            # has one shape (one compilation) and holds real images.
            index = np.arange(start, start + size) % len(y)
            weight = (np.arange(start, start + size) < len(y)).astype(np.float32)
            loss_sum, correct, nfe = evaluate_chunk(params, x[index], y[index], weight)
            totals += [float(loss_sum), float(correct)]
            nfes.append(int(nfe))
        return totals / len(y), float(np.mean(nfes))

    def evaluate(params):
        (test_loss, test_accuracy), nfe = evaluate_split(params, *data.test)
        metrics = {"test_accuracy": test_accuracy, "test_loss": test_loss, "nfe": nfe}
        # With `data.val_size=0` (the authors' choice: all training images) there is no
        # validation split, and no val_* metric rather than a NaN one.
        if len(data.val[1]):
            (val_loss, val_accuracy), nfe = evaluate_split(params, *data.val)
            metrics.update(val_accuracy=val_accuracy, val_loss=val_loss, nfe=nfe)
        return metrics

    def report(params, run_dir: Path):
        (run_dir / "model.json").write_text(json.dumps(description, indent=2) + "\n")

    return Task(
        name=f"cnode_classification ({description['model']} on {data.name})",
        init=init,
        loss=loss,
        batch=batch,
        batch_size=batch_size,
        evaluate=evaluate,
        report=report,
    )


def build_crossing(config: ExperimentConfig, integrator: Integrator | None = None) -> Task:
    """The crossing-map task of `config` (`task: cnode_crossing`).

    **Arguments:**

    - `config`: the experiment config.
    - `integrator`: the model's solve; `None` builds it from the config's `solver` and
        `gradient` sections (`integrator_from_config`).

    **Returns:**

    The `adjoint_lab.train.Task`.
    """
    inputs, targets = synthetic.crossing_map()
    if integrator is None:
        integrator = integrator_from_config(config)
    spec = model_spec(config.model, (1,), None, integrator)
    init, static, parameters = _init_and_static(spec)
    description = _describe(spec, parameters)
    logger.info("cnode_crossing: %s", json.dumps(description))
    batch_size = config.train.batch_size
    tolerance = config.data.tolerance

    def loss(params, batch, key):
        x, y = batch
        out, stats = eqx.combine(params, static).logits_and_stats(x)
        return jnp.mean((out - y) ** 2), {"nfe": stats["nfe"]}

    def batch(step):
        return np.resize(inputs, (batch_size, 1)), np.resize(targets, (batch_size, 1))

    @jax.jit
    def predict(params):
        return eqx.combine(params, static).logits_and_stats(inputs)

    def evaluate(params):
        out, stats = predict(params)
        out = np.asarray(out)
        mse = float(np.mean((out - targets) ** 2))
        return {
            "mse": mse,
            "fits": float(mse < tolerance),
            "u1_at_minus1": float(out[0, 0]),
            "u1_at_plus1": float(out[1, 0]),
            "nfe": int(stats["nfe"]),
        }

    def report(params, run_dir: Path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        model = eqx.combine(params, static)
        s = jnp.linspace(0.0, 1.0, 101)
        paths = np.asarray(model.trajectory(jnp.asarray(inputs), s))[..., 0]
        fig, axis = plt.subplots(figsize=(5, 4))
        for i, z in enumerate(inputs[:, 0]):
            axis.plot(np.asarray(s), paths[:, i], label=f"U(0) = {z:+g}")
        axis.scatter([1.0, 1.0], targets[:, 0], color="k", marker="x", label="targets")
        axis.set(xlabel="s", ylabel="U(s)", title=f"{description['model']}: crossing map")
        axis.legend()
        fig.tight_layout()
        fig.savefig(run_dir / "trajectories.png", dpi=110)
        plt.close(fig)
        (run_dir / "model.json").write_text(json.dumps(description, indent=2) + "\n")

    return Task(
        name=f"cnode_crossing ({description['model']})",
        init=init,
        loss=loss,
        batch=batch,
        batch_size=batch_size,
        evaluate=evaluate,
        report=report,
    )
