"""Euler-Maruyama Monte Carlo for the Feynman-Kac expectation: the drifted SDE solved by
`core.solve_sde` on the stored Brownian increments of a `BasePaths`."""

from __future__ import annotations

import equinox as eqx
import jax
from jaxtyping import Array, Float

from .. import core
from .estimate import Estimate, monte_carlo_estimate
from .integrand import Drift, Rate, Scalar, check_coefficients, integrand_on_paths
from .paths import BasePaths

__all__ = ["euler_maruyama_expectation", "euler_maruyama_paths"]

_CHECKPOINTED = core.CheckpointedBackprop()


class _Field(eqx.Module):
    """`drift(t, x)` as diffrax's `(t, y, args)` vector field. A module, not a closure, so
    that the drift's arrays are part of the terms and every gradient method sees them."""

    drift: Drift

    def __call__(self, t, y, args):
        return self.drift(t, y)


def euler_maruyama_paths(
    paths: BasePaths, drift: Drift, *, gradient: core.AbstractGradientMethod = _CHECKPOINTED
) -> Float[Array, "m n_paths n_times d"]:
    """The Euler-Maruyama paths X_{k+1} = X_k + drift(t_k, X_k) dt + sigma dW_k from every
    point of `paths`, on its stored increments: `core.solve_sde` with `diffrax.Euler()`.

    **Arguments:**

    - `paths`: the `BasePaths` (points, increments, T, sigma).
    - `drift`: `drift(t, x) -> (d,)`.
    - `gradient`: how reverse-mode autodiff goes through the solves (the pathwise
        derivative): any `core.AbstractGradientMethod`; default `CheckpointedBackprop()`.

    **Returns:**

    The paths on the grid `paths.times`, shape `(m, n_paths, n_steps + 1, d)`.
    """
    field = _Field(drift)
    diffusion = core.DiagonalDiffusion(paths.sigma)

    def one(x0, increments):
        brownian = core.BrownianIncrements(increments, t1=paths.T)
        return core.solve_sde(
            field, diffusion, brownian, x0, gradient=gradient, ts=brownian.times
        ).ys

    per_path = jax.vmap(one, (None, 0))
    return jax.vmap(per_path, (0, None))(paths.x, paths.increments)  # pyright: ignore[reportReturnType]


@eqx.filter_jit
def euler_maruyama_expectation(
    paths: BasePaths,
    drift: Drift,
    p0: Scalar,
    rate: Rate | None = None,
    *,
    gradient: core.AbstractGradientMethod = _CHECKPOINTED,
) -> Estimate:
    """p(T, x) = E[p0(X_T) exp(-int_0^T r(s, X_s) ds)] by simulating
    X_{k+1} = X_k + drift(t_k, X_k) dt + sigma dW_k from X_0 = x (`euler_maruyama_paths`).

    The increments dW_k, the grid and sigma are those of `paths`, so this shares its noise
    with `paths.expectation` (common random numbers): with a zero drift both give the same
    numbers. Jit-compiled, and usable under `jax.jit`/`jax.vmap` (e.g. over drifts).

    **Arguments:**

    - `paths`: a `BasePaths`, which supplies the points, the increments, T and sigma.
    - `drift`: `drift(t, x) -> (d,)`.
    - `p0`: `p0(x) -> ()`.
    - `rate`: `rate(t, x) -> ()` or `None`; integrated with the left-point rule.
    - `gradient`: the gradient method through the solves (see `euler_maruyama_paths`).

    **Returns:**

    An `Estimate` of shape `(m,)` with `ess = n_paths`.
    """
    check_coefficients(
        "euler_maruyama_expectation", drift, p0, rate, paths.x.shape[1], paths.x.dtype
    )
    simulated = euler_maruyama_paths(paths, drift, gradient=gradient)
    return monte_carlo_estimate(integrand_on_paths(p0, rate, paths.times, simulated))
