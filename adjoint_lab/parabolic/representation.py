"""`feynman_kac`: the solution of a linear parabolic PDE at given points by Monte Carlo on
its Feynman-Kac representation, with the estimator chosen by `method`."""

from __future__ import annotations

from jaxtyping import ArrayLike, Float, PRNGKeyArray

from .estimate import Estimate
from .euler_maruyama import euler_maruyama_expectation
from .integrand import Drift, Rate, Scalar
from .ngo import NeuralGirsanovOperator, ngo_expectation
from .paths import BasePaths

__all__ = ["feynman_kac"]

_METHODS = ("girsanov", "euler_maruyama", "ngo")


def feynman_kac(
    drift: Drift,
    p0: Scalar,
    x: Float[ArrayLike, "m d"],
    *,
    T: Float[ArrayLike, ""],
    n_paths: int,
    n_steps: int,
    key: PRNGKeyArray,
    method: str = "girsanov",
    rate: Rate | None = None,
    sigma: Float[ArrayLike, ""] | Float[ArrayLike, " d"] = 1.0,
    self_normalised: bool = False,
    ess_threshold: float = 0.01,
    operator: NeuralGirsanovOperator | None = None,
) -> Estimate:
    """Solve dp/dt = mu . grad p + 1/2 tr(sigma sigma^T hess p) - r p, p(0, .) = p0, at
    time `T` and points `x`, through the Feynman-Kac representation

        p(T, x) = E[p0(X_T) exp(-int_0^T r(s, X_s) ds)],  dX = mu(s, X) ds + sigma dW, X_0 = x.

    (For a terminal-value problem in calendar time t, `T` is the time to maturity.)

    **Arguments:**

    - `drift`: mu, `drift(t, x) -> (d,)`; a function or any callable pytree (equinox
        module), so that `jax.vmap` over its parameters works.
    - `p0`: the initial condition, `p0(x) -> ()`.
    - `x`: the points, shape `(m, d)`.
    - `T`: the time, > 0.
    - `n_paths`: the number of Monte-Carlo paths, an int >= 2.
    - `n_steps`: the number of uniform time steps, an int >= 1.
    - `key`: a JAX PRNG key. The same key gives the same Brownian increments for every
        method (common random numbers).
    - `method`:
        - `"girsanov"` (default): Brownian base paths `BasePaths.sample(key, x, ...)`,
            re-weighted by the left-point Girsanov likelihood ratio of `drift`. To reuse one
            bank of paths for many drifts, call `BasePaths.sample` once and then
            `paths.expectation(drift, p0, rate)` per drift (or under `jax.vmap`).
        - `"euler_maruyama"`: simulate the drifted SDE with the same increments.
        - `"ngo"`: the same base paths weighted by a trained Neural Girsanov Operator
            (`operator`), zero-shot in the drift; see `ngo_expectation`.
    - `rate`: the discount ("growth") rate `rate(t, x) -> ()`, or `None` for zero.
    - `sigma`: the constant volatility, a scalar or a `(d,)` diagonal, > 0. Default 1.
        A state-dependent volatility must first be Lamperti-transformed to a constant one
        (see `problems.BlackScholesCall`).
    - `self_normalised`: Girsanov only: the self-normalised instead of the (unbiased)
        plain importance-sampling estimator.
    - `ess_threshold`: Girsanov only: warn with `WeightDegeneracyWarning` where the
        effective sample size falls below `ess_threshold * n_paths`. Default 0.01.
    - `operator`: `"ngo"` only, and required there: a trained `NeuralGirsanovOperator`
        for the dimension of `x` (see `train_ngo`).

    **Returns:**

    An `Estimate` with `value`, `stderr` and `ess`, each of shape `(m,)`.
    """
    if method not in _METHODS:
        raise ValueError(
            f"`feynman_kac(method={method!r})`: `method` must be one of "
            f"{', '.join(repr(m) for m in _METHODS)}."
        )
    if method == "ngo" and operator is None:
        raise ValueError(
            "`feynman_kac(method='ngo')`: pass `operator=`, a trained "
            "`NeuralGirsanovOperator` (build it with `NeuralGirsanovOperator(d, key=...)`, "
            "train it with `train_ngo`)."
        )
    if method != "ngo" and operator is not None:
        raise ValueError(
            f"`feynman_kac(method={method!r})`: `operator` is only used with method='ngo'."
        )
    paths = BasePaths.sample(key, x, T=T, n_paths=n_paths, n_steps=n_steps, sigma=sigma)
    if method == "euler_maruyama":
        return euler_maruyama_expectation(paths, drift, p0, rate)
    if method == "ngo":
        return ngo_expectation(operator, paths, drift, p0, rate)  # pyright: ignore[reportArgumentType]
    return paths.expectation(
        drift, p0, rate, self_normalised=self_normalised, ess_threshold=ess_threshold
    )
