"""Problems whose Feynman-Kac process has a Gaussian transition law: an affine drift with a
cosine initial condition, and the Fokker-Planck equation of an Ornstein-Uhlenbeck process."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, ArrayLike, Float

from .base import AbstractProblem, over_points, problem_parameter

__all__ = ["AffineDriftCosine", "OrnsteinUhlenbeckDensity", "affine_gaussian_moments"]


@jax.jit
def affine_gaussian_moments(
    A: Float[Array, "d d"] | None,
    b: Float[Array, " d"],
    sigma: Float[Array, ""] | Float[Array, " d"],
    T: Float[ArrayLike, ""],
    x: Float[Array, " d"],
) -> tuple[Float[Array, " d"], Float[Array, "d d"]]:
    """Mean and covariance of X_T for dX = (b + A X) dt + sigma dW, X_0 = x.

    `A=None` is a constant drift: mean x + b T, covariance diag(sigma^2) T.

    mean = e^{AT} x + int_0^T e^{As} ds b, from the exponential of the augmented matrix
    [[A, b], [0, 0]] T; covariance = int_0^T e^{As} Q e^{A^T s} ds with Q = diag(sigma^2),
    by Van Loan's method: with F = expm([[-A, Q], [0, A^T]] T), it is F22^T F12.
    """
    d = b.shape[0]
    T = jnp.asarray(T, dtype=b.dtype)
    if A is None:
        cov = jnp.diag(jnp.broadcast_to(sigma**2 * T, (d,)))
        return x + b * T, cov
    augmented = jnp.zeros((d + 1, d + 1), b.dtype).at[:d, :d].set(A).at[:d, d].set(b)
    flow = jsl.expm(augmented * T)
    mean = flow[:d, :d] @ x + flow[:d, d]
    q = jnp.diag(jnp.broadcast_to(sigma**2, (d,)))
    van_loan = jnp.block([[-A, q], [jnp.zeros_like(A), A.T]]) * T
    f = jsl.expm(van_loan)
    covariance = f[d:, d:].T @ f[:d, d:]
    return mean, 0.5 * (covariance + covariance.T)


class AffineDriftCosine(AbstractProblem):
    """Heat equation with affine drift and a plane-wave initial condition:

        mu(t, x) = b + A x,   p0(x) = cos(k . x + phase),   r = 0.

    X_T is Gaussian with mean m and covariance S (`affine_gaussian_moments`), so

        p(T, x) = E[cos(k . X_T + phase)] = cos(k . m + phase) exp(-k^T S k / 2).

    For a constant drift (A = 0): m = x + b T, S = sigma^2 T I. The signal decays like
    exp(-|k|^2 sigma^2 T / 2): keep |k|^2 sigma^2 T of order 1 so that it stays above the
    Monte-Carlo noise (the paper's sin(6 pi x) at T >= 0.1 does not).

    **Fields:** `b` `(d,)`, `A` `(d, d)` or `None` (constant drift, whose moments need no
    matrix exponential), `k` `(d,)`, `phase`, `sigma` (scalar or `(d,)`).
    """

    b: Float[Array, " d"]
    A: Float[Array, "d d"] | None
    k: Float[Array, " d"]
    phase: Float[Array, ""]
    sigma: Float[Array, ""] | Float[Array, " d"]

    def __init__(
        self,
        b: Float[ArrayLike, " d"],
        k: Float[ArrayLike, " d"],
        A: Float[ArrayLike, "d d"] | None = None,
        phase: Float[ArrayLike, ""] = 0.0,
        sigma: Float[ArrayLike, ""] | Float[ArrayLike, " d"] = 1.0,
    ):
        dtype = jnp.result_type(float)
        self.b = jnp.asarray(b, dtype)
        self.k = jnp.asarray(k, dtype)
        d = self.b.shape[-1] if self.b.ndim else 0
        if self.b.ndim != 1 or self.k.shape != self.b.shape:
            raise ValueError(
                f"`AffineDriftCosine`: `b` and `k` must both have shape (d,); got "
                f"{self.b.shape} and {self.k.shape}."
            )
        self.A = None if A is None else jnp.asarray(A, dtype)
        if self.A is not None and self.A.shape != (d, d):
            raise ValueError(
                f"`AffineDriftCosine`: `A` must have shape (d, d) = ({d}, {d}); got {self.A.shape}."
            )
        self.phase = jnp.asarray(phase, dtype)
        self.sigma = problem_parameter("AffineDriftCosine", "sigma", sigma)
        if self.sigma.shape not in ((), (d,)):
            raise ValueError(
                f"`AffineDriftCosine`: `sigma` must be a scalar or have shape (d,) = ({d},); "
                f"got {self.sigma.shape}."
            )

    def drift(self, t, x):
        return self.b if self.A is None else self.b + self.A @ x

    def p0(self, x):
        return jnp.cos(self.k @ x + self.phase)

    def rate(self, t, x):
        return jnp.zeros((), x.dtype)

    def exact(self, T, x):
        def at(point):
            mean, cov = affine_gaussian_moments(self.A, self.b, self.sigma, T, point)
            return jnp.cos(self.k @ mean + self.phase) * jnp.exp(-0.5 * self.k @ cov @ self.k)

        return over_points(at, x)


class OrnsteinUhlenbeckDensity(AbstractProblem):
    """The density p(T, .) of dY = theta Y dt + sigma dW, Y_0 ~ N(0, s0^2 I), via its
    Fokker-Planck equation dp/dt = -div(theta x p) + sigma^2/2 lap p.

    In Feynman-Kac form, -div(theta x p) = -theta x . grad p - theta d p, so

        mu(t, x) = -theta x,   r = theta d,   p0 = N(0, s0^2 I) density,

    i.e. the auxiliary process runs with the OPPOSITE drift of Y. (The paper's App. D.1 and
    code use +theta x, which gives the wrong density: 0.0854 instead of 0.1834 at x = 1,
    T = 0.5 in 1-d.) Exactly, Y_T ~ N(0, v I) with
    v = s0^2 e^{2 theta T} + sigma^2 (e^{2 theta T} - 1) / (2 theta) (sigma^2 T if theta = 0).

    The defaults theta = 1, sigma = 1, s0 = 1 are the paper's test (v = 3/2 e^{2T} - 1/2);
    theta < 0 gives a mean-reverting OU process.
    """

    theta: Float[Array, ""]
    sigma: Float[Array, ""]
    initial_std: Float[Array, ""]

    def __init__(
        self,
        theta: Float[ArrayLike, ""] = 1.0,
        sigma: Float[ArrayLike, ""] = 1.0,
        initial_std: Float[ArrayLike, ""] = 1.0,
    ):
        self.theta = jnp.asarray(theta, jnp.result_type(float))
        self.sigma = problem_parameter("OrnsteinUhlenbeckDensity", "sigma", sigma)
        self.initial_std = problem_parameter("OrnsteinUhlenbeckDensity", "initial_std", initial_std)

    def drift(self, t, x):
        return -self.theta * x

    def p0(self, x):
        return _normal_density(x, self.initial_std**2)

    def rate(self, t, x):
        return self.theta * x.shape[-1] * jnp.ones((), x.dtype)

    def variance(self, T: Float[ArrayLike, ""]) -> Float[Array, ""]:
        """The variance per coordinate of Y_T."""
        growth = jnp.exp(2 * self.theta * T)
        safe = jnp.where(self.theta == 0, 1.0, self.theta)
        spread = jnp.where(self.theta == 0, T, jnp.expm1(2 * safe * T) / (2 * safe))
        return self.initial_std**2 * growth + self.sigma**2 * spread

    def exact(self, T, x):
        variance = self.variance(T)
        return over_points(lambda point: _normal_density(point, variance), x)


def _normal_density(x: Float[Array, " d"], variance: Float[Array, ""]) -> Float[Array, ""]:
    d = x.shape[-1]
    return jnp.exp(-0.5 * jnp.sum(x**2) / variance) / (2 * jnp.pi * variance) ** (d / 2)
