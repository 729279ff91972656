"""Girsanov and Euler-Maruyama estimates against the exact references, and the things that
must go wrong when the mathematics is done the way the authors' code does it."""

from __future__ import annotations

import zlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab import parabolic
from adjoint_lab.parabolic import problems

P = problems
N_PATHS, N_STEPS = 4000, 40

# (problem, points, T): 4000 paths x 40 steps, d = 1..5, with signals well above the noise.
# LogTerminalHJB and BlackScholesBarenblatt are checked at their 100-d anchors below.
# Over 30 keys every case gives z-scores of mean ~0 and sd ~1 (the stderr is honest), except
# the harmonic potential, whose left-point rate integral is biased by O(dt): +1.5 stderr at
# 40 steps, hence its 120 steps.
CASES = {
    "heat-constant-drift-1d": (
        P.AffineDriftCosine(jnp.array([0.8]), jnp.array([1.5])),
        [[0.3], [-0.5], [1.2]],
        0.5,
    ),
    "heat-constant-drift-3d-sigma": (
        P.AffineDriftCosine(
            jnp.array([0.5, -0.3, 0.2]), jnp.array([1.0, 0.5, -0.7]), phase=0.3, sigma=0.8
        ),
        [[0.1, 0.2, -0.3], [-0.8, 0.4, 0.6]],
        0.4,
    ),
    "heat-affine-drift-2d": (
        P.AffineDriftCosine(
            jnp.array([0.2, -0.1]),
            jnp.array([1.0, 0.5]),
            A=jnp.array([[-0.5, 0.3], [0.1, -0.8]]),
        ),
        [[0.3, -0.2], [-0.6, 0.4]],
        0.5,
    ),
    "ou-density-2d": (P.OrnsteinUhlenbeckDensity(), [[0.0, 0.0], [0.5, -0.4]], 0.3),
    "black-scholes-call": (
        P.BlackScholesCall(r=0.05, sigma=0.3, strike=1.0),
        np.log([[0.8], [1.0], [1.25]]),
        1.0,
    ),
    "lqr-hjb-5d": (P.QuadraticTerminalHJB(a=0.5), [[0.0] * 5, [0.3, -0.2, 0.1, 0.4, 0.0]], 0.3),
    "harmonic-rate-2d": (P.HarmonicPotential(c=0.5), [[0.4, 0.1], [-0.8, 0.5]], 0.5, 120),
}


def _estimate(problem, x, T, method, key=None, **kwargs):
    return parabolic.feynman_kac(
        problem.drift,
        problem.p0,
        jnp.asarray(x, jnp.float64),
        T=T,
        n_paths=kwargs.pop("n_paths", N_PATHS),
        n_steps=kwargs.pop("n_steps", N_STEPS),
        key=jax.random.PRNGKey(0) if key is None else key,
        method=method,
        rate=problem.rate,
        sigma=problem.sigma,
        **kwargs,
    )


def _assert_within(estimate, exact, k=3.0):
    error = np.abs(np.asarray(estimate.value) - np.asarray(exact))
    assert np.all(error < k * np.asarray(estimate.stderr)), (
        f"value {estimate.value}, exact {exact}, stderr {estimate.stderr}, "
        f"errors in stderrs {error / np.asarray(estimate.stderr)}"
    )


@pytest.mark.parametrize("method", ["girsanov", "euler_maruyama"])
@pytest.mark.parametrize("case", list(CASES))
def test_within_three_standard_errors(case, method):
    problem, x, T, *n_steps = CASES[case]
    key = jax.random.PRNGKey(zlib.crc32(case.encode()))  # one key per case, both methods
    estimate = _estimate(problem, x, T, method, key=key, n_steps=(n_steps or [N_STEPS])[0])
    exact = problem.exact(T, jnp.asarray(x, jnp.float64))
    assert estimate.value.shape == estimate.stderr.shape == estimate.ess.shape == (len(x),)
    # The noise must be small against the signal, or the check proves nothing.
    assert np.all(np.asarray(estimate.stderr) < 0.1 * np.abs(np.asarray(exact)))
    _assert_within(estimate, exact)


def test_self_normalised_estimator():
    problem, x, T = CASES["heat-constant-drift-1d"]
    estimate = _estimate(problem, x, T, "girsanov", self_normalised=True)
    _assert_within(estimate, problem.exact(T, jnp.asarray(x)))


def test_common_random_numbers():
    """One key, one set of increments: with zero drift both methods agree exactly."""
    problem, x, T, _ = CASES["harmonic-rate-2d"]
    girsanov = _estimate(problem, x, T, "girsanov", key=jax.random.PRNGKey(3))
    euler = _estimate(problem, x, T, "euler_maruyama", key=jax.random.PRNGKey(3))
    np.testing.assert_allclose(girsanov.value, euler.value, rtol=1e-12)
    np.testing.assert_allclose(girsanov.stderr, euler.stderr, rtol=1e-12)
    again = _estimate(problem, x, T, "girsanov", key=jax.random.PRNGKey(3))
    np.testing.assert_array_equal(again.value, girsanov.value)
    other = _estimate(problem, x, T, "girsanov", key=jax.random.PRNGKey(4))
    assert np.all(np.asarray(other.value) != np.asarray(girsanov.value))


