"""`AbstractProblem`: a linear parabolic problem in Feynman-Kac form with an exact solution."""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..validation import check_positive

__all__ = ["AbstractProblem", "over_points", "problem_parameter"]


class AbstractProblem(eqx.Module):
    """The initial-value problem

        dp/dt = mu . grad p + 1/2 sigma^2 lap p - r p,   p(0, x) = p0(x),

    whose solution is p(T, x) = E[p0(X_T) exp(-int_0^T r(s, X_s) ds)] with
    dX = mu(s, X) ds + sigma dW, X_0 = x, and whose `exact` solution is known.

    Subclasses are final. Pass their pieces to the estimators, e.g.
    `feynman_kac(problem.drift, problem.p0, x, rate=problem.rate, sigma=problem.sigma, ...)`
    or `BasePaths.sample(key, x, sigma=problem.sigma, ...).expectation(problem.drift,
    problem.p0, problem.rate)`. Problems are pytrees of their parameters, so a batch of
    problems (built under `jax.vmap`) can be evaluated against one bank of paths.

    **Fields:**

    - `sigma`: the constant volatility, shape `()` or `(d,)`.
    """

    sigma: eqx.AbstractVar[Float[Array, ""] | Float[Array, " d"]]

    @abc.abstractmethod
    def drift(self, t: Float[ArrayLike, ""], x: Float[Array, " d"]) -> Float[Array, " d"]:
        """The drift mu(t, x) of the Feynman-Kac process."""

    @abc.abstractmethod
    def p0(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """The initial condition p(0, x)."""

    @abc.abstractmethod
    def rate(self, t: Float[ArrayLike, ""], x: Float[Array, " d"]) -> Float[Array, ""]:
        """The discount (growth) rate r(t, x)."""

    @abc.abstractmethod
    def exact(
        self, T: Float[ArrayLike, ""], x: Float[ArrayLike, "*batch d"]
    ) -> Float[Array, "*batch"]:
        """The exact solution p(T, x), at one point `(d,)` or a batch `(..., d)`."""


def over_points(
    fn: Callable[[Float[Array, " d"]], Float[Array, ""]], x: Float[ArrayLike, "*batch d"]
) -> Float[Array, "*batch"]:
    """Apply a per-point function to a point `(d,)` or to every point of `(..., d)`."""
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise ValueError(
            "`exact(T, x)`: `x` must have shape (d,) or (..., d); got a scalar. In one "
            "dimension pass `jnp.array([x])`."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    flat = x.reshape(-1, x.shape[-1])
    return jax.vmap(fn)(flat).reshape(x.shape[:-1])


def problem_parameter(owner: str, name: str, value: ArrayLike) -> Float[Array, "..."]:
    """`value` as a float array, checked finite and > 0 (at run time under `jit`/`vmap`)."""
    # Integer inputs (`lam=1`) would otherwise fix an integer dtype into the closed forms.
    value = jnp.asarray(value, dtype=jnp.result_type(float))
    return check_positive(owner, name, value, f"pass {owner}({name}=...) a positive number.")
