"""Training the Neural Girsanov Operator over a random drift family against the Girsanov
estimate (the paper's Eq. 9), with optax in a jitted loop.

Each step draws fresh tasks (coefficients c, a p0 phase, start points) and two INDEPENDENT
banks of base paths: the direct-Girsanov target is computed on one, the NGO estimate on the
other. With independent banks the target's Monte-Carlo noise only adds a constant to the
expected squared loss, so the minimiser is the NGO estimator with the least mean squared
error against the true solution. On a shared bank the loss would instead reward copying the
Girsanov estimator's own noise path by path.
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

from ..config.errors import require, require_at_least, require_positive
from ..train import TrainState, train_step, value_and_grad_of
from .drift_family import RandomBasisDrift, SineInitial, sample_coefficients
from .girsanov import girsanov_expectation
from .ngo import NeuralGirsanovOperator, ngo_expectation
from .paths import BasePaths, brownian_increments

__all__ = ["NGOTrainingConfig", "ngo_loss", "ngo_task_loss", "train_ngo"]


@dataclass(frozen=True)
class NGOTrainingConfig:
    """The task distribution and the optimiser of `train_ngo`.

    Defaults follow the paper's code where it is sound (T = 0.1, 40 steps, x ~ U[0.1, 0.6]^d,
    c ~ U(0, 1)^3) with CPU-sized batches (the paper: 4000 paths, 10 points) and a
    warm-up/cosine AdamW schedule peaking at 1e-2 (the paper: 1e-3 for many more steps).
    """

    T: float = 0.1
    n_steps: int = 40
    n_paths: int = 256  # per NGO estimate
    n_target_paths: int = 1024  # per Girsanov target (cheap: no network)
    n_tasks: int = 4  # drifts per step
    n_points: int = 4  # points per drift
    x_low: float = 0.1
    x_high: float = 0.6
    c_low: tuple[float, float, float] = (0.0, 0.0, 0.0)
    c_high: tuple[float, float, float] = (1.0, 1.0, 1.0)
    omega: float = float(np.pi)
    random_phase: bool = True
    sigma: float = 1.0
    steps: int = 300
    learning_rate: float = 1e-2
    weight_decay: float = 1e-5
    clip_norm: float = 1.0

    def validate(self) -> None:
        """Raise `adjoint_lab.config.errors.ConfigError` (a `ValueError`) naming the field."""
        require_at_least(self, 1, "n_steps", "n_tasks", "n_points", "steps")
        require_at_least(self, 2, "n_paths", "n_target_paths", why=" (a standard error)")
        require_positive(self, "T", "sigma", "learning_rate")
        require(self.x_low < self.x_high, "x_high", self.x_high, f"must be > x_low = {self.x_low}")


def _tasks(config: NGOTrainingConfig, d: int, key: PRNGKeyArray, dtype):
    kc, kp, kx = jax.random.split(key, 3)
    c = sample_coefficients(kc, config.n_tasks, config.c_low, config.c_high).astype(dtype)  # pyright: ignore[reportArgumentType]
    phase = 2 * jnp.pi * jax.random.uniform(kp, (config.n_tasks,), dtype)
    if not config.random_phase:
        phase = jnp.zeros_like(phase)
    x = jax.random.uniform(
        kx, (config.n_tasks, config.n_points, d), dtype, config.x_low, config.x_high
    )
    return c, phase, x


def ngo_loss(
    operator: NeuralGirsanovOperator,
    config: NGOTrainingConfig,
    key: PRNGKeyArray,
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """The normalised squared distance between NGO and direct-Girsanov estimates over a
    fresh batch of tasks, on independent path banks. Returns (loss, metrics)."""
    k_tasks, k_paths = jax.random.split(key)
    c, phase, x = _tasks(config, operator.d, k_tasks, jnp.result_type(float))
    return ngo_task_loss(operator, config, c, phase, x, k_paths)


def ngo_task_loss(
    operator: NeuralGirsanovOperator,
    config: NGOTrainingConfig,
    c: Float[Array, "tasks 3"],
    phase: Float[Array, " tasks"],
    x: Float[Array, "tasks points d"],
    key: PRNGKeyArray,
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """`ngo_loss` for given tasks: drift coefficients `c`, initial phases `phase` and points
    `x`; `key` draws the two independent path banks (targets and NGO)."""
    d = operator.d
    dtype = jnp.result_type(float)
    c, phase, x = (jnp.asarray(a, dtype) for a in (c, phase, x))
    k_target, k_ngo = jax.random.split(key)
    T = jnp.asarray(config.T, dtype)
    sigma = jnp.asarray(config.sigma, dtype)
    h = T / config.n_steps
    target_dw = brownian_increments(k_target, config.n_target_paths, config.n_steps, d, h, dtype)
    ngo_dw = brownian_increments(k_ngo, config.n_paths, config.n_steps, d, h, dtype)

    def one(coefficients, shift, points):
        drift = RandomBasisDrift(coefficients)
        p0 = SineInitial(config.omega, shift)
        target_paths = BasePaths(x=points, increments=target_dw, T=T, sigma=sigma)
        ngo_paths = BasePaths(x=points, increments=ngo_dw, T=T, sigma=sigma)
        target = girsanov_expectation(target_paths, drift, p0, None, False).value
        return ngo_expectation(operator, ngo_paths, drift, p0).value, target

    estimate, target = jax.vmap(one)(c, phase, x)
    target = jax.lax.stop_gradient(target)
    scale = jnp.mean(target**2) + 1e-12
    loss = jnp.mean((estimate - target) ** 2) / scale
    return loss, {"abs_error": jnp.mean(jnp.abs(estimate - target))}


def train_ngo(
    operator: NeuralGirsanovOperator,
    config: NGOTrainingConfig,
    key: PRNGKeyArray,
) -> tuple[NeuralGirsanovOperator, Float[np.ndarray, " steps"]]:
    """Train `operator` for `config.steps` steps of AdamW on `ngo_loss`, a fresh task batch
    and fresh path banks per step. Returns the trained operator and the loss per step."""
    config.validate()
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        warmup_steps=max(1, config.steps // 10),
        decay_steps=config.steps,
        end_value=config.learning_rate / 10,
    )
    optimiser = optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(schedule, weight_decay=config.weight_decay),
    )
    params, static = eqx.partition(operator, eqx.is_inexact_array)

    def loss(params, batch, key):
        del batch  # every step draws its own tasks and paths from `key`
        return ngo_loss(eqx.combine(params, static), config, key)

    step = jax.jit(train_step(value_and_grad_of(loss), optimiser))
    state = TrainState.create(params, optimiser)
    losses = []
    for k in jax.random.split(key, config.steps):
        state, value, _ = step(state, None, k)
        losses.append(value)
    params = state.params
    losses = np.asarray(jnp.stack(losses))  # one host transfer, not one per step
    if not np.all(np.isfinite(losses)):
        raise FloatingPointError(
            f"`train_ngo`: the loss became non-finite at step "
            f"{int(np.flatnonzero(~np.isfinite(losses))[0])}; lower `learning_rate`."
        )
    return eqx.combine(params, static), losses
