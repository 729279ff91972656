"""`Estimate`: a Monte-Carlo estimate per point, with its standard error and sample size.

Also the two estimators that produce it (plain Monte Carlo and importance sampling from
log-weights) and `WeightDegeneracyWarning`, raised when importance weights collapse.
"""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jaxtyping import Array, Float

__all__ = [
    "Estimate",
    "WeightDegeneracyWarning",
    "importance_estimate",
    "monte_carlo_estimate",
    "warn_if_degenerate",
]


class WeightDegeneracyWarning(UserWarning):
    """The importance weights of a Girsanov estimate have collapsed onto a few paths.

    The estimate is then dominated by those paths and its standard error is itself
    unreliable (usually far too small).
    """


class Estimate(eqx.Module):
    """A Monte-Carlo estimate of p(T, x) at each of `m` points.

    Under `jax.vmap` (for example over a batch of drifts) every field gains the batch axes
    in front.

    **Fields:**

    - `value`: the estimate, shape `(m,)`.
    - `stderr`: its standard error, shape `(m,)`: the sample standard deviation of the
        weighted integrand divided by `sqrt(n_paths)` for the plain estimator, the
        delta-method standard error for the self-normalised one.
    - `ess`: the effective sample size `(sum w)^2 / sum w^2` (Kish) of the path weights,
        shape `(m,)`; `n_paths` for unweighted (Euler-Maruyama) estimates.
    """

    value: Float[Array, "*batch m"]
    stderr: Float[Array, "*batch m"]
    ess: Float[Array, "*batch m"]


def monte_carlo_estimate(samples: Float[Array, "m n_paths"]) -> Estimate:
    """The sample mean of equally weighted samples, per point.

    **Arguments:**

    - `samples`: one sample of the integrand per path, shape `(m, n_paths)`.

    **Returns:**

    An `Estimate` with `ess = n_paths`.
    """
    n = samples.shape[-1]
    value = jnp.mean(samples, axis=-1)
    stderr = jnp.std(samples, axis=-1, ddof=1) / np.sqrt(n)
    return Estimate(value=value, stderr=stderr, ess=jnp.full_like(value, n))


def importance_estimate(
    samples: Float[Array, "m n_paths"],
    log_weights: Float[Array, "m n_paths"],
    *,
    self_normalised: bool = False,
) -> Estimate:
    """An importance-sampling estimate of E_target[f] from base samples and log-weights.

    **Arguments:**

    - `samples`: the integrand f on each base path, shape `(m, n_paths)`.
    - `log_weights`: log of the likelihood ratio d(target)/d(base) of each path, same shape.
    - `self_normalised`: `False` (default) for the plain estimator `mean(w f)`, which is
        unbiased because E_base[w] = 1, with standard error `std(w f) / sqrt(n_paths)`.
        `True` for `sum(w f) / sum(w)`, which is biased at O(1/n_paths) but often has
        lower variance; its standard error is the delta-method one,
        `sqrt(sum(wbar^2 (f - value)^2))` with normalised weights `wbar`.

    **Returns:**

    An `Estimate`, whose `ess` is Kish's effective sample size of the weights.
    """
    # Kish's ESS in log space: exp(2 logsumexp(lw) - logsumexp(2 lw)).
    ess = jnp.exp(2 * logsumexp(log_weights, axis=-1) - logsumexp(2 * log_weights, axis=-1))
    if self_normalised:
        normalised = jax.nn.softmax(log_weights, axis=-1)
        value = jnp.sum(normalised * samples, axis=-1)
        residual = samples - value[..., None]
        stderr = jnp.sqrt(jnp.sum(normalised**2 * residual**2, axis=-1))
        return Estimate(value=value, stderr=stderr, ess=ess)
    plain = monte_carlo_estimate(jnp.exp(log_weights) * samples)
    return Estimate(value=plain.value, stderr=plain.stderr, ess=ess)


def warn_if_degenerate(
    estimate: Estimate, x: Float[Array, "m d"], n_paths: int, ess_threshold: float
) -> None:
    """Warn with `WeightDegeneracyWarning` where `estimate.ess < ess_threshold * n_paths`.

    Does nothing when `estimate.ess` is traced (under `jit` or `vmap`), where no value is
    known: check `estimate.ess` yourself there.

    **Arguments:**

    - `estimate`: the estimate, with `ess` of shape `(m,)` or with leading batch axes.
    - `x`: the points, shape `(m, d)`, named in the message.
    - `n_paths`: the number of paths.
    - `ess_threshold`: the fraction of `n_paths` below which the weights count as collapsed.
    """
    if isinstance(estimate.ess, jax.core.Tracer) or isinstance(x, jax.core.Tracer):
        return
    ess = np.asarray(estimate.ess)
    # With batch axes (several drifts) a point is flagged if any member collapses.
    worst = ess.reshape(-1, ess.shape[-1]).min(axis=0) if ess.ndim > 1 else ess
    bad = np.flatnonzero(~(worst >= ess_threshold * n_paths))
    if bad.size == 0:
        return
    points = np.asarray(x)
    shown = ", ".join(
        f"point {i} (x={np.array2string(points[i], precision=3, threshold=6)}): ESS {worst[i]:.3g}"
        for i in bad[:5]
    )
    more = f" and {bad.size - 5} more" if bad.size > 5 else ""
    warnings.warn(
        f"Girsanov weights collapsed at {bad.size} of {worst.size} point(s): {shown}{more}; "
        f"below `ess_threshold={ess_threshold}` x n_paths={n_paths} = "
        f"{ess_threshold * n_paths:.3g}. The estimate rests on a few paths and its stderr "
        "is unreliable. The drift is too far from the base drift over this horizon: shorten "
        "`T`, use more paths, or use `method='euler_maruyama'`.",
        WeightDegeneracyWarning,
        stacklevel=3,
    )
