"""The `parabolic_generative` experiment: one generative task on reused base paths.

The target is a Gaussian task N(c (1, ..., 1), std^2 I) in d dimensions. A drift (and a
diffusion) is trained by maximising ELBO_IS (`adjoint_lab.parabolic.generative`) on one bank
of stored base paths, from a fixed initial law: the standard Gaussian, or a meta-learned
p_meta (a RealNVP fitted first on samples pooled over `meta_tasks` Gaussians with centres
spread over [0, meta_range]), as in the paper's Figure 3. Evaluation: bits/dim of held-out
samples on fresh paths with the exact divergence, beside the initial law's own bits/dim.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..config.errors import ConfigError, require_at_least, require_one_of, require_positive
from ..config.schema import ExperimentConfig
from ..train.task import Task
from .generative import (
    DiffusionNet,
    DriftNet,
    GenerativeTask,
    bits_per_dim,
    elbo_is,
    fit_meta_distribution,
    standard_normal_log_prob,
)

__all__ = ["GENERATIVE_SCHEMAS", "GaussianTaskConfig", "GenerativeModelConfig", "build"]

logger = logging.getLogger(__name__)
STARTS = ("standard", "meta")


@dataclass(frozen=True)
class GenerativeModelConfig:
    """The initial law (`standard` N(0, I) or `meta` p_meta) and the per-task networks."""

    start: str = "meta"
    width: int = 32
    depth: int = 2
    train_diffusion: bool = True
    meta_tasks: int = 10
    meta_range: float = 10.0
    meta_samples: int = 60  # per meta-training task
    meta_steps: int = 1500  # RealNVP maximum-likelihood steps

    def validate(self) -> None:
        require_one_of("start", self.start, STARTS)
        require_at_least(self, 1, "width", "depth", "meta_tasks", "meta_samples", "meta_steps")
        require_at_least(self, 0, "meta_range")


@dataclass(frozen=True)
class GaussianTaskConfig:
    """The target N(centre (1, ..., 1), std^2 I) and the stored base paths."""

    d: int = 2
    centre: float = 8.0
    std: float = 1.0
    n_train: int = 200
    n_test: int = 500
    T: float = 0.1
    n_paths: int = 75  # stored base paths, reused at every step
    n_steps: int = 40
    test_paths: int = 75  # fresh paths for the reported bits/dim
    test_steps: int = 50

    def validate(self) -> None:
        counts = ("d", "n_train", "n_test", "n_paths", "n_steps", "test_paths", "test_steps")
        require_at_least(self, 1, *counts)
        require_positive(self, "std", "T")


GENERATIVE_SCHEMAS: dict[tuple[str, str], type] = {
    ("model", "generative"): GenerativeModelConfig,
    ("data", "gaussian_task"): GaussianTaskConfig,
}


def _gaussian(rng: np.random.Generator, centre: float, std: float, n: int, d: int) -> np.ndarray:
    return (centre + std * rng.standard_normal((n, d))).astype(jnp.result_type(float))


def _initial_law(model: GenerativeModelConfig, d: int, seed: int):
    """log p0: the standard Gaussian, or p_meta fitted on pooled meta-training tasks."""
    if model.start == "standard":
        return standard_normal_log_prob
    rng = np.random.default_rng([seed, 7])
    centres = np.linspace(0.0, model.meta_range, model.meta_tasks)
    stds = rng.uniform(0.5, 1.5, model.meta_tasks)
    pooled = np.concatenate(
        [_gaussian(rng, c, s, model.meta_samples, d) for c, s in zip(centres, stds, strict=True)]
    )
    flow, losses = fit_meta_distribution(
        jax.random.PRNGKey(seed), jnp.asarray(pooled), steps=model.meta_steps
    )
    logger.info("p_meta: NLL %.3g -> %.3g nats/sample", float(losses[0]), float(losses[-1]))
    return flow.log_prob


def build(config: ExperimentConfig) -> Task:
    model: GenerativeModelConfig = config.model
    data: GaussianTaskConfig = config.data
    if not isinstance(model, GenerativeModelConfig) or not isinstance(data, GaussianTaskConfig):
        raise ConfigError(
            "model",
            type(model).__name__,
            "parabolic_generative takes model=generative data=gaussian_task",
        )
    batch_size = config.train.batch_size
    if batch_size > data.n_train:
        raise ConfigError(
            "train.batch_size", batch_size, f"must be <= data.n_train ({data.n_train})"
        )
    rng = np.random.default_rng([config.seed, 0])
    train = _gaussian(rng, data.centre, data.std, data.n_train, data.d)
    test = jnp.asarray(_gaussian(rng, data.centre, data.std, data.n_test, data.d))
    log_p0 = _initial_law(model, data.d, config.seed)
    k_train, k_test = jax.random.split(jax.random.PRNGKey(config.seed + 1))
    shape = lambda n, k: (n, k, data.d)  # noqa: E731
    train_bank = math.sqrt(data.T / data.n_steps) * jax.random.normal(
        k_train, shape(data.n_paths, data.n_steps)
    )
    test_bank = math.sqrt(data.T / data.test_steps) * jax.random.normal(
        k_test, shape(data.test_paths, data.test_steps)
    )

    def make(key):
        k_drift, k_diffusion = jax.random.split(key)
        return GenerativeTask(
            DriftNet(data.d, model.width, model.depth, key=k_drift),
            DiffusionNet(data.d, key=k_diffusion),
        )

    def trainable(task):
        spec = jax.tree.map(eqx.is_inexact_array, task)
        if not model.train_diffusion:
            spec = eqx.tree_at(lambda t: t.diffusion, spec, replace=False)
        return spec

    template = make(jax.random.PRNGKey(0))
    _, static = eqx.partition(template, trainable(template))

    def init(key):
        task = make(key)
        return eqx.partition(task, trainable(task))[0]

    def batch(step: int):
        pick = np.random.default_rng([config.seed, step, 1]).choice(
            data.n_train, batch_size, replace=False
        )
        return train[pick]

    def loss(params, x, key):
        task = eqx.combine(params, static)
        elbo = elbo_is(task.drift, task.diffusion, log_p0, x, train_bank, data.T, key)
        return -jnp.mean(elbo), {}

    @eqx.filter_jit
    def test_bits(params):
        task = eqx.combine(params, static)  # exact divergence: no probe noise in the metric
        elbo = elbo_is(task.drift, task.diffusion, log_p0, test, test_bank, data.T, None)
        return bits_per_dim(jnp.mean(elbo), data.d)

    start_only = float(bits_per_dim(jnp.mean(jax.vmap(log_p0)(test)), data.d))

    def evaluate(params):
        return {"bits_per_dim": float(test_bits(params)), "start_only_bits_per_dim": start_only}

    return Task(
        name=f"parabolic_generative[{model.start} start, centre {data.centre:g}]",
        init=init,
        loss=loss,
        batch=batch,
        batch_size=batch_size,
        evaluate=evaluate,
    )
