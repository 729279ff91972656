"""Hamilton-Jacobi-Bellman equations u_t + lap u - lam |grad u|^2 = 0 linearised by the
Cole-Hopf transform p = exp(-lam u)."""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .base import AbstractProblem, over_points, problem_parameter
from .quadrature import gamma_rule, normal_rule

__all__ = ["AbstractColeHopfHJB", "LogTerminalHJB", "QuadraticTerminalHJB"]

_SQRT2 = 2.0**0.5


class AbstractColeHopfHJB(AbstractProblem):
    """The control problem u_t + lap u - lam |grad u|^2 = 0 on [0, T], u(T, x) = g(x).

    With p = exp(-lam u) it becomes the backward heat equation p_t + lap p = 0, so in time
    to maturity the Feynman-Kac problem is

        mu = 0,   volatility sqrt(2),   r = 0,   p0(x) = exp(-lam g(x)),

    and u(0, x) = -log(p(T, x)) / lam (`value`), i.e.
    u(0, x) = -log E[exp(-lam g(x + sqrt(2) W_T))] / lam.

    `exact` is the linear solution p (comparable with Feynman-Kac estimates);
    `exact_value` is u. A Monte-Carlo estimate `p +- s` gives `u +- s / (lam p)`.

    Subclasses are final and implement `terminal_cost` and `exact`.
    """

    lam: eqx.AbstractVar[Float[Array, ""]]
    sigma: eqx.AbstractVar[Float[Array, ""]]

    @abc.abstractmethod
    def terminal_cost(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        """The terminal cost g(x)."""

    def drift(self, t, x):
        return jnp.zeros_like(x)

    def p0(self, x):
        return jnp.exp(-self.lam * self.terminal_cost(x))

    def rate(self, t, x):
        return jnp.zeros((), x.dtype)

    def value(self, p: Float[ArrayLike, "*batch"]) -> Float[Array, "*batch"]:
        """u = -log(p) / lam, the HJB value from the Cole-Hopf solution p."""
        return -jnp.log(p) / self.lam

    def exact_value(
        self, T: Float[ArrayLike, ""], x: Float[ArrayLike, "*batch d"]
    ) -> Float[Array, "*batch"]:
        """The exact HJB value u(0, x) for horizon T."""
        return self.value(self.exact(T, x))


class LogTerminalHJB(AbstractColeHopfHJB):
    """The HJB test problem of Han, Jentzen and E (PNAS 2018) and Raissi (FBSNN):
    g(x) = log((1 + |x|^2) / 2), so p0(x) = (2 / (1 + |x|^2))^lam.

    `exact` is the integral p(T, x) = E[(2 / (1 + |Y|^2))^lam], Y ~ N(x, 2T I), computed by
    a Gauss rule: |Y|^2 = (|x| + sqrt(2T) Z)^2 + 2T * 2G with Z ~ N(0, 1) and
    G ~ Gamma((d - 1) / 2) independent. In d = 100, lam = 1, T = 1, x = 0 it gives
    u(0, 0) = 4.5901 (the Deep BSDE paper's reference).

    **Fields:** `lam` (> 0), `n_nodes` (nodes per Gauss rule, default 96).
    """

    lam: Float[Array, ""]
    sigma: Float[Array, ""]
    n_nodes: int = eqx.field(static=True)

    def __init__(self, lam: Float[ArrayLike, ""] = 1.0, n_nodes: int = 96):
        self.lam = problem_parameter("LogTerminalHJB", "lam", lam)
        self.sigma = jnp.asarray(_SQRT2, jnp.result_type(float))
        self.n_nodes = int(n_nodes)

    def terminal_cost(self, x):
        return jnp.log(0.5 * (1 + jnp.sum(x**2)))

    def exact(self, T, x):
        x = jnp.asarray(x)
        d = x.shape[-1]
        z, wz = (jnp.asarray(a, x.dtype) for a in normal_rule(self.n_nodes))
        if d > 1:
            g, wg = (jnp.asarray(a, x.dtype) for a in gamma_rule((d - 1) / 2, self.n_nodes))
        else:
            g, wg = jnp.zeros((1,), x.dtype), jnp.ones((1,), x.dtype)
        scale2 = 2 * jnp.asarray(T, x.dtype)  # variance per coordinate of sqrt(2) W_T

        def at(point):
            along = (jnp.linalg.norm(point) + jnp.sqrt(scale2) * z) ** 2  # (n,)
            across = 2 * scale2 * g  # (n,)
            squared = along[:, None] + across[None, :]
            integrand = (2 / (1 + squared)) ** self.lam
            return wz @ integrand @ wg

        return over_points(at, x)


class QuadraticTerminalHJB(AbstractColeHopfHJB):
    """The linear-quadratic regulator g(x) = a |x|^2, whose Cole-Hopf solution is Gaussian:

        p(T, x) = (1 + 4 c T)^(-d/2) exp(-c |x|^2 / (1 + 4 c T)),   c = lam a,
        u(0, x) = d / (2 lam) log(1 + 4 c T) + a |x|^2 / (1 + 4 c T).

    **Fields:** `a` (> 0), `lam` (> 0).
    """

    a: Float[Array, ""]
    lam: Float[Array, ""]
    sigma: Float[Array, ""]

    def __init__(self, a: Float[ArrayLike, ""] = 1.0, lam: Float[ArrayLike, ""] = 1.0):
        self.a = problem_parameter("QuadraticTerminalHJB", "a", a)
        self.lam = problem_parameter("QuadraticTerminalHJB", "lam", lam)
        self.sigma = jnp.asarray(_SQRT2, jnp.result_type(float))

    def terminal_cost(self, x):
        return self.a * jnp.sum(x**2)

    def exact(self, T, x):
        c = self.lam * self.a
        spread = 1 + 4 * c * T

        def at(point):
            d = point.shape[-1]
            return spread ** (-d / 2) * jnp.exp(-c * jnp.sum(point**2) / spread)

        return over_points(at, x)
