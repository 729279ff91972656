"""Black-Scholes problems in log coordinates, where the Lamperti transform x = log s turns
geometric Brownian motion into Brownian motion with constant drift and volatility."""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.special import ndtr
from jaxtyping import Array, ArrayLike, Float

from .base import AbstractProblem, over_points, problem_parameter

__all__ = ["BlackScholesBarenblatt", "BlackScholesCall"]


class BlackScholesCall(AbstractProblem):
    """A European call on one asset, dV/dtau = 1/2 sigma^2 s^2 V_ss + r s V_s - r V,
    V(0, s) = max(s - K, 0), with tau the time to maturity.

    In the log-price x = log s (Lamperti transform of ds = r s dt + sigma s dW) this is the
    Feynman-Kac problem in d = 1

        mu = r - sigma^2 / 2,   volatility sigma,   rate r,   p0(x) = max(e^x - K, 0),

    and `exact(T, x)` is the Black-Scholes price S N(d1) - K e^{-rT} N(d2) with S = e^x,
    d1 = (x - log K + (r + sigma^2/2) T) / (sigma sqrt T), d2 = d1 - sigma sqrt T.
    Points are log-prices: pass `x = jnp.log(spot)[:, None]`.

    **Fields:** `r` (interest rate), `sigma` (volatility, > 0), `strike` (K, > 0).
    """

    r: Float[Array, ""]
    sigma: Float[Array, ""]
    strike: Float[Array, ""]

    def __init__(
        self,
        r: Float[ArrayLike, ""] = 0.05,
        sigma: Float[ArrayLike, ""] = 0.2,
        strike: Float[ArrayLike, ""] = 1.0,
    ):
        self.r = jnp.asarray(r, jnp.result_type(float))
        self.sigma = problem_parameter("BlackScholesCall", "sigma", sigma)
        self.strike = problem_parameter("BlackScholesCall", "strike", strike)

    def drift(self, t, x):
        return jnp.full_like(x, self.r - 0.5 * self.sigma**2)

    def p0(self, x):
        return jnp.maximum(jnp.exp(x[0]) - self.strike, 0.0)

    def rate(self, t, x):
        return self.r * jnp.ones((), x.dtype)

    def exact(self, T, x):
        x = jnp.asarray(x)
        if x.ndim == 0 or x.shape[-1] != 1:
            raise ValueError(
                f"`BlackScholesCall.exact`: `x` must have shape (..., 1) (log-prices of one "
                f"asset); got {x.shape}."
            )

        def at(point):
            spread = self.sigma * jnp.sqrt(T)
            d1 = (point[0] - jnp.log(self.strike) + (self.r + 0.5 * self.sigma**2) * T) / spread
            discounted = self.strike * jnp.exp(-self.r * T)
            return jnp.exp(point[0]) * ndtr(d1) - discounted * ndtr(d1 - spread)

        return over_points(at, x)


class BlackScholesBarenblatt(AbstractProblem):
    """The Black-Scholes-Barenblatt equation of Raissi (2018) (FBSNN), in d dimensions:

        u_t = -1/2 tr(sigma^2 diag(s^2) hess u) + r (u - s . grad u),   u(T_end, s) = |s|^2.

    Despite its origin in the Barenblatt (uncertain volatility) equation it is LINEAR: it
    is the Black-Scholes equation of d independent assets with growth r, volatility sigma
    and discount r. So in log coordinates x_i = log s_i and time to maturity T:

        mu = (r - sigma^2 / 2) 1,   volatility sigma,   rate r,   p0(x) = sum_i e^{2 x_i},

    with the exact solution exp((r + sigma^2) T) sum_i e^{2 x_i} (= exp((r + sigma^2) T)
    |s|^2). Raissi's 100-d test (sigma = 0.4, r = 0.05, T = 1, s = (1, 0.5, 1, 0.5, ...))
    gives 62.5 e^{0.21} = 77.1049. Points are log-prices, `x = jnp.log(s)`; s > 0.

    **Fields:** `r`, `sigma` (> 0).
    """

    r: Float[Array, ""]
    sigma: Float[Array, ""]

    def __init__(self, r: Float[ArrayLike, ""] = 0.05, sigma: Float[ArrayLike, ""] = 0.4):
        self.r = jnp.asarray(r, jnp.result_type(float))
        self.sigma = problem_parameter("BlackScholesBarenblatt", "sigma", sigma)

    def drift(self, t, x):
        return jnp.full_like(x, self.r - 0.5 * self.sigma**2)

    def p0(self, x):
        return jnp.sum(jnp.exp(2 * x))

    def rate(self, t, x):
        return self.r * jnp.ones((), x.dtype)

    def exact(self, T, x):
        growth = jnp.exp((self.r + self.sigma**2) * T)
        return over_points(lambda point: growth * jnp.sum(jnp.exp(2 * point)), x)
