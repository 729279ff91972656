"""The `parabolic_ngo` experiment: train a Neural Girsanov Operator with the shared loop.

Each training step draws a batch of drifts of the paper's random-basis family
mu_i = c0 + c1 x_i + c2 x_i^2 (the batch size counts drifts), sine initial data with random
phases and points in [x_low, x_high]^d, and fits the NGO estimate on one bank of base paths
to the direct-Girsanov estimate on an independent bank. Evaluation uses held-out drifts of the
affine sub-family (c2 = 0), whose solution is exact, and puts the NGO beside plain Girsanov
re-weighting and Euler-Maruyama on the same Brownian increments (common random numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..config.errors import (
    ConfigError,
    require,
    require_at_least,
    require_one_of,
    require_positive,
)
from ..config.schema import ExperimentConfig
from ..train.task import Task
from .drift_family import RandomBasisDrift, SineInitial, affine_sine_exact
from .euler_maruyama import euler_maruyama_expectation
from .ngo import INITS, NeuralGirsanovOperator, ngo_expectation
from .ngo_training import NGOTrainingConfig, ngo_task_loss
from .paths import BasePaths

__all__ = ["SCHEMAS", "DriftFamilyConfig", "NGOModelConfig", "build"]


@dataclass(frozen=True)
class NGOModelConfig:
    """The operator's shape (`NeuralGirsanovOperator`)."""

    width: int = 32
    depth: int = 2
    n_mixers: int = 2
    kernel: int = 3
    clip: float = 30.0
    init: str = "zero"  # or "girsanov": start from the exact Girsanov weight

    def validate(self) -> None:
        require_at_least(self, 1, "width", "depth", "kernel")
        require_at_least(self, 0, "n_mixers")
        require_positive(self, "clip")
        require_one_of("init", self.init, INITS)


@dataclass(frozen=True)
class DriftFamilyConfig:
    """The task distribution: dp/dt = mu . grad p + sigma^2/2 lap p on [0, T] in d dimensions."""

    d: int = 2
    T: float = 0.1
    n_steps: int = 40
    n_paths: int = 256  # per NGO estimate in training
    n_target_paths: int = 1024  # per Girsanov target in training
    n_points: int = 4  # points per drift
    x_low: float = 0.1
    x_high: float = 0.6
    c_low: tuple[float, ...] = (0.0, 0.0, 0.0)
    c_high: tuple[float, ...] = (1.0, 1.0, 1.0)
    omega: float = math.pi
    random_phase: bool = True
    sigma: float = 1.0
    eval_drifts: int = 16  # held-out affine drifts (exact solution)
    eval_paths: int = 1000  # paths per estimate at evaluation, every method

    def validate(self) -> None:
        require_at_least(self, 1, "d", "n_steps", "n_points", "eval_drifts")
        require_at_least(self, 2, "n_paths", "n_target_paths", "eval_paths", why=" (a stderr)")
        require_positive(self, "T", "sigma", "omega")
        require(self.x_low < self.x_high, "x_high", self.x_high, f"must be > x_low = {self.x_low}")
        for name in ("c_low", "c_high"):
            value = list(getattr(self, name))
            require(len(value) == 3, name, value, "must have 3 entries (c0, c1, c2)")
        ordered = all(lo <= hi for lo, hi in zip(self.c_low, self.c_high, strict=True))
        require(ordered, "c_high", list(self.c_high), "must be >= c_low entrywise")


SCHEMAS: dict[tuple[str, str], type] = {
    ("model", "ngo"): NGOModelConfig,
    ("data", "drift_family"): DriftFamilyConfig,
}


def _training_config(data: DriftFamilyConfig, n_tasks: int) -> NGOTrainingConfig:
    return NGOTrainingConfig(
        T=data.T,
        n_steps=data.n_steps,
        n_paths=data.n_paths,
        n_target_paths=data.n_target_paths,
        n_tasks=n_tasks,
        n_points=data.n_points,
        x_low=data.x_low,
        x_high=data.x_high,
        c_low=tuple(data.c_low),  # pyright: ignore[reportArgumentType]
        c_high=tuple(data.c_high),  # pyright: ignore[reportArgumentType]
        omega=data.omega,
        random_phase=data.random_phase,
        sigma=data.sigma,
    )


