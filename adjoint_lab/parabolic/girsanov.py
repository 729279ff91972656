"""Girsanov re-weighting of Brownian base paths: log-likelihood ratios and the estimator.

For dX = mu(t, X) dt + sigma dW against the base dY = sigma dW (same sigma), the density of
the law of X with respect to that of Y on path space is

    L = exp( int (mu / sigma) . dW - 1/2 int |mu / sigma|^2 dt ),

discretised with LEFT-point (Ito) sums over the base increments:

    log w = sum_k (mu(t_k, X_k) / sigma) . dW_k - 1/2 sum_k |mu(t_k, X_k) / sigma|^2 dt_k.

Evaluating mu at the right end X_{k+1} instead (as the authors' released code does) is a
backward-Ito sum, biased by about exp(int div(mu) ds).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .estimate import Estimate, importance_estimate
from .integrand import Drift, Rate, Scalar, check_coefficients, integrand_on_paths
from .validation import check_function_shape

if TYPE_CHECKING:
    from .paths import BasePaths

__all__ = ["girsanov_expectation", "girsanov_log_weights"]


def _path_log_weight(
    drift: Drift,
    times: Float[Array, " k+1"],
    path: Float[Array, "k+1 d"],
    increments: Float[Array, "k d"],
    sigma: Float[Array, ""] | Float[Array, " d"],
) -> Float[Array, ""]:
    theta = jax.vmap(drift)(times[:-1], path[:-1]) / sigma
    dt = jnp.diff(times)
    return jnp.sum(theta * increments) - 0.5 * jnp.sum(dt[:, None] * theta**2)


def _log_weights(drift: Drift, paths: BasePaths, positions) -> Float[Array, "m n_paths"]:
    per_path = jax.vmap(_path_log_weight, (None, None, 0, 0, None))
    per_point = jax.vmap(per_path, (None, None, 0, None, None))
    return per_point(drift, paths.times, positions, paths.increments, paths.sigma)


def girsanov_log_weights(drift: Drift, paths: BasePaths) -> Float[Array, "m n_paths"]:
    """The Girsanov log-likelihood ratio of each base path under `drift`.

    **Arguments:**

    - `drift`: `drift(t, x) -> (d,)`.
    - `paths`: the `BasePaths` (Brownian motion with volatility `paths.sigma` from each
        point).

    **Returns:**

    `log w` of shape `(m, n_paths)`, with left-point (Ito) sums:
    `sum_k (mu_k / sigma) . dW_k - 1/2 sum_k |mu_k / sigma|^2 dt`, mu_k = drift(t_k, X_k).
    """
    d = paths.x.shape[1]
    t = jax.ShapeDtypeStruct((), paths.x.dtype)
    x = jax.ShapeDtypeStruct((d,), paths.x.dtype)
    check_function_shape("girsanov_log_weights", "drift", drift, (t, x), (d,), "`drift(t, x)`")
    return _log_weights(drift, paths, paths.positions())


@eqx.filter_jit
def girsanov_expectation(
    paths: BasePaths,
    drift: Drift,
    p0: Scalar,
    rate: Rate | None,
    self_normalised: bool,
) -> Estimate:
    """The Girsanov estimate behind `BasePaths.expectation` (which documents it), without
    the degeneracy warning."""
    check_coefficients("BasePaths.expectation", drift, p0, rate, paths.x.shape[1], paths.x.dtype)
    positions = paths.positions()
    log_weights = _log_weights(drift, paths, positions)
    values = integrand_on_paths(p0, rate, paths.times, positions)
    return importance_estimate(values, log_weights, self_normalised=self_normalised)
