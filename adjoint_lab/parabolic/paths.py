"""`BasePaths`: one stored bank of Brownian base paths, re-weighted for every new drift."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .. import core
from .estimate import Estimate, warn_if_degenerate
from .girsanov import girsanov_expectation, girsanov_log_weights
from .integrand import Drift, Rate, Scalar
from .validation import check_count, check_points, check_positive, check_sigma

__all__ = ["BasePaths", "brownian_increments"]


def brownian_increments(
    key: PRNGKeyArray, n_paths: int, n_steps: int, d: int, dt: ArrayLike, dtype
) -> Float[Array, "n_paths n_steps d"]:
    """Increments of a standard d-dimensional Brownian motion on a uniform grid of step `dt`.

    Both estimators draw their noise here, so one key gives common random numbers for
    Girsanov and Euler-Maruyama.
    """
    return jnp.sqrt(dt) * jax.random.normal(key, (n_paths, n_steps, d), dtype)


class BasePaths(eqx.Module):
    """A bank of Brownian base paths X = x + sigma W from each of `m` points, stored once.

    The same `n_paths` Brownian paths (`increments`) are translated to every point, and
    every drift is handled by re-weighting them (`expectation`) rather than re-simulating.
    A `BasePaths` is a pytree: close over it in `jax.jit`/`jax.vmap`, e.g. to evaluate a
    batch of drifts against one bank with `jax.vmap(lambda mu: paths.expectation(mu, p0))`.

    **Fields:**

    - `x`: the starting points, shape `(m, d)`.
    - `increments`: standard Brownian increments dW_k, shape `(n_paths, n_steps, d)`,
        variance `dt` each.
    - `T`: the horizon, a scalar > 0.
    - `sigma`: the constant volatility, shape `()` or `(d,)` (diagonal).

    Construct with `BasePaths.sample`.
    """

    x: Float[Array, "m d"]
    increments: Float[Array, "n_paths n_steps d"]
    T: Float[Array, ""]
    sigma: Float[Array, ""] | Float[Array, " d"]

    @classmethod
    def sample(
        cls,
        key: PRNGKeyArray,
        x: Float[ArrayLike, "m d"],
        *,
        T: Float[ArrayLike, ""],
        n_paths: int,
        n_steps: int,
        sigma: Float[ArrayLike, ""] | Float[ArrayLike, " d"] = 1.0,
    ) -> BasePaths:
        """Draw `n_paths` Brownian paths of `n_steps` uniform steps over [0, T].

        **Arguments:**

        - `key`: a JAX PRNG key. The same key gives the same increments as the
            Euler-Maruyama estimator of `feynman_kac`, i.e. common random numbers.
        - `x`: the starting points, shape `(m, d)`.
        - `T`: the horizon (for an initial-value problem, the time at which p(T, x) is
            wanted), > 0.
        - `n_paths`: the number of paths, an int >= 2 (a standard error needs two).
        - `n_steps`: the number of time steps, an int >= 1.
        - `sigma`: the volatility of the base process and of every drift's process,
            a scalar or a `(d,)` diagonal, > 0. Default 1.

        **Returns:**

        The `BasePaths`.
        """
        owner = "BasePaths.sample"
        x = check_points(owner, x)
        n_paths = check_count(owner, "n_paths", n_paths, 2)
        n_steps = check_count(owner, "n_steps", n_steps, 1)
        T = check_positive(
            owner, "T", T, "it is the horizon of the paths (the time at which p(T, x) is wanted)."
        ).astype(x.dtype)
        if T.shape != ():
            raise ValueError(f"`{owner}`: `T` must be a scalar; got shape {T.shape}.")
        sigma = check_sigma(owner, sigma, x.shape[1], x.dtype)
        increments = brownian_increments(key, n_paths, n_steps, x.shape[1], T / n_steps, x.dtype)
        return cls(x=x, increments=increments, T=T, sigma=sigma)

    @property
    def n_paths(self) -> int:
        return self.increments.shape[0]

    @property
    def n_steps(self) -> int:
        return self.increments.shape[1]

    def brownian(self, path: int | Array) -> core.BrownianIncrements:
        """The Brownian path number `path` as a `core.BrownianIncrements` on [0, T], the
        control that `core.solve_sde` (and so Euler-Maruyama) reads."""
        return core.BrownianIncrements(self.increments[path], t0=0.0, t1=self.T)

    @property
    def times(self) -> Float[Array, " n_times"]:
        """The grid t_k = k T / n_steps, k = 0..n_steps (that of `core.BrownianIncrements`)."""
        return self.brownian(0).times

    def positions(self) -> Float[Array, "m n_paths n_times d"]:
        """The base paths X_k = x + sigma W_{t_k}, including X_0 = x: the exact solution of
        dX = sigma dW on the stored Brownian paths."""
        values = lambda dw: core.BrownianIncrements(dw, t1=self.T).values  # noqa: E731
        brownian = jax.vmap(values)(self.increments)
        return self.x[:, None, None, :] + self.sigma * brownian[None]

    def log_weights(self, drift: Drift) -> Float[Array, "m n_paths"]:
        """The Girsanov log-likelihood ratio of each path under `drift` against the base.

        See `adjoint_lab.parabolic.girsanov_log_weights`.
        """
        return girsanov_log_weights(drift, self)

    def expectation(
        self,
        drift: Drift,
        p0: Scalar,
        rate: Rate | None = None,
        *,
        self_normalised: bool = False,
        ess_threshold: float = 0.01,
    ) -> Estimate:
        """p(T, x) = E[p0(X_T) exp(-int_0^T r(s, X_s) ds)], dX = drift dt + sigma dW, X_0 = x,
        from the stored paths re-weighted by Girsanov's theorem.

        Jit-compiled (compiled once per drift/p0/rate structure and shapes) and usable
        under `jax.jit` and `jax.vmap`, including a `vmap` over a batch of drifts given as
        an equinox module with batched parameters.

        **Arguments:**

        - `drift`: `drift(t, x) -> (d,)`, any callable pytree (function, equinox module).
        - `p0`: the initial condition, `p0(x) -> ()`.
        - `rate`: the discount ("growth") rate `rate(t, x) -> ()`, or `None` for zero.
        - `self_normalised`: use the self-normalised estimator (see
            `importance_estimate`); default `False`, the unbiased plain one.
        - `ess_threshold`: warn with `WeightDegeneracyWarning` at points whose effective
            sample size is below `ess_threshold * n_paths` (only outside `jit`/`vmap`;
            inside, read `Estimate.ess`). Default 0.01.

        **Returns:**

        An `Estimate` with `value`, `stderr` and `ess` of shape `(m,)`.

        **Raises:**

        `ValueError` at trace time if `drift`, `p0` or `rate` return the wrong shape; a
        runtime error (`equinox.EquinoxRuntimeError`, or JAX's under `jax.jit`) if `p0`
        returns non-finite values on the paths.
        """
        estimate = girsanov_expectation(self, drift, p0, rate, self_normalised)
        warn_if_degenerate(estimate, self.x, self.n_paths, ess_threshold)
        return estimate
