"""A Feynman-Kac problem with a state-dependent discount: Brownian motion killed at the
rate of a harmonic potential."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .base import AbstractProblem, over_points, problem_parameter

__all__ = ["HarmonicPotential"]


class HarmonicPotential(AbstractProblem):
    """dp/dt = sigma^2/2 lap p - c |x|^2 p, p(0, .) = 1: the imaginary-time Schrodinger
    equation of a harmonic oscillator, i.e.

        mu = 0,   volatility sigma,   r(t, x) = c |x|^2,   p0 = 1.

    By the Cameron-Martin formula, with gamma = sigma sqrt(2c),

        p(T, x) = cosh(gamma T)^(-d/2) exp(-gamma tanh(gamma T) |x|^2 / (2 sigma^2)).

    It checks the path integral of the rate (left-point rule, O(dt) bias).

    **Fields:** `c` (> 0), `sigma` (> 0).
    """

    c: Float[Array, ""]
    sigma: Float[Array, ""]

    def __init__(self, c: Float[ArrayLike, ""] = 1.0, sigma: Float[ArrayLike, ""] = 1.0):
        self.c = problem_parameter("HarmonicPotential", "c", c)
        self.sigma = problem_parameter("HarmonicPotential", "sigma", sigma)

    def drift(self, t, x):
        return jnp.zeros_like(x)

    def p0(self, x):
        return jnp.ones((), x.dtype)

    def rate(self, t, x):
        return self.c * jnp.sum(x**2)

    def exact(self, T, x):
        gamma = self.sigma * jnp.sqrt(2 * self.c)

        def at(point):
            d = point.shape[-1]
            decay = jnp.cosh(gamma * T) ** (-d / 2)
            return decay * jnp.exp(
                -gamma * jnp.tanh(gamma * T) * jnp.sum(point**2) / (2 * self.sigma**2)
            )

        return over_points(at, x)
