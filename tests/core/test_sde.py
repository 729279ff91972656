"""`core.solve_sde` on stored Brownian increments: Euler-Maruyama on exactly those numbers,
the path's evaluation rules, the gradient methods against `jax.grad` of a hand-written
recursion (float64), and the argument errors."""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adjoint_lab import core

T, N_STEPS, D = 0.7, 20, 2


class Drift(eqx.Module):
    theta: jax.Array

    def __call__(self, t, y, args):
        return self.theta[0] + self.theta[1] * jnp.sin(y) + t


def sigma_of_t(t, y, args):
    return 0.5 + 0.3 * t


DRIFT = Drift(jnp.array([0.3, -0.7]))
DIFFUSION = core.DiagonalDiffusion(sigma_of_t)
Y0 = jnp.array([0.1, -0.2])


@pytest.fixture(scope="module")
def brownian():
    return core.BrownianIncrements.sample(jax.random.PRNGKey(0), t1=T, n_steps=N_STEPS, shape=(D,))


def _hand_euler_maruyama(theta, brownian, y0):
    """y_{k+1} = y_k + b(t_k, y_k) dt_k + sigma(t_k) dW_k, written out as a scan."""
    times = brownian.times

    def step(y, inputs):
        t, dt, dw = inputs
        y = y + (theta[0] + theta[1] * jnp.sin(y) + t) * dt + sigma_of_t(t, y, None) * dw
        return y, y

    _, ys = jax.lax.scan(step, y0, (times[:-1], jnp.diff(times), brownian.increments))
    return jnp.concatenate([y0[None], ys])


def test_euler_is_euler_maruyama_on_the_stored_increments(getkey):
    """Under `vmap` over paths, one Euler-Maruyama solve per path on exactly its increments."""
    increments = jnp.sqrt(T / N_STEPS) * jax.random.normal(getkey(), (3, N_STEPS, D))

    def solve(dw):
        path = core.BrownianIncrements(dw, t1=T)
        sol = core.solve_sde(DRIFT, DIFFUSION, path, Y0, ts=path.times)
        return sol.ys, sol.ts, sol.stats["num_steps"]

    ys, ts, num_steps = jax.jit(jax.vmap(solve))(increments)
    for i in range(3):
        path = core.BrownianIncrements(increments[i], t1=T)
        np.testing.assert_allclose(ys[i], _hand_euler_maruyama(DRIFT.theta, path, Y0), atol=1e-13)
        np.testing.assert_allclose(ts[i], path.times, atol=1e-15)
    np.testing.assert_array_equal(num_steps, N_STEPS)


def test_evaluate_sums_the_increments_between_grid_points(brownian):
    times, dw = brownian.times, brownian.increments
    # One step is the stored increment itself, bit for bit (common random numbers).
    for k in (0, 7, N_STEPS - 1):
        np.testing.assert_array_equal(brownian.evaluate(times[k], times[k + 1]), dw[k])
    np.testing.assert_allclose(brownian.evaluate(times[3], times[9]), dw[3:9].sum(0), atol=1e-14)
    np.testing.assert_allclose(brownian.evaluate(times[9], times[3]), -dw[3:9].sum(0), atol=1e-14)
    np.testing.assert_array_equal(brownian.evaluate(times[5], times[5]), jnp.zeros(D))
    np.testing.assert_allclose(brownian.evaluate(times[4]), dw[:4].sum(0), atol=1e-14)
    np.testing.assert_allclose(brownian.evaluate(brownian.t1), dw.sum(0), atol=1e-14)
    # Times a few ulps off the grid (accumulated solver times) are on it.
    np.testing.assert_array_equal(brownian.evaluate(times[2] * (1 + 1e-14), times[3]), dw[2])


@pytest.mark.parametrize("t", [0.5 * T / N_STEPS, -T / N_STEPS, 1.5 * T])
def test_evaluate_refuses_times_off_the_grid(brownian, t):
    with pytest.raises(Exception, match="not on its grid"):
        brownian.evaluate(0.0, t)


