r"""The two drift gradients of a Feynman-Kac expectation, d/dtheta p(T, x) with

    p(T, x) = E[ F(X^theta) ],   F(X) = p0(X_T) exp(-int_0^T r(s, X_s) ds),
    dX^theta = mu_theta(t, X^theta) dt + sigma dW,  X_0 = x,

on one stored bank of Brownian increments (`BasePaths`). These are the two ways an adjoint
method reaches the drift of an SDE:

- **Pathwise** (`pathwise_drift_gradient`): differentiate the Euler-Maruyama paths X^theta(dW)
  at fixed increments, through `core.solve_sde` with any `core.AbstractGradientMethod`
  (`CheckpointedBackprop`/`DirectBackprop` give the exact derivative of the discrete
  estimate; `BacksolveAdjoint` the continuous adjoint, O(dt) from it, in memory that does not
  grow with the number of steps). Needs F and mu_theta differentiable in x.

- **Likelihood ratio** (`likelihood_ratio_drift_gradient`): keep the driftless base paths Y
  fixed and move the Girsanov weight w_theta(Y) = exp(log_likelihood_ratio(...)) instead:

      p(T, x) = E[F(Y) w_theta(Y)],   d/dtheta p(T, x) = E[F(Y) w_theta(Y) d/dtheta log w_theta(Y)].

  At a drift equal to the base's (w = 1) this is the score-function estimator
  E[F(X) d/dtheta log w_theta(X)]. F need not be differentiable (or even continuous), no SDE
  is solved, and the one bank serves every theta; its variance grows with the weight's.

Both are the exact derivatives of their estimators at common random numbers: the pathwise
gradient of the Euler-Maruyama estimate on `paths.increments`, the likelihood-ratio gradient of
the Girsanov estimate `paths.expectation` on the same increments; and both estimate the same
derivative of the discretised expectation, since the left-point Girsanov weight is exactly the
likelihood ratio of the Euler-Maruyama chain.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .. import core
from .estimate import Estimate, importance_estimate, monte_carlo_estimate
from .euler_maruyama import euler_maruyama_paths
from .girsanov import girsanov_log_weights
from .integrand import Drift, Rate, Scalar, check_coefficients, integrand_on_paths
from .paths import BasePaths

__all__ = ["likelihood_ratio_drift_gradient", "pathwise_drift_gradient"]

_CHECKPOINTED = core.CheckpointedBackprop()


@eqx.filter_jit
def pathwise_drift_gradient(
    drift: Drift,
    paths: BasePaths,
    p0: Scalar,
    rate: Rate | None = None,
    *,
    gradient: core.AbstractGradientMethod = _CHECKPOINTED,
) -> tuple[Estimate, PyTree[Float[Array, "m ..."]]]:
    """p(T, x) and its derivative in the drift's parameters, by differentiating the
    Euler-Maruyama paths on `paths.increments` (see the module notes).

    **Arguments:**

    - `drift`: `drift(t, x) -> (d,)`, a callable pytree (e.g. an equinox module); its
        floating-point arrays are the parameters theta.
    - `paths`: the `BasePaths` (points, increments, T, sigma).
    - `p0`: `p0(x) -> ()`, differentiable.
    - `rate`: `rate(t, x) -> ()` or `None`.
    - `gradient`: the `core.AbstractGradientMethod` through `core.solve_sde`; default
        `CheckpointedBackprop()`.

    **Returns:**

    `(estimate, grad)`: the Euler-Maruyama `Estimate` of shape `(m,)`, and `drift`'s
    structure with every parameter array `theta` replaced by d p(T, x_i) / d theta, of shape
    `(m, *theta.shape)` (other leaves `None`).
    """
    check_coefficients("pathwise_drift_gradient", drift, p0, rate, paths.x.shape[1], paths.x.dtype)
    params, static = eqx.partition(drift, eqx.is_inexact_array)

    def mean_and_values(params):
        simulated = euler_maruyama_paths(paths, eqx.combine(params, static), gradient=gradient)
        values = integrand_on_paths(p0, rate, paths.times, simulated)
        return values.mean(axis=1), values

    grad, values = jax.jacrev(mean_and_values, has_aux=True)(params)
    return monte_carlo_estimate(values), grad


@eqx.filter_jit
def likelihood_ratio_drift_gradient(
    drift: Drift,
    paths: BasePaths,
    p0: Scalar,
    rate: Rate | None = None,
) -> tuple[Estimate, PyTree[Float[Array, "m ..."]]]:
    """p(T, x) and its derivative in the drift's parameters, from the stored base paths and
    the score of the Girsanov weight: E[F(Y) w(Y) d/dtheta log w(Y)] (see the module notes).

    **Arguments:**

    - `drift`: `drift(t, x) -> (d,)`, a callable pytree; its floating-point arrays are the
        parameters theta.
    - `paths`: the `BasePaths`.
    - `p0`: `p0(x) -> ()`; need not be differentiable.
    - `rate`: `rate(t, x) -> ()` or `None`.

    **Returns:**

    `(estimate, grad)`: the (plain, unbiased) Girsanov `Estimate` of shape `(m,)`, as
    `paths.expectation`, and the gradient as in `pathwise_drift_gradient`.
    """
    check_coefficients(
        "likelihood_ratio_drift_gradient", drift, p0, rate, paths.x.shape[1], paths.x.dtype
    )
    params, static = eqx.partition(drift, eqx.is_inexact_array)
    values = integrand_on_paths(p0, rate, paths.times, paths.positions())  # theta-free
    log_w = girsanov_log_weights(drift, paths)
    # The score-function form: F w is held fixed, only log w is differentiated.
    score_weights = jax.lax.stop_gradient(values * jnp.exp(log_w))

    def weighted_score(params):
        log_w = girsanov_log_weights(eqx.combine(params, static), paths)
        return jnp.mean(score_weights * log_w, axis=1)

    grad = jax.jacrev(weighted_score)(params)
    return importance_estimate(values, log_w), grad
