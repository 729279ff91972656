"""The semi-linear FBSDE recursion on base paths: with the exact Z it reproduces the closed
forms (HJB by Cole-Hopf, Black-Scholes-Barenblatt, and a drifted linear PDE, which checks
that the drift enters the driver as theta . Z); (slow) a trained Z network against Z = 0."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab import parabolic
from adjoint_lab.parabolic import problems
from adjoint_lab.parabolic.semilinear import (
    AbstractSemilinearProblem,
    SemilinearBSB,
    SemilinearHJB,
    ZNetwork,
    ZTrainingConfig,
    semilinear_expectation,
    train_z_network,
)

T = 0.25


def _zero(t, x):
    return jnp.zeros_like(x)


def _paths(problem, x, n_steps=40, key=0):
    return parabolic.BasePaths.sample(
        jax.random.PRNGKey(key), x, T=T, n_paths=256, n_steps=n_steps, sigma=problem.sigma
    )


def test_exact_z_recovers_hjb():
    """u_t + lap u - |grad u|^2 = 0, g = |x|^2: Z = sqrt 2 grad u = sqrt 2 * 2x / (1 + 4(T - t))."""
    hjb = SemilinearHJB(problems.QuadraticTerminalHJB(a=1.0))
    x = jnp.array([[0.2, 0.4], [0.5, 0.1]])
    paths = _paths(hjb, x)
    mean, stderr = semilinear_expectation(
        lambda t, y: hjb.sigma * 2 * y / (1 + 4 * (T - t)), hjb, paths
    )
    exact = hjb.exact(T, x)
    # O(h) bias of the explicit scheme (~1.5% at 40 steps) plus Monte-Carlo error.
    np.testing.assert_allclose(mean, exact, atol=0.035)
    # The exact Z removes almost all of the path variance that Z = 0 leaves.
    _, stderr_zero = semilinear_expectation(_zero, hjb, paths)
    assert np.all(stderr < 0.2 * stderr_zero), (stderr, stderr_zero)


def test_exact_z_recovers_bsb():
    """Raissi's BSB (sigma 0.4, r 0.05) in log-prices: Z = 2 sigma e^{(r + sigma^2)(T - t)} s^2."""
    bsb = SemilinearBSB(problems.BlackScholesBarenblatt(r=0.05, sigma=0.4))
    x = jnp.log(jnp.array([[0.5, 1.0], [1.0, 0.3]]))
    paths = _paths(bsb, x)
    mean, stderr = semilinear_expectation(
        lambda t, y: 2 * 0.4 * jnp.exp((0.05 + 0.16) * (T - t)) * jnp.exp(2 * y), bsb, paths
    )
    np.testing.assert_allclose(mean, bsb.exact(T, x), rtol=5e-3)
    _, stderr_zero = semilinear_expectation(_zero, bsb, paths)
    assert np.all(stderr < 0.2 * stderr_zero), (stderr, stderr_zero)


class _DriftedHeat(AbstractSemilinearProblem):
    """phi = 0 and the affine drift mu = c0 + c1 x: a linear PDE whose solution is
    `affine_sine_exact` with time-to-go T - t; only theta . Z carries the drift."""

    c: jax.Array
    sigma: jax.Array

    def drift(self, t, x):
        return self.c[0] + self.c[1] * x

    def driver(self, t, x, y, z):
        return jnp.zeros((), x.dtype)

    def terminal(self, x):
        return parabolic.SineInitial(np.pi, 0.3)(x)

    def solution(self, t, x):
        return parabolic.affine_sine_exact(self.c, parabolic.SineInitial(np.pi, 0.3), T - t, x)


def test_drift_enters_the_driver():
    problem = _DriftedHeat(c=jnp.array([0.8, 0.5, 0.0]), sigma=jnp.asarray(1.0))
    x = jnp.array([[0.2], [0.5]])
    paths = _paths(problem, x)
    z = lambda t, y: problem.sigma * jax.grad(problem.solution, argnums=1)(t, y)
    mean, _ = semilinear_expectation(z, problem, paths)
    exact = jax.vmap(lambda p: problem.solution(0.0, p))(x)
    np.testing.assert_allclose(mean, exact, atol=0.02)
    # Without the theta . Z term (Z = 0) the estimate is the driftless heat solution.
    heat, _ = semilinear_expectation(_zero, problem, paths)
    assert np.max(np.abs(heat - exact)) > 0.05


def test_trained_z_network_beats_zero_small():
    # Default-suite size of the test below: a short training still beats Z = 0.
    hjb = SemilinearHJB(problems.QuadraticTerminalHJB(a=1.0))
    config = ZTrainingConfig(T=T, n_steps=10, n_paths=32, n_points=8, steps=80, learning_rate=3e-2)
    znet = ZNetwork(2, T, width=8, depth=1, key=jax.random.PRNGKey(1))
    znet, losses = train_z_network(znet, hjb, config, jax.random.PRNGKey(2))
    assert losses[-20:].mean() < 0.6 * losses[:5].mean()
    x = jnp.array([[0.2, 0.4], [0.5, 0.1]])
    paths = _paths(hjb, x, n_steps=10, key=5)
    exact = hjb.exact(T, x)
    trained, _ = semilinear_expectation(znet, hjb, paths)
    zero, _ = semilinear_expectation(_zero, hjb, paths)
    assert np.max(np.abs(trained - exact)) < 0.5 * np.min(np.abs(zero - exact))


@pytest.mark.slow
def test_trained_z_network_beats_zero():
    hjb = SemilinearHJB(problems.QuadraticTerminalHJB(a=1.0))
    config = ZTrainingConfig(
        T=T, n_steps=20, n_paths=64, n_points=16, steps=300, learning_rate=3e-2
    )
    znet = ZNetwork(2, T, width=16, depth=2, key=jax.random.PRNGKey(1))
    znet, losses = train_z_network(znet, hjb, config, jax.random.PRNGKey(2))
    assert losses[-20:].mean() < 0.1 * losses[:5].mean()
    x = jnp.array([[0.2, 0.4], [0.5, 0.1]])
    paths = _paths(hjb, x, n_steps=20, key=5)
    exact = hjb.exact(T, x)
    trained, _ = semilinear_expectation(znet, hjb, paths)
    zero, _ = semilinear_expectation(_zero, hjb, paths)
    assert np.max(np.abs(trained - exact)) < 0.3 * np.min(np.abs(zero - exact))
