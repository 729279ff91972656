"""The semi-linear extension (Sec. 3.3, Eq. 10, Alg. 2 of the paper): a learned Z network
and the FBSDE backward recursion on the stored Brownian base paths.

The terminal-value problem

    p_t + 1/2 sigma^2 lap p + mu . grad p + phi(t, x, p, sigma grad p) = 0,   p(T, x) = g(x),

has, along ANY process X with dX = sigma dW (the base paths, no drift), the pathwise identity
(Ito's formula for Y_t = p(t, X_t), Z_t = sigma grad p(t, X_t))

    Y_0 = g(X_T) + int_0^T [phi(t, X, Y, Z) + theta . Z] dt - int_0^T Z . dW,   theta = mu / sigma.

The drift enters the driver as theta . Z (= mu . grad p): it is the BSDE form of Girsanov's
theorem, exact on the base paths, so no path weight (the paper's NGO_expmart) is needed and
none degenerates. Discretised backward on the stored grid (the paper's S recursion):

    S_K = g(X_K),   S_k = S_{k+1} + h [phi(t_k, X_k, S_{k+1}, Z_k) + theta_k . Z_k] - Z_k . dW_k.

With the true Z every path gives S_0 = p(0, x) up to O(h); any other adapted Z adds a
zero-mean martingale. So Z is learned by minimising the variance of S_0 over the paths from
each point (`train_z_network`), and p(0, x) is the path mean.

Divergence from the paper: its Z network (NGO_grad) reads (S_t, X_t); S_t is computed from the
future of the path (S_{k} depends on dW_k, ..., dW_{K-1}), and a Z that sees it can cancel
the noise without being the gradient. Here Z = Z(t, X_t) is adapted, as the martingale
argument needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..config.errors import require, require_at_least, require_positive
from ..train import TrainState, train_step, value_and_grad_of
from .paths import BasePaths, brownian_increments
from .problems import AbstractColeHopfHJB, BlackScholesBarenblatt

__all__ = [
    "AbstractSemilinearProblem",
    "SemilinearBSB",
    "SemilinearHJB",
    "ZNetwork",
    "ZTrainingConfig",
    "backward_values",
    "semilinear_expectation",
    "train_z_network",
]


class AbstractSemilinearProblem(eqx.Module):
    """p_t + 1/2 sigma^2 lap p + mu . grad p + phi(t, x, p, z) = 0, p(T, x) = g(x), with
    z = sigma grad p; `exact(T, x)` is p(0, x) for horizon T where known."""

    sigma: eqx.AbstractVar[Float[Array, ""]]

    def drift(self, t: Float[ArrayLike, ""], x: Float[Array, " d"]) -> Float[Array, " d"]:
        return jnp.zeros_like(x)

    def driver(
        self,
        t: Float[ArrayLike, ""],
        x: Float[Array, " d"],
        y: Float[Array, ""],
        z: Float[Array, " d"],
    ) -> Float[Array, ""]:
        raise NotImplementedError

    def terminal(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        raise NotImplementedError


class SemilinearHJB(AbstractSemilinearProblem):
    """u_t + lap u - lam |grad u|^2 = 0, u(T) = g: sigma = sqrt 2, mu = 0,
    phi = -lam |z|^2 / 2 (z = sqrt 2 grad u); exact by Cole-Hopf (`hjb.exact_value`)."""

    hjb: AbstractColeHopfHJB
    sigma: Float[Array, ""]

    def __init__(self, hjb: AbstractColeHopfHJB):
        self.hjb = hjb
        self.sigma = jnp.asarray(hjb.sigma)

    def driver(self, t, x, y, z):
        return -0.5 * self.hjb.lam * jnp.sum(z**2)

    def terminal(self, x):
        return self.hjb.terminal_cost(x)

    def exact(self, T, x):
        return self.hjb.exact_value(T, x)


class SemilinearBSB(AbstractSemilinearProblem):
    """Black-Scholes-Barenblatt in Raissi's FBSDE form, in log-prices x = log s:
    dX = -sigma^2/2 dt + sigma dW (driftless GBM), phi = -r y + (r / sigma) sum_i z_i
    (= r (s . grad_s u - u)), g = |s|^2; exact exp((r + sigma^2) T) |s|^2."""

    bsb: BlackScholesBarenblatt
    sigma: Float[Array, ""]

    def __init__(self, bsb: BlackScholesBarenblatt):
        self.bsb = bsb
        self.sigma = jnp.asarray(bsb.sigma)

    def drift(self, t, x):
        return jnp.full_like(x, -0.5 * self.bsb.sigma**2)

    def driver(self, t, x, y, z):
        return -self.bsb.r * y + self.bsb.r / self.bsb.sigma * jnp.sum(z)

    def terminal(self, x):
        return self.bsb.p0(x)

    def exact(self, T, x):
        return self.bsb.exact(T, x)


class ZNetwork(eqx.Module):
    """Z(t, x) ~ sigma grad p(t, x): an MLP on (t / T, x), softplus (the paper's Table 6),
    zero-initialised read-out so that the untrained network is Z = 0.

    **Fields:** `mlp`, `T`.
    """

    mlp: eqx.nn.MLP
    T: float = eqx.field(static=True)

    def __init__(self, d: int, T: float, *, width: int = 32, depth: int = 3, key: PRNGKeyArray):
        mlp = eqx.nn.MLP(d + 1, d, width, depth, activation=jax.nn.softplus, key=key)
        last = mlp.layers[-1]
        last = eqx.tree_at(lambda lin: (lin.weight, lin.bias), last, replace_fn=jnp.zeros_like)
        self.mlp = eqx.tree_at(lambda m: m.layers[-1], mlp, last)
        self.T = float(T)

    def __call__(self, t: Float[ArrayLike, ""], x: Float[Array, " d"]) -> Float[Array, " d"]:
        return self.mlp(jnp.concatenate([jnp.reshape(t / self.T, (1,)).astype(x.dtype), x]))


@eqx.filter_jit
def backward_values(
    z_fn, problem: AbstractSemilinearProblem, paths: BasePaths
) -> Float[Array, "m n_paths"]:
    """S_0 on every base path by the backward recursion of the module notes, with
    `z_fn(t, x) -> (d,)` as Z. `paths.sigma` must be `problem.sigma`."""
    positions = paths.positions()
    times = paths.times
    h = paths.T / paths.n_steps

    def one_path(X, dW):
        def step(S, inputs):
            t, x, dw = inputs
            z = z_fn(t, x)
            theta = problem.drift(t, x) / problem.sigma
            S = S + h * (problem.driver(t, x, S, z) + theta @ z) - z @ dw
            return S, None

        S0, _ = jax.lax.scan(step, problem.terminal(X[-1]), (times[:-1], X[:-1], dW), reverse=True)
        return S0

    return jax.vmap(lambda X: jax.vmap(one_path)(X, paths.increments))(positions)


def semilinear_expectation(
    z_fn, problem: AbstractSemilinearProblem, paths: BasePaths
) -> tuple[Float[Array, " m"], Float[Array, " m"]]:
    """p(0, x) at the paths' start points: the mean of S_0 over paths, and its standard
    error (which also measures how far Z is from sigma grad p)."""
    s0 = backward_values(z_fn, problem, paths)
    return s0.mean(1), s0.std(1, ddof=1) / np.sqrt(paths.n_paths)


@dataclass(frozen=True)
class ZTrainingConfig:
    """Start points x ~ U[x_low, x_high]^d, fresh paths per step, AdamW with warm-up/cosine."""

    T: float = 0.25
    n_steps: int = 20
    n_paths: int = 128
    n_points: int = 8
    x_low: float = 0.1
    x_high: float = 0.6
    steps: int = 200
    learning_rate: float = 5e-3

    def validate(self) -> None:
        """Raise `adjoint_lab.config.errors.ConfigError` (a `ValueError`) naming the field."""
        require_at_least(self, 1, "n_steps", "n_points", "steps")
        require_at_least(self, 2, "n_paths", why=" (a path variance)")
        require_positive(self, "T", "learning_rate")
        require(self.x_low < self.x_high, "x_high", self.x_high, f"must be > x_low = {self.x_low}")


def train_z_network(
    znet: ZNetwork, problem: AbstractSemilinearProblem, config: ZTrainingConfig, key: PRNGKeyArray
) -> tuple[ZNetwork, Float[np.ndarray, " steps"]]:
    """Minimise the mean over points of the path variance of S_0 (zero at Z = sigma grad p)."""
    config.validate()
    d = znet.mlp.in_size - 1  # pyright: ignore[reportOperatorIssue]
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        max(1, config.steps // 10),
        config.steps,
        config.learning_rate / 20,
    )
    optimiser = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-5)
    )
    params, static = eqx.partition(znet, eqx.is_inexact_array)

    def loss(params, batch, key):
        del batch  # fresh points and paths from `key` every step
        kx, kp = jax.random.split(key)
        x = jax.random.uniform(kx, (config.n_points, d), minval=config.x_low, maxval=config.x_high)
        T = jnp.asarray(config.T, x.dtype)
        dw = brownian_increments(kp, config.n_paths, config.n_steps, d, T / config.n_steps, x.dtype)
        paths = BasePaths(x=x, increments=dw, T=T, sigma=jnp.asarray(problem.sigma, x.dtype))
        s0 = backward_values(eqx.combine(params, static), problem, paths)
        return jnp.mean(jnp.var(s0, axis=1)), {}

    step = jax.jit(train_step(value_and_grad_of(loss), optimiser))
    state = TrainState.create(params, optimiser)
    losses = []
    for k in jax.random.split(key, config.steps):
        state, value, _ = step(state, None, k)
        losses.append(value)
    params = state.params
    losses = np.asarray(jnp.stack(losses))
    return eqx.combine(params, static), losses