def test_solver_stepping_off_the_grid_is_an_error(brownian):
    terms = diffrax.MultiTerm(diffrax.ODETerm(DRIFT), diffrax.ControlTerm(DIFFUSION, brownian))
    with pytest.raises(Exception, match="not on its grid"):
        diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, T, 0.5 * float(brownian.dt), Y0)


def _loss(drift, brownian, gradient):
    ys = core.solve_sde(drift, DIFFUSION, brownian, Y0, gradient=gradient, ts=brownian.times).ys
    return jnp.sum(ys[-1] ** 2) + 0.5 * jnp.sum(jnp.sin(ys[brownian.n_steps // 2]))


@jax.jit
def _hand_grad(theta, brownian):
    def loss(theta):
        ys = _hand_euler_maruyama(theta, brownian, Y0)
        return jnp.sum(ys[-1] ** 2) + 0.5 * jnp.sum(jnp.sin(ys[brownian.n_steps // 2]))

    return jax.grad(loss)(theta)


@pytest.mark.parametrize(
    "gradient", [core.CheckpointedBackprop(), core.DirectBackprop(max_steps=N_STEPS)]
)
def test_discrete_gradients_equal_jax_grad_of_the_recursion(brownian, gradient):
    got = eqx.filter_grad(_loss)(DRIFT, brownian, gradient).theta
    np.testing.assert_allclose(got, _hand_grad(DRIFT.theta, brownian), rtol=1e-11)


def test_backsolve_replays_the_increments_backwards():
    """The continuous adjoint, solved backwards over the stored increments, converges to the
    discrete gradient at O(dt): on the same Brownian path refined 4x, the error shrinks."""
    fine = core.BrownianIncrements.sample(
        jax.random.PRNGKey(1), t1=T, n_steps=4 * N_STEPS, shape=(D,)
    )
    coarse = core.BrownianIncrements(fine.increments.reshape(N_STEPS, 4, D).sum(1), t1=T)
    errors = []
    for path in (coarse, fine):
        got = eqx.filter_grad(_loss)(DRIFT, path, core.BacksolveAdjoint()).theta
        want = _hand_grad(DRIFT.theta, path)
        errors.append(np.linalg.norm(got - want) / np.linalg.norm(want))
    assert errors[0] < 0.05 and errors[1] < errors[0] / 2, errors


@pytest.mark.untyped("ill-typed arguments on purpose: the hook refuses them first")
def test_errors(brownian):
    with pytest.raises(ValueError, match=r"shape \(n_steps, \*shape\)"):
        core.BrownianIncrements(jnp.zeros(()), t1=1.0)
    with pytest.raises(ValueError, match="need t0 < t1"):
        core.BrownianIncrements(jnp.zeros(3), t0=1.0, t1=1.0)
    with pytest.raises(ValueError, match=r"shape=\(3,\)"):
        core.solve_sde(DRIFT, DIFFUSION, brownian, jnp.zeros(3))
    with pytest.raises(ValueError, match=r"y.shape \+ noise shape"):
        core.solve_sde(DRIFT, lambda t, y, a: jnp.ones(3), brownian, Y0)
    with pytest.raises(ValueError, match=f"max_steps={N_STEPS}"):
        core.solve_sde(
            DRIFT,
            DIFFUSION,
            brownian,
            Y0,
            gradient=core.CheckpointedBackprop(max_steps=N_STEPS - 1),
        )
    with pytest.raises(TypeError, match="BrownianIncrements"):
        core.solve_sde(DRIFT, DIFFUSION, brownian.increments, Y0)
    multiplicative = core.DiagonalDiffusion(lambda t, y, args: 0.1 * y)
    with pytest.raises(ValueError, match="depends on y"):
        core.solve_sde(DRIFT, multiplicative, brownian, Y0, gradient=core.BacksolveAdjoint())
