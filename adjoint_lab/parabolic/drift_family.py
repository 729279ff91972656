"""The paper's random-basis drift family, mu_c(x)_i = c0 + c1 x_i + c2 x_i^2 per coordinate,
with the sine initial condition it is posed with and the exact solution of its affine members.

The NGO is trained over this family (a fresh draw of c per task) and evaluated zero-shot on
held-out draws. The paper draws c ~ U(0, 1)^3 and uses p0 = sum_i sin(6 pi x_i); at T = 0.1
that signal (~2e-8) is far below the Monte-Carlo noise, so the frequency is a parameter here
(default pi) and an optional phase makes each task's p0 different.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

__all__ = ["RandomBasisDrift", "SineInitial", "affine_sine_exact", "sample_coefficients"]


class RandomBasisDrift(eqx.Module):
    """mu(t, x)_i = c0 + c1 x_i + c2 x_i^2, the same polynomial in every coordinate.

    A pytree of its coefficients: build a batch with `jax.vmap(RandomBasisDrift)(c)` and
    evaluate all of them against one bank of base paths under `jax.vmap`.

    **Fields:** `c`, shape `(3,)`.
    """

    c: Float[Array, " 3"]

    def __call__(self, t: Float[ArrayLike, ""], x: Float[Array, " d"]) -> Float[Array, " d"]:
        return self.c[0] + self.c[1] * x + self.c[2] * x**2


class SineInitial(eqx.Module):
    """p0(x) = sum_i sin(omega x_i + phase).

    **Fields:** `omega` (frequency), `phase`.
    """

    omega: Float[Array, ""]
    phase: Float[Array, ""]

    def __init__(self, omega: Float[ArrayLike, ""] = jnp.pi, phase: Float[ArrayLike, ""] = 0.0):
        self.omega = jnp.asarray(omega, jnp.result_type(float))
        self.phase = jnp.asarray(phase, jnp.result_type(float))

    def __call__(self, x: Float[Array, " d"]) -> Float[Array, ""]:
        return jnp.sum(jnp.sin(self.omega * x + self.phase))


def sample_coefficients(
    key: PRNGKeyArray,
    n: int,
    low: Float[ArrayLike, " 3"] | tuple[float, float, float] = (0.0, 0.0, 0.0),
    high: Float[ArrayLike, " 3"] | tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> Float[Array, "n 3"]:
    """`n` coefficient vectors c ~ U[low, high] (the paper: U(0, 1)^3). Set `low[2] =
    high[2] = 0` for the affine sub-family, whose solution is exact."""
    low = jnp.asarray(low, jnp.result_type(float))
    high = jnp.asarray(high, jnp.result_type(float))
    return low + (high - low) * jax.random.uniform(key, (n, 3), low.dtype)


def affine_sine_exact(
    c: Float[ArrayLike, " 3"],
    initial: SineInitial,
    T: Float[ArrayLike, ""],
    x: Float[ArrayLike, "*batch d"],
    sigma: Float[ArrayLike, ""] = 1.0,
) -> Float[Array, "*batch"]:
    """The exact p(T, x) = E[p0(X_T)] for the affine member (c2 = 0; c2 is ignored) and
    p0 = `initial`. Per coordinate X_T ~ N(m, v) with m = x e^{c1 T} + c0 (e^{c1 T} - 1)/c1
    and v = sigma^2 (e^{2 c1 T} - 1) / (2 c1) (limits T and sigma^2 T at c1 = 0), so
    p = sum_i sin(omega m_i + phase) exp(-omega^2 v / 2)."""
    c = jnp.asarray(c)
    x = jnp.asarray(x, jnp.result_type(float))
    c0, c1 = c[0], c[1]
    small = jnp.abs(c1 * T) < 1e-8
    safe = jnp.where(small, 1.0, c1)
    # (e^{aT} - 1) / a with its a -> 0 limit T.
    phi1 = jnp.where(small, T, jnp.expm1(safe * T) / safe)
    phi2 = jnp.where(small, T, jnp.expm1(2 * safe * T) / (2 * safe))
    mean = x * jnp.exp(c1 * T) + c0 * phi1
    variance = jnp.asarray(sigma) ** 2 * phi2
    decay = jnp.exp(-0.5 * initial.omega**2 * variance)
    return jnp.sum(jnp.sin(initial.omega * mean + initial.phase), axis=-1) * decay
