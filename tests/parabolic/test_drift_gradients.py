"""The pathwise and the likelihood-ratio drift gradients: against finite differences of their
own estimators at common random numbers, against each other's gradient methods, and against
the closed form of an affine drift (a Gaussian chain), within a few standard errors."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab import core, parabolic

X0, T, SIGMA, N_STEPS = 0.3, 0.5, 0.8, 10
THETA = jnp.array([0.5, -0.6])
PAYOFFS = {"x": lambda x: x[0], "x^2": lambda x: x[0] ** 2}


class AffineDrift(eqx.Module):
    """b(x) = theta0 + theta1 x in one dimension (an Ornstein-Uhlenbeck drift for theta1 < 0)."""

    theta: jax.Array

    def __call__(self, t, x):
        return self.theta[0] + self.theta[1] * x


def exact_moments(theta):
    """E[X_K] and E[X_K^2] of the Euler-Maruyama chain X_{k+1} = a X_k + theta0 h + sigma dW_k,
    a = 1 + theta1 h, X_0 = x0: a Gaussian with mean a^K x0 + theta0 h (a^K - 1) / (a - 1) and
    variance sigma^2 h (a^2K - 1) / (a^2 - 1). (The left-point Girsanov weight is the exact
    likelihood ratio of this chain, so both estimators target these numbers.)"""
    h = T / N_STEPS
    a = 1 + theta[1] * h
    mean = a**N_STEPS * X0 + theta[0] * h * (a**N_STEPS - 1) / (a - 1)
    var = SIGMA**2 * h * (a ** (2 * N_STEPS) - 1) / (a**2 - 1)
    return {"x": mean, "x^2": mean**2 + var}


def _paths(key, n_paths):
    return parabolic.BasePaths.sample(
        key, jnp.array([[X0]]), T=T, n_paths=n_paths, n_steps=N_STEPS, sigma=SIGMA
    )


def _finite_difference(estimate, eps=1e-5):
    """Central differences of `estimate(theta)` (same paths at every theta)."""
    columns = []
    for i in range(2):
        e = jnp.zeros(2).at[i].set(eps)
        columns.append((estimate(THETA + e) - estimate(THETA - e)) / (2 * eps))
    return jnp.stack(columns, axis=-1)


@pytest.fixture(scope="module")
def bank():
    return _paths(jax.random.PRNGKey(3), 200)


def test_pathwise_equals_finite_differences_of_euler_maruyama(bank):
    p0 = PAYOFFS["x^2"]
    estimate, grad = parabolic.pathwise_drift_gradient(AffineDrift(THETA), bank, p0)
    em = lambda theta: parabolic.euler_maruyama_expectation(bank, AffineDrift(theta), p0).value
    np.testing.assert_allclose(estimate.value, em(THETA), rtol=1e-12)
    np.testing.assert_allclose(grad.theta, _finite_difference(em), rtol=1e-6)


@pytest.mark.parametrize("payoff", ["x", "x^2"])
def test_likelihood_ratio_equals_finite_differences_of_girsanov(bank, payoff):
    p0 = PAYOFFS[payoff]
    estimate, grad = parabolic.likelihood_ratio_drift_gradient(AffineDrift(THETA), bank, p0)
    girsanov = lambda theta: bank.expectation(AffineDrift(theta), p0).value
    np.testing.assert_allclose(estimate.value, girsanov(THETA), rtol=1e-12)
    np.testing.assert_allclose(grad.theta, _finite_difference(girsanov), rtol=1e-6)


def test_backsolve_is_the_continuous_adjoint_of_the_pathwise_gradient(bank):
    """`BacksolveAdjoint` solves the adjoint backwards over the same increments: O(dt) from
    the exact derivative of the discrete estimate (here 10 steps, dt = 0.05)."""
    p0 = PAYOFFS["x^2"]
    drift = AffineDrift(THETA)
    _, checkpointed = parabolic.pathwise_drift_gradient(drift, bank, p0)
    _, backsolve = parabolic.pathwise_drift_gradient(
        drift, bank, p0, gradient=core.BacksolveAdjoint()
    )
    np.testing.assert_allclose(backsolve.theta, checkpointed.theta, rtol=0.2)
    assert not np.allclose(backsolve.theta, checkpointed.theta, rtol=1e-6)


def test_both_gradients_match_the_closed_form():
    """Per-path gradients (each estimator on one-path banks, under vmap) give the Monte-Carlo
    mean and its standard error; the exact derivative must lie within 4 of them."""
    n_paths = 2000
    paths = _paths(jax.random.PRNGKey(11), n_paths)
    one_path = jax.vmap(
        lambda dw: parabolic.BasePaths(x=paths.x, increments=dw[None], T=paths.T, sigma=paths.sigma)
    )(paths.increments)
    drift = AffineDrift(THETA)
    exact_grad = jax.jacobian(exact_moments)(THETA)
    methods = (parabolic.pathwise_drift_gradient, parabolic.likelihood_ratio_drift_gradient)
    payoff, p0 = "x^2", PAYOFFS["x^2"]  # the mean and the variance of X_T both move
    for method in methods:
        value, grad = eqx.filter_vmap(method, in_axes=(None, 0, None))(drift, one_path, p0)
        value, grad = value.value[:, 0], grad.theta[:, 0]  # (n_paths,), (n_paths, 2)
        stderr = grad.std(0, ddof=1) / np.sqrt(n_paths)
        error = np.abs(grad.mean(0) - exact_grad[payoff])
        assert np.all(error < 4 * stderr), (method.__name__, error, stderr)
        value_error = abs(value.mean() - exact_moments(THETA)[payoff])
        assert value_error < 4 * value.std(ddof=1) / np.sqrt(n_paths)
        # The test must be able to fail: the derivative is many stderrs from zero.
        assert np.all(np.abs(exact_grad[payoff]) > 4 * stderr), (payoff, stderr)
