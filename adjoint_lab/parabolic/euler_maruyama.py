"""Euler-Maruyama Monte Carlo for the Feynman-Kac expectation: simulate the drifted SDE
directly, driven by the stored Brownian increments of a `BasePaths`."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .estimate import Estimate, monte_carlo_estimate
from .integrand import Drift, Rate, Scalar, check_coefficients, integrand_on_paths
from .paths import BasePaths

__all__ = ["euler_maruyama_expectation"]


def _simulate(
    drift: Drift,
    times: Float[Array, " k+1"],
    x0: Float[Array, " d"],
    increments: Float[Array, "k d"],
    sigma: Float[Array, ""] | Float[Array, " d"],
) -> Float[Array, "k+1 d"]:
    def step(x, inputs):
        t, dt, dw = inputs
        x_next = x + drift(t, x) * dt + sigma * dw
        return x_next, x_next

    _, path = jax.lax.scan(step, x0, (times[:-1], jnp.diff(times), increments))
    return jnp.concatenate([x0[None], path], axis=0)


@eqx.filter_jit
def euler_maruyama_expectation(
    paths: BasePaths, drift: Drift, p0: Scalar, rate: Rate | None = None
) -> Estimate:
    """p(T, x) = E[p0(X_T) exp(-int_0^T r(s, X_s) ds)] by simulating
    X_{k+1} = X_k + drift(t_k, X_k) dt + sigma dW_k from X_0 = x.

    The increments dW_k, the grid and sigma are those of `paths`, so this shares its noise
    with `paths.expectation` (common random numbers): with a zero drift both give the same
    numbers. Jit-compiled, and usable under `jax.jit`/`jax.vmap` (e.g. over drifts).

    **Arguments:**

    - `paths`: a `BasePaths`, which supplies the points, the increments, T and sigma.
    - `drift`: `drift(t, x) -> (d,)`.
    - `p0`: `p0(x) -> ()`.
    - `rate`: `rate(t, x) -> ()` or `None`; integrated with the left-point rule.

    **Returns:**

    An `Estimate` of shape `(m,)` with `ess = n_paths`.
    """
    check_coefficients(
        "euler_maruyama_expectation", drift, p0, rate, paths.x.shape[1], paths.x.dtype
    )
    per_path = jax.vmap(_simulate, (None, None, None, 0, None))
    per_point = jax.vmap(per_path, (None, None, 0, None, None))
    simulated = per_point(drift, paths.times, paths.x, paths.increments, paths.sigma)
    return monte_carlo_estimate(integrand_on_paths(p0, rate, paths.times, simulated))