@eqx.filter_jit
def _right_point_estimate(paths, drift, p0):
    """The authors' code: drift at the RIGHT end of each step (a backward-Ito sum)."""
    positions = paths.positions()  # (m, n, K + 1, d)
    t = paths.times[1:]
    mu = jax.vmap(jax.vmap(jax.vmap(drift, (0, 0)), (None, 0)), (None, 0))(t, positions[:, :, 1:])
    theta = mu / paths.sigma
    log_w = jnp.sum(theta * paths.increments, (-2, -1)) - 0.5 * jnp.sum(
        theta**2 * (paths.T / paths.n_steps), (-2, -1)
    )
    values = jax.vmap(jax.vmap(p0))(positions[:, :, -1])
    return parabolic.importance_estimate(values, log_w)


def test_right_point_girsanov_of_the_authors_code_fails():
    """mu(x) = x: the backward-Ito exponent is biased by about exp(int div mu) = e^{d T}."""
    problem = P.AffineDriftCosine(jnp.zeros(2), jnp.array([0.8, -0.6]), A=jnp.eye(2))
    x, T = jnp.array([[0.5, 0.3], [-0.4, 0.2]]), 0.5
    paths = parabolic.BasePaths.sample(
        jax.random.PRNGKey(1), x, T=T, n_paths=N_PATHS, n_steps=N_STEPS
    )
    exact = problem.exact(T, x)
    _assert_within(paths.expectation(problem.drift, problem.p0), exact)
    biased = _right_point_estimate(paths, problem.drift, problem.p0)
    error = np.abs(np.asarray(biased.value - exact))
    assert np.all(error > 3 * np.asarray(biased.stderr)), (biased.value, exact)


@eqx.filter_jit
def _unscaled_estimate(paths, b, p0):
    """Weights mu . dX - |mu|^2 dt / 2 for the constant drift b, as if sigma were 1."""
    positions = paths.positions()
    dx = jnp.diff(positions, axis=2)
    log_w = jnp.sum(b * dx, (-2, -1)) - 0.5 * paths.T * jnp.sum(b**2)
    values = jax.vmap(jax.vmap(p0))(positions[:, :, -1])
    return parabolic.importance_estimate(values, log_w)


def test_girsanov_sigma_scaling_matters():
    """Forgetting the 1/sigma (weights mu . dX - |mu|^2 dt / 2 on X = x + sigma W) fails:
    those weights have mean exp(|b|^2 T (sigma^2 - 1) / 2) = 0.83 here, not 1."""
    problem = P.AffineDriftCosine(jnp.array([1.0]), jnp.array([1.0]), sigma=0.5)
    x, T = jnp.array([[0.2], [-0.7]]), 0.5
    paths = parabolic.BasePaths.sample(
        jax.random.PRNGKey(0), x, T=T, n_paths=N_PATHS, n_steps=N_STEPS, sigma=problem.sigma
    )
    exact = problem.exact(T, x)
    _assert_within(paths.expectation(problem.drift, problem.p0), exact)
    wrong = _unscaled_estimate(paths, problem.b, problem.p0)
    assert np.all(np.abs(np.asarray(wrong.value - exact)) > 3 * np.asarray(wrong.stderr))


def test_fokker_planck_with_the_papers_drift_sign_fails():
    problem, x, T = CASES["ou-density-2d"]
    x = jnp.asarray(x, jnp.float64)
    paths = parabolic.BasePaths.sample(
        jax.random.PRNGKey(0), x, T=T, n_paths=N_PATHS, n_steps=N_STEPS
    )
    exact = problem.exact(T, x)
    _assert_within(paths.expectation(problem.drift, problem.p0, problem.rate), exact)
    plus_x = lambda t, y: y
    wrong = paths.expectation(plus_x, problem.p0, problem.rate)
    assert np.all(np.abs(np.asarray(wrong.value - exact)) > 3 * np.asarray(wrong.stderr))


def test_hjb_100d_anchor():
    """Deep BSDE's u(0, 0) = 4.5901 in d = 100 within 0.5%, from 2000 Brownian paths."""
    problem = P.LogTerminalHJB()
    x = jnp.zeros((1, 100))
    estimate = _estimate(problem, x, 1.0, "girsanov", n_paths=2000, n_steps=4)
    _assert_within(estimate, problem.exact(1.0, x))
    u = problem.value(estimate.value)
    u_stderr = estimate.stderr / estimate.value  # delta method, lam = 1
    assert abs(u[0] - 4.5901) < 0.005 * 4.5901
    assert u_stderr[0] < 0.005 * 4.5901 / 3


def test_bsb_100d_anchor():
    """Raissi's 100-d Black-Scholes-Barenblatt value 77.1049 by Girsanov re-weighting."""
    problem = P.BlackScholesBarenblatt()
    x = jnp.log(jnp.array([[1.0, 0.5] * 50]))
    estimate = _estimate(problem, x, 1.0, "girsanov", n_paths=8000, n_steps=4)
    _assert_within(estimate, jnp.array([77.1049]))
    assert estimate.stderr[0] < 0.01 * 77.1049
