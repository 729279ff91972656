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

from typing import Protocol, runtime_checkable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .estimate import Estimate, importance_estimate
from .integrand import Drift, Rate, Scalar, check_coefficients, integrand_on_paths
from .validation import check_function_shape


# runtime_checkable so that beartype (ADJOINT_LAB_TYPECHECK=1) can check arguments against it.
@runtime_checkable
class StoredPaths(Protocol):
    """What the Girsanov functions read from a bank of base paths; `BasePaths` is one.

    A protocol, not `BasePaths` itself, because `BasePaths`' methods call these functions:
    the bank depends on the estimator, not the other way round.
    """

    @property
    def x(self) -> Float[Array, "m d"]: ...

    @property
    def increments(self) -> Float[Array, "n_paths n_steps d"]: ...

    @property
    def T(self) -> Float[Array, ""]: ...  # noqa: N802 (the horizon, as in BasePaths)

    @property
    def sigma(self) -> Float[Array, ""] | Float[Array, " d"]: ...

    @property
    def n_steps(self) -> int: ...

    @property
    def times(self) -> Float[Array, " n_times"]: ...

    def positions(self) -> Float[Array, "m n_paths n_times d"]: ...


__all__ = [
    "StoredPaths",
    "drift_on_paths",
    "girsanov_expectation",
    "girsanov_log_weights",
    "girsanov_step_terms",
    "log_likelihood_ratio",
]


def girsanov_step_terms(
    theta: Float[Array, "*#batch n_steps d"],
    increments: Float[Array, "*#batch n_steps #d"],
    dt: Float[ArrayLike, ""],
) -> tuple[Float[Array, "*batch n_steps"], Float[Array, "*batch n_steps"]]:
    """The two per-step terms of the Girsanov log-likelihood ratio: the Ito term
    theta_k . dW_k and the compensator |theta_k|^2 dt / 2, with theta_k = mu(t_k, X_k) / sigma
    at the left end of each step.

    **Arguments:**

    - `theta`: the drift over the volatility on the path, shape `(..., n_steps, d)`.
    - `increments`: the Brownian increments dW_k, broadcastable to `theta`.
    - `dt`: the step.

    **Returns:**

    `(ito, compensator)`, each of shape `(..., n_steps)`.
    """
    ito = jnp.sum(theta * increments, axis=-1)
    compensator = 0.5 * dt * jnp.sum(theta**2, axis=-1)
    return ito, compensator  # pyright: ignore[reportReturnType]


def log_likelihood_ratio(
    theta: Float[Array, "*#batch n_steps d"],
    increments: Float[Array, "*#batch n_steps #d"],
    dt: Float[ArrayLike, ""],
    *,
    martingale: bool = True,
) -> Float[Array, "*batch"]:
    """log w = sum_k theta_k . dW_k - 1/2 sum_k |theta_k|^2 dt: the (left-point, Ito)
    Girsanov log-likelihood ratio of dX = mu dt + sigma dW against the driftless base
    dY = sigma dW on one discretised path. Every estimator of the package that re-weights
    base paths (`BasePaths.expectation`, the NGO's exact start, the generative ELBO) calls
    this one function.

    **Arguments:**

    - `theta`, `increments`, `dt`: as for `girsanov_step_terms`.
    - `martingale`: keep the zero-mean stochastic integral sum_k theta_k . dW_k; with
        `False` only the compensator is returned (the generative ELBO's lower-variance
        form).

    **Returns:**

    Shape `(...)`: the sum over steps.
    """
    ito, compensator = girsanov_step_terms(theta, increments, dt)
    if not martingale:
        return -jnp.sum(compensator, axis=-1)
    return jnp.sum(ito - compensator, axis=-1)


def drift_on_paths(
    drift: Drift, paths: StoredPaths
) -> tuple[Float[Array, "m n_paths n_steps d"], Float[Array, ""]]:
    """theta_k = drift(t_k, X_k) / sigma on every stored path (left end of each step) and
    the step h: the per-step path features that the Girsanov weight and the NGO read."""
    positions = paths.positions()[:, :, :-1]
    times = paths.times[:-1]
    along_path = jax.vmap(drift)
    theta = jax.vmap(jax.vmap(lambda path: along_path(times, path)))(positions) / paths.sigma
    return theta, paths.T / paths.n_steps


def _log_weights(drift: Drift, paths: StoredPaths) -> Float[Array, "m n_paths"]:
    theta, h = drift_on_paths(drift, paths)
    return log_likelihood_ratio(theta, paths.increments[None], h)


def girsanov_log_weights(drift: Drift, paths: StoredPaths) -> Float[Array, "m n_paths"]:
    """The Girsanov log-likelihood ratio of each base path under `drift`.

    **Arguments:**

    - `drift`: `drift(t, x) -> (d,)`.
    - `paths`: the `BasePaths` (Brownian motion with volatility `paths.sigma` from each
        point).

    **Returns:**

    `log w` of shape `(m, n_paths)`, with left-point (Ito) sums:
    `sum_k (mu_k / sigma) . dW_k - 1/2 sum_k |mu_k / sigma|^2 dt`, mu_k = drift(t_k, X_k)
    (`log_likelihood_ratio`).
    """
    d = paths.x.shape[1]
    t = jax.ShapeDtypeStruct((), paths.x.dtype)
    x = jax.ShapeDtypeStruct((d,), paths.x.dtype)
    check_function_shape("girsanov_log_weights", "drift", drift, (t, x), (d,), "`drift(t, x)`")
    return _log_weights(drift, paths)


@eqx.filter_jit
def girsanov_expectation(
    paths: StoredPaths,
    drift: Drift,
    p0: Scalar,
    rate: Rate | None,
    self_normalised: bool,
) -> Estimate:
    """The Girsanov estimate behind `BasePaths.expectation` (which documents it), without
    the degeneracy warning."""
    check_coefficients("BasePaths.expectation", drift, p0, rate, paths.x.shape[1], paths.x.dtype)
    log_weights = _log_weights(drift, paths)
    values = integrand_on_paths(p0, rate, paths.times, paths.positions())
    return importance_estimate(values, log_weights, self_normalised=self_normalised)