def _tasks(data: DriftFamilyConfig, rng: np.random.Generator, n: int, affine: bool):
    """`n` drift coefficient vectors, phases and point sets, from a NumPy generator."""
    low, high = np.asarray(data.c_low), np.asarray(data.c_high)
    c = low + (high - low) * rng.random((n, 3))
    if affine:
        c[:, 2] = 0.0
    phase = 2 * np.pi * rng.random(n) if data.random_phase else np.zeros(n)
    x = rng.uniform(data.x_low, data.x_high, (n, data.n_points, data.d))
    return c, phase, x


def _evaluation(data: DriftFamilyConfig, seed: int, static: Any):
    """Held-out affine drifts: NGO vs Girsanov vs Euler-Maruyama against the exact solution."""
    rng = np.random.default_rng([seed, 2**31 - 1])
    c, phase, x = (jnp.asarray(a) for a in _tasks(data, rng, data.eval_drifts, affine=True))
    key = jax.random.PRNGKey(seed + 1)

    @eqx.filter_jit
    def run(params):
        operator = eqx.combine(params, static)
        dtype = jnp.result_type(float)

        def one(coefficients, shift, points, k):
            drift, p0 = RandomBasisDrift(coefficients.astype(dtype)), SineInitial(data.omega, shift)
            paths = BasePaths.sample(
                k, points.astype(dtype), T=data.T, n_paths=data.eval_paths,
                n_steps=data.n_steps, sigma=data.sigma,
            )  # fmt: skip
            exact = affine_sine_exact(coefficients, p0, data.T, points, data.sigma)
            estimates = (
                ngo_expectation(operator, paths, drift, p0).value,
                paths.expectation(drift, p0).value,
                euler_maruyama_expectation(paths, drift, p0).value,
            )
            return exact, estimates

        exact, estimates = jax.vmap(one)(c, phase, x, jax.random.split(key, data.eval_drifts))
        scale = jnp.sqrt(jnp.sum(exact**2))
        return {
            f"{name}_rel_l2": jnp.sqrt(jnp.sum((value - exact) ** 2)) / scale
            for name, value in zip(("ngo", "girsanov", "euler_maruyama"), estimates, strict=True)
        }

    return run


def build(config: ExperimentConfig) -> Task:
    model: NGOModelConfig = config.model
    data: DriftFamilyConfig = config.data
    if not isinstance(model, NGOModelConfig) or not isinstance(data, DriftFamilyConfig):
        raise ConfigError(
            "model", type(model).__name__, "parabolic_ngo takes model=ngo data=drift_family"
        )
    n_tasks = config.train.batch_size
    training = _training_config(data, n_tasks)

    def make(key):
        return NeuralGirsanovOperator(
            data.d, width=model.width, depth=model.depth, n_mixers=model.n_mixers,
            kernel=model.kernel, clip=model.clip, init=model.init, key=key,
        )  # fmt: skip

    _, static = eqx.partition(make(jax.random.PRNGKey(0)), eqx.is_inexact_array)
    evaluate_fn = _evaluation(data, config.seed, static)

    def init(key):
        return eqx.partition(make(key), eqx.is_inexact_array)[0]

    def batch(step: int):
        return _tasks(data, np.random.default_rng([config.seed, step]), n_tasks, affine=False)

    def loss(params, batch, key):
        c, phase, x = batch
        return ngo_task_loss(eqx.combine(params, static), training, c, phase, x, key)

    def evaluate(params):
        return {name: float(value) for name, value in evaluate_fn(params).items()}

    def report(params, run_dir: Path) -> None:
        rows = evaluate(params).items()
        lines = [
            "# Neural Girsanov Operator on held-out affine drifts (exact solution)",
            "",
            f"d = {data.d}, T = {data.T}, {data.n_steps} steps, {data.eval_drifts} drifts x "
            f"{data.n_points} points, {data.eval_paths} paths per estimate for every method "
            "(the same Brownian increments).",
            "",
            "| method | relative L2 error |",
            "|---|---|",
            *(f"| {name.removesuffix('_rel_l2')} | {value:.4g} |" for name, value in rows),
        ]
        (run_dir / "ngo_evaluation.md").write_text("\n".join(lines) + "\n")

    return Task(
        name=f"parabolic_ngo[d={data.d}]",
        init=init,
        loss=loss,
        batch=batch,
        batch_size=n_tasks,
        evaluate=evaluate,
        report=report,
    )
